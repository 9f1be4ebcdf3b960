"""How the server benchmarks start a ``vestige-mcp``: the installed script (else ``python -m
vestige.server``) in an environment of its own, never the user's data or log settings."""

from __future__ import annotations

import os
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
