"""Every agent senses every write: a change by any process reaches every subscribed client.

Real servers on one data directory, real writers in other processes (a second server, the
CLI, this test process through the library), and MCP clients subscribed the two ways a
client can: ``resources/subscribe`` (handshake-era clients) and a ``subscriptions/listen``
stream (2026-07-28 clients).  A notification only says that a resource changed; the client
then asks ``memory_changelog`` for what came after the last change it saw.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import anyio
import httpx2
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp.types import ResourceUpdatedNotification

from tests.server_helpers import (
    CALL_TIMEOUT_S,
    START_TIMEOUT_S,
    ServerProcess,
    free_port,
    owner_of,
    server_command,
    server_env,
    stdio_params,
    tool_text,
    wait_for,
)
from vestige import Store
from vestige.owner import read_owners
from vestige.server.notify import NOTIFY_MIN_INTERVAL_S

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow, pytest.mark.timeout(180)]

CHANGES: Final = "memory://changes"
RECENT: Final = "memory://recent"
STATS: Final = "memory://stats"
#: How long a notification may take before the test calls it lost: a liveness deadline for
#: a loaded machine, not a speed target (the load test measures the delay).
NOTICE_WAIT_S: Final = 20.0
#: No decay pass during a test: its entry would be one more change to be told about.
QUIET: Final = {"VESTIGE_CONSOLIDATION_INTERVAL_HOURS": "1000"}


class Notices:
    """The resource notifications one client received, with the time each arrived."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, str]] = []

    async def __call__(self, message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            self.seen.append((time.monotonic(), str(message.params.uri)))

    def uris(self) -> list[str]:
        return [uri for _, uri in self.seen]

    async def wait(self, uri: str, after: float = 0.0) -> float:
        """The arrival time of the first notification of ``uri`` that came after ``after``."""
        with anyio.fail_after(NOTICE_WAIT_S):
            while True:
                for at, seen in self.seen:
                    if seen == uri and at > after:
                        return at
                await anyio.sleep(0.01)


@contextlib.asynccontextmanager
async def subscribed(
    data_dir: Path, home: Path, *uris: str, args: tuple[str, ...] = ("--shared-writers",)
) -> AsyncIterator[tuple[Client, Notices]]:
    notices = Notices()
    params = stdio_params(data_dir, *args, home=home, **QUIET)
    async with Client(params, mode="legacy", message_handler=notices) as client:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)  # 2025-era API, on purpose
            for uri in uris:
                await client.subscribe_resource(uri)
        yield client, notices


