"""The owner lock: which processes may serve a data directory, and how the others refuse.

Kernel locks taken without waiting, never on ``vestige.db``, ``-wal`` or ``-shm``:

- **exclusive** (a normal ``vestige-mcp``, ``vestige restore``): nobody else may hold it;
- **shared** (``vestige-mcp --shared-writers``): any number of shared holders together,
  never alongside an exclusive one, in either order.

On POSIX the lock that decides is a ``flock`` on **the data directory itself**, and the same
lock is also taken on ``<data-dir>/vestige.owner.lock``.  A lock on a file alone can be
sidestepped: delete the file under a running server and the next one creates a new file, a
new inode, and gets a new lock, while the first still serves.  Checking from the newcomer's
side that the locked inode is the one at the path cannot catch that (the newcomer's inode
*is* the one at the path; only the deleted one is locked), and the first holder cannot link
its inode back.  A directory cannot be deleted while it holds ``vestige.db``, nor replaced
without moving the database away with it, so its lock holds as long as the database it
protects is there.  The lock file stays for holders of older versions (which lock only it)
and so that ``lsof`` and ``vestige doctor`` can name the holder.  On Windows, where a
directory cannot be locked, the lock file cannot be deleted while a holder has it open.

The lock is taken through ``portalocker`` (see ``vestige._file_locks`` for why ``flock``).
The kernel frees it when its holder dies, kill -9 included, so a dead owner never blocks a
new one.  Each holder publishes who it is in ``<data-dir>/owners/<pid>.json`` (written
atomically, 0600) and removes it before unlocking.  Those files are claims that any local
process could forge; ``_metadata`` checks each against the process table and the kernel's
lock table, and only a holder proved to hold the lock is ever named in a ``kill`` command.
The lock, not the files, is authoritative.

A ``vestige.db`` that is a symbolic link into another directory, or that has other hard
links, is refused: two data directories would then serve one file, each with its own lock
(and, through a hard link, SQLite would keep a separate -wal for each name, which corrupts
the database).

Public API (the server, ``vestige doctor`` and ``vestige restore`` use it):

- :func:`acquire_owner` -> :class:`OwnerLock`, or :class:`~vestige.errors.OwnerLockHeld`
  whose message is the refusal text; :meth:`OwnerLock.release` undoes it.
- :meth:`OwnerLock.publish_sessions`: an owner that accepts attachments lists its attached
  sessions (:class:`AttachedSession`) in its metadata, for refusals and ``vestige doctor``.
- :func:`read_owners`: every published holder, validated (stale ones flagged).
- :func:`lock_state`: free / exclusive / shared, probed without waiting.
- :func:`stop_advice`: the ``kill`` commands for the holders proved to hold the lock;
  :func:`stop_command` the command for one pid; :func:`why_unproved` why a published
  holder is not named in one.
- :func:`kernel_holders`: the pids the kernel shows holding the lock (Linux).
- :func:`describe_transport`, :func:`describe_sessions`, :func:`sessions_caveat`: a holder's
  transport and attached sessions in words, escaped, as refusals show them.

**The young-holder window.**  MCP clients start servers they drop moments later: Claude Code
has started every stdio server twice on one launch, about two seconds apart, and qwen-code
starts a probe that it kills within about two seconds.  A launch refused by such a holder
would leave its window with no memory tools although the directory is about to be free.  So
when every holder is a server (stdio, http, attach) that took the lock less than
:data:`YOUNG_HOLDER_WINDOW_S` ago, or has not published its details yet (it is starting),
``acquire_owner`` keeps trying the lock until the youngest is that old, then refuses; a
holder that goes away meanwhile lets it in.  A long-lived owner, or any holder that is not a
server (a restore), is refused at once as before.  The whole wait is bounded by the window,
from the moment the lock was first found held, whatever the holders' clocks claim.

A process holds at most one owner lock per data directory.  The descriptors are not
inherited by ``exec``'d children, and are closed in ``fork``'d children.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import sys
import threading
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from vestige import _file_locks, _linux_proc, config
from vestige.config import DIR_MODE, FILE_MODE, DataDir, DataDirSource
from vestige.errors import DataDirError, OwnerLockUnsupported
from vestige.owner import _metadata
from vestige.owner._metadata import MAX_SESSIONS, AttachedSession, OwnerInfo
from vestige.owner._refusal import (
    describe_sessions,
    describe_transport,
    refusal,
    sessions_caveat,
    stop_advice,
    stop_command,
    why_unproved,
)
from vestige.printable import escape_controls

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = [
    "LOCK_FILE",
    "MAX_SESSIONS",
    "OWNERS_DIR",
    "SERVER_TRANSPORTS",
    "YOUNG_HOLDER_WINDOW_S",
    "AttachedSession",
    "LockMode",
    "LockState",
    "OwnerInfo",
    "OwnerLock",
    "acquire_owner",
    "describe_sessions",
    "describe_transport",
    "kernel_holders",
    "lock_files",
    "lock_state",
    "read_owners",
    "remove_stale_metadata",
    "sessions_caveat",
    "stop_advice",
    "stop_command",
    "why_unproved",
]

LOCK_FILE: Final = "vestige.owner.lock"
OWNERS_DIR: Final = "owners"
#: A probe (``lock_state``, ``vestige doctor``) holds the lock for microseconds; retrying for
#: this long keeps a probe from being mistaken for an owner.  Far below the 1 s refusal budget
#: (an old owner's; a young server holder is waited out longer, see YOUNG_HOLDER_WINDOW_S).
ACQUIRE_GRACE_S: Final = 0.05
_GRACE_POLL_S: Final = 0.005
#: A refused process waits this long for a just-started owner to publish its metadata, so
#: the refusal can name it.
METADATA_WAIT_S: Final = 0.3
#: A server holding the lock for less than this may be a client's probe or the first of a
#: duplicate spawn, about to be killed: Claude Code starts every stdio server twice, about
#: 2 s apart (claude-code#85895), and qwen-code kills its probe within about 2 s (PR #8992).
#: A refusal waits this long at most for such a holder to go away (see the module docstring).
YOUNG_HOLDER_WINDOW_S: Final = 3.0
#: How often a launch waiting out a young holder tries the lock again: a probe's death is
#: noticed within this, at the cost of one non-blocking lock attempt and one metadata read.
YOUNG_HOLDER_POLL_S: Final = 0.05
#: The transports of a server, whose young holders a launch waits for ("attach": the
#: detached owner that ``vestige-mcp --attach`` proxies start).
SERVER_TRANSPORTS: Final = frozenset({"stdio", "http", "attach"})
#: Directories can be locked where they can be opened: not on Windows.
LOCKS_DIRECTORY: Final = sys.platform != "win32"
_DIR_FLAGS: Final = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_FILE_FLAGS: Final = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)


class LockMode(StrEnum):
    EXCLUSIVE = "exclusive"
    SHARED = "shared"


class LockState(StrEnum):
    FREE = "free"
    EXCLUSIVE = "exclusive"
    SHARED = "shared"


log = logging.getLogger("vestige.owner")

_held: dict[Path, OwnerLock] = {}  # this process's locks, by data directory
_held_lock = threading.Lock()


def _dir(data_dir: Path | str | DataDir) -> Path:
    return data_dir.path if isinstance(data_dir, DataDir) else Path(data_dir)


def lock_files(data_dir: Path | str | DataDir) -> tuple[Path, ...]:
    """What a holder locks: the directory (where it can be locked), then the lock file."""
    path = _dir(data_dir)
    return (path, path / LOCK_FILE) if LOCKS_DIRECTORY else (path / LOCK_FILE,)


class OwnerLock:
    """A held owner lock.  Release it (or let the process die) to let others in."""

    def __init__(
        self,
        data_dir: Path,
        mode: LockMode,
        fds: list[int],
        info: OwnerInfo,
        stale: tuple[OwnerInfo, ...] = (),
        *,
        published: dict[str, Any] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.mode = mode
        self.info = info
        #: Holders whose metadata was left behind (removed when this lock was taken): they
        #: stopped without cleaning up (kill -9, a crash, a power cut), so the database may
        #: have been cut off mid-write.
        self.stale = stale
        self._fds = fds
        self._guard = threading.Lock()
        self._published = published or {}  # the metadata as first written

    @property
    def held(self) -> bool:
        return bool(self._fds)

    def release(self) -> None:
        """Remove this holder's metadata, then drop the lock.  Idempotent and thread-safe."""
        with self._guard:
            if not self._fds:
                return
            # Metadata first: a reader never sees a lock-free directory with our file in it.
            with contextlib.suppress(FileNotFoundError):
                self.info.path.unlink()
            fds, self._fds = self._fds, []
            _close_all(fds)
        with _held_lock:
            if _held.get(self.data_dir) is self:
                del _held[self.data_dir]

    def publish_sessions(self, sessions: Sequence[AttachedSession]) -> None:
        """List ``sessions`` (at most :data:`MAX_SESSIONS`) as this holder's attached sessions.

        Rewrites this holder's own metadata file atomically, as it was first written, with
        only the session list changed.  Best effort, because the serving loop calls it as
        sessions come and go: a failure (a full disk) is logged and the old list stays;
        nothing is raised.  Does nothing once the lock is released (the file is gone).
        """
        with self._guard:
            if not self._fds or not self._published:
                return
            data = _metadata.with_sessions(self._published, sessions)
            try:
                _metadata.write_atomic(self.info.path, data)
            except OSError as exc:
                log.warning(
                    "could not list %d attached session(s) in %s: %s",
                    len(sessions),
                    escape_controls(str(self.info.path)),
                    exc.strerror or exc,
                )

    def __enter__(self) -> OwnerLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "held" if self.held else "released"
        return f"<OwnerLock {self.mode} {self.data_dir} {state}>"


