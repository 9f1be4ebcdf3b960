"""Holder metadata: one small JSON file per lock holder, written atomically, readable by all.

Strictly private.  A file is trusted only while its process is the one that wrote it: the
pid must exist, not be a zombie, and have the recorded creation time (which defeats pid
reuse).  Anything else is stale, and stale files never block anyone: the lock decides.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import psutil

from vestige.config import FILE_MODE

if TYPE_CHECKING:
    from pathlib import Path

#: psutil reports creation time as a float derived from clock ticks: allow for rounding.
CREATE_TIME_TOLERANCE_S: Final = 0.01
_REPLACE_RETRIES: Final = 10  # Windows: a reader holding the target open blocks os.replace


@dataclass(frozen=True, slots=True)
class OwnerInfo:
    """One published holder of the owner lock, as read back and validated."""

    pid: int
    create_time: float
    cmdline: tuple[str, ...]
    data_dir: str
    version: str
    mode: str  # "exclusive" | "shared"
    transport: str  # "stdio", "http", or the tool that took it ("restore", ...)
    endpoint: str | None
    started_at: str  # RFC 3339 UTC: when the lock was taken
    path: Path = field(compare=False)  # the metadata file
    alive: bool = True  # False: the pid is gone, a zombie, or a different process now
    problem: str = ""  # why an entry is stale or unreadable

    @property
    def held_for_s(self) -> float:
        try:
            started = datetime.fromisoformat(self.started_at)
        except ValueError:
            return 0.0
        return max(0.0, (datetime.now(UTC) - started).total_seconds())

    def to_dict(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "create_time": self.create_time,
            "cmdline": list(self.cmdline),
            "data_dir": self.data_dir,
            "version": self.version,
            "mode": self.mode,
            "transport": self.transport,
            "endpoint": self.endpoint,
            "started_at": self.started_at,
            "path": str(self.path),
            "alive": self.alive,
            "problem": self.problem,
            "held_for_s": round(self.held_for_s, 1),
        }


def this_process(
    data_dir: Path, *, mode: str, transport: str, endpoint: str | None, version: str
) -> dict[str, Any]:
    me = psutil.Process()
    return {
        "pid": me.pid,
        "create_time": me.create_time(),
        "cmdline": _cmdline(me),
        "data_dir": str(data_dir),
        "version": version,
        "mode": mode,
        "transport": transport,
        "endpoint": endpoint,
        "started_at": datetime.now(UTC).isoformat(),
    }


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return list(proc.cmdline())
    except (psutil.AccessDenied, psutil.ZombieProcess):
        return [sys.executable, *sys.argv]


def write_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to ``path`` so a reader sees the old file or the whole new one (0600)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=1)
            out.flush()
            os.fsync(out.fileno())
        _replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _replace(src: Path, dst: Path) -> None:
    for attempt in range(_REPLACE_RETRIES):
        try:
            os.replace(src, dst)
            return
        except PermissionError:  # pragma: no cover - Windows, target open by a reader
            if attempt == _REPLACE_RETRIES - 1:
                raise
            time.sleep(0.01 * (attempt + 1))


def _fsync_dir(path: Path) -> None:
    if sys.platform == "win32":  # pragma: no cover - directories cannot be opened there
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read(path: Path) -> OwnerInfo:
    """Read and validate one metadata file; unreadable files come back as stale entries."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        info = OwnerInfo(
            pid=int(raw["pid"]),
            create_time=float(raw["create_time"]),
            cmdline=tuple(str(a) for a in raw.get("cmdline") or ()),
            data_dir=str(raw.get("data_dir", "")),
            version=str(raw.get("version", "")),
            mode=str(raw.get("mode", "")),
            transport=str(raw.get("transport", "")),
            endpoint=raw.get("endpoint"),
            started_at=str(raw.get("started_at", "")),
            path=path,
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        pid = int(path.stem) if path.stem.isdigit() else -1
        return OwnerInfo(pid, 0.0, (), "", "", "", "", None, "", path, False, f"unreadable: {exc}")
    alive, problem = validate(info.pid, info.create_time)
    return replace(info, alive=alive, problem=problem)


def validate(pid: int, create_time: float) -> tuple[bool, str]:
    """Is ``pid`` still the process that recorded ``create_time``?  (alive, why not)"""
    try:
        proc = psutil.Process(pid)
        actual = proc.create_time()
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False, f"pid {pid} has exited (zombie)"
    except psutil.NoSuchProcess:
        return False, f"pid {pid} no longer exists"
    except psutil.AccessDenied:
        # Another user's process: it exists, and we cannot prove it is a different one.
        return True, ""
    if abs(actual - create_time) > CREATE_TIME_TOLERANCE_S:
        return False, f"pid {pid} now belongs to another process (pid reused)"
    return True, ""
