"""The two SQLite connections and the one way in for every write.

Strictly private: the store builds on it; nothing outside ``vestige`` should.

- A writer and a reader connection, each behind its own mutex, so reads never wait for a
  write in this process, and WAL keeps them from waiting on other processes' writes.
- ``Database.write(fn)`` is the only way to change the database.  It takes the writer mutex,
  the cross-process write gate, then ``BEGIN IMMEDIATE`` (where SQLite's busy_timeout
  actually waits), runs ``fn`` and commits.  A busy failure anywhere rolls the whole
  transaction back and runs it again after a full-jitter pause, until one deadline covers
  gate, busy waits and pauses.  ``fn`` must do database work only: anything slow inside it
  holds every other writer out.
- A write made inside ``request_keys.guarding`` records its request key in its own
  transaction, so the key exists exactly when the write committed (``vestige.request_keys``):
  still one way in, the key is part of the write.
- The WAL is checkpointed after the write that filled it, once the gate is released: SQLite's
  own auto-checkpoint runs inside COMMIT, so it held the gate through the checkpoint's
  fsyncs and every other process's writes stalled behind it (0.5-0.8 s each on a loaded
  machine, seen in the load test).  A PASSIVE checkpoint needs no gate: writers append to
  the WAL while it copies what came before them.
- ``Database.read()`` gives one consistent snapshot for several statements.
- After a full disk or an I/O error on the writer, both connections are replaced by fresh
  ones before their next use: a connection that saw its transaction undone by SQLite may
  keep cached state (FTS5's index structure, the page cache) that no longer matches the
  file, and a long-lived connection was seen reporting FTS5 "corruption" that a fresh one
  did not find.  The same happens to the reader after a read that SQLite called corrupt.
- Writes can be refused with one stated reason (``refuse_writes``): a server that found
  its database damaged after an unclean stop keeps reading but writes nothing more to it,
  not even a checkpoint, at shutdown or on close.
- A process forked from one with an open store inherits the connections, the mutexes (held,
  perhaps, by a thread that does not exist in the child) and the gate.  SQLite forbids using
  or even closing such a connection in the child, so the child's copy is disowned: every
  call raises one clear error, ``close()`` forgets the connections without closing them, and
  the mutexes are new, so nothing deadlocks.  The child opens its own store - unless the
  fork came in the middle of a write: SQLite keeps a process's locks in memory, shared by
  all its connections to a file, and the child's copy says "this process is writing" for
  good.  A new connection there would wait for a write that never ends, so opening that
  database again in such a child is refused with the reason instead.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import threading
import time
import weakref
from typing import TYPE_CHECKING, Final, TypeVar

import apsw

from vestige import config, request_keys
from vestige._gate import GateError, GateTimeout, WriteGate
from vestige._rows import as_int, scalar
from vestige.config import Durability
from vestige.errors import (
    CorruptionError,
    InvalidInput,
    SQLiteTooOld,
    StoreBusyError,
    StoreError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

log = logging.getLogger("vestige.store")
T = TypeVar("T")

_BUSY = 5  # SQLITE_BUSY, the primary code of BUSY_SNAPSHOT, BUSY_RECOVERY, ...


def check_sqlite_version() -> None:
    version = tuple(int(p) for p in apsw.sqlite_lib_version().split(".")[:3])
    if version < config.MIN_SQLITE_VERSION:
        need = ".".join(map(str, config.MIN_SQLITE_VERSION))
        raise SQLiteTooOld(
            f"SQLite {apsw.sqlite_lib_version()} is too old: Vestige needs {need} or newer "
            "(older versions can corrupt a WAL database shared by several processes)"
        )


def is_busy(exc: BaseException) -> bool:
    return isinstance(exc, apsw.Error) and (getattr(exc, "result", 0) & 0xFF) == _BUSY


#: An I/O error while less than this is free on the disk holding the database is a full
#: disk: SQLite says "disk I/O error", not "database or disk is full", when it cannot create
#: or grow ``-wal`` and ``-shm`` (an existing database opened on a full disk).
FULL_DISK_MARGIN_BYTES: Final = 1 << 20
#: SQLite errors after which a connection is replaced before its next use (see the module
#: docstring): SQLite may have undone the transaction under it.
_RESET_AFTER: Final = (apsw.FullError, apsw.IOError)


def free_bytes(folder: Path) -> int | None:
    """Bytes this user may still write on the disk holding ``folder``; None if unknown."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs on Windows
        return None
    return st.f_bavail * st.f_frsize