def _close_all(fds: list[int]) -> None:
    for fd in reversed(fds):
        with contextlib.suppress(OSError):
            _file_locks.unlock(fd)
        with contextlib.suppress(OSError):
            os.close(fd)


def acquire_owner(
    data_dir: Path | str | DataDir,
    *,
    shared: bool = False,
    transport: str = "library",
    endpoint: str | None = None,
    version: str = "",
    grace_s: float = ACQUIRE_GRACE_S,
    young_window_s: float = YOUNG_HOLDER_WINDOW_S,
    waiting: Callable[[], object] | None = None,
) -> OwnerLock:
    """Take the owner lock of an existing data directory, or refuse.

    Refuses at once when a long-lived holder has it; waits up to ``young_window_s`` when
    every holder is a server that has only just started (a client's probe or duplicate
    spawn, see the module docstring).

    :param shared: join other shared holders (``--shared-writers``) instead of owning alone.
    :param transport: what this holder serves ("stdio", "http", "attach" for the owner that
        ``--attach`` proxies reach, "restore", ...), published.
    :param grace_s: how long any holder is tried again first (a probe's microseconds).
    :param waiting: called before each pause while a young holder is waited out; whatever
        it raises ends the wait, nothing taken (a server that blocks its stop signals here
        checks for a pending one, so a stop is not deferred by up to the window).
    :raises OwnerLockHeld: another process holds a conflicting lock; the message is the text
        to show a person (who holds it, since when, what to do).
    :raises OwnerLockUnsupported: the filesystem cannot lock (e.g. some network mounts);
        Vestige fails closed rather than run unprotected.
    :raises DataDirError: ``vestige.db`` is linked into another directory, or this holder's
        details cannot be published (a full or read-only disk).
    """
    path = _dir(data_dir)
    mode = LockMode.SHARED if shared else LockMode.EXCLUSIVE
    with _held_lock:
        if path in _held:
            raise RuntimeError(f"this process already holds the owner lock of {path}")
    _refuse_linked_database(path)
    fds: list[int] = []
    try:
        fds.extend(_open_lock_targets(path))
        _lock_within_grace(
            fds,
            path,
            shared=shared,
            grace_s=grace_s,
            young_window_s=young_window_s,
            waiting=waiting,
        )
        _refuse_linked_database(path)  # linked while we waited: the lock would not protect it
        stale = _remove_stale(path, everyone_else=not shared)
        meta_path = _owners_dir(path) / f"{os.getpid()}.json"
        data = _metadata.this_process(
            path, mode=mode.value, transport=transport, endpoint=endpoint, version=version
        )
        _publish(meta_path, data)
    except BaseException:
        _close_all(fds)  # drops the lock if we took it
        raise
    info = _metadata.read(meta_path, lock_files(path))
    lock = OwnerLock(path, mode, fds, info, stale, published=data)
    with _held_lock:
        _held[path] = lock
    return lock


