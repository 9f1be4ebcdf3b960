"""The changelog through the real ``vestige-mcp``: who changed what, asked for over MCP.

Every write tool leaves exactly one entry naming the MCP client from ``initialize``, the
server process and the transport; ``memory_changelog`` filters and bounds them;
``edit_memory`` keeps the previous value and ``memory_undo`` puts it back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import apsw
import httpx2
import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.types import Implementation

from tests.server_helpers import (
    CALL_TIMEOUT_S,
    START_TIMEOUT_S,
    ServerProcess,
    free_port,
    owner_of,
    stdio_params,
    tool_text,
    wait_for,
)
from vestige import Store, changelog
from vestige.changelog import ChangeKind

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]

CLIENT = "changelog-test-agent-4711"
#: No decay pass of the server's upkeep during a test: its entry would be one more row.
QUIET = {"VESTIGE_CONSOLIDATION_INTERVAL_HOURS": "1000"}


def me(name: str = CLIENT) -> Implementation:
    return Implementation(name=name, version="1.0")


async def ok(client: Client, name: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(name, args, read_timeout_seconds=CALL_TIMEOUT_S)
    assert not result.is_error, tool_text(result)
    assert isinstance(result.structured_content, dict)
    return result.structured_content


async def error(client: Client, name: str, args: dict[str, Any]) -> str:
    result = await client.call_tool(name, args, read_timeout_seconds=CALL_TIMEOUT_S)
    assert result.is_error, result.structured_content
    text = tool_text(result)
    assert not text.startswith("Error executing tool"), text  # the reason alone (issue 10)
    assert "Traceback" not in text
    return text


async def log(client: Client, **args: Any) -> dict[str, Any]:
    return await ok(client, "memory_changelog", args)


def kinds(page: dict[str, Any]) -> list[str]:
    return [c["kind"] for c in page["changes"]]


def quiet_server(data_dir: Path, home: Path) -> StdioServerParameters:
    return stdio_params(data_dir, home=home, VESTIGE_CONSOLIDATION_INTERVAL_HOURS="1000")


def quiet_store(data_dir: Path) -> int:
    """A store whose decay pass just ran (so the server's upkeep has none to run); its seq."""
    with Store.open(data_dir) as store:
        assert store.decay().ran
        return store.changes(limit=1).newest_seq


@pytest.mark.parametrize("mode", ["legacy", "auto"])  # initialize, or 2026's request envelope
def test_each_write_tool_leaves_one_entry_naming_the_client(
    tmp_path: Path, data_dir: Path, mode: str
) -> None:
    mark = quiet_store(data_dir)

    async def scenario() -> None:
        params = quiet_server(data_dir, tmp_path)
        async with Client(params, client_info=me(), mode=mode) as client:
            pid = (await ok(client, "health_check", {}))["server"]["pid"]
            a = (await ok(client, "ingest", {"content": "The deploy script is tools/deploy.sh"}))[
                "id"
            ]
            made = await ok(client, "smart_ingest", {"content": "Alice reviews every migration"})
            assert made["decision"] == "create"
            b = made["id"]
            again = await ok(
                client, "smart_ingest", {"content": "The deploy script is tools/deploy.sh"}
            )
            assert (again["decision"], again["id"]) == ("reinforce", a)
            await ok(client, "promote_memory", {"id": a, "reason": "it helped"})
            await ok(client, "demote_memory", {"id": b})
            edited = await ok(
                client,
                "edit_memory",
                {"id": a, "content": "The deploy script is scripts/deploy.sh", "tags": ["ops"]},
            )
            assert edited["memory"]["content"] == "The deploy script is scripts/deploy.sh"
            assert edited["memory"]["tags"] == ["ops"]
            await ok(client, "delete_memory", {"id": b})
            assert (await ok(client, "consolidate", {}))["ran"] is True

            # Exactly one entry per call, newest first, each naming who made it.
            page = await log(client, since_seq=mark)
            expected = [
                ("decayed", None),
                ("deleted", b),
                ("edited", a),
                ("demoted", b),
                ("promoted", a),
                ("reinforced", a),
                ("created", b),
                ("created", a),
            ]
            assert [(c["kind"], c["memory_id"]) for c in page["changes"]] == expected
            seqs = [c["seq"] for c in page["changes"]]
            assert seqs == sorted(seqs, reverse=True)
            assert page["newest_seq"] == seqs[0]
            assert (page["gap"], page["more"]) == (None, False)
            for change in page["changes"]:
                assert change["client"] == CLIENT, change
                assert change["transport"] == "stdio", change
                assert change["process"] == f"vestige-mcp pid {pid}", change
                assert change["before"] is None  # whole rows only when asked for
            assert edited["change_seq"] == seqs[2]

            # The test's own decay pass, before the server started: another actor.
            everything = await log(client)
            assert len(everything["changes"]) == len(expected) + 1
            first = everything["changes"][-1]
            assert (first["seq"], first["kind"]) == (mark, "decayed")
            assert (first["transport"], first["client"]) == ("library", None)

            # Filters.
            assert kinds(await log(client, memory_id=a)) == [
                "edited",
                "promoted",
                "reinforced",
                "created",
            ]
            ups_and_downs = await log(client, kinds=["promoted", "demoted"])
            assert [(c["kind"], c["memory_id"]) for c in ups_and_downs["changes"]] == [
                ("demoted", b),
                ("promoted", a),
            ]
            assert kinds(await log(client, since_seq=edited["change_seq"])) == [
                "decayed",
                "deleted",
            ]
            edit_at = page["changes"][2]["at"]
            assert kinds(await log(client, since=edit_at)) == ["decayed", "deleted"]
            assert kinds(await log(client, memory_id=b, kinds=["deleted"])) == ["deleted"]
            oldest = await log(client, since_seq=mark, oldest_first=True)
            assert oldest["changes"] == page["changes"][::-1]

            # Bounded: `more` says others matched.
            top = await log(client, since_seq=mark, limit=3)
            assert top["changes"] == page["changes"][:3]
            assert top["more"] is True
            assert (await log(client, since_seq=mark, limit=8))["more"] is False

            # The edit kept the previous value.
            before = (await log(client, memory_id=a, kinds=["edited"], include_before=True))[
                "changes"
            ][0]["before"]
            assert before[a]["content"] == "The deploy script is tools/deploy.sh"
            assert before[a]["tags"] == []
            deleted = (await log(client, memory_id=b, kinds=["deleted"], include_before=True))[
                "changes"
            ][0]
            assert deleted["before"][b]["content"] == "Alice reviews every migration"

    anyio.run(scenario)


def test_edit_then_undo_over_mcp(tmp_path: Path, data_dir: Path) -> None:
    mark = quiet_store(data_dir)

    async def scenario() -> None:
        params = quiet_server(data_dir, tmp_path)
        async with Client(params, client_info=me("undo-tester"), mode="legacy") as client:
            a = (await ok(client, "ingest", {"content": "Standup is at 9:30", "tags": ["team"]}))[
                "id"
            ]
            edit = await ok(client, "edit_memory", {"id": a, "content": "Standup is at 10:00"})
            assert edit["memory"]["tags"] == ["team"]  # only what was given changes
            retag = await ok(client, "edit_memory", {"id": a, "tags": ["team", "daily"]})
            assert retag["memory"]["content"] == "Standup is at 10:00"
            assert retag["change_seq"] == edit["change_seq"] + 1

            # The older edit is blocked by the newer one; undo the newer first.
            blocked = await error(client, "memory_undo", {"change_seq": edit["change_seq"]})
            assert f"#{retag['change_seq']} (edited)" in blocked
            undone = await ok(client, "memory_undo", {"change_seq": retag["change_seq"]})
            assert undone["change"]["kind"] == "undone"
            assert undone["change"]["undoes"] == retag["change_seq"]
            assert undone["change"]["client"] == "undo-tester"
            await ok(client, "memory_undo", {"change_seq": edit["change_seq"]})
            got = await ok(client, "memory", {"action": "get", "id": a})
            assert (got["memory"]["content"], got["memory"]["tags"]) == (
                "Standup is at 9:30",
                ["team"],
            )
            again = await error(client, "memory_undo", {"change_seq": edit["change_seq"]})
            assert "already undone" in again
            refused = await error(client, "memory_undo", {"change_seq": mark})
            assert "cannot be undone" in refused  # a decay pass

            page = await log(client, since_seq=mark)
            assert kinds(page) == ["undone", "undone", "edited", "edited", "created"]

    anyio.run(scenario)


BAD_CALLS: list[tuple[str, dict[str, Any], str]] = [
    ("memory_changelog", {"kinds": ["renamed"]}, "unknown change kind 'renamed'"),
    ("memory_changelog", {"kinds": "created"}, "kinds"),
    ("memory_changelog", {"since_seq": -1}, "since_seq"),
    ("memory_changelog", {"since": "last tuesday"}, "is not a date"),
    ("memory_changelog", {"limit": 0}, "limit"),
    ("memory_changelog", {"limit": 1001}, "limit"),
    ("memory_changelog", {"memory_id": "no spaces allowed"}, "memory_id"),
    ("edit_memory", {"id": "0" * 36, "content": "x"}, "no memory with id"),
    ("edit_memory", {"id": "x"}, "nothing to edit"),
    ("edit_memory", {"id": "x", "content": ""}, "content"),
    ("memory_undo", {"change_seq": 0}, "change_seq"),
    ("memory_undo", {"change_seq": 10**6}, "there is no change #1000000"),
]


def test_bad_arguments_are_one_readable_error_and_change_nothing(
    tmp_path: Path, data_dir: Path
) -> None:
    quiet_store(data_dir)

    async def scenario() -> None:
        params = quiet_server(data_dir, tmp_path)
        async with Client(params, client_info=me()) as client:
            listed = {t.name: t for t in (await client.list_tools()).tools}
            assert {"memory_changelog", "edit_memory", "memory_undo"} <= set(listed)
            assert "purge" not in " ".join(listed)  # CLI only, on purpose
            for tool in listed.values():  # the injected Context is no argument
                assert "ctx" not in tool.input_schema.get("properties", {}), tool.name
                assert "ctx" not in tool.input_schema.get("required", []), tool.name
            log_tool = listed["memory_changelog"]
            assert log_tool.annotations is not None
            assert log_tool.annotations.read_only_hint is True
            kind_schema = log_tool.input_schema["properties"]["kinds"]["anyOf"][0]["items"]
            assert kind_schema["enum"] == [k.value for k in ChangeKind]

            newest = (await log(client))["newest_seq"]
            for name, args, expected in BAD_CALLS:
                text = await error(client, name, args)
                assert expected in text, (name, args, text)
            hint = await error(client, "memory_changelog", {"kinds": ["created", "renamed"]})
            assert "Hint: Use some of: created, reinforced" in hint
            assert (await log(client))["newest_seq"] == newest  # nothing half written

    anyio.run(scenario)


def test_a_trimmed_log_answers_with_a_gap(tmp_path: Path, data_dir: Path) -> None:
    """Asking for changes older than the oldest kept gets an explicit gap, never a silent list."""
    with Store.open(data_dir) as store:
        store.decay()
        for i in range(5):
            store.ingest(f"memory number {i} about trimming")
        newest = store.changes(limit=1).newest_seq
    # The decay pass's trim, with a small window: the same code, without 100k rows.
    conn = apsw.Connection(str(data_dir / "vestige.db"))
    conn.set_busy_timeout(5_000)
    with conn:
        assert changelog.trim(conn, keep_rows=2, batch_rows=100) == newest - 2
    conn.close()

    async def scenario() -> None:
        params = quiet_server(data_dir, tmp_path)
        async with Client(params, client_info=me()) as client:
            asked = await log(client, since_seq=0)
            assert [c["seq"] for c in asked["changes"]] == [newest, newest - 1]
            assert asked["gap"]["trimmed_through"] == newest - 2
            assert "may be missing" in asked["gap"]["message"]
            assert (await log(client, since="2000-01-01"))["gap"] is not None
            # Nothing trimmed was asked for: no gap.
            assert (await log(client, since_seq=newest - 2))["gap"] is None
            # The newest page, when older entries remain to page through: no gap yet; the
            # page that reaches the oldest kept entry says what is missing below it.
            assert (await log(client, limit=1))["gap"] is None
            assert (await log(client))["gap"] is not None

    anyio.run(scenario)


def test_http_clients_are_told_apart(tmp_path: Path, data_dir: Path) -> None:
    """Two clients writing at once through one HTTP server: each entry names its own."""
    mark = quiet_store(data_dir)
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    with ServerProcess(
        data_dir, "--transport", "http", "--port", str(port), home=tmp_path, env=QUIET
    ) as srv:
        owner_of(data_dir, srv.pid)
        assert wait_for(lambda: "listening on" in srv.stderr(), START_TIMEOUT_S)
        bearer = {"Authorization": f"Bearer {(data_dir / 'auth_token').read_text().strip()}"}
        authors: dict[str, str] = {}
        pages: list[dict[str, Any]] = []

        async def agent(name: str, mode: str) -> None:
            timeout = httpx2.Timeout(CALL_TIMEOUT_S, read=60)
            async with (
                httpx2.AsyncClient(headers=bearer, timeout=timeout) as http,
                Client(
                    streamable_http_client(url, http_client=http), client_info=me(name), mode=mode
                ) as mcp,
            ):
                for i in range(10):
                    made = await ok(mcp, "ingest", {"content": f"{name} noted item {i}"})
                    authors[made["id"]] = name
                pages.append(await log(mcp, since_seq=mark, limit=100))

        async def both() -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(agent, "agent-alice", "auto")
                tg.start_soon(agent, "agent-bob", "legacy")

        anyio.run(both)

    last = max(pages, key=lambda p: p["newest_seq"])["changes"]
    assert len(last) == 20
    for change in last:
        assert change["kind"] == "created"
        assert change["client"] == authors[change["memory_id"]], change
        assert change["transport"] == "http"
        assert change["process"] == f"vestige-mcp pid {srv.pid}"
