"""Which processes have a data directory's files open (a cross-platform ``lsof``, psutil),
and the narrow command that asks one of them to stop.

Used by `vestige doctor` to name the holders and by `vestige restore` to refuse while any
process uses the database; both name the same files and print the same stop command.  It
only reads what the OS reports about processes (on Linux, ``/proc/<pid>/fd`` links); it
never opens the database files.

Absence of evidence is not evidence: processes of other users usually cannot be inspected
(AccessDenied), and on Windows ``open_files`` is documented as unreliable.  ``Scan`` counts
what it could not see, so callers can say so instead of claiming "nobody".  The owner lock,
not this scan, is what keeps two owners apart.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import psutil

from vestige import owner
from vestige.owner import stop_command

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    from vestige.config import DataDir

__all__ = ["FileHolder", "Scan", "scan", "stop_command", "watched_files"]


def watched_files(data_dir: DataDir) -> list[Path]:
    """The files whose holders are named: the database trio and the two lock files."""
    return [*data_dir.sqlite_files, data_dir.path / owner.LOCK_FILE, data_dir.gate]


@dataclass(frozen=True, slots=True)
class FileHolder:
    """A process that has at least one of the watched files open."""

    pid: int
    name: str
    user: str | None
    cmdline: tuple[str, ...]
    create_time: float
    files: tuple[str, ...]  # the watched paths it has open

    @property
    def running_s(self) -> float:
        return max(0.0, time.time() - self.create_time)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cmdline"] = list(self.cmdline)
        data["files"] = list(self.files)
        data["running_s"] = round(self.running_s, 1)
        return data


@dataclass(frozen=True, slots=True)
class Scan:
    """The result of one pass over the process table."""

    holders: tuple[FileHolder, ...]
    inspected: int  # processes whose open files were read
    denied: tuple[int, ...] = field(default_factory=tuple)  # pids we may not inspect
    #: False where the platform's open-file listing is known to miss handles (Windows).
    reliable: bool = True

    @property
    def complete(self) -> bool:
        """True only when every process was inspected on a platform that lists all files."""
        return self.reliable and not self.denied

    def to_dict(self) -> dict[str, Any]:
        return {
            "holders": [h.to_dict() for h in self.holders],
            "inspected": self.inspected,
            "not_inspected": len(self.denied),
            "not_inspected_pids": list(self.denied),
            "complete": self.complete,
        }


def _key(path: str | os.PathLike[str]) -> str:
    return os.path.normcase(os.path.realpath(path))


def scan(paths: Iterable[Path], *, exclude_pids: Iterable[int] = ()) -> Scan:
    """Find every process (except ``exclude_pids``) with one of ``paths`` open."""
    watched = {_key(p): str(p) for p in paths}
    skip = set(exclude_pids)
    holders: list[FileHolder] = []
    denied: list[int] = []
    inspected = 0
    for proc in psutil.process_iter():
        if proc.pid in skip:
            continue
        try:
            open_paths = {_key(f.path) for f in proc.open_files() if f.path}
        except psutil.AccessDenied:
            denied.append(proc.pid)
            continue
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        inspected += 1
        hits = tuple(sorted(watched[k] for k in open_paths.intersection(watched)))
        if hits:
            holder = _describe(proc, hits)
            if holder is not None:
                holders.append(holder)
    return Scan(
        holders=tuple(sorted(holders, key=lambda h: h.pid)),
        inspected=inspected,
        denied=tuple(denied),
        reliable=not sys.platform.startswith("win"),
    )


def _describe(proc: psutil.Process, files: tuple[str, ...]) -> FileHolder | None:
    try:
        with proc.oneshot():
            name = proc.name()
            create_time = proc.create_time()
            try:
                cmdline: tuple[str, ...] = tuple(proc.cmdline())
            except psutil.AccessDenied:
                cmdline = ()
            try:
                user: str | None = proc.username()
            except (psutil.AccessDenied, KeyError):
                user = None
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None  # it exited while we looked: it no longer holds anything
    return FileHolder(proc.pid, name, user, cmdline, create_time, files)
