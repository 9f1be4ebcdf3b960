"""The owner lock: which processes may serve a data directory, and how the others refuse.

One kernel lock on ``<data-dir>/vestige.owner.lock`` (never on ``vestige.db``, ``-wal`` or
``-shm``), taken without waiting:

- **exclusive** (a normal ``vestige-mcp``, ``vestige restore``): nobody else may hold it;
- **shared** (``vestige-mcp --shared-writers``): any number of shared holders together,
  never alongside an exclusive one, in either order.

The lock is a ``flock`` on POSIX, taken through ``portalocker`` (see ``vestige._file_locks``
for why ``flock``).  The kernel frees it when its holder dies, kill -9 included, so a dead
owner never blocks a new one.  Each holder publishes who it is in ``<data-dir>/owners/<pid>.json``
(written atomically, 0600) and removes it before unlocking.  Readers trust a file only if
its pid is alive with the recorded creation time; the lock, not the files, is authoritative.

Public API (the server uses it; ``vestige doctor`` and ``vestige restore`` will):

- :func:`acquire_owner` -> :class:`OwnerLock`, or :class:`~vestige.errors.OwnerLockHeld`
  whose message is the refusal text; :meth:`OwnerLock.release` undoes it.
- :func:`read_owners`: every published holder, validated (stale ones flagged).
- :func:`lock_state`: free / exclusive / shared, probed without waiting.

A process holds at most one owner lock per data directory.  The descriptor is not inherited
by ``exec``'d children, and is closed in ``fork``'d children.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from enum import StrEnum
from pathlib import Path
from typing import Final

from vestige import _file_locks
from vestige.config import DIR_MODE, FILE_MODE, DataDir
from vestige.errors import OwnerLockUnsupported
from vestige.owner import _metadata
from vestige.owner._metadata import OwnerInfo
from vestige.owner._refusal import refusal

__all__ = [
    "LOCK_FILE",
    "OWNERS_DIR",
    "LockMode",
    "LockState",
    "OwnerInfo",
    "OwnerLock",
    "acquire_owner",
    "lock_state",
    "read_owners",
    "remove_stale_metadata",
]

LOCK_FILE: Final = "vestige.owner.lock"
OWNERS_DIR: Final = "owners"
#: A probe (``lock_state``, ``vestige doctor``) holds the lock for microseconds; retrying for
#: this long keeps a probe from being mistaken for an owner.  Far below the 1 s refusal budget.
ACQUIRE_GRACE_S: Final = 0.05
_GRACE_POLL_S: Final = 0.005
#: A refused process waits this long for a just-started owner to publish its metadata, so
#: the refusal can name it.
METADATA_WAIT_S: Final = 0.3


class LockMode(StrEnum):
    EXCLUSIVE = "exclusive"
    SHARED = "shared"


class LockState(StrEnum):
    FREE = "free"
    EXCLUSIVE = "exclusive"
    SHARED = "shared"


_held: dict[Path, OwnerLock] = {}  # this process's locks, by data directory
_held_lock = threading.Lock()


def _dir(data_dir: Path | str | DataDir) -> Path:
    return data_dir.path if isinstance(data_dir, DataDir) else Path(data_dir)


class OwnerLock:
    """A held owner lock.  Release it (or let the process die) to let others in."""

    def __init__(self, data_dir: Path, mode: LockMode, fd: int, info: OwnerInfo) -> None:
        self.data_dir = data_dir
        self.mode = mode
        self.info = info
        self._fd: int | None = fd
        self._guard = threading.Lock()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Remove this holder's metadata, then drop the lock.  Idempotent and thread-safe."""
        with self._guard:
            if self._fd is None:
                return
            # Metadata first: a reader never sees a lock-free directory with our file in it.
            with contextlib.suppress(FileNotFoundError):
                self.info.path.unlink()
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                _file_locks.unlock(fd)
            os.close(fd)
        with _held_lock:
            if _held.get(self.data_dir) is self:
                del _held[self.data_dir]

    def __enter__(self) -> OwnerLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "held" if self.held else "released"
        return f"<OwnerLock {self.mode} {self.data_dir} {state}>"


def acquire_owner(
    data_dir: Path | str | DataDir,
    *,
    shared: bool = False,
    transport: str = "library",
    endpoint: str | None = None,
    version: str = "",
    grace_s: float = ACQUIRE_GRACE_S,
) -> OwnerLock:
    """Take the owner lock of an existing data directory without waiting.

    :param shared: join other shared holders (``--shared-writers``) instead of owning alone.
    :param transport: what this holder serves ("stdio", "http", "restore", ...), published.
    :raises OwnerLockHeld: another process holds a conflicting lock; the message is the text
        to show a person (who holds it, since when, what to do).
    :raises OwnerLockUnsupported: the filesystem cannot lock (e.g. some network mounts);
        Vestige fails closed rather than run unprotected.
    """
    path = _dir(data_dir)
    mode = LockMode.SHARED if shared else LockMode.EXCLUSIVE
    with _held_lock:
        if path in _held:
            raise RuntimeError(f"this process already holds the owner lock of {path}")
    fd = _open_lock_file(path)
    try:
        _lock_within_grace(fd, path, shared=shared, grace_s=grace_s)
        _remove_stale(path, everyone_else=not shared)
        meta_path = _owners_dir(path) / f"{os.getpid()}.json"
        data = _metadata.this_process(
            path, mode=mode.value, transport=transport, endpoint=endpoint, version=version
        )
        _metadata.write_atomic(meta_path, data)
    except BaseException:
        os.close(fd)  # drops the lock if we took it
        raise
    lock = OwnerLock(path, mode, fd, _metadata.read(meta_path))
    with _held_lock:
        _held[path] = lock
    return lock


