"""Holder metadata: one small JSON file per lock holder, written atomically, readable by all.

Strictly private.  Anyone who can write the ``owners`` folder can put anything there (a data
directory shipped in a cloned repository, a hostile local process), so a file is a claim,
never a fact.  Reading one is bounded and cannot hang (regular files only, never through a
symbolic link, non-blocking, at most :data:`MAX_FILE_BYTES`), every field is validated, and
the claim is checked against the process table:

- **alive**: the pid is running and is the process that wrote the file.  On Linux that is
  proved by its start time in clock ticks since boot (``/proc/<pid>/stat``) and the boot id,
  which no clock step can move.  Elsewhere, or for a file that does not record them, the
  command line must match the recorded one and either psutil's creation time (which follows
  the wall clock) must be within :data:`CREATE_TIME_TOLERANCE_S` or the process must hold the
  owner lock, which survives any clock step.
- **holds_lock**: the kernel says the process holds the owner lock (``/proc/locks``), or,
  where the kernel cannot be asked, it has the lock file open.
- **verified**: both, and its command line is Vestige's.  Only a verified holder is ever
  named in a ``kill`` command: a forged file naming ``sleep`` or pid 1 is shown as a claim
  and never as something to stop.

Anything else is stale, and stale files never block anyone: the lock decides.

An owner that accepts attachments (``vestige-mcp --attach``) also lists its attached
sessions in its file, rewritten as they come and go.  Those are claims like the rest: each
entry is validated on its own and a bad one is dropped (the holder stays valid), the list is
bounded, and a client name (the client's own word in ``initialize``) is escaped and cut
like the change log's.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import stat
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, TypeGuard

import psutil

from vestige import _linux_proc
from vestige.changelog import MAX_CLIENT_CHARS
from vestige.config import FILE_MODE
from vestige.printable import escape_controls

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

#: Without start ticks, psutil's creation time decides together with the command line; it is
#: a float rebuilt from clock ticks and the boot time, so allow for rounding and slewing.
CREATE_TIME_TOLERANCE_S: Final = 1.0
#: A holder's file is about 1 KiB; anything larger is not ours and is not read.
MAX_FILE_BYTES: Final = 64 * 1024
MAX_PID: Final = 2**31 - 1
MAX_ARGS: Final = 4096
MODES: Final = frozenset({"exclusive", "shared"})
#: An owner lists at most this many attached sessions; entries past it are not read.  A real
#: owner serves a few windows; the file's own bound (64 KiB) allows about 400 entries.
MAX_SESSIONS: Final = 256
_REPLACE_RETRIES: Final = 10  # Windows: a reader holding the target open blocks os.replace
_READ_FLAGS: Final = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)  # a FIFO opens at once instead of waiting for a writer
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


@dataclass(frozen=True, slots=True)
class AttachedSession:
    """One client session an owner serves through a proxy (``vestige-mcp --attach``).

    :param pid: the proxy process, which is what the client started.
    :param client: the name the client gave in ``initialize`` (None before it did).
    :param since: when the proxy attached, as unix time (seconds).
    """

    pid: int
    client: str | None
    since: float

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "client": self.client, "since": self.since}


@dataclass(frozen=True, slots=True)
class OwnerInfo:
    """One published holder of the owner lock, as read back and validated."""

    pid: int
    create_time: float
    cmdline: tuple[str, ...]  # the running process's own, once it is proved alive
    data_dir: str
    version: str
    mode: str  # "exclusive" | "shared"
    transport: str  # "stdio", "http", or the tool that took it ("restore", ...)
    endpoint: str | None
    started_at: str  # RFC 3339 UTC: when the lock was taken
    path: Path = field(compare=False)  # the metadata file
    alive: bool = True  # False: the pid is gone, a zombie, a different process, or invalid
    problem: str = ""  # why an entry is stale or unreadable
    start_ticks: int | None = None  # Linux: start time in clock ticks since boot
    boot_id: str | None = None  # Linux: the boot those ticks count from
    holds_lock: bool = False  # the kernel (or the open files) show it holding the lock
    sessions: tuple[AttachedSession, ...] = ()  # attached through proxies, valid ones only

    @property
    def verified(self) -> bool:
        """Alive, holding the lock, and a Vestige command line: safe to name in ``kill``."""
        return self.alive and self.holds_lock and is_vestige_command(self.cmdline)

    @property
    def held_for_s(self) -> float:
        started = parse_time(self.started_at)
        if started is None:
            return 0.0
        return max(0.0, (datetime.now(UTC) - started).total_seconds())

    def to_dict(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "create_time": self.create_time,
            "start_ticks": self.start_ticks,
            "boot_id": self.boot_id,
            "cmdline": list(self.cmdline),
            "data_dir": self.data_dir,
            "version": self.version,
            "mode": self.mode,
            "transport": self.transport,
            "endpoint": self.endpoint,
            "started_at": self.started_at,
            "path": str(self.path),
            "alive": self.alive,
            "holds_lock": self.holds_lock,
            "verified": self.verified,
            "problem": self.problem,
            "held_for_s": round(self.held_for_s, 1),
            "sessions": [session.to_dict() for session in self.sessions],
        }


def is_vestige_command(cmdline: Sequence[str]) -> bool:
    """Does this command line run Vestige (``vestige-mcp``, ``vestige restore``, the library)?"""
    return any("vestige" in arg.lower() for arg in cmdline)


def parse_time(text: str) -> datetime | None:
    """An RFC 3339 time with its offset; None for anything else (a naive time included)."""
    try:
        when = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo is not None else None


def this_process(
    data_dir: Path, *, mode: str, transport: str, endpoint: str | None, version: str
) -> dict[str, Any]:
    """This process's metadata, with no attached sessions yet (see :func:`with_sessions`)."""
    me = psutil.Process()
    return {
        "pid": me.pid,
        "create_time": me.create_time(),
        "start_ticks": _linux_proc.start_ticks(me.pid),
        "boot_id": _linux_proc.boot_id(),
        "cmdline": _cmdline(me),
        "data_dir": str(data_dir),
        "version": version,
        "mode": mode,
        "transport": transport,
        "endpoint": endpoint,
        "started_at": datetime.now(UTC).isoformat(),
        "sessions": [],
    }