async def ok(client: Client, name: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(name, args, read_timeout_seconds=CALL_TIMEOUT_S)
    assert not result.is_error, tool_text(result)
    assert isinstance(result.structured_content, dict)
    return result.structured_content


def cli(home: Path, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("vestige")), "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        env=server_env(home),
        timeout=CALL_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


def test_a_write_through_another_server_reaches_a_subscriber(
    tmp_path: Path, data_dir: Path
) -> None:
    async def scenario() -> None:
        writer_params = stdio_params(data_dir, "--shared-writers", home=tmp_path, **QUIET)
        async with (
            subscribed(data_dir, tmp_path, CHANGES) as (b, notices),
            Client(writer_params, mode="legacy") as a,
        ):
            start = (await ok(b, "memory_changelog", {}))["newest_seq"]
            sent = time.monotonic()
            made = await ok(a, "ingest", {"content": "the build server moved to rack 7"})
            await notices.wait(CHANGES, after=sent)
            page = await ok(b, "memory_changelog", {"since_seq": start})
            [change] = page["changes"]
            assert (change["kind"], change["memory_id"]) == ("created", made["id"])
            a_pid = (await ok(a, "health_check", {}))["server"]["pid"]
            assert change["process"] == f"vestige-mcp pid {a_pid}"  # written by A, not B

            # The CLI is another process too; so is this test, through the library.
            sent = time.monotonic()
            cli(tmp_path, data_dir, "ingest", "the coffee machine is on floor 2")
            await notices.wait(CHANGES, after=sent)
            sent = time.monotonic()
            with Store.open(data_dir) as store:
                mine = store.ingest("the library writes too").id
            await notices.wait(CHANGES, after=sent)
            page = await ok(b, "memory_changelog", {"since_seq": change["seq"]})
            assert [c["transport"] for c in page["changes"]] == ["library", "cli"]  # newest first
            assert page["changes"][0]["memory_id"] == mine

    anyio.run(scenario)


def test_a_2026_client_hears_through_its_listen_stream(tmp_path: Path, data_dir: Path) -> None:
    async def scenario() -> None:
        params = stdio_params(data_dir, "--shared-writers", home=tmp_path, **QUIET)
        async with Client(params) as b, Client(params) as a:
            assert b.protocol_version >= "2026-07-28"
            async with b.listen(resource_subscriptions=[CHANGES]) as events:
                await ok(a, "ingest", {"content": "a modern client is told as well"})
                with anyio.fail_after(NOTICE_WAIT_S):
                    async for event in events:
                        assert event.uri == CHANGES  # type: ignore[union-attr]
                        break

    anyio.run(scenario)


def test_a_burst_is_announced_at_a_bounded_rate_and_its_end_always(
    tmp_path: Path, data_dir: Path
) -> None:
    writes = 300

    async def scenario() -> None:
        async with subscribed(data_dir, tmp_path, CHANGES) as (_b, notices):
            began = time.monotonic()
            with Store.open(data_dir) as store:
                for i in range(writes):
                    store.ingest(f"burst memory number {i} about the migration plan")
                    await anyio.sleep(0.005)  # spread over several windows
            last_commit = time.monotonic()
            await notices.wait(CHANGES, after=last_commit)  # the end is never dropped
            await anyio.sleep(3 * NOTIFY_MIN_INTERVAL_S)  # let any straggler arrive
            elapsed = time.monotonic() - began
            count = notices.uris().count(CHANGES)
            # At most one per window, plus the first and the last: the rule itself.  The
            # burst spans several windows, so its first and its end are two notifications.
            assert 2 <= count <= elapsed / NOTIFY_MIN_INTERVAL_S + 2, (count, elapsed)
            assert count < writes / 10, count  # a burst is not a notification per write

    anyio.run(scenario)


def test_each_resource_is_announced_only_when_it_changed(tmp_path: Path, data_dir: Path) -> None:
    async def scenario() -> None:
        async with subscribed(data_dir, tmp_path, CHANGES, RECENT, STATS) as (b, notices):
            made = await ok(b, "ingest", {"content": "the VPN needs the new certificate"})
            await notices.wait(RECENT)
            await anyio.sleep(2 * NOTIFY_MIN_INTERVAL_S)  # out of the window of that write
            mark = time.monotonic()
            await ok(b, "promote_memory", {"id": made["id"]})
            await notices.wait(STATS, after=mark)
            await notices.wait(CHANGES, after=mark)
            later = [uri for at, uri in notices.seen if at > mark]
            assert RECENT not in later  # a promotion leaves the recent list as it was

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                await b.unsubscribe_resource(CHANGES)
            await anyio.sleep(2 * NOTIFY_MIN_INTERVAL_S)
            mark = time.monotonic()
            cli(tmp_path, data_dir, "ingest", "written after the unsubscribe")
            await notices.wait(STATS, after=mark)  # announced in the same look as changes
            await anyio.sleep(2 * NOTIFY_MIN_INTERVAL_S)
            assert CHANGES not in [uri for at, uri in notices.seen if at > mark]

    anyio.run(scenario)


def test_a_resource_that_announces_nothing_is_refused_clearly(
    tmp_path: Path, data_dir: Path
) -> None:
    async def scenario() -> None:
        async with subscribed(data_dir, tmp_path) as (b, _):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                with pytest.raises(Exception, match="memory://changes") as refused:
                    await b.subscribe_resource("memory://everything")
            assert "cannot subscribe to 'memory://everything'" in str(refused.value)
            assert (await ok(b, "stats", {}))["total_memories"] == 0  # still serving

    anyio.run(scenario)


def test_an_attached_window_keeps_hearing_across_an_owner_kill(
    tmp_path: Path, data_dir: Path
) -> None:
    home = tmp_path
    with ServerProcess(data_dir, "--attach", home=home, env=QUIET) as window:
        window.initialize()
        reply = window.response(window.send("resources/subscribe", {"uri": CHANGES}))
        assert reply.get("result") == {}, reply
        cli(home, data_dir, "ingest", "before the owner dies")
        window.notification("notifications/resources/updated")
        [owner] = [o.pid for o in read_owners(data_dir) if o.alive]
        try:
            os.kill(owner, signal.SIGKILL)
            # The next owner announces what nobody could while no owner was there ...
            note = window.notification("notifications/resources/updated", START_TIMEOUT_S)
            assert note["params"] == {"uri": CHANGES}
            # ... and the subscription lives on in it.
            cli(home, data_dir, "ingest", "after the owner died")
            window.notification("notifications/resources/updated", NOTICE_WAIT_S)
            result = window.call_tool("memory_changelog", {"limit": 1})
            assert result["structuredContent"]["changes"][0]["transport"] == "cli"
        finally:
            window.stop()
            for info in read_owners(data_dir):
                if info.alive:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(info.pid, signal.SIGKILL)


def test_http_clients_of_both_eras_hear_a_cli_write(tmp_path: Path, data_dir: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    with ServerProcess(
        data_dir, "--transport", "http", "--port", str(port), home=tmp_path, env=QUIET
    ) as srv:
        owner_of(data_dir, srv.pid)
        assert wait_for(lambda: "listening on" in srv.stderr(), START_TIMEOUT_S)
        bearer = {"Authorization": f"Bearer {(data_dir / 'auth_token').read_text().strip()}"}

        async def scenario() -> None:
            notices = Notices()
            timeout = httpx2.Timeout(CALL_TIMEOUT_S, read=60)
            async with (
                httpx2.AsyncClient(headers=bearer, timeout=timeout) as old_http,
                httpx2.AsyncClient(headers=bearer, timeout=timeout) as new_http,
                Client(
                    streamable_http_client(url, http_client=old_http),
                    mode="legacy",
                    message_handler=notices,
                ) as old,
                Client(streamable_http_client(url, http_client=new_http)) as new,
            ):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", MCPDeprecationWarning)
                    await old.subscribe_resource(CHANGES)
                async with new.listen(resource_subscriptions=[CHANGES]) as events:
                    sent = time.monotonic()
                    await anyio.to_thread.run_sync(
                        lambda: cli(tmp_path, data_dir, "ingest", "heard over HTTP")
                    )
                    await notices.wait(CHANGES, after=sent)
                    with anyio.fail_after(NOTICE_WAIT_S):
                        async for event in events:
                            assert event.uri == CHANGES  # type: ignore[union-attr]
                            break

        anyio.run(scenario)


def test_a_window_that_leaves_takes_its_subscriptions_along(tmp_path: Path, data_dir: Path) -> None:
    """The owner follows the changelog only while someone listens: once the last
    subscribed window left, it stops (the idle cost goes back to nothing)."""
    with ServerProcess(data_dir, home=tmp_path, env=QUIET) as owner:
        owner.initialize()
        with ServerProcess(data_dir, "--attach", home=tmp_path, env=QUIET) as window:
            window.initialize()
            reply = window.response(window.send("resources/subscribe", {"uri": CHANGES}))
            assert reply.get("result") == {}, reply
            cli(tmp_path, data_dir, "ingest", "heard by the attached window")
            window.notification("notifications/resources/updated", NOTICE_WAIT_S)
            assert "a client subscribed: following the changelog" in owner.stderr()
        assert wait_for(
            lambda: "stopped following the changelog" in owner.stderr(), NOTICE_WAIT_S
        ), owner.stderr()
        assert owner.call_tool("stats", {})["structuredContent"]["total_memories"] == 1


def test_a_client_that_stopped_reading_holds_up_only_itself(tmp_path: Path, data_dir: Path) -> None:
    """A subscribed client that stopped reading (the owner's own stdio client here: its
    answers pile up unread until the pipe is full and the owner's write blocks) must not
    keep the attached windows from being told: each connection is written to in a task of
    its own."""
    with Store.open(data_dir) as store:
        for i in range(20):
            store.ingest(f"bulky memory {i} " + "lorem ipsum dolor " * 60)
    stuck = subprocess.Popen(
        server_command("--data-dir", str(data_dir)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,  # never read
        stderr=subprocess.DEVNULL,
        env=server_env(tmp_path, **QUIET),
        cwd=tmp_path,
    )
    try:
        owner_of(data_dir, stuck.pid)
        assert stuck.stdin is not None
        setup: list[dict[str, Any]] = [
            {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "stuck", "version": "0"},
                },
            },
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "resources/subscribe",
                "params": {"uri": CHANGES},
            },
        ]
        reads = [
            {"jsonrpc": "2.0", "id": 2 + i, "method": "resources/read", "params": {"uri": RECENT}}
            for i in range(100)  # about 13 KB each: more than a pipe holds, never read
        ]
        stuck.stdin.write(b"".join(json.dumps(m).encode() + b"\n" for m in setup + reads))
        stuck.stdin.flush()
        with ServerProcess(data_dir, "--attach", home=tmp_path, env=QUIET) as window:
            window.initialize()
            reply = window.response(window.send("resources/subscribe", {"uri": CHANGES}))
            assert reply.get("result") == {}, reply
            for n in range(3):
                cli(tmp_path, data_dir, "ingest", f"the others still hear this, take {n}")
                window.notification("notifications/resources/updated", NOTICE_WAIT_S)
            assert window.call_tool("stats", {})["structuredContent"]["total_memories"] == 23
    finally:
        stuck.kill()
        stuck.wait(10)
        for pipe in (stuck.stdin, stuck.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
