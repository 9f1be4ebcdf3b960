"""Kernel file locks under the owner lock and the write gate, taken through ``portalocker``.

Strictly private.  Two rules live here and nowhere else:

- On POSIX the lock is BSD ``flock``, never ``fcntl``/``lockf`` record locks.  A record lock
  is dropped when the process closes *any* descriptor of the file, and belongs to the process
  rather than to the open file description; a ``flock`` lives exactly as long as the
  descriptor that took it, so an unrelated open/close (a probe, a doctor check) cannot drop
  it.  portalocker's ``FlockLocker`` is pinned, not its module-wide ``LOCKER`` default, so
  nothing else in the process can switch us to record locks.  The kernel releases a ``flock``
  when its holder dies, kill -9 included.
- Contention is not failure.  A lock someone else holds is ``False`` (the caller waits or
  refuses); anything else (ENOLCK on a filesystem without locks, ...) is raised as an
  OSError, so the caller fails closed instead of running unlocked.

On Windows portalocker locks the start of the file with ``msvcrt.locking``, and shared locks
with ``LockFileEx`` (pywin32).  Those locks are mandatory, which is why no data ever lives in
a locked file, and the system drops them when the holding process ends.  Windows has no wait
in the kernel's queue that a deadline can end, so there :func:`lock` is never used.
"""

from __future__ import annotations

import errno
import sys
from typing import TYPE_CHECKING, Final

from portalocker import AlreadyLocked, LockException, LockFlags

if TYPE_CHECKING:
    from portalocker.portalocker import BaseLocker

if sys.platform == "win32":  # pragma: no cover - Windows only
    from portalocker.portalocker import MsvcrtLocker as _PlatformLocker
else:
    from portalocker.portalocker import FlockLocker as _PlatformLocker

#: The one locker every lock goes through (tests swap it to make the kernel refuse).
_LOCKER: BaseLocker = _PlatformLocker()
_NOW: Final = {
    False: LockFlags.EXCLUSIVE | LockFlags.NON_BLOCKING,
    True: LockFlags.SHARED | LockFlags.NON_BLOCKING,
}


def try_lock(fd: int, *, shared: bool = False) -> bool:
    """Take the lock without waiting: True if granted, False if another holder conflicts.

    On the descriptor that already holds it, this converts the lock (shared <-> exclusive).
    """
    try:
        _LOCKER.lock(fd, _NOW[shared])
    except AlreadyLocked:
        return False
    except LockException as exc:
        raise _os_error(exc) from exc
    return True


def lock(fd: int) -> None:
    """Wait in the kernel's queue for the exclusive lock, with no timeout (POSIX only).

    The kernel grants the lock to its waiters in turn the moment the holder unlocks; a
    polling wait would let a process that has just unlocked take it again first.
    """
    try:
        _LOCKER.lock(fd, LockFlags.EXCLUSIVE)
    except LockException as exc:
        raise _os_error(exc) from exc


def unlock(fd: int) -> None:
    try:
        _LOCKER.unlock(fd)
    except LockException as exc:
        raise _os_error(exc) from exc


def _os_error(exc: LockException) -> OSError:
    """The OSError behind portalocker's exception, so callers keep one error type."""
    cause = exc.__cause__
    if isinstance(cause, OSError) and cause.errno is not None:
        return OSError(cause.errno, cause.strerror or str(cause))
    # A Windows API error, or the EOFError some NFS mounts give: no lock is available.
    return OSError(errno.ENOLCK, exc.strerror or str(exc))