def _refuse_linked_database(path: Path) -> None:
    """A database reachable from another directory would be served there under another lock."""
    config.refuse_linked_database(DataDir(path, DataDirSource.ARGUMENT))


def _open_lock_targets(path: Path) -> list[int]:
    fds: list[int] = []
    try:
        for target in lock_files(path):
            flags = _DIR_FLAGS if target == path else _FILE_FLAGS
            fds.append(os.open(target, flags, FILE_MODE))
    except OSError as exc:
        _close_all(fds)
        raise OwnerLockUnsupported(
            f"cannot open the owner lock {escape_controls(str(target))}: {exc.strerror or exc}",
            hint="Check that the data directory is writable, or choose another --data-dir.",
        ) from exc
    return fds


def _lock_within_grace(
    fds: list[int],
    path: Path,
    *,
    shared: bool,
    grace_s: float,
    young_window_s: float,
    waiting: Callable[[], object] | None,
) -> None:
    """Lock every descriptor (directory first), or refuse once the grace (and, for a young
    server holder, the young-holder window) has passed."""
    deadline = time.monotonic() + grace_s
    window_ends: float | None = None  # set once the grace is over and the lock still held
    locked = 0
    while True:
        try:
            while locked < len(fds) and _file_locks.try_lock(fds[locked], shared=shared):
                locked += 1
        except OSError as exc:
            raise OwnerLockUnsupported(
                f"the filesystem holding {escape_controls(str(path))} cannot take the owner lock "
                f"({exc.strerror or exc}); Vestige refuses to run without it",
                hint="Keep the data directory on a local disk (not NFS/SMB), or choose another "
                "--data-dir.",
            ) from exc
        if locked == len(fds):
            return
        now = time.monotonic()
        if now < deadline:
            time.sleep(_GRACE_POLL_S)
            continue
        if window_ends is None:
            window_ends = now + young_window_s
        owners = _live_owners(path, wait_s=0.0 if young_window_s > 0 else METADATA_WAIT_S)
        young_for = _young_for(owners, young_window_s, path)
        if young_for <= 0 or now >= window_ends:
            # A holder still starting may publish its details in a moment: wait for them
            # (what the window has not already waited of METADATA_WAIT_S) to name it.
            owners = owners or _live_owners(path, max(0.0, METADATA_WAIT_S - young_window_s))
            raise refusal(path, lock_file=path / LOCK_FILE, shared=shared, owners=owners)
        if waiting is not None:
            waiting()
        time.sleep(min(YOUNG_HOLDER_POLL_S, young_for, window_ends - now))


