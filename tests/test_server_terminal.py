"""`vestige-mcp` started by a person on a terminal says what it is; started by a client, nothing.

A real server with a real pseudo-terminal as stdin: the banner goes to stderr, a typed line
that is not JSON-RPC gets the same JSON-RPC error on stdout as on a pipe plus a one-line hint
on stderr, and Ctrl-D ends it.  On a pipe, stderr has neither and stdout is unchanged.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest

from tests.server_helpers import (
    CALL_TIMEOUT_S,
    START_TIMEOUT_S,
    free_port,
    server_command,
    server_env,
    stop_detached_owners,
    wait_for,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [
    pytest.mark.multiprocess,
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal"),
]

#: Words of the banner, one from each thing it must say.
BANNER: Final = (
    "an MCP server",
    "An MCP client such as Claude Code starts it",
    "vestige config claude-code",
    "Ctrl-C, or Ctrl-D",
    "vestige doctor",
    'vestige ingest --data-dir {d} "a fact to keep"',
    "vestige search",
)
HINT: Final = "that line is not a JSON-RPC message"
TYPED: Final = b"hello\n"
END_OF_INPUT: Final = b"\x04"  # Ctrl-D at the start of a line


def text_of(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


@contextlib.contextmanager
def server(
    data_dir: Path, home: Path, stdin: int, *args: str
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A real vestige-mcp with ``stdin`` as its fd 0; stopped by pid if still running."""
    log = home / f"server-{len(list(home.glob('server-*')))}.err"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            server_command("--data-dir", str(data_dir), *args),
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=err,
            env=server_env(home),
            cwd=home,
        )
    try:
        yield proc, log
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(CALL_TIMEOUT_S)
        if proc.stdout is not None:
            proc.stdout.close()


def first_line(proc: subprocess.Popen[bytes]) -> bytes:
    assert proc.stdout is not None
    return proc.stdout.readline()


def test_on_a_terminal_it_says_what_it_is_and_answers_a_typed_line_with_a_hint(
    data_dir: Path, tmp_path: Path
) -> None:
    main, child = pty.openpty()
    try:
        with server(data_dir, tmp_path, child) as (proc, log):
            os.close(child)
            child = -1
            assert wait_for(lambda: "serving" in text_of(log), START_TIMEOUT_S), text_of(log)
            banner = text_of(log).split(" INFO ", 1)[0]
            for words in BANNER:
                assert words.format(d=data_dir) in banner, banner
            assert HINT not in banner
            os.write(main, TYPED)
            on_terminal = first_line(proc)
            assert wait_for(lambda: HINT in text_of(log), CALL_TIMEOUT_S), text_of(log)
            assert text_of(log).count(HINT) == 1
            os.write(main, END_OF_INPUT)
            assert proc.wait(CALL_TIMEOUT_S) == 0, text_of(log)
            assert proc.stdout is not None
            rest = proc.stdout.read()
    finally:
        os.close(main)
        if child >= 0:
            os.close(child)
    assert rest == b""  # stdout carried the one JSON-RPC answer and nothing else
    assert json.loads(on_terminal)["error"]["code"] == -32700

    # The same line on a pipe: the same bytes on stdout, and no banner and no hint.
    with server(data_dir, tmp_path, subprocess.PIPE) as (proc, log):
        assert proc.stdin is not None
        proc.stdin.write(TYPED)
        proc.stdin.flush()
        on_pipe = first_line(proc)
        proc.stdin.close()
        assert proc.wait(CALL_TIMEOUT_S) == 0, text_of(log)
    assert on_pipe == on_terminal
    piped = text_of(log)
    assert "refused a line from the client" in piped  # the log line, as before
    assert "an MCP server" not in piped
    assert "vestige config" not in piped
    assert HINT not in piped


def test_an_http_server_on_a_terminal_gives_its_url_and_stops_with_ctrl_c(
    data_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    main, child = pty.openpty()
    try:
        with server(data_dir, tmp_path, child, "--transport", "http", "--port", str(port)) as (
            proc,
            log,
        ):
            os.close(child)
            child = -1
            assert wait_for(lambda: "listening on" in text_of(log), START_TIMEOUT_S), text_of(log)
            banner = text_of(log).split(" INFO ", 1)[0]
            assert f"serving streamable HTTP at http://127.0.0.1:{port}/mcp" in banner, banner
            # The command must configure clients for this server's port, not the default's.
            assert f"vestige config http --data-dir {data_dir} --port {port}" in banner
            assert "Stop it:           Ctrl-C\n" in banner
            assert "Ctrl-D" not in banner  # an HTTP server does not read stdin
            proc.send_signal(signal.SIGINT)
            assert proc.wait(CALL_TIMEOUT_S) == 0, text_of(log)
    finally:
        os.close(main)
        if child >= 0:
            os.close(child)


def test_an_attached_window_on_a_terminal_says_so_and_hints_too(
    data_dir: Path, tmp_path: Path
) -> None:
    main, child = pty.openpty()
    try:
        with server(data_dir, tmp_path, child, "--attach") as (proc, log):
            os.close(child)
            child = -1
            assert wait_for(lambda: "started the owner" in text_of(log), START_TIMEOUT_S)
            banner = text_of(log).split(" INFO ", 1)[0]
            assert "through the server that owns it (--attach)" in banner, banner
            assert "vestige config claude-code" in banner
            os.write(main, TYPED)
            assert json.loads(first_line(proc))["error"]["code"] == -32700
            assert wait_for(lambda: HINT in text_of(log), CALL_TIMEOUT_S), text_of(log)
            os.write(main, END_OF_INPUT)
            assert proc.wait(CALL_TIMEOUT_S) == 0, text_of(log)
    finally:
        os.close(main)
        if child >= 0:
            os.close(child)
        # The detached owner ends by itself once its last window left; else stop it by pid.
        stop_detached_owners(data_dir, START_TIMEOUT_S)
