"""Doctor's checks on the database: journal mode, schema, WAL and SHM size; integrity with
--deep.

Strictly private.  Doctor changes no byte of ``vestige.db``, ``-wal`` or ``-shm``: it opens
the database only through SQLite and only read-only, in one of two ways, chosen by which
files exist:

- ``-wal`` and ``-shm`` both there (a server runs, or one was killed): ``readonly_shm=1``.
  SQLite maps the shared memory read-only; if it is stale (after a kill -9) it rebuilds
  the WAL index in private memory instead of in the file.  A read-write open would run
  recovery into ``-shm`` and, as the last connection, checkpoint the WAL into the database
  and delete both on close; even a plain read-only open rewrites ``-shm`` after a crash.
- Neither there (no process has it open): ``immutable=1``, which reads the database file
  alone and creates nothing (any other open first creates ``-wal``).  Immutable reads take
  no lock, so the file's identity (inode, size, times) and the absence of ``-wal``/``-shm``
  are compared before and after: a process that opened and wrote meanwhile makes doctor
  check again, the other way.

One file without the other is a process opening or closing the database at that moment;
doctor looks again.  If it stays (a crash in between), the database is read alone and the
WAL not checked, which the report says.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

import apsw

from vestige import config, migrations
from vestige._database import FULL_DISK_MARGIN_BYTES, free_bytes
from vestige.doctor._report import Report, Status
from vestige.errors import DataDirError, MigrationError
from vestige.processes import stop_command

if TYPE_CHECKING:
    from pathlib import Path

    from vestige.processes import Scan

#: How long doctor's own connection waits on a lock before reporting "busy".
BUSY_TIMEOUT_MS: Final = 250
#: integrity_check stops after this many problems (the first ones say enough).
MAX_CHECK_ERRORS: Final = 10
#: Looks at -wal/-shm before deciding that one without the other is not a passing moment.
VIEW_ATTEMPTS: Final = 5
VIEW_PAUSE_S: Final = 0.02
#: Checks taken again when the database changed under an immutable read.
CHECK_ATTEMPTS: Final = 3
#: What the routine doctor leaves to --deep; said in its output and in --json ``not_checked``.
NOT_CHECKED: Final = (
    "the file's pages, indexes and rows were not read, so damage inside the file would "
    "go unnoticed (integrity_check runs with --deep)"
)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size  # stat only: never open SQLite's files outside SQLite
    except FileNotFoundError:
        return 0


def _restore_hint(report: Report, scan: Scan) -> str:
    # The live file is damaged: salvage reads what it can (export would stop at the first
    # damaged page), and restore must set it aside instead of backing it up.
    from vestige import transfer  # noqa: PLC0415 - only a damaged file needs it (issue 12)

    return transfer.rescue_hint(report.data_dir, scan)


def _disk_full(report: Report) -> str | None:
    """ "The disk holding <dir> is full (N bytes free)" when it is, else None."""
    folder = report.data_dir.path
    free = free_bytes(folder)
    if free is None or free >= FULL_DISK_MARGIN_BYTES:
        return None
    return f"the disk holding {folder} is full ({free:,} bytes free)"


def _check_disk_space(report: Report) -> None:
    full = _disk_full(report)
    if full is not None:
        report.add(
            "disk-space",
            Status.FAIL,
            f"{full}: SQLite cannot create -wal/-shm to open the database, nor write to it",
            "Free some space on that disk; nothing is lost, and every command works again "
            "once there is room.",
        )


def _identity(path: Path) -> tuple[int, ...] | None:
    """What changes when anyone writes the file (stat only; never opened outside SQLite)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True, slots=True)
class _View:
    """How doctor opens the database this time, and what must not change while it reads."""

    uri: str
    immutable: bool  # the database file alone, no lock: valid only if ``state`` holds
    state: tuple[object, ...]  # identity of the database; which of -wal, -shm exist
    wal_unread: bool  # a -wal is there that this view does not read (-shm missing)


def _view(db: Path, wal: Path, shm: Path) -> _View | None:
    """The read-only way to open ``db`` now; None while a process is opening or closing it."""
    has_wal, has_shm = wal.exists(), shm.exists()
    state = (_identity(db), has_wal, has_shm)
    base = f"file:{quote(str(db.absolute()))}?mode=ro"
    if has_wal and has_shm:
        return _View(f"{base}&readonly_shm=1", False, state, wal_unread=False)
    if has_wal or has_shm:
        return None
    return _View(f"{base}&immutable=1", True, state, wal_unread=False)