def with_sessions(data: dict[str, Any], sessions: Sequence[AttachedSession]) -> dict[str, Any]:
    """``data`` (as first written) listing ``sessions`` instead, at most :data:`MAX_SESSIONS`."""
    listed = [s.to_dict() for s in sessions[:MAX_SESSIONS]]
    return {**data, "sessions": listed}


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


class _Invalid(ValueError):
    """A metadata file that no Vestige wrote as it stands."""


def read(path: Path, lock_files: Sequence[Path]) -> OwnerInfo:
    """Read and check one metadata file; unreadable or invalid files come back as stale.

    :param lock_files: what a live holder has locked (the data directory and the lock file).
    """
    try:
        info = _parse(path, _read_bounded(path))
    except (OSError, _Invalid) as exc:
        pid = int(path.stem) if path.stem.isdigit() and len(path.stem) < 10 else 0
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return OwnerInfo(
            pid, 0.0, (), "", "", "", "", None, "", path, alive=False, problem=f"invalid: {reason}"
        )
    return _check_process(info, lock_files)


def _read_bounded(path: Path) -> bytes:
    """The file's bytes; refuses FIFOs, devices, links and anything over the size bound."""
    if not stat.S_ISREG(os.lstat(path).st_mode):
        raise _Invalid("not a regular file")
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as exc:
        if os.path.islink(path):  # replaced by a link since the lstat
            raise _Invalid("a symbolic link") from exc
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _Invalid("not a regular file")
        if st.st_size > MAX_FILE_BYTES:
            raise _Invalid(f"larger than {MAX_FILE_BYTES // 1024} KiB")
        return os.read(fd, MAX_FILE_BYTES + 1)[:MAX_FILE_BYTES]
    finally:
        os.close(fd)