def disk_is_full(exc: apsw.Error, path: Path) -> bool:
    """Whether ``exc`` on ``path`` comes from a full disk (FULL, or IOERR with no room left)."""
    if isinstance(exc, apsw.FullError):
        return True
    if not isinstance(exc, apsw.IOError):
        return False
    free = free_bytes(path.parent)
    return free is not None and free < FULL_DISK_MARGIN_BYTES


def translate(exc: apsw.Error, path: Path, *, writing: bool = False) -> StoreError:
    """Turn an SQLite error into one a person can act on.

    ``writing``: the error ended a write transaction (which SQLite rolled back).
    """
    if isinstance(exc, apsw.CorruptError | apsw.NotADBError):
        return CorruptionError(f"{path} is damaged or is not a Vestige database: {exc}")
    if disk_is_full(exc, path):
        return _disk_full(path, writing=writing)
    if isinstance(exc, apsw.ReadOnlyError):
        return StoreError(
            f"{path} is read-only for this process",
            hint="Check the permissions of the data directory and of vestige.db, -wal, -shm.",
        )
    if isinstance(exc, apsw.CantOpenError):
        return StoreError(
            f"cannot open {path}: {exc}",
            hint="Check that the data directory exists and is readable and writable.",
        )
    if is_busy(exc):
        # Reads fail here too, so say nothing about writes or a deadline.
        return StoreBusyError(f"the database is busy (another process kept it locked): {path}")
    return StoreError(
        f"SQLite error on {path}: {exc}",
        hint="Run `vestige doctor` to check the database and its data directory, then retry.",
    )


def _disk_full(path: Path, *, writing: bool) -> StoreError:
    if writing:
        return StoreError(
            f"the disk holding {path.parent} is full; the last change to {path.name} "
            "was rolled back",
            hint="Free some space on that disk, then retry. Nothing was half written.",
        )
    return StoreError(
        f"the disk holding {path.parent} is full: SQLite cannot create or grow "
        f"{path.name}-wal and {path.name}-shm there, which it needs to open {path.name}",
        hint="Free some space on that disk, then retry. Nothing was changed.",
    )


def _refuse_a_full_disk(path: Path) -> None:
    """Refuse to open ``path`` read-write while its disk has less than the margin free.

    SQLite maps ``-shm`` into memory, and the first process after a kill -9 rebuilds it:
    truncated, then grown by writing one byte at the end of each 4 KiB page.  On a
    filesystem with smaller blocks (ext4 made with ``-b 1024``) the rest of each page stays
    a hole, and when SQLite touches it through the mapping on a full disk the kernel cannot
    back it: the process dies of SIGBUS, with no message and no chance to clean up.  No
    error code can be had from SQLite there, so the disk is checked first.
    """
    free = free_bytes(path.parent)
    if free is not None and free < FULL_DISK_MARGIN_BYTES:
        raise _disk_full(path, writing=False)


def _busy_error(
    path: Path, why: str, deadline_s: float = config.WRITE_DEADLINE_S
) -> StoreBusyError:
    return StoreBusyError(
        f"the database is busy ({why}): no write could start within {deadline_s:g} s on {path}"
    )


