"""Running the real `vestige` command and the real `vestige-mcp` server as subprocesses.

``run_cli`` runs ``python -m vestige`` (the same entry point as the console script) and
checks that no traceback ever reaches the user.  ``Server`` starts ``vestige-mcp`` with its
stdin kept open on a pipe, speaks just enough MCP (newline-delimited JSON-RPC over stdio) to
know it is serving and to call tools, and is always stopped by pid and reaped.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import apsw
import psutil
import pytest

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

CLI: Final = [sys.executable, "-m", "vestige"]
#: Start-up of a server includes importing the MCP SDK: seconds on a loaded 2-core machine.
SERVER_START_DEADLINE_S: Final = 30.0
SERVER_STOP_DEADLINE_S: Final = 10.0
CLI_DEADLINE_S: Final = 60.0
POLL_S: Final = 0.01


def run_cli(
    *args: str | os.PathLike[str],
    data_dir: Path | None = None,
    env: dict[str, str] | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `vestige ARGS` (``--data-dir`` appended when given); never a traceback."""
    argv = [*CLI, *map(str, args)]
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir)]
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        input=input,
        env=dict(os.environ if env is None else env),
        timeout=CLI_DEADLINE_S,
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def cli_json(*args: str | os.PathLike[str], data_dir: Path | None = None) -> Any:
    result = run_cli(*args, "--json", data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def server_command(data_dir: Path, *extra: str) -> list[str]:
    """The installed `vestige-mcp` script, or the same entry point through the interpreter."""
    script = Path(sys.executable).with_name("vestige-mcp")
    if script.exists():
        return [str(script), "--data-dir", str(data_dir), *extra]
    code = "import sys; from vestige.server import main; sys.exit(main())"
    return [sys.executable, "-c", code, "--data-dir", str(data_dir), *extra]


def tool_json(result: dict[str, Any]) -> Any:
    """The JSON a tool returned (its first text content block)."""
    return json.loads(result["content"][0]["text"])


def holds(pid: int, path: Path) -> bool:
    """Does process ``pid`` have ``path`` open (psutil, as doctor itself looks)?"""
    try:
        return any(
            os.path.realpath(f.path) == os.path.realpath(path)
            for f in psutil.Process(pid).open_files()
        )
    except psutil.NoSuchProcess:
        return False


class Server:
    """A real `vestige-mcp` child: stdin is a pipe we keep open, stdout carries JSON-RPC."""

    def __init__(self, data_dir: Path, log: Path, *extra: str) -> None:
        self.data_dir = data_dir
        self.log = log
        self._next_id = 0
        with log.open("wb") as err:
            self.proc = subprocess.Popen(
                server_command(data_dir, *extra),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        self._buffer = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    # -- JSON-RPC over stdio ----------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(message) + "\n").encode())
        self.proc.stdin.flush()

    def _read_message(self, deadline: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no reply from vestige-mcp; stderr:\n{self.stderr()}")
                if sel.select(remaining):
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        raise AssertionError(f"vestige-mcp closed stdout; stderr:\n{self.stderr()}")
                    self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message

    def request(self, method: str, params: dict[str, Any], deadline_s: float = 30.0) -> Any:
        self._next_id += 1
        rid = self._next_id
        self._send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        deadline = time.monotonic() + deadline_s
        while True:
            message = self._read_message(deadline)
            if message.get("id") == rid:
                assert "error" not in message, message
                return message["result"]

    def call_tool(self, name: str, arguments: dict[str, Any]) -> Any:
        result = self.request("tools/call", {"name": name, "arguments": arguments})
        assert not result.get("isError"), result
        return result

    def start(self, deadline_s: float = SERVER_START_DEADLINE_S) -> Server:
        """Handshake, then wait until it really has the database open."""
        self.request(
            "initialize",
            {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "vestige-tests", "version": "0"},
            },
            deadline_s=deadline_s,
        )
        self._send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        end = time.monotonic() + deadline_s
        database = self.data_dir / "vestige.db"
        while not holds(self.pid, database):
            if self.proc.poll() is not None or time.monotonic() > end:
                raise AssertionError(f"vestige-mcp never opened the database:\n{self.stderr()}")
            time.sleep(POLL_S)
        return self

    # -- stopping -----------------------------------------------------------------------

    def stop(self) -> int:
        """Ask it to stop (SIGINT to this pid only), then reap it; SIGKILL past the deadline."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGINT)
        try:
            code = self.proc.wait(timeout=SERVER_STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.proc.returncode
        self._close_pipes()
        return code

    def kill(self) -> None:
        """SIGKILL this pid and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=SERVER_STOP_DEADLINE_S)
        self._close_pipes()

    def _close_pipes(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None and not pipe.closed:
                with contextlib.suppress(OSError):
                    pipe.close()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start real servers with ``servers(data_dir, *flags)``; every one is stopped and reaped."""
    started: list[Server] = []

    def start(data_dir: Path, *extra: str) -> Server:
        server = Server(data_dir, tmp_path / f"vestige-mcp-{len(started)}.log", *extra)
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.stop()


def damage(db: Path) -> None:
    """Overwrite the cells of the memories table's first page, so quick_check fails.

    Only for a file no process has open (every CLI run has exited; this function's own
    SQLite connection is closed first), which is what makes writing to it acceptable here.
    """
    conn = apsw.Connection(str(db))
    try:
        page = conn.execute(
            "SELECT pageno FROM dbstat WHERE name = 'knowledge_nodes' ORDER BY pageno LIMIT 1"
        ).fetchall()[0][0]
        size = conn.execute("PRAGMA page_size").fetchall()[0][0]
    finally:
        conn.close()
    with db.open("r+b") as f:
        f.seek(page * size - 600)  # the cell content area sits at the end of the page
        f.write(b"\xde\xad\xbe\xef" * 150)


def integrity(db: Path) -> list[str]:
    conn = apsw.Connection(
        f"file:{db}?mode=ro", flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI
    )
    try:
        return [str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall()]
    finally:
        conn.close()


@contextlib.contextmanager
def plain_holder(data_dir: Path) -> Iterator[subprocess.Popen[str]]:
    """A process that is not a server but has the database open (a script using the library).

    Yields once its store is open; on exit, closing its stdin makes it close the store and
    exit, and it is reaped (killed by pid after a deadline).
    """
    code = (
        "import sys; from vestige import Store; s = Store.open(sys.argv[1], create=False); "
        "print('open', flush=True); sys.stdin.read(); s.close()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(data_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "open\n"
        yield holder
    finally:
        assert holder.stdin is not None
        assert holder.stdout is not None
        holder.stdin.close()  # its signal to close the store and exit
        try:
            holder.wait(timeout=10)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait(timeout=10)
        holder.stdout.close()