def _settled_view(db: Path, wal: Path, shm: Path) -> _View:
    for _ in range(VIEW_ATTEMPTS):
        view = _view(db, wal, shm)
        if view is not None:
            return view
        time.sleep(VIEW_PAUSE_S)
    # A crash between creating (or deleting) -wal and -shm: read the database file alone.
    state = (_identity(db), wal.exists(), shm.exists())
    uri = f"file:{quote(str(db.absolute()))}?mode=ro&immutable=1"
    return _View(uri, True, state, wal_unread=wal.exists() and _size(wal) > 0)


def _still_valid(view: _View, db: Path, wal: Path, shm: Path) -> bool:
    return not view.immutable or (_identity(db), wal.exists(), shm.exists()) == view.state


def check_database(report: Report, scan: Scan, *, deep: bool) -> None:
    dd = report.data_dir
    db, wal, shm = dd.sqlite_files
    facts: dict[str, Any] = {"path": str(db), "exists": db.is_file()}
    report.facts["database"] = facts
    if not db.exists():
        report.add(
            "database",
            Status.FAIL,
            f"there is no {db.name} in {dd.path}",
            "If you expected memories here, check --data-dir / VESTIGE_DATA_DIR; otherwise "
            "start vestige-mcp or run `vestige ingest TEXT` to create it.",
        )
        return
    try:
        config.refuse_linked_database(dd)
    except DataDirError as exc:
        # Not opened at all: through the link, SQLite would look for -wal and -shm in the
        # wrong place, and every command refuses it for this reason anyway.
        report.add("database", Status.FAIL, exc.message, exc.hint)
        return
    facts.update(bytes=_size(db), wal_bytes=_size(wal), shm_bytes=_size(shm))
    _check_disk_space(report)
    first = len(report.checks)
    for _ in range(CHECK_ATTEMPTS):
        del report.checks[first:]  # a look that went stale is taken again, whole
        view = _settled_view(db, wal, shm)
        facts["opened"] = "immutable" if view.immutable else "read-only shared memory"
        _check_once(report, view, facts, deep=deep, scan=scan)
        if _still_valid(view, db, wal, shm):
            break
    else:
        del report.checks[first:]
        report.add(
            "database",
            Status.WARN,
            "the database kept changing while doctor read it, so it was not checked",
            "Run doctor again; a process was opening and writing it at that moment.",
        )
    if view.wal_unread:
        report.add(
            "wal",
            Status.WARN,
            f"{wal.name} ({_size(wal):,} bytes) has no {shm.name} beside it, so doctor checked "
            "the database without the changes still in the WAL",
            "The next Vestige command or server that opens the database recovers them; run "
            "doctor again afterwards.",
        )
    _check_wal_size(report, facts, scan)


