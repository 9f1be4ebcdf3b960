"""Start real ``vestige-mcp`` processes for the server tests, talk MCP to them, reap them.

Two ways to talk:

- the SDK's ``Client`` over stdio (``stdio_params``), which spawns and reaps the server
  itself: for tool behaviour;
- ``ServerProcess``: our own ``Popen`` plus a few hand-written JSON-RPC lines, for the tests
  that need the pid, exact exit codes and timings, or signals sent mid-call.

Every process is stopped by pid (stdin EOF, then SIGTERM, then SIGKILL, each with a
deadline) and always reaped.  The child gets an explicit environment: the SDK's client does
not pass ours through, and a test must never touch the user's real data directory.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any, Final

from mcp.client.stdio import StdioServerParameters

from vestige.owner import OwnerInfo, read_owners

CONSOLE_SCRIPT: Final = Path(sys.executable).with_name("vestige-mcp")
#: Generous: a cold start imports the MCP SDK (~1 s) on a loaded 2-core machine.
START_TIMEOUT_S: Final = 20.0
CALL_TIMEOUT_S: Final = 20.0
PROTOCOL_VERSION: Final = "2025-11-25"


def server_command(*args: str, console_script: bool = True) -> list[str]:
    """``vestige-mcp ARGS`` (the installed console script) or ``python -m vestige.server``."""
    if console_script:
        assert CONSOLE_SCRIPT.exists(), f"{CONSOLE_SCRIPT} missing: pip install -e ."
        return [str(CONSOLE_SCRIPT), *args]
    return [sys.executable, "-m", "vestige.server", *args]


def server_env(home: Path, **extra: str) -> dict[str, str]:
    """The child's whole environment: a temp HOME, INFO logs, nothing from the user."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "VESTIGE_LOG_LEVEL": "INFO",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.update(extra)
    return env


def stdio_params(
    data_dir: Path, *args: str, home: Path, console_script: bool = True, **env: str
) -> StdioServerParameters:
    command = server_command("--data-dir", str(data_dir), *args, console_script=console_script)
    return StdioServerParameters(
        command=command[0], args=command[1:], env=server_env(home, **env), cwd=str(home)
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Any, timeout: float, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def owner_of(data_dir: Path, pid: int, timeout: float = START_TIMEOUT_S) -> OwnerInfo:
    """The published metadata of ``pid`` once it holds the lock."""
    found: list[OwnerInfo] = []

    def published() -> bool:
        found[:] = [o for o in read_owners(data_dir) if o.pid == pid and o.alive]
        return bool(found)

    assert wait_for(published, timeout), f"pid {pid} never published ownership of {data_dir}"
    return found[0]


def stop_detached_owners(data_dir: Path, wait_s: float = START_TIMEOUT_S) -> None:
    """The owner an ``--attach`` proxy started ends by itself once its last window left; one
    still running after ``wait_s`` is killed by its pid (never by name)."""
    for owner in read_owners(data_dir):
        if owner.alive and not wait_for(lambda o=owner: not _running(o.pid), wait_s):
            os.kill(owner.pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class ServerProcess:
    """A ``vestige-mcp`` started with Popen, spoken to with raw JSON-RPC lines."""

    def __init__(
        self,
        data_dir: Path,
        *args: str,
        home: Path,
        console_script: bool = True,
        env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.http = "http" in args  # an HTTP server ignores stdin: stop it with SIGTERM
        self.stderr_path = home / f"server-{time.monotonic_ns()}.err"
        self._stderr: IO[bytes] = self.stderr_path.open("wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            server_command("--data-dir", str(data_dir), *args, console_script=console_script),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=server_env(home, **(env or {})),
            cwd=home,
        )
        self._ids = itertools.count(1)
        self._lines: queue.Queue[bytes] = queue.Queue()
        self._responses: dict[int, dict[str, Any]] = {}
        #: Notifications from the server, oldest first, until taken by ``notification``.
        self.notifications: list[dict[str, Any]] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)

    # -- JSON-RPC --------------------------------------------------------------------

    def send(self, method: str, params: dict[str, Any] | None = None) -> int:
        """Send a request without waiting; returns its id."""
        rid = next(self._ids)
        self._write({"jsonrpc": "2.0", "id": rid, "method": method, "params": params or {}})
        return rid

    def notify(self, method: str) -> None:
        self._write({"jsonrpc": "2.0", "method": method})

    def _write(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()

    def response(self, rid: int, timeout: float = CALL_TIMEOUT_S) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while rid not in self._responses:
            if not self._take_line(deadline):
                raise TimeoutError(f"no response to request {rid}: {self.stderr()}")
        return self._responses.pop(rid)

    def notification(self, method: str, timeout: float = CALL_TIMEOUT_S) -> dict[str, Any]:
        """The oldest notification ``method`` received (waiting for one); others stay."""
        deadline = time.monotonic() + timeout
        while True:
            for i, note in enumerate(self.notifications):
                if note["method"] == method:
                    return self.notifications.pop(i)
            if not self._take_line(deadline):
                raise TimeoutError(f"no {method} notification: {self.stderr()}")

    def _take_line(self, deadline: float) -> bool:
        """Read one message into the responses or the notifications; False at the deadline."""
        try:
            line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return False
        message = json.loads(line)
        if "id" in message and "method" not in message:
            self._responses[message["id"]] = message
        elif "id" not in message:
            self.notifications.append(message)
        return True

    def drain_responses(self) -> list[dict[str, Any]]:
        """Every response already received (after the server exited)."""
        while True:
            try:
                message = json.loads(self._lines.get_nowait())
            except queue.Empty:
                break
            if "id" in message:
                self._responses[message["id"]] = message
        out = list(self._responses.values())
        self._responses.clear()
        return out

    def initialize(self, timeout: float = START_TIMEOUT_S) -> dict[str, Any]:
        reply = self.response(
            self.send(
                "initialize",
                {
                    "protocolVersion": PROTOCOL_VERSION,
                    "capabilities": {},
                    "clientInfo": {"name": "vestige-tests", "version": "0"},
                },
            ),
            timeout,
        )
        self.notify("notifications/initialized")
        return reply["result"]  # type: ignore[no-any-return]

    def call_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        reply = self.response(self.send("tools/call", {"name": name, "arguments": arguments}))
        return reply["result"]  # type: ignore[no-any-return]

    # -- lifecycle -------------------------------------------------------------------

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def stderr(self) -> str:
        if not self._stderr.closed:
            self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def stop(self) -> None:
        """Stop politely, then firmly; always reap."""
        if self.proc.poll() is None:
            if self.http:
                self.proc.send_signal(signal.SIGTERM)
            else:
                self.close_stdin()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(3)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._stderr.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def launch(
    data_dir: Path, *args: str, home: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run a launch expected to end by itself (a refusal, --help ...): result and seconds."""
    started = time.monotonic()
    done = subprocess.run(
        server_command("--data-dir", str(data_dir), *args),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=server_env(home, **(env or {})),
        cwd=home,
        timeout=START_TIMEOUT_S,
        check=False,
    )
    return done, time.monotonic() - started


def tool_text(result: Any) -> str:
    """The text of a CallToolResult (SDK object or raw dict)."""
    content = result["content"] if isinstance(result, dict) else result.content
    first = content[0]
    return str(first["text"] if isinstance(first, dict) else first.text)