def _young_for(owners: list[OwnerInfo], window_s: float, path: Path) -> float:
    """How much longer the holders count as young: 0 once any is old or is not a server.

    A holder that has not published its details yet is starting, so it counts as young for
    the whole window.  Only holders the kernel shows holding the lock count (a forged file
    naming a live process decides nothing); if none is shown, the holder is unpublished.
    Another user's holder cannot be inspected, so its entry does not show the lock: the
    kernel's lock table (Linux) still names it, and its published age decides.
    """
    if window_s <= 0:
        return 0.0
    holders = [o for o in owners if o.holds_lock]
    if not holders and owners:
        kernel = set(kernel_holders(path) or ())
        holders = [o for o in owners if o.pid in kernel]
    if not holders:
        return window_s
    if any(o.transport not in SERVER_TRANSPORTS for o in holders):
        return 0.0
    return max(0.0, window_s - max(o.held_for_s for o in holders))


def _owners_dir(path: Path) -> Path:
    owners = path / OWNERS_DIR
    try:
        st = os.lstat(owners)
    except FileNotFoundError:
        with contextlib.suppress(FileExistsError):
            owners.mkdir(mode=DIR_MODE)
            owners.chmod(DIR_MODE)  # mkdir's mode is masked by the umask
        return owners
    if not stat.S_ISDIR(st.st_mode):
        raise DataDirError(
            f"{escape_controls(str(owners))} is not a directory (a file or a link), so this "
            "holder cannot publish its details there",
            hint="Move it out of the data directory; Vestige recreates the folder.",
        )
    return owners


def _publish(meta_path: Path, data: dict[str, object]) -> None:
    try:
        _metadata.write_atomic(meta_path, data)
    except OSError as exc:
        where = escape_controls(str(meta_path.parent))
        fix = {
            errno.ENOSPC: f"Free some space on the disk holding {where}, then start again.",
            errno.EDQUOT: f"Free some of your disk quota on the disk holding {where}.",
            errno.EROFS: "The filesystem is read-only: remount it read-write or choose "
            "another --data-dir.",
        }.get(exc.errno or 0, f"Check that {where} is writable by this user.")
        raise DataDirError(
            f"cannot publish this holder's details in {where}: {exc.strerror or exc}", hint=fix
        ) from exc


