"""The real ``vestige-mcp`` over stdio when the client misbehaves or goes away.

Every request gets an answer (a line that is not JSON, a lone surrogate, bytes that are not
UTF-8), notifications and responses get none, and the server stops cleanly on SIGHUP and
when its stdout is closed under it.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cli_helpers import run_cli
from tests.server_helpers import (
    CALL_TIMEOUT_S,
    ServerProcess,
    owner_of,
    server_command,
    server_env,
)
from tests.timing import SHUTDOWN_TIMES_STARTUP, assert_within, startup_s
from vestige import Store
from vestige.owner import LockState, lock_state, read_owners
from vestige.server.stdio import STDOUT_POLL_S

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]

LONE = '"hello \\ud83d"'  # what a JavaScript client sends after cutting "hello 😀" in two


def raw(server: ServerProcess, line: bytes) -> None:
    assert server.proc.stdin is not None
    server.proc.stdin.write(line + b"\n")
    server.proc.stdin.flush()


def next_message(server: ServerProcess, timeout: float = CALL_TIMEOUT_S) -> dict[str, Any]:
    """The next line the server writes, whatever it is."""
    try:
        line = server._lines.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"no answer within {timeout} s: {server.stderr()}") from None
    message: dict[str, Any] = json.loads(line)
    return message


def call_line(rid: int, name: str, arguments: str) -> bytes:
    return (
        f'{{"jsonrpc":"2.0","id":{rid},"method":"tools/call",'
        f'"params":{{"name":"{name}","arguments":{arguments}}}}}'
    ).encode()


def test_a_lone_surrogate_in_the_id_is_answered_with_that_id(
    tmp_path: Path, data_dir: Path
) -> None:
    """The answer echoes the id escaped (``"\\ud83d"``), which is valid JSON in ASCII and
    reads back as the very string the client sent; the server carries on."""
    with ServerProcess(data_dir, home=tmp_path) as srv:
        srv.initialize()
        raw(srv, b'{"jsonrpc":"2.0","id":"\\ud83d","method":"ping"}')
        line = srv._lines.get(timeout=CALL_TIMEOUT_S)
        assert b'"id":"\\ud83d"' in line, line
        answer = json.loads(line)
        assert answer["id"] == "\ud83d"
        assert answer["error"]["code"] == -32602
        assert answer["error"]["message"].startswith("id holds a lone surrogate \\ud83d")
        raw(srv, b'{"jsonrpc":"2.0","id":"x\\udc00y","method":"tools/call","params":{}}')
        assert next_message(srv)["id"] == "x\udc00y"
        assert srv.call_tool("ingest", {"content": "still here"})["isError"] is False
        assert srv.proc.poll() is None
        log = srv.stderr()
    assert srv.proc.returncode == 0, log
    assert "Traceback" not in log


def test_a_malformed_tool_call_says_what_is_wrong(tmp_path: Path, data_dir: Path) -> None:
    """The SDK answered each of these with "Invalid request parameters" and nothing more."""
    calls = {
        b'{"arguments":{}}': "params.name is missing: send the tool's name as a string",
        b'{"name":5}': "params.name is a number, not a tool name",
        b'{"name":"stats","arguments":[]}': "tools/call stats: params.arguments is a list: "
        "send an object of named arguments ({} for none)",
        b'["stats"]': "tools/call params is a list: send an object such as",
    }
    with ServerProcess(data_dir, home=tmp_path) as srv:
        srv.initialize()
        said = {}
        for rid, params in enumerate(calls, start=50):
            raw(srv, b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":%s}' % (rid, params))
            answer = next_message(srv)
            assert (answer["id"], answer["error"]["code"]) == (rid, -32602), answer
            said[params] = answer["error"]["message"]
        assert srv.call_tool("stats", {})["isError"] is False
    for params, expected in calls.items():
        assert expected in said[params], said[params]
        assert said[params].startswith("Invalid params: tools/call")


def test_every_request_line_is_answered(tmp_path: Path, data_dir: Path) -> None:
    with ServerProcess(data_dir, home=tmp_path) as srv:
        srv.initialize()
        raw(srv, b"this is not json")
        assert next_message(srv) == {
            "jsonrpc": "2.0",
            "id": None,
            "error": {
                "code": -32700,
                "message": "Parse error: the line is not JSON (Expecting value at character "
                "0): send one JSON-RPC message per line",
            },
        }
        raw(srv, b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":')  # cut short
        cut = next_message(srv)
        assert (cut["id"], cut["error"]["code"]) == (None, -32700)

        raw(srv, call_line(8, "ingest", f'{{"content":{LONE},"tags":["ok"]}}'))
        lone = next_message(srv)
        assert lone["id"] == 8
        assert lone["error"]["code"] == -32602
        assert lone["error"]["message"] == (
            "tools/call ingest: argument content holds a lone surrogate \\ud83d at character "
            '6 ("hello \\ud83d"): send valid UTF-16 pairs / UTF-8'
        )
        raw(srv, call_line(9, "ingest", f'{{"content":"fine","tags":["a",{LONE}]}}'))
        assert "argument tags[1] holds a lone surrogate" in next_message(srv)["error"]["message"]

        raw(srv, call_line(10, "ingest", '{"content":"café"}'))  # UTF-8: fine
        raw(srv, b'{"jsonrpc":"2.0","id":"s","method":"ping","params":{"x":"caf\xe9"}}')
        both = {m["id"]: m for m in (next_message(srv), next_message(srv))}
        assert both[10]["result"]["isError"] is False
        latin = both["s"]["error"]["message"]
        assert latin.startswith("Parse error: byte ")
        assert latin.endswith("is not UTF-8: send UTF-8 text")

        raw(srv, b'{"jsonrpc":"2.0","id":11}')
        invalid = next_message(srv)
        assert (invalid["id"], invalid["error"]["code"]) == (11, -32600)

        # Notifications and responses are never answered, even when refused: the next line
        # out is the answer to the ping that follows them.
        raw(
            srv,
            b'{"jsonrpc":"2.0","method":"notifications/progress","params":{"m":' + b'"\\udc00"}}',
        )
        raw(srv, b'{"jsonrpc":"2.0","id":99,"result":{"x":"\\ud800"}}')
        raw(srv, b"")  # a blank line is not a message
        raw(srv, b'{"jsonrpc":"2.0","id":12,"method":"ping"}')
        assert next_message(srv) == {"jsonrpc": "2.0", "id": 12, "result": {}}

        # The transport is unharmed and nothing bad was stored.
        good = srv.call_tool("ingest", {"content": "hello 😀 after all that"})
        assert good["isError"] is False
        log = srv.stderr()
    with Store.open(data_dir) as store:
        stored = [m.content for m in store.iter_memories()]
    assert sorted(stored) == ["café", "hello 😀 after all that"]
    assert log.count("WARNING vestige.server.stdio: refused") == 8
    assert "refused request 8 from the client: tools/call ingest: argument content" in log
    assert "Traceback" not in log


def test_sighup_is_a_clean_shutdown(tmp_path: Path, data_dir: Path) -> None:
    """Closing the terminal that started the server: WAL checkpointed, metadata gone."""
    with ServerProcess(data_dir, home=tmp_path) as srv:
        srv.initialize()
        assert (
            srv.call_tool("ingest", {"content": "written before the hang-up"})["isError"] is False
        )
        owner_of(data_dir, srv.pid)
        started = time.monotonic()
        srv.signal(signal.SIGHUP)
        code = srv.wait(10)
        elapsed = time.monotonic() - started
        log = srv.stderr()
    assert code == 0, log
    assert "shutting down: SIGHUP received" in log
    assert_within(
        elapsed,
        times=SHUTDOWN_TIMES_STARTUP,
        baseline_s=startup_s(env=server_env(tmp_path)),
        what="exit on SIGHUP",
    )
    assert lock_state(data_dir) is LockState.FREE
    assert read_owners(data_dir) == []
    wal = data_dir / "vestige.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0, "the WAL was not checkpointed"
    doctor = run_cli("doctor", data_dir=data_dir)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr


def test_sighup_during_start_up_is_clean(tmp_path: Path, data_dir: Path) -> None:
    """Before the event loop takes signals over, SIGHUP unwinds like SIGTERM."""
    with ServerProcess(data_dir, home=tmp_path) as srv:
        owner_of(data_dir, srv.pid)  # the lock is held; the SDK may still be importing
        srv.signal(signal.SIGHUP)
        code = srv.wait(10)
    assert code == 0, srv.stderr()
    assert read_owners(data_dir) == []
    assert lock_state(data_dir) is LockState.FREE


INIT = (
    b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25",'
    b'"capabilities":{},"clientInfo":{"name":"t","version":"0"}}}'
)


@pytest.mark.parametrize("then_call", [False, True], ids=["idle", "then-a-request"])
def test_a_closed_stdout_is_noticed_and_the_exit_is_clean(
    tmp_path: Path, data_dir: Path, then_call: bool
) -> None:
    """The client closes our stdout and keeps stdin open: exit 0 at once, no traceback.

    Our own Popen: no reader thread may hold the pipe, or closing it would wait for that.
    """
    err_path = tmp_path / "server.err"
    with err_path.open("wb") as err:
        proc = subprocess.Popen(
            server_command("--data-dir", str(data_dir)),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            env=server_env(tmp_path),
            cwd=tmp_path,
        )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        proc.stdin.write(INIT + b"\n")
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline())["id"] == 1
        owner_of(data_dir, proc.pid)
        proc.stdout.close()  # stdin stays open
        started = time.monotonic()
        if then_call:
            proc.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
            proc.stdin.write(call_line(50, "stats", "{}") + b"\n")
            proc.stdin.flush()
        code = proc.wait(10)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdin.close()
    log = err_path.read_text()
    assert code == 0, log
    assert "shutting down: the client closed stdout" in log
    for bad in ("Traceback", "ExceptionGroup", "BrokenPipeError"):
        assert bad not in log, log
    assert_within(
        elapsed,
        times=SHUTDOWN_TIMES_STARTUP,
        baseline_s=startup_s(env=server_env(tmp_path)),
        what="exit after stdout was closed",
        plus_s=STDOUT_POLL_S,
        plus_why="the stdout watch's poll interval",
    )
    assert read_owners(data_dir) == []
    assert lock_state(data_dir) is LockState.FREE


def test_requests_piped_then_stdin_closed_are_all_answered(tmp_path: Path, data_dir: Path) -> None:
    """`printf ... | vestige-mcp`: stdin ends right after the requests; each gets its answer."""
    lines = [
        INIT,
        b'{"jsonrpc":"2.0","method":"notifications/initialized"}',
        b'{"jsonrpc":"2.0","id":2,"method":"ping"}',
        call_line(3, "ingest", '{"content":"piped, then stdin closed"}'),
        call_line(4, "stats", "{}"),
    ]
    done = subprocess.run(
        server_command("--data-dir", str(data_dir)),
        input=b"\n".join(lines) + b"\n",
        capture_output=True,
        env=server_env(tmp_path),
        cwd=tmp_path,
        timeout=CALL_TIMEOUT_S * 3,
        check=False,
    )
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 0, done.stderr.decode()
    assert sorted(a["id"] for a in answers) == [1, 2, 3, 4]  # concurrent: any order
    assert all("error" not in a and not a["result"].get("isError") for a in answers[1:])
    with Store.open(data_dir, create=False) as store:
        assert store.stats().total_memories == 1