class Database:
    """Owns the connections of one process to one database file."""

    def __init__(
        self,
        path: Path,
        *,
        durability: Durability = Durability.BALANCED,
        gate_path: Path | None = None,
        write_deadline_s: float = config.WRITE_DEADLINE_S,
        retry_busy: bool = True,
        write_delay_s: float = 0.0,
        needs_init: Callable[[apsw.Connection], bool] | None = None,
        init: Callable[[Database], None] | None = None,
        read_only: bool = False,
    ) -> None:
        """Open both connections; convert a new file to WAL and run ``init`` (migrations).

        ``read_only`` (a read-only filesystem): both connections only read, through
        ``config.read_only_uri``; there is no gate, nothing is set up, and every write is
        refused with the reason.

        ``needs_init(conn)`` reads the file and says whether ``init`` must run; it raises for a
        file that is not ours, before anything is changed (not switched to WAL, not chmodded).
        An up-to-date WAL database is opened without taking the write gate and without
        writing, so read-only commands never queue behind writers.
        """
        check_sqlite_version()
        if path in _forked_mid_write:
            raise StoreError(
                f"this process was forked while its parent was writing to {path}: SQLite "
                "cannot open that database again in this process",
                hint="Start child processes with the 'spawn' method "
                "(multiprocessing.set_start_method('spawn')), or fork before opening the "
                "store, or exec a new program.",
            )
        self.path = path
        self.read_only = read_only
        self._target = config.read_only_uri(path) if read_only else str(path)
        self.durability = durability
        self.write_deadline_s = write_deadline_s
        self.retry_busy = retry_busy
        #: Injected fault (config.WRITE_DELAY_ENV): held inside every transaction.
        self.write_delay_s = write_delay_s
        self._gate = WriteGate(gate_path) if gate_path is not None else None
        self._writer_lock = threading.Lock()
        self._reader_lock = threading.Lock()
        self._closed = False
        self._forked = False  # this is a forked child's copy of a parent's database
        # Replace this connection before its next use (see the module docstring).
        self._writer_stale = False
        self._reader_stale = False
        #: Why writes are refused (``refuse_writes``); None while they are allowed.
        self._refusal: StoreError | None = None
        #: Pages in the WAL after this process's last commit (the writer's WAL hook).
        self._wal_pages = _WalPages()
        _open_databases.add(self)
        self._writer: apsw.Connection | None = None
        self._reader: apsw.Connection | None = None
        try:
            if not read_only:
                _refuse_a_full_disk(path)
            self._writer = self._connect(reader=False)
            with self._writer_lock:
                needed = self._setup_needed(needs_init)
                if read_only and needed:
                    raise config.read_only_filesystem(
                        path, "the database must be upgraded first", upgrade=True
                    )
                if not read_only:
                    config.secure_file(path)  # ours (checked above): keep it private
                if needed:
                    # A new or old file: WAL conversion and migrations race between processes
                    # (pitfall 8), so they run while holding the write gate, re-checked there.
                    deadline = time.monotonic() + self.write_deadline_s
                    with self._gated(deadline):
                        if self._setup_needed(needs_init):
                            self._enable_wal(deadline)
                            if init is not None:
                                init(self)
            self._reader = self._connect(reader=True)
        except BaseException:
            self.close()
            raise

    def _setup_needed(self, needs_init: Callable[[apsw.Connection], bool] | None) -> bool:
        assert self._writer is not None
        try:
            pending = needs_init is not None and needs_init(self._writer)
            mode = self._writer.execute("PRAGMA journal_mode").fetchall()[0][0]
        except apsw.Error as exc:
            raise translate(exc, self.path) from exc
        # An immutable read says "delete" whatever the file is, and a read-only one stays.
        return pending or (str(mode).lower() != "wal" and not self.read_only)

    # -- connections ---------------------------------------------------------------

    def _connect(self, *, reader: bool) -> apsw.Connection:
        try:
            conn = apsw.Connection(
                self._target,
                flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE | apsw.SQLITE_OPEN_URI,
            )
            conn.set_busy_timeout(config.BUSY_TIMEOUT_MS)
            sync = "FULL" if self.durability is Durability.HARDENED else "NORMAL"
            for pragma in (
                f"synchronous = {sync}",
                f"cache_size = -{config.CACHE_SIZE_KIB}",
                "temp_store = MEMORY",
                "foreign_keys = ON",
                f"busy_timeout = {config.BUSY_TIMEOUT_MS}",
                f"mmap_size = {config.MMAP_SIZE_BYTES}",
                f"journal_size_limit = {config.JOURNAL_SIZE_LIMIT_BYTES}",
                # Freed space is zeroed: a deleted or purged memory, or a changelog entry
                # redacted by a purge, leaves no copy on a free page (issue 9).
                "secure_delete = ON",
            ):
                conn.execute(f"PRAGMA {pragma}").fetchall()
            if reader:
                # The reader never writes: a bug that tries fails loudly instead of
                # bypassing the gate.
                conn.execute("PRAGMA query_only = ON").fetchall()
            else:
                # Replaces SQLite's auto-checkpoint (the same hook): see _checkpoint_if_due.
                conn.set_wal_hook(self._wal_pages.note)
        except apsw.Error as exc:
            raise translate(exc, self.path) from exc
        return conn

    def _enable_wal(self, deadline: float) -> None:
        assert self._writer is not None
        attempt = 0
        while True:
            try:
                mode = self._writer.execute("PRAGMA journal_mode = WAL").fetchall()[0][0]
                break
            except apsw.Error as exc:
                # A brand-new file converting in several processes can fail at once with
                # BUSY despite busy_timeout (E13): retry, the mode persists once set.
                if not is_busy(exc):
                    raise translate(exc, self.path) from exc
                attempt = self._pause(attempt, deadline, exc)
        if str(mode).lower() != "wal":
            raise StoreError(
                f"{self.path} cannot use WAL journaling (SQLite kept {mode!r})",
                hint="Keep the data directory on a local disk; WAL does not work on network "
                "filesystems.",
            )

    def _current_writer(self) -> apsw.Connection:
        """The writer, replaced first if an error left it stale.  Hold the writer mutex."""
        if self._writer_stale:
            self._writer = self._replace(self._writer, reader=False)
            self._writer_stale = False
        assert self._writer is not None
        return self._writer

    def _current_reader(self) -> apsw.Connection:
        """The reader, replaced first if an error left it stale.  Hold the reader mutex."""
        if self._reader_stale:
            self._reader = self._replace(self._reader, reader=True)
            self._reader_stale = False
        assert self._reader is not None
        return self._reader

    def _replace(self, old: apsw.Connection | None, *, reader: bool) -> apsw.Connection:
        fresh = self._connect(reader=reader)  # raises (translated) and keeps ``old`` stale
        if old is not None:
            try:
                old.close()
            except apsw.Error:
                old.close(True)  # force: whatever it still had open goes with it
        log.info("replaced the %s connection to %s", "reader" if reader else "writer", self.path)
        return fresh

    def _after_error(self, exc: apsw.Error) -> None:
        """Mark the connections stale after an error that may leave their view wrong."""
        if isinstance(exc, _RESET_AFTER):
            self._writer_stale = self._reader_stale = True

    # -- writes --------------------------------------------------------------------

    def write(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Run ``fn(conn)`` in one short ``BEGIN IMMEDIATE`` transaction and commit it.

        Retried whole on BUSY with full jitter; StoreBusyError after the deadline.  Any other
        error rolls back and propagates (SQLite errors translated), so nothing is half written.
        A full disk or an I/O error also replaces both connections before their next use.

        Inside ``request_keys.guarding``, the first write that commits also records the
        request key, in this same transaction; a repeat of the key raises
        ``RequestRepeated`` before ``fn`` runs (see ``vestige.request_keys``).
        """
        self._check_writable()
        guard = request_keys.pending()
        if guard is not None:
            fn = functools.partial(request_keys.run_guarded, guard=guard, fn=fn)
        deadline = time.monotonic() + self.write_deadline_s
        with self._writer_lock:
            with self._gated(deadline):
                result = self._transact(fn, deadline)
            self._checkpoint_if_due()
        if guard is not None:
            guard.used = True  # committed with its key: the context's later writes are free
        return result

    def _checkpoint_if_due(self) -> None:
        """A PASSIVE checkpoint once a commit left the WAL at ``WAL_CHECKPOINT_PAGES`` or more
        (SQLite's auto-checkpoint threshold), outside the gate; the caller holds the writer
        mutex.

        The write has committed: nothing here may fail it (a client told "failed" would send
        it again).  Busy means another process is checkpointing already, which is as good.
        Any other error is logged, and a full disk or I/O error replaces the connections as
        after a failed write; the next write that finds the WAL long tries again.
        """
        if self._wal_pages.count < config.WAL_CHECKPOINT_PAGES or self._refusal is not None:
            return
        self._wal_pages.count = 0
        try:
            self._current_writer().wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
        except apsw.Error as exc:
            if is_busy(exc):
                return
            self._after_error(exc)
            log.warning("checkpoint of %s after a write failed: %s", self.path, exc)

    def refuse_writes(self, reason: StoreError) -> None:
        """Refuse every later write with ``reason`` (reads go on); for a damaged database."""
        self._refusal = reason

    @property
    def write_refusal(self) -> StoreError | None:
        """Why writes are refused, or None."""
        return self._refusal

    def _check_writable(self) -> None:
        refusal = self._refusal
        if refusal is not None:  # a new error each time: a raised one keeps its traceback
            raise type(refusal)(refusal.message, hint=refusal.hint)

    def transact_ungated(self, fn: Callable[[apsw.Connection], T]) -> T:
        """For migrations only: the caller already holds the writer mutex and the gate."""
        return self._transact(fn, time.monotonic() + self.write_deadline_s)

    def _check_file_writable(self) -> None:
        """The store is open and its file can be written (not a read-only mount)."""
        self._check_open()
        if self.read_only:
            raise config.read_only_filesystem(
                self.path.parent, f"{self.path.name} cannot be changed"
            )

    @contextlib.contextmanager
    def _gated(self, deadline: float) -> Iterator[None]:
        self._check_file_writable()
        if self._gate is None:
            yield
            return
        try:
            self._gate.acquire(max(0.0, deadline - time.monotonic()))
        except GateTimeout:
            raise _busy_error(
                self.path, "other Vestige processes kept the write gate", self.write_deadline_s
            ) from None
        except GateError as exc:
            raise StoreError(
                str(exc.strerror),
                hint="Keep the data directory on a local filesystem that supports file locks "
                "(flock); a forked process must open its own Store.",
            ) from exc
        try:
            yield
        finally:
            self._gate.release()

    def _transact(self, fn: Callable[[apsw.Connection], T], deadline: float) -> T:
        conn = self._current_writer()
        attempt = 0
        try:
            while True:
                remaining_ms = int((deadline - time.monotonic()) * 1000)
                conn.set_busy_timeout(max(1, min(config.BUSY_TIMEOUT_MS, remaining_ms)))
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        result = fn(conn)
                        if self.write_delay_s:
                            time.sleep(self.write_delay_s)
                        conn.execute("COMMIT")
                    except BaseException:
                        # SQLite may have undone only the failing statement, and a BUSY
                        # COMMIT leaves the transaction open: always roll back (pitfall 16).
                        if conn.in_transaction:
                            conn.execute("ROLLBACK")
                        raise
                    return result
                except apsw.Error as exc:
                    if not is_busy(exc) or not self.retry_busy:
                        self._after_error(exc)
                        raise translate(exc, self.path, writing=True) from exc
                    attempt = self._pause(attempt, deadline, exc)
        finally:
            with contextlib.suppress(apsw.Error):  # a connection left broken is replaced
                conn.set_busy_timeout(config.BUSY_TIMEOUT_MS)

    def _pause(self, attempt: int, deadline: float, exc: apsw.Error) -> int:
        """Sleep a full-jitter delay before the next attempt, or raise if past the deadline."""
        attempt += 1
        delay = random.uniform(0, min(config.RETRY_CAP_S, config.RETRY_BASE_S * 2**attempt))  # noqa: S311
        if time.monotonic() + delay >= deadline:
            raise _busy_error(
                self.path, "the database stayed locked", self.write_deadline_s
            ) from exc
        log.info("database busy (%s); retry %d in %.0f ms", exc, attempt, delay * 1000)
        time.sleep(delay)
        return attempt

    # -- reads ---------------------------------------------------------------------

    @contextlib.contextmanager
    def read(self) -> Iterator[apsw.Connection]:
        """One read transaction (one snapshot) on the reader connection.

        Keep it short and fetch everything: an open read transaction pins the WAL.
        """
        self._check_open()
        with self._reader_lock:
            self._check_open()  # close() may have run while we waited for the lock
            conn = self._current_reader()
            try:
                conn.execute("BEGIN")
                try:
                    yield conn
                finally:
                    if conn.in_transaction:
                        conn.execute("COMMIT")
            except apsw.Error as exc:
                self._after_error(exc)
                if isinstance(exc, apsw.CorruptError):
                    # Perhaps only this connection's cached view: the next read starts fresh.
                    self._reader_stale = True
                raise translate(exc, self.path) from exc

    def quick_check(self) -> str:
        """``PRAGMA quick_check`` on a connection of its own, opened for it and closed after.

        Not on the reader: a check of a large file takes seconds and would hold every read
        of this process out meanwhile, and a long-lived connection can report FTS5 damage
        that is not there (after another connection's FTS5 secure-delete, or a rolled-back
        SQLITE_FULL, its cached index structure is stale; a new connection reads it fresh).
        Damage is reported only when a fresh connection sees it.
        """
        self._check_open()
        conn = self._connect(reader=True)
        try:
            # Every page is read once: a page cache or a memory map would only grow the
            # process by the size of the file (400 MB for a 850 MB database).
            conn.execute("PRAGMA cache_size = -2048; PRAGMA mmap_size = 0")
            return "; ".join(str(r[0]) for r in conn.execute("PRAGMA quick_check").fetchall())
        except apsw.Error as exc:
            raise translate(exc, self.path) from exc
        finally:
            conn.close()

    def journal_mode(self) -> str:
        """The file's journal mode; an immutable read (``read_only``) takes it from the header,
        because there SQLite says "delete" whatever the file is."""
        if self.read_only and "immutable=1" in self._target:
            return config.header_journal_mode(self.path)
        with self.read() as conn:
            return str(scalar(conn, "PRAGMA journal_mode")).lower()

    def data_version(self) -> int:
        """Changes whenever any connection (of any process) commits to this database.

        Read with PRAGMA inside a read: the pager's counter (``Connection.data_version()``)
        only moves when a read transaction starts, so on an idle reader it is stale.
        """
        with self.read() as conn:
            return as_int(scalar(conn, "PRAGMA data_version"), "data_version")

    def checkpoint(self, *, truncate: bool = False) -> tuple[int, int]:
        """Checkpoint the WAL; TRUNCATE leaves it empty (for idle moments and shutdown).

        Not while writes are refused: a checkpoint writes the WAL's pages into the file,
        and nothing more is written to a damaged one.  Only TRUNCATE takes the write gate:
        it waits for writers to finish, while a PASSIVE one works beside them, and holding
        the gate through its fsyncs would stall every other process's writes.
        """
        if self._refusal is not None:
            log.info("no checkpoint of %s: writes are refused (%s)", self.path, self._refusal)
            return 0, 0
        mode = apsw.SQLITE_CHECKPOINT_TRUNCATE if truncate else apsw.SQLITE_CHECKPOINT_PASSIVE
        deadline = time.monotonic() + self.write_deadline_s
        if not truncate:
            self._check_file_writable()
        gate = self._gated(deadline) if truncate else contextlib.nullcontext()
        with self._writer_lock, gate:
            try:
                log_frames, done = self._current_writer().wal_checkpoint(mode=mode)
            except apsw.Error as exc:
                self._after_error(exc)
                raise translate(exc, self.path) from exc
            return int(log_frames), int(done)

    def snapshot_to(self, target: Path) -> None:
        """Copy a consistent snapshot into ``target`` with the online backup API, in one step.

        One step (all pages) holds a single read lock, so concurrent writers neither block it
        nor restart it (a stepwise copy may never finish under load: reference E3).

        :raises apsw.FullError: ``target``'s disk is full.  Only ``target`` is written, so
            the caller, which knows what ``target`` stands for, names it; the live
            database's disk has nothing to do with it.
        """
        self._check_open()
        try:
            dest = apsw.Connection(str(target))
        except apsw.Error as exc:
            raise InvalidInput(
                f"cannot write a backup to {target}: {exc}",
                hint="Choose a folder on a local disk that you can write to.",
            ) from exc
        try:
            try:
                with self._reader_lock:
                    self._check_open()  # close() may have run while we waited for the lock
                    with dest.backup("main", self._current_reader(), "main") as backup:
                        backup.step(-1)
            finally:
                dest.close()
        except apsw.FullError:
            raise
        except apsw.Error as exc:
            raise translate(exc, self.path) from exc

    # -- lifecycle -----------------------------------------------------------------

    def _check_open(self) -> None:
        if self._forked:
            raise StoreError(
                f"this store of {self.path} was opened before os.fork(): a forked process "
                "cannot use its parent's SQLite connections",
                hint="Open a new Store in the child process (Store.open), or start children "
                "with the 'spawn' method.",
            )
        if self._closed:
            raise StoreError("the store is closed", hint="Open it again with Store.open().")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        _open_databases.discard(self)
        with self._writer_lock, self._reader_lock:
            for conn in (self._reader, self._writer):
                if conn is not None:
                    if self._refusal is not None:
                        # The last connection to close checkpoints the WAL into the file and
                        # deletes -wal and -shm; a damaged file keeps all three as they are.
                        with contextlib.suppress(apsw.Error):
                            conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
                    conn.close()
            self._reader = self._writer = None
            if self._gate is not None:
                self._gate.close()


class _WalPages:
    """The WAL's length in pages after the last commit, as SQLite's WAL hook tells it."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def note(self, conn: apsw.Connection, name: str, pages: int) -> int:
        self.count = pages
        return apsw.SQLITE_OK


#: Every open database, so a forked child can disown its copies (see the module docstring).
_open_databases: weakref.WeakSet[Database] = weakref.WeakSet()
#: The connections a forked child inherited: kept referenced so that the child never closes
#: them (SQLite: a connection must not be used, nor closed, across a fork).
_inherited: list[apsw.Connection] = []
#: Databases a forked child's parent was writing to at the fork (see the module docstring).
_forked_mid_write: set[Path] = set()


def _disown_in_child() -> None:
    # No lock is taken: a thread of the parent may have held one at the fork, and it does
    # not exist here.  The gate's own handler closes the child's gate descriptors.
    for db in list(_open_databases):
        if db._writer is not None and db._writer.in_transaction:
            _forked_mid_write.add(db.path)
        _inherited.extend(c for c in (db._writer, db._reader) if c is not None)
        db._writer = db._reader = None
        db._writer_lock = threading.Lock()
        db._reader_lock = threading.Lock()
        db._forked = db._closed = True
    _open_databases.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_disown_in_child)
