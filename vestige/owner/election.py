"""The election among ``--attach`` proxies: who starts the next owner.

A proxy whose owner is gone takes this lock without waiting; the one the kernel lets in
starts an owner (or finds that another proxy already did), and the others keep polling the
endpoint until that owner publishes it.  The lock is a ``flock`` on
``<data-dir>/vestige.attach.lock`` (0600: "an exclusive lock can be taken through a read-only
descriptor", so a file others could read would let them lock every proxy out), never on the
database's files, and the kernel drops it when its holder dies, kill -9 included, so a proxy
killed during an election never blocks the next one.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Final

from vestige import _file_locks
from vestige.config import FILE_MODE

if TYPE_CHECKING:
    from pathlib import Path

ELECTION_LOCK_FILE: Final = "vestige.attach.lock"
_FLAGS: Final = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)


class Election:
    """One proxy's ticket in the election: :meth:`try_win` and :meth:`step_down`."""

    def __init__(self, data_dir: Path) -> None:
        self._path = data_dir / ELECTION_LOCK_FILE
        self._fd: int | None = None

    def try_win(self) -> bool:
        """Take the election lock without waiting; True if this proxy holds it now.

        :raises OSError: the lock file cannot be opened or locked at all.
        """
        if self._fd is not None:
            return True
        fd = os.open(self._path, _FLAGS, FILE_MODE)
        try:
            won = _file_locks.try_lock(fd)
        except OSError:
            os.close(fd)
            raise
        if not won:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def step_down(self) -> None:
        """Let the next proxy in (closing the descriptor drops the lock)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