def _remove_stale(path: Path, *, everyone_else: bool) -> tuple[OwnerInfo, ...]:
    """Drop metadata of holders that are gone, and return them.  Called holding the lock.

    Holding it exclusively proves every other file is stale, whatever it says (e.g. a holder
    whose pid was reused by a live process); holding it shared, only validation can tell.
    """
    if not everyone_else:
        gone = [i for i in read_owners(path) if not i.alive]
        removed = set(remove_stale_metadata(path))
        return tuple(i for i in gone if i.path in removed)
    me = os.getpid()
    stale = []
    for info in read_owners(path):
        if info.pid != me:
            with contextlib.suppress(OSError):  # gone already, or a folder a forger made
                info.path.unlink()
                stale.append(info)
    return tuple(stale)


def remove_stale_metadata(data_dir: Path | str | DataDir) -> list[Path]:
    """Remove only the metadata files whose process is provably gone; return their paths.

    "Provably gone" is the validation of ``read_owners``: the pid does not exist, is a
    zombie, is another process now (reused), or the file is not valid metadata at all.
    A live holder's file is never touched, so this is safe to call at any time
    (`vestige doctor --remove-stale`).
    """
    removed = []
    for info in read_owners(data_dir):
        if not info.alive:
            with contextlib.suppress(OSError):
                info.path.unlink()
                removed.append(info.path)
    return removed


def read_owners(data_dir: Path | str | DataDir) -> list[OwnerInfo]:
    """Every published holder, oldest first, each checked against the process table.

    Entries with ``alive=False`` are stale: their process is gone, or the file is invalid.
    ``verified`` entries are proved to hold the lock.  Never raises for a missing directory
    or a damaged, forged or hostile file (a FIFO, a link, a huge file: none is read).
    """
    path = _dir(data_dir)
    owners = path / OWNERS_DIR
    try:
        if not stat.S_ISDIR(os.lstat(owners).st_mode):
            return []
        files = sorted(owners.glob("*.json"))
    except OSError:
        return []
    targets = lock_files(path)
    infos = [_metadata.read(f, targets) for f in files]
    return sorted(infos, key=lambda i: (i.started_at, i.pid))


def lock_state(data_dir: Path | str | DataDir) -> LockState:
    """Probe the lock without waiting: FREE, EXCLUSIVE or SHARED.

    Both the directory and the lock file are probed (an older holder locks only the file),
    each through its own open.  flock locks belong to an open file description, so a probe
    from the holder's own process still sees the holder's lock, and closing the probe's
    descriptor never drops it (with fcntl/lockf record locks it would).  Never probe through
    the holder's descriptor: re-locking it would convert its lock.  Exclusive is tried first,
    then shared, never an upgrade: Windows refuses an exclusive lock over the same handle's
    shared one.  The probe itself holds a lock for microseconds; ``acquire_owner``'s grace
    covers that.  Nothing is created: a missing lock file is simply not held.
    """
    path = _dir(data_dir)
    states = set()
    for target in lock_files(path):
        try:
            fd = os.open(target, _DIR_FLAGS if target == path else os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            states.add(_probe(fd))
        finally:
            os.close(fd)
    for state in (LockState.EXCLUSIVE, LockState.SHARED):
        if state in states:
            return state
    return LockState.FREE


def kernel_holders(data_dir: Path | str | DataDir) -> list[int] | None:
    """The pids the kernel shows holding the owner lock (Linux); None where it cannot say."""
    pids: set[int] = set()
    for target in lock_files(data_dir):
        locks = _linux_proc.lock_holders(target)
        if locks is None:
            return None
        pids.update(lock.pid for lock in locks)
    return sorted(pids)


def _probe(fd: int) -> LockState:
    if _file_locks.try_lock(fd):
        return LockState.FREE
    return LockState.SHARED if _file_locks.try_lock(fd, shared=True) else LockState.EXCLUSIVE


def _live_owners(path: Path, wait_s: float = METADATA_WAIT_S) -> list[OwnerInfo]:
    """Holders to name in a refusal, waiting briefly for a just-started one to publish."""
    deadline = time.monotonic() + wait_s
    while True:
        owners = [o for o in read_owners(path) if o.alive]
        if owners or time.monotonic() >= deadline:
            return owners
        time.sleep(0.02)


def _close_in_child() -> None:
    # A fork()ed child shares our lock descriptors; it must not keep the lock alive after we
    # die.  Closing its copies leaves ours untouched (no unlock: that would drop ours too).
    for lock in list(_held.values()):
        for fd in lock._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        lock._fds = []
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)
