"""How the server benchmarks start a ``vestige-mcp``: the installed script (else ``python -m
vestige.server``) in an environment of its own, never the user's data or log settings."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[2]


def server_env(home: Path, **extra: str) -> dict[str, str]:
    """A temp HOME and XDG data folder, warnings only, this checkout importable."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "VESTIGE_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
        **extra,
    }


def server_command() -> list[str]:
    script = Path(sys.executable).with_name("vestige-mcp")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "vestige.server"]


#: Each step of a stop (stdin EOF, SIGTERM, SIGKILL) is given this long to end the process.
STOP_STEP_S: Final = 10.0


def stop_process(proc: subprocess.Popen[bytes]) -> int | None:
    """Stop a server as a client would, then harder: stdin EOF, then SIGTERM, then SIGKILL,
    each with a deadline; always reaped, its pipes closed.  Its exit status."""
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            assert proc.stdin is not None
            proc.stdin.close()
        for then in (signal.SIGTERM, signal.SIGKILL, None):
            try:
                proc.wait(STOP_STEP_S)
                break
            except subprocess.TimeoutExpired:
                if then is not None:
                    proc.send_signal(then)
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    return proc.returncode