def _parse(path: Path, data: bytes) -> OwnerInfo:
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _Invalid(f"not JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise _Invalid(f"a JSON {type(raw).__name__}, not an object")
    pid, create_time, ticks, boot = _identity(raw)
    if path.stem != str(pid):
        raise _Invalid(f"the file name does not match its pid {pid}")
    cmdline = raw.get("cmdline")
    if not isinstance(cmdline, list) or len(cmdline) > MAX_ARGS:
        raise _Invalid("cmdline is not a list of arguments")
    if not all(isinstance(arg, str) for arg in cmdline):
        raise _Invalid("cmdline is not a list of strings")
    mode = raw.get("mode")
    if mode not in MODES:
        raise _Invalid(f"mode {_shown(mode)} is neither exclusive nor shared")
    started_at = raw.get("started_at")
    if not isinstance(started_at, str) or parse_time(started_at) is None:
        raise _Invalid(f"started_at {_shown(started_at)} is not a time with a UTC offset")
    endpoint = raw.get("endpoint")
    if endpoint is not None and not isinstance(endpoint, str):
        raise _Invalid("endpoint is not a string")
    texts = {key: raw.get(key, "") for key in ("data_dir", "version", "transport")}
    if not all(isinstance(value, str) for value in texts.values()):
        raise _Invalid("data_dir, version and transport must be strings")
    return OwnerInfo(
        pid=pid,
        sessions=_sessions(raw.get("sessions")),
        create_time=create_time,
        cmdline=tuple(cmdline),
        data_dir=texts["data_dir"],
        version=texts["version"],
        mode=mode,
        transport=texts["transport"],
        endpoint=endpoint,
        started_at=started_at,
        path=path,
        start_ticks=ticks,
        boot_id=boot,
    )


def _sessions(raw: object) -> tuple[AttachedSession, ...]:
    """The valid entries of a ``sessions`` list, at most :data:`MAX_SESSIONS`; none for junk.

    Sessions are extra facts about a holder, so a bad entry is dropped rather than making
    the whole holder invalid (which would hide a real owner from its refusals).
    """
    if not isinstance(raw, list):
        return ()
    found = []
    for entry in raw[:MAX_SESSIONS]:
        session = _session(entry)
        if session is not None:
            found.append(session)
    return tuple(found)


def _session(entry: object) -> AttachedSession | None:
    if not isinstance(entry, dict):
        return None
    pid, client, since = entry.get("pid"), entry.get("client"), entry.get("since")
    if not _is_int(pid) or not 1 <= pid <= MAX_PID:
        return None
    if not _is_number(since) or not math.isfinite(since) or since < 0:
        return None
    if client is not None:
        if not isinstance(client, str):
            return None
        client = client[: MAX_CLIENT_CHARS * 8]  # bounded before the escaping multiplies it
        client = escape_controls(client)
        if len(client) > MAX_CLIENT_CHARS:
            client = client[: MAX_CLIENT_CHARS - 1] + "\u2026"
    return AttachedSession(pid=pid, client=client, since=float(since))


def _identity(raw: dict[str, Any]) -> tuple[int, float, int | None, str | None]:
    """The fields that say which process wrote the file: pid, create time, ticks, boot."""
    pid = raw.get("pid")
    if not _is_int(pid) or not 1 <= pid <= MAX_PID:
        raise _Invalid(f"pid {_shown(pid)} is not a process id")
    create_time = raw.get("create_time")
    if not _is_number(create_time) or not math.isfinite(create_time) or create_time <= 0:
        raise _Invalid(f"create_time {_shown(create_time)} is not a time")
    ticks = raw.get("start_ticks")
    if ticks is not None and (not _is_int(ticks) or ticks < 0):
        raise _Invalid(f"start_ticks {_shown(ticks)} is not a tick count")
    boot = raw.get("boot_id")
    if boot is not None and not isinstance(boot, str):
        raise _Invalid("boot_id is not a string")
    return pid, float(create_time), ticks, boot


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _shown(value: object) -> str:
    text = json.dumps(value) if value is None or isinstance(value, str | int | float) else "?"
    return text if len(text) <= 40 else text[:39] + "…"


def _check_process(info: OwnerInfo, lock_files: Sequence[Path]) -> OwnerInfo:
    """Is the recorded pid still the process that wrote the file, and does it hold the lock?"""
    pid = info.pid
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return replace(info, alive=False, problem=f"pid {pid} has exited (zombie)")
        actual_time = proc.create_time()
        cmdline = tuple(proc.cmdline())
    except psutil.NoSuchProcess:  # ZombieProcess included: it has exited
        return replace(info, alive=False, problem=f"pid {pid} no longer exists")
    except psutil.AccessDenied:
        # Another user's process: it exists, and we cannot prove it is a different one.
        return replace(info, problem=f"pid {pid} belongs to another user and cannot be inspected")
    holds = holds_lock(proc, lock_files)
    same, why = _same_process(info, actual_time, cmdline, holds=holds)
    if not same:
        return replace(info, alive=False, problem=why)
    return replace(info, cmdline=cmdline, holds_lock=holds)


def _same_process(
    info: OwnerInfo, actual_time: float, cmdline: tuple[str, ...], *, holds: bool
) -> tuple[bool, str]:
    reused = f"pid {info.pid} now belongs to another process (pid reused)"
    if info.start_ticks is not None and info.boot_id is not None:
        boot, ticks = _linux_proc.boot_id(), _linux_proc.start_ticks(info.pid)
        if boot is not None and ticks is not None:
            if boot != info.boot_id:
                return False, f"pid {info.pid} was recorded before the machine restarted"
            return (True, "") if ticks == info.start_ticks else (False, reused)
    if cmdline != info.cmdline:
        return False, reused
    if abs(actual_time - info.create_time) <= CREATE_TIME_TOLERANCE_S or holds:
        return True, ""
    return False, reused


def holds_lock(proc: psutil.Process, lock_files: Sequence[Path]) -> bool:
    """Does ``proc`` hold one of ``lock_files``?  The kernel's word where it can be asked."""
    for path in lock_files:
        holders = _linux_proc.lock_holders(path)
        if holders is None:
            return _has_open(proc, lock_files)
        if any(lock.pid == proc.pid for lock in holders):
            return True
    return False


def _has_open(proc: psutil.Process, paths: Sequence[Path]) -> bool:
    wanted = {os.path.normcase(os.path.realpath(p)) for p in paths}
    try:
        opened = {os.path.normcase(os.path.realpath(f.path)) for f in proc.open_files()}
    except psutil.Error:
        return False
    return not wanted.isdisjoint(opened)
