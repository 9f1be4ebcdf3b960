"""POSIX half of the owner lock: BSD ``flock`` on the lock file's descriptor.

Strictly private.  ``flock`` (not ``fcntl``/``lockf`` record locks) because a record lock is
dropped when the process closes *any* descriptor of the file, and belongs to the process
rather than to the open file description; a ``flock`` lives exactly as long as the
descriptor that took it, so an unrelated open/close (a probe, a doctor check) cannot drop it.
The kernel releases it when the holder dies, kill -9 included.
"""

from __future__ import annotations

import errno
import sys

if sys.platform != "win32":
    import fcntl

#: errno values meaning "this filesystem cannot lock", not "someone else holds it".
UNSUPPORTED_ERRNOS = frozenset(
    {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENOTSUP}
)


def try_lock(fd: int, *, shared: bool) -> bool:
    """Take the lock without waiting: True if granted, False if another holder conflicts.

    Any other failure (e.g. ENOLCK on a filesystem without locks) is raised as OSError; the
    caller fails closed instead of running unlocked.
    """
    if sys.platform == "win32":  # pragma: no cover - the Windows module is used there
        raise NotImplementedError("flock is POSIX-only")
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def unlock(fd: int) -> None:
    if sys.platform == "win32":  # pragma: no cover
        raise NotImplementedError("flock is POSIX-only")
    fcntl.flock(fd, fcntl.LOCK_UN)
