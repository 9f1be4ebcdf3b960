"""Windows half of the owner lock: ``LockFileEx`` on the first byte of the lock file.

Strictly private, and UNTESTED: the project's CI runs on Linux and macOS only.  It is kept
small on purpose.  ``msvcrt.locking`` cannot take shared locks, so this calls ``LockFileEx``
through ctypes with ``LOCKFILE_FAIL_IMMEDIATELY``.  Windows byte-range locks are mandatory,
which is why the holder metadata lives in separate files and never in the locked byte.
The system releases the lock when the holding process ends.
"""

from __future__ import annotations

import sys

UNSUPPORTED_ERRNOS: frozenset[int] = frozenset()

if sys.platform == "win32":  # pragma: no cover - Windows only
    import ctypes
    import msvcrt
    from ctypes import wintypes

    _LOCKFILE_FAIL_IMMEDIATELY = 0x1
    _LOCKFILE_EXCLUSIVE_LOCK = 0x2
    _ERROR_LOCK_VIOLATION = 33
    _ERROR_IO_PENDING = 997

    class _Overlapped(ctypes.Structure):
        _fields_ = (
            ("Internal", ctypes.c_void_p),
            ("InternalHigh", ctypes.c_void_p),
            ("Offset", wintypes.DWORD),
            ("OffsetHigh", wintypes.DWORD),
            ("hEvent", wintypes.HANDLE),
        )

    _kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)

    def try_lock(fd: int, *, shared: bool) -> bool:
        handle = msvcrt.get_osfhandle(fd)
        flags = _LOCKFILE_FAIL_IMMEDIATELY | (0 if shared else _LOCKFILE_EXCLUSIVE_LOCK)
        overlapped = _Overlapped()
        if _kernel32.LockFileEx(handle, flags, 0, 1, 0, ctypes.byref(overlapped)):
            return True
        error = ctypes.get_last_error()
        if error in (_ERROR_LOCK_VIOLATION, _ERROR_IO_PENDING):
            return False
        raise ctypes.WinError(error)

    def unlock(fd: int) -> None:
        handle = msvcrt.get_osfhandle(fd)
        overlapped = _Overlapped()
        if not _kernel32.UnlockFileEx(handle, 0, 1, 0, ctypes.byref(overlapped)):
            raise ctypes.WinError(ctypes.get_last_error())

else:

    def try_lock(fd: int, *, shared: bool) -> bool:
        raise NotImplementedError("LockFileEx is Windows-only")

    def unlock(fd: int) -> None:
        raise NotImplementedError("UnlockFileEx is Windows-only")
