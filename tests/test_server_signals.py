"""Shutdown of a real ``vestige-mcp``: SIGTERM, SIGINT, stdin EOF, and a dead parent."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.server_helpers import (
    START_TIMEOUT_S,
    ServerProcess,
    owner_of,
    server_command,
    server_env,
    wait_for,
)
from tests.timing import SHUTDOWN_TIMES_STARTUP, assert_within, startup_s
from vestige import Store, similarity
from vestige.owner import LockState, lock_state, read_owners
from vestige.server.lifecycle import PARENT_POLL_S

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]

IN_FLIGHT = 30


def assert_released_and_checkpointed(data_dir: Path) -> None:
    assert lock_state(data_dir) is LockState.FREE
    assert read_owners(data_dir) == []
    wal = data_dir / "vestige.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0, "the WAL was not checkpointed"


@pytest.mark.parametrize(
    ("how", "busy"),
    [("SIGTERM", True), ("SIGINT", True), ("SIGINT", False), ("EOF", True)],
    ids=["sigterm-busy", "sigint-busy", "sigint-idle", "eof-busy"],
)
def test_shutdown_is_clean_and_fast(tmp_path: Path, data_dir: Path, how: str, busy: bool) -> None:
    with ServerProcess(data_dir, home=tmp_path) as server:
        server.initialize()
        assert server.call_tool("ingest", {"content": "before the stop"})["isError"] is False
        owner_of(data_dir, server.pid)
        if busy:  # fire writes without waiting: some are mid-transaction when we stop
            for i in range(IN_FLIGHT):
                args = {"content": f"in flight number {i}"}
                server.send("tools/call", {"name": "ingest", "arguments": args})
        started = time.monotonic()
        if how == "EOF":
            server.close_stdin()
        else:
            server.signal(getattr(signal, how))
        code = server.wait(10)
        elapsed = time.monotonic() - started
        replies = server.drain_responses()
        log = server.stderr()
    assert code == 0, log
    baseline = startup_s(env=server_env(tmp_path))
    assert_within(elapsed, times=SHUTDOWN_TIMES_STARTUP, baseline_s=baseline, what=f"exit on {how}")
    reason = "stdin closed" if how == "EOF" else f"{how} received"
    assert f"shutting down: {reason}" in log
    assert "Traceback" not in log
    assert_released_and_checkpointed(data_dir)

    acked = {
        r["result"]["structuredContent"]["memory"]["content"]
        for r in replies
        if "result" in r and not r["result"]["isError"]
    }
    sent = {f"in flight number {i}" for i in range(IN_FLIGHT)} if busy else set()
    with Store.open(data_dir) as store:
        memories = list(store.iter_memories())
        indexed = {
            m.id: {h.memory.id for h in store.search(m.content, limit=IN_FLIGHT + 1)}
            for m in memories
        }
        with store._db.read() as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    stored = [m.content for m in memories]
    assert "before the stop" in stored
    assert acked <= set(stored)  # every acknowledged write survived
    # None half-made: every row is one of the writes sent, stored once, complete with its
    # hash and its full-text entry.
    assert len(stored) == len(set(stored))
    assert set(stored) <= sent | {"before the stop"}
    for m in memories:
        assert m.content_hash == similarity.content_hash(m.content)
        assert m.id in indexed[m.id], f"{m.content!r} is missing from the search index"


WRAPPER = """
import subprocess, sys, time
server = subprocess.Popen(sys.argv[1:], stdin=0, stdout=subprocess.DEVNULL)
print(server.pid, flush=True)
time.sleep(120)
"""


def test_server_exits_when_its_parent_dies(tmp_path: Path, data_dir: Path) -> None:
    """A host that dies without closing our stdin (a wrapper keeps the pipe open)."""
    read_end, write_end = os.pipe()  # we keep write_end open: the server never sees EOF
    errors = (tmp_path / "server.err").open("wb")
    wrapper = subprocess.Popen(
        [sys.executable, "-c", WRAPPER, *server_command("--data-dir", str(data_dir))],
        stdin=read_end,
        stdout=subprocess.PIPE,
        stderr=errors,
        env=server_env(tmp_path),
        text=True,
    )
    os.close(read_end)
    server_pid = 0
    try:
        assert wrapper.stdout is not None
        server_pid = int(wrapper.stdout.readline())
        owner_of(data_dir, server_pid, timeout=START_TIMEOUT_S)
        assert wait_for(lambda: "serving" in (tmp_path / "server.err").read_text(), 10)
        wrapper.kill()
        wrapper.wait(10)
        killed = time.monotonic()

        def gone() -> bool:
            try:
                return psutil.Process(server_pid).status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return True

        assert wait_for(gone, timeout=10), "the orphaned server kept running"
        elapsed = time.monotonic() - killed
        assert_within(
            elapsed,
            times=SHUTDOWN_TIMES_STARTUP,
            baseline_s=startup_s(env=server_env(tmp_path)),
            what="exit after the parent died",
            plus_s=PARENT_POLL_S,
            plus_why="the watchdog's poll interval",
        )
        assert_released_and_checkpointed(data_dir)
        log = (tmp_path / "server.err").read_text()
        assert f"shutting down: parent process {wrapper.pid} exited" in log
    finally:
        os.close(write_end)
        if wrapper.poll() is None:
            wrapper.kill()
            wrapper.wait(10)
        if server_pid and psutil.pid_exists(server_pid):
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(server_pid).kill()
        if wrapper.stdout is not None:
            wrapper.stdout.close()
        errors.close()
