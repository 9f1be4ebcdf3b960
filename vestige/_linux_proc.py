"""What Linux's ``/proc`` tells that psutil does not: who holds a kernel lock, and when a
process started in a clock that nobody can step.

Strictly private.  Every function returns None where ``/proc`` cannot answer (another OS, a
hidden ``/proc``), so callers fall back to what psutil can see and say so.

- ``/proc/locks`` maps each ``flock`` to the pid that took it and the locked file's device
  and inode: the only way to name the process that holds the write gate, and a proof (not a
  guess from open files) that a published owner really holds the owner lock.
- ``/proc/<pid>/stat`` field 22 is the process's start time in clock ticks since boot.
  psutil's ``create_time`` is that plus the boot time read from the wall clock, so it moves
  whenever NTP steps the clock; the ticks never do.  With ``boot_id`` they name one process
  for the life of the machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from pathlib import Path

LOCKS: Final = "/proc/locks"
BOOT_ID: Final = "/proc/sys/kernel/random/boot_id"
#: Field 22 of /proc/<pid>/stat, counted from field 3 (the first after the ")" of comm).
_STARTTIME_FIELD: Final = 22 - 3
#: /proc/locks holds one line per lock; far more than a data directory ever has.
_MAX_LOCKS_BYTES: Final = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class KernelLock:
    """One lock granted on a file (waiters, shown with ``->``, are left out)."""

    pid: int
    kind: str  # "FLOCK", "POSIX", "OFDLCK", ...
    access: str  # "WRITE" (exclusive) or "READ" (shared)


def lock_holders(path: Path) -> list[KernelLock] | None:
    """The granted locks on ``path``'s inode; None when ``/proc/locks`` cannot be read.

    The device in ``/proc/locks`` is the filesystem's own; on btrfs subvolumes and overlayfs
    ``stat`` reports an anonymous one instead (major 0), so there the inode alone decides.
    """
    try:
        st = os.stat(path)
    except OSError:
        return []
    try:
        with open(LOCKS, "rb") as f:
            text = f.read(_MAX_LOCKS_BYTES).decode("ascii", "replace")
    except OSError:
        return None
    major, minor = os.major(st.st_dev), os.minor(st.st_dev)
    found = []
    for line in text.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 5015 fe:00:2146583 0 EOF"; a waiter has "->" after "1:".
        if len(fields) < 6 or fields[1] == "->":
            continue
        try:
            pid = int(fields[4])
            dev_major, dev_minor, inode = fields[5].split(":")
            if int(inode) != st.st_ino:
                continue
            same_dev = (int(dev_major, 16), int(dev_minor, 16)) == (major, minor)
        except ValueError:
            continue
        if same_dev or major == 0:
            found.append(KernelLock(pid, fields[1], fields[3]))
    return found


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot; None if unknown or gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read(4096).decode("ascii", "replace")
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: the fields resume after the last ")".
    fields = raw.rpartition(")")[2].split()
    try:
        return int(fields[_STARTTIME_FIELD])
    except (IndexError, ValueError):
        return None


def boot_id() -> str | None:
    """A random id the kernel draws at each boot: start ticks compare only within one boot."""
    try:
        with open(BOOT_ID, "rb") as f:
            return f.read(64).decode("ascii", "replace").strip() or None
    except OSError:
        return None
