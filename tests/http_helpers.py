"""A real ``vestige-mcp --transport http`` for the tests, started with Popen and reaped by pid."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, Final

import httpx2

from tests.server_helpers import (
    CALL_TIMEOUT_S,
    START_TIMEOUT_S,
    free_port,
    server_command,
    server_env,
    wait_for,
)

INIT: Final = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"},
    },
}
ACCEPT: Final = {"Accept": "application/json, text/event-stream"}
#: Exec the server under a lower RLIMIT_NOFILE, as a shell's ``ulimit -n`` would.
LIMITED = (
    "import os, resource, sys; hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]; "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), hard)); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


class HttpServer:
    """A real HTTP ``vestige-mcp`` started with Popen, stopped by pid with SIGTERM."""

    def __init__(
        self,
        data_dir: Path,
        home: Path,
        *args: str,
        env: dict[str, str] | None = None,
        max_files: int | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.data_dir = data_dir
        command = server_command(
            "--data-dir", str(data_dir), "--transport", "http", "--port", str(self.port), *args
        )
        if max_files is not None:
            command = [sys.executable, "-c", LIMITED, str(max_files), *command]
        self.stderr_path = home / f"http-{self.port}.err"
        self._stderr: IO[bytes] = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            env=server_env(home, **(env or {})),
            cwd=home,
        )
        assert wait_for(lambda: "listening on" in self.log(), START_TIMEOUT_S), self.log()

    def log(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    @property
    def token(self) -> str:
        return (self.data_dir / "auth_token").read_text().strip()

    def initialize(self, timeout: float = CALL_TIMEOUT_S, host: str | None = None) -> int:
        headers = {**ACCEPT, "Authorization": f"Bearer {self.token}"}
        if host is not None:
            headers["Host"] = host
        reply = httpx2.post(self.url, json=INIT, headers=headers, timeout=timeout)
        return reply.status_code

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._stderr.close()
        return self.proc.returncode

    def __enter__(self) -> HttpServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