def _check_once(
    report: Report, view: _View, facts: dict[str, Any], *, deep: bool, scan: Scan
) -> None:
    db = report.data_dir.database
    try:
        conn = apsw.Connection(view.uri, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    except apsw.Error as exc:
        if _disk_full(report) is not None:
            return  # said once, by the disk-space check; the file itself is not at fault
        unreadable = db.exists() and not os.access(db, os.R_OK)
        hint = "See the permissions check above." if unreadable else _restore_hint(report, scan)
        report.add("database", Status.FAIL, f"SQLite cannot open {db}: {exc}", hint)
        return
    try:
        conn.set_busy_timeout(BUSY_TIMEOUT_MS)
        _run_checks(report, conn, view, facts, deep=deep, scan=scan)
    except apsw.BusyError as exc:
        report.add(
            "database",
            Status.WARN,
            f"the database stayed locked for {BUSY_TIMEOUT_MS} ms, so it was not checked ({exc})",
            "Run doctor again; if this repeats, a process holds it in exclusive mode "
            "(see the processes above).",
        )
    except (apsw.CorruptError, apsw.NotADBError) as exc:
        report.add(
            "integrity",
            Status.FAIL,
            f"{db} is damaged or is not a database: {exc}",
            _restore_hint(report, scan),
        )
    except apsw.Error as exc:
        if _disk_full(report) is not None and isinstance(exc, apsw.IOError | apsw.FullError):
            return  # said once, by the disk-space check; the file itself is not at fault
        report.add("database", Status.FAIL, f"SQLite error on {db}: {exc}")
    finally:
        conn.close()


def _run_checks(
    report: Report,
    conn: apsw.Connection,
    view: _View,
    facts: dict[str, Any],
    *,
    deep: bool,
    scan: Scan,
) -> None:
    if view.immutable:
        conn.execute("PRAGMA schema_version").fetchall()  # a file that is no database fails here
        journal = config.header_journal_mode(report.data_dir.database)
    else:
        journal = str(conn.execute("PRAGMA journal_mode").fetchall()[0][0]).lower()
    facts["journal_mode"] = journal
    facts["foreign"] = migrations.is_foreign(conn)
    if journal == "wal":
        report.add("journal-mode", Status.OK, "wal")
    elif facts["foreign"]:
        # Not Vestige's file: Vestige changes nothing in it, so it advises nothing for it.
        report.add("journal-mode", Status.OK, f"{journal} (not a Vestige database)")
    else:
        report.add(
            "journal-mode",
            Status.WARN,
            f"{journal}, not wal: processes block each other more than they need to",
            "Any Vestige command switches it back to WAL when it opens the store, e.g. "
            "`vestige stats`.",
        )
    _check_integrity(report, conn, facts, deep=deep, scan=scan)
    try:
        version = migrations.current_version(conn)
    except MigrationError as exc:
        facts["schema_version"] = None
        report.add("schema", Status.FAIL, exc.message, exc.hint)
        return
    facts["schema_version"] = version
    facts["latest_schema_version"] = migrations.LATEST_VERSION
    latest = migrations.LATEST_VERSION
    if version > latest:
        report.add(
            "schema",
            Status.FAIL,
            f"version {version} is newer than this Vestige knows ({latest})",
            "Upgrade Vestige (pip install --upgrade vestige) in every environment that uses it.",
        )
    elif version == 0:
        report.add("schema", Status.WARN, "the database is empty (no Vestige tables yet)")
    elif version < latest:
        report.add(
            "schema",
            Status.WARN,
            f"version {version}; this Vestige migrates it to {latest} when it next opens it",
        )
    else:
        report.add("schema", Status.OK, f"version {version} (current)")


def _check_integrity(
    report: Report, conn: apsw.Connection, facts: dict[str, Any], *, deep: bool, scan: Scan
) -> None:
    """integrity_check with ``deep``; without it, say plainly that the pages were not read.

    integrity_check (and quick_check) read every page of the file: 0.4 s of doctor's 0.7 s
    at 100k memories, growing with the store (issue 12).  The routine doctor stays as fast
    at 100k as at 1k and leaves that to ``--deep``; what it did read (the header, the schema,
    the journal mode and schema version) still fails on a file that is no database.  A server
    that takes over after an unclean stop still runs its own quick_check
    (``Store.check_after_unclean_stop``): only this routine look is lighter.
    """
    if not deep:
        facts["integrity_check"] = None
        report.facts["not_checked"] = [NOT_CHECKED]
        report.add(
            "integrity-check",
            Status.SKIPPED,
            f"not run: {NOT_CHECKED}",
            "Run `vestige doctor --deep` to read the whole file (slower on a large store).",
        )
        return
    rows = [
        " ".join(str(r[0]).split())
        for r in conn.execute(f"PRAGMA integrity_check({MAX_CHECK_ERRORS})").fetchall()
    ]
    facts["integrity_check"] = rows
    if rows == ["ok"]:
        report.add("integrity-check", Status.OK, "ok (every page, index and row read)")
    else:
        report.add(
            "integrity-check",
            Status.FAIL,
            f"found damage: {'; '.join(rows)}",
            _restore_hint(report, scan),
        )


def _check_wal_size(report: Report, facts: dict[str, Any], scan: Scan) -> None:
    if "wal_bytes" not in facts:
        return
    limit = config.JOURNAL_SIZE_LIMIT_BYTES
    wal, shm = facts["wal_bytes"], facts["shm_bytes"]
    detail = f"WAL {wal:,} bytes, SHM {shm:,} bytes (journal_size_limit {limit:,})"
    if wal <= limit:
        report.add("wal-size", Status.OK, detail)
        return
    oldest = min(scan.holders, key=lambda h: h.create_time, default=None)
    hint = "A long read transaction pins the WAL; it shrinks once every reader lets go." + (
        f" If it keeps growing, restart the longest-running holder: {stop_command(oldest.pid)}"
        f" ({oldest.name})"
        if oldest is not None
        else ""
    )
    report.add("wal-size", Status.WARN, f"{detail}: over the limit", hint)
