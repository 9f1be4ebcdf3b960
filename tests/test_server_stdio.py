"""The real ``vestige-mcp`` over stdio, driven by the MCP SDK's client."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client import Client

from tests.server_helpers import CALL_TIMEOUT_S, stdio_params, tool_text
from vestige import Store

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]

TOOLS = {
    "ingest",
    "smart_ingest",
    "search",
    "memory",
    "delete_memory",
    "promote_memory",
    "demote_memory",
    "memory_timeline",
    "consolidate",
    "stats",
    "health_check",
    "edit_memory",
    "memory_changelog",
    "memory_undo",
}


async def call(client: Client, name: str, args: dict[str, Any]) -> Any:
    return await client.call_tool(name, args, read_timeout_seconds=CALL_TIMEOUT_S)


async def ok(client: Client, name: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await call(client, name, args)
    assert not result.is_error, tool_text(result)
    assert isinstance(result.structured_content, dict)
    return result.structured_content


#: What a raw pydantic or SDK error shows, which no answer may (issue 10).
RAW_ERROR_SIGNS = (
    "Error executing tool",
    "errors.pydantic.dev",
    "input_value=",
    "[type=",
    "Arguments",
)


async def error(client: Client, name: str, args: dict[str, Any]) -> str:
    result = await call(client, name, args)
    assert result.is_error, result.structured_content
    text = tool_text(result)
    assert len(text) > 10, text  # a reason, not a bare error
    for sign in RAW_ERROR_SIGNS:
        assert sign not in text, (name, args, text)
    message = text.split("\nHint: ")[0]
    assert "\n" not in message, text  # one line (and a Hint line when there is a next step)
    return text


def test_tools_end_to_end_through_the_console_script(tmp_path: Path, data_dir: Path) -> None:
    async def scenario() -> None:
        async with Client(stdio_params(data_dir, home=tmp_path)) as client:
            listed = {t.name: t for t in (await client.list_tools()).tools}
            assert set(listed) == TOOLS
            content_schema = listed["ingest"].input_schema["properties"]["content"]
            assert content_schema["minLength"] == 1
            # The limit is in bytes, which the store counts: no maxLength in characters.
            assert "maxLength" not in content_schema
            assert "1,000,000 bytes of UTF-8" in content_schema["description"]
            assert listed["search"].input_schema["properties"]["limit"]["maximum"] == 100
            assert listed["memory"].input_schema["required"] == ["action", "id"]
            assert listed["delete_memory"].input_schema["required"] == ["id"]
            assert all(t.description for t in listed.values())

            made = await ok(
                client,
                "ingest",
                {"content": "Ada prefers tabs over spaces in Go code", "tags": ["style"]},
            )
            mid = made["id"]
            assert made["memory"]["tags"] == ["style"]

            found = await ok(client, "search", {"query": "tabs spaces", "detail_level": "brief"})
            assert [r["id"] for r in found["results"]] == [mid]
            assert "content" not in found["results"][0]
            assert found["results"][0]["superseded_by"] is None  # said at every detail level
            search_args = listed["search"].input_schema["properties"]
            assert search_args["include_superseded"]["default"] is False

            got = await ok(client, "memory", {"action": "get", "id": mid})
            assert got["memory"]["content"] == "Ada prefers tabs over spaces in Go code"
            state = await ok(client, "memory", {"action": "state", "id": mid})
            # 0.5 * retention 0.73 + 0.3 * retrieval 1 + 0.2 * storage 1/10: what the decay
            # pass has always made of a new memory, now from the start (one model, issue 9).
            assert (state["state"], state["accessibility"]) == ("active", 0.685)

            again = await ok(
                client, "smart_ingest", {"content": "Ada prefers tabs over spaces in Go code"}
            )
            assert (again["decision"], again["id"]) == ("reinforce", mid)

            up = await ok(client, "promote_memory", {"id": mid, "reason": "it was right"})
            assert up["after"]["stability"] == pytest.approx(up["before"]["stability"] * 1.5)
            assert up["after"]["retention"] > up["before"]["retention"]
            down = await ok(client, "demote_memory", {"id": mid})
            assert down["after"]["adjustment"] == pytest.approx(
                up["after"]["adjustment"] + math.log(0.5)
            )
            assert down["after"]["retention"] < up["after"]["retention"]

            timeline = await ok(client, "memory_timeline", {})
            assert timeline["total"] == 1
            assert timeline["days"][0]["memories"][0]["id"] == mid
            stats = await ok(client, "stats", {})
            assert stats["total_memories"] == 1
            assert sum(stats["state_distribution"].values()) == 1
            report = await ok(client, "consolidate", {})
            assert report["ran"] is True
            assert report["nodes_processed"] == 1
            health = await ok(client, "health_check", {})
            assert health["status"] in {"healthy", "degraded", "critical"}
            assert health["server"]["lock_mode"] == "exclusive"
            assert health["server"]["transport"] == "stdio"

            deleted = await ok(client, "delete_memory", {"id": mid})
            assert (deleted["id"], deleted["deleted"]) == (mid, True)
            assert deleted["change_seq"] >= 1
            gone = await error(client, "memory", {"action": "get", "id": mid})
            assert f"no memory with id '{mid}'" in gone
            assert "Hint:" in gone

    anyio.run(scenario)


BAD_CALLS: list[tuple[str, dict[str, Any], str]] = [
    ("ingest", {"content": ""}, "content"),
    ("ingest", {"content": "   \n "}, "content is empty"),
    ("ingest", {"content": "x" * 300_000 + "é" * 400_000}, "the limit is 1,000,000 bytes"),
    ("ingest", {"content": 42}, "argument 'content' is 42 (a whole number): send a string"),
    ("ingest", {}, "content"),
    ("ingest", {"content": "ok", "tags": "not-a-list"}, "tags"),
    ("ingest", {"content": "ok", "tags": [f"t{i}" for i in range(51)]}, "at most 50"),
    ("ingest", {"content": "ok", "node_type": "has spaces"}, "node_type"),
    ("smart_ingest", {"content": "ok", "force_create": "maybe"}, "force_create"),
    ("search", {"query": ""}, "query"),
    ("search", {"query": "x", "limit": 0}, "limit"),
    ("search", {"query": "x", "limit": 10**9}, "limit"),
    ("search", {"query": "x", "min_retention": 7}, "min_retention"),
    ("search", {"query": "x", "detail_level": "everything"}, "detail_level"),
    ("memory", {"action": "explode", "id": "abc"}, "action"),
    ("memory", {"action": "get", "id": "no/such id"}, "id"),
    ("delete_memory", {"id": "0" * 36}, "no memory with id"),
    ("promote_memory", {"id": "missing-id"}, "no memory with id"),
    ("demote_memory", {"id": ""}, "id"),
    ("memory_timeline", {"start": "last tuesday"}, "is not a date"),
    ("memory_timeline", {"limit": -5}, "limit"),
]


def test_bad_arguments_come_back_as_readable_tool_errors(tmp_path: Path, data_dir: Path) -> None:
    async def scenario() -> None:
        params = stdio_params(data_dir, home=tmp_path, console_script=False)
        async with Client(params) as client:
            for name, args, expected in BAD_CALLS:
                assert expected in await error(client, name, args), (name, args)
            # Odd search syntax is text, never an error.
            for query in ['AND (foo* OR "', "NEAR(", "a:b ^c -d {e} [f]", "*", "'; DROP TABLE x"]:
                assert (await ok(client, "search", {"query": query}))["total"] == 0
            assert (await ok(client, "stats", {}))["total_memories"] == 0  # nothing slipped in

    anyio.run(scenario)


def test_legacy_handshake_and_writes_from_other_processes(tmp_path: Path, data_dir: Path) -> None:
    """A 2025-era client works, and the server sees what another process committed."""

    async def scenario() -> None:
        async with Client(stdio_params(data_dir, home=tmp_path), mode="legacy") as client:
            await ok(client, "ingest", {"content": "written by the server"})
            for _ in range(2):  # the second answer comes from the cache
                assert (await ok(client, "stats", {}))["total_memories"] == 1
            with Store.open(data_dir) as cli:  # this test process plays the CLI
                other = cli.ingest("written by another process about zebras")
            after = await ok(client, "stats", {})
            assert after["total_memories"] == 2
            assert after["newest_memory"] == other.created_at
            hits = await ok(client, "search", {"query": "zebras"})
            assert [r["id"] for r in hits["results"]] == [other.id]
            health = await ok(client, "health_check", {})
            assert health["total_memories"] == 2

    anyio.run(scenario)


def test_a_burst_of_calls_neither_fails_nor_stalls(tmp_path: Path, data_dir: Path) -> None:
    """120 calls in flight at once (more than anyio's 40 default threads) all complete."""
    results: list[dict[str, Any]] = []

    async def scenario() -> None:
        async with Client(stdio_params(data_dir, home=tmp_path)) as client:

            async def one(i: int) -> None:
                if i % 3:
                    results.append(await ok(client, "ingest", {"content": f"burst item {i}"}))
                else:
                    results.append(await ok(client, "search", {"query": f"burst item {i}"}))

            async with anyio.create_task_group() as tg:
                for i in range(120):
                    tg.start_soon(one, i)
                with anyio.fail_after(CALL_TIMEOUT_S):  # the transport still answers mid-burst
                    assert len((await client.list_tools()).tools) == len(TOOLS)
            stats = await ok(client, "stats", {})
            assert stats["total_memories"] == 80

    anyio.run(scenario)
    assert len(results) == 120
    assert len({r["id"] for r in results if "id" in r}) == 80
