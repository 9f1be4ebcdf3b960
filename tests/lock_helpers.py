"""A kernel that refuses locks, as some network mounts do, for the fail-closed tests."""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable
from typing import Any

import pytest
from portalocker import LockFlags
from portalocker.portalocker import FlockLocker

from vestige import _file_locks


def refuse_locks(monkeypatch: pytest.MonkeyPatch, refuse: Callable[[LockFlags], object]) -> None:
    """Make every lock whose flags ``refuse`` fail with ENOLCK; the rest reach the real flock.

    The failure is raised below portalocker, where ``fcntl.flock`` would raise it, so its
    translation into portalocker's exceptions and back into ours is the real one.
    """

    def flock(fd: Any, flags: int) -> None:
        if refuse(LockFlags(flags)):
            raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
        fcntl.flock(fd, flags)

    class RefusingFlock(FlockLocker):
        _locker = staticmethod(flock)

    monkeypatch.setattr(_file_locks, "_LOCKER", RefusingFlock())
