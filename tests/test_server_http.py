"""``vestige-mcp --transport http``: bearer token, DNS-rebinding checks, several clients."""

from __future__ import annotations

import secrets
import signal
import stat
import time
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

from tests.server_helpers import (
    CALL_TIMEOUT_S,
    START_TIMEOUT_S,
    ServerProcess,
    free_port,
    owner_of,
    server_env,
    wait_for,
)
from tests.timing import SHUTDOWN_TIMES_STARTUP, assert_within, startup_s
from vestige.owner import LockState, lock_state, read_owners

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"},
    },
}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def post(url: str, headers: dict[str, str]) -> httpx2.Response:
    return httpx2.post(url, json=INIT, headers={**ACCEPT, **headers}, timeout=CALL_TIMEOUT_S)


def test_http_needs_the_token_and_serves_two_clients_at_once(
    tmp_path: Path, data_dir: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    with ServerProcess(data_dir, "--transport", "http", "--port", str(port), home=tmp_path) as srv:
        info = owner_of(data_dir, srv.pid)
        assert (info.transport, info.endpoint) == ("http", url)
        assert wait_for(lambda: "listening on" in srv.stderr(), START_TIMEOUT_S)
        token_file = data_dir / "auth_token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert len(token) >= 32

        missing = post(url, {})
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert post(url, {"Authorization": "Bearer wrong-token"}).status_code == 401
        bearer = {"Authorization": f"Bearer {token}"}
        assert post(url, {**bearer, "Host": "evil.example:80"}).status_code == 421
        assert post(url, {**bearer, "Origin": "http://evil.example"}).status_code == 403
        assert post(url, bearer).status_code == 200

        seen: dict[str, Any] = {}

        async def client(name: str, mode: str) -> None:
            timeout = httpx2.Timeout(CALL_TIMEOUT_S, read=60)
            async with (
                httpx2.AsyncClient(headers=bearer, timeout=timeout) as http,
                Client(streamable_http_client(url, http_client=http), mode=mode) as mcp,
            ):
                for i in range(15):
                    result = await mcp.call_tool(
                        "ingest",
                        {"content": f"{name} says hello over http, note {i}"},
                        read_timeout_seconds=CALL_TIMEOUT_S,
                    )
                    assert not result.is_error, result.content
                found = await mcp.call_tool("search", {"query": "hello http", "limit": 100})
                seen[name] = found.structured_content["total"]

        async def both() -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(client, "alice", "auto")
                tg.start_soon(client, "bob", "legacy")

        anyio.run(both)
        assert seen["alice"] >= 15
        assert seen["bob"] >= 15
        assert max(seen.values()) == 30  # the later one saw every write, its own and the other's

        srv.signal(signal.SIGTERM)
        started = time.monotonic()
        assert srv.wait(10) == 0
        elapsed = time.monotonic() - started
    assert_within(
        elapsed,
        times=SHUTDOWN_TIMES_STARTUP,
        baseline_s=startup_s(env=server_env(tmp_path)),
        what="HTTP server exit on SIGTERM",
    )
    assert "shutting down: SIGTERM received" in srv.stderr()
    assert lock_state(data_dir) is LockState.FREE
    assert read_owners(data_dir) == []


def test_http_token_from_the_environment(tmp_path: Path, data_dir: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    token = secrets.token_urlsafe(24)
    env = {"VESTIGE_AUTH_TOKEN": token}
    with ServerProcess(
        data_dir, "--transport", "http", "--port", str(port), home=tmp_path, env=env
    ) as srv:
        owner_of(data_dir, srv.pid)
        assert wait_for(lambda: "listening on" in srv.stderr(), START_TIMEOUT_S)
        assert post(url, {"Authorization": f"Bearer {token}"}).status_code == 200
        assert post(url, {"Authorization": "Bearer " + token[:-1]}).status_code == 401
        assert not (data_dir / "auth_token").exists()