def _open_lock_file(path: Path) -> int:
    lock_path = path / LOCK_FILE
    try:
        return os.open(lock_path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    except OSError as exc:
        raise OwnerLockUnsupported(
            f"cannot open the owner lock {lock_path}: {exc.strerror or exc}",
            hint="Check that the data directory is writable, or choose another --data-dir.",
        ) from exc


def _lock_within_grace(fd: int, path: Path, *, shared: bool, grace_s: float) -> None:
    deadline = time.monotonic() + grace_s
    while True:
        try:
            if _file_locks.try_lock(fd, shared=shared):
                return
        except OSError as exc:
            raise OwnerLockUnsupported(
                f"the filesystem holding {path} cannot take the owner lock "
                f"({exc.strerror or exc}); Vestige refuses to run without it",
                hint="Keep the data directory on a local disk (not NFS/SMB), or choose another "
                "--data-dir.",
            ) from exc
        if time.monotonic() >= deadline:
            raise refusal(
                path, lock_file=path / LOCK_FILE, shared=shared, owners=_live_owners(path)
            )
        time.sleep(_GRACE_POLL_S)


def _owners_dir(path: Path) -> Path:
    owners = path / OWNERS_DIR
    if not owners.is_dir():
        with contextlib.suppress(FileExistsError):
            owners.mkdir(mode=DIR_MODE)
            owners.chmod(DIR_MODE)  # mkdir's mode is masked by the umask
    return owners


def _remove_stale(path: Path, *, everyone_else: bool) -> None:
    """Drop metadata of holders that are gone.  Called while holding the lock.

    Holding it exclusively proves every other file is stale, whatever it says (e.g. a holder
    whose pid was reused by a live process); holding it shared, only validation can tell.
    """
    if not everyone_else:
        remove_stale_metadata(path)
        return
    me = os.getpid()
    for info in read_owners(path):
        if info.pid != me:
            with contextlib.suppress(FileNotFoundError):
                info.path.unlink()


def remove_stale_metadata(data_dir: Path | str | DataDir) -> list[Path]:
    """Remove only the metadata files whose process is provably gone; return their paths.

    "Provably gone" is the validation of ``read_owners``: the pid does not exist, is a
    zombie, or has another creation time (the pid was reused).  A live holder's file is
    never touched, so this is safe to call at any time (`vestige doctor --remove-stale`).
    """
    removed = []
    for info in read_owners(data_dir):
        if not info.alive:
            with contextlib.suppress(FileNotFoundError):
                info.path.unlink()
                removed.append(info.path)
    return removed


def read_owners(data_dir: Path | str | DataDir) -> list[OwnerInfo]:
    """Every published holder, oldest first, each with ``alive`` validated (pid + create time).

    Entries with ``alive=False`` are stale: their process is gone.  Never raises for a
    missing directory or a damaged file.
    """
    owners = _dir(data_dir) / OWNERS_DIR
    try:
        files = sorted(owners.glob("*.json"))
    except OSError:
        return []
    infos = [_metadata.read(f) for f in files]
    return sorted(infos, key=lambda i: (i.started_at, i.pid))


def lock_state(data_dir: Path | str | DataDir) -> LockState:
    """Probe the lock without waiting: FREE, EXCLUSIVE or SHARED.

    The probe uses its own open of the lock file.  flock locks belong to an open file
    description, so a probe from the holder's own process still sees the holder's lock, and
    closing the probe's descriptor never drops it (with fcntl/lockf record locks it would).
    Never probe through the holder's descriptor: re-locking it would convert its lock.
    Exclusive is tried first, then shared, never an upgrade: Windows refuses an exclusive lock
    over the same handle's shared one.  The probe itself holds a lock for microseconds;
    ``acquire_owner``'s grace covers that.
    """
    lock_path = _dir(data_dir) / LOCK_FILE
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except FileNotFoundError:
        return LockState.FREE
    try:
        if _file_locks.try_lock(fd):
            return LockState.FREE
        return LockState.SHARED if _file_locks.try_lock(fd, shared=True) else LockState.EXCLUSIVE
    finally:
        os.close(fd)


def _live_owners(path: Path) -> list[OwnerInfo]:
    """Holders to name in a refusal, waiting briefly for a just-started one to publish."""
    deadline = time.monotonic() + METADATA_WAIT_S
    while True:
        owners = [o for o in read_owners(path) if o.alive]
        if owners or time.monotonic() >= deadline:
            return owners
        time.sleep(0.02)


def _close_in_child() -> None:
    # A fork()ed child shares our lock descriptors; it must not keep the lock alive after we
    # die.  Closing its copies leaves ours untouched.
    for lock in list(_held.values()):
        if lock._fd is not None:
            with contextlib.suppress(OSError):
                os.close(lock._fd)
            lock._fd = None
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)
