"""Doctor's checks on the database: journal mode, quick_check, schema, WAL and SHM size.

Strictly private.  The file is opened only through SQLite, read-write *without* the create
flag (a missing database is never created) and with ``query_only``: a read-only open
would leave freshly made -wal/-shm files behind, whereas SQLite's normal close removes
them again when doctor was the only connection.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Final

import apsw

from vestige import config, migrations
from vestige.doctor._report import Report, Status
from vestige.errors import MigrationError
from vestige.processes import stop_command

if TYPE_CHECKING:
    from pathlib import Path

    from vestige.processes import Scan

#: How long doctor's own connection waits on a lock before reporting "busy".
BUSY_TIMEOUT_MS: Final = 250
#: quick_check/integrity_check stop after this many problems (the first ones say enough).
MAX_CHECK_ERRORS: Final = 10


def _size(path: Path) -> int:
    try:
        return path.stat().st_size  # stat only: never open SQLite's files outside SQLite
    except FileNotFoundError:
        return 0


def newest_backup(backups: Path) -> Path | None:
    try:
        files = [e for e in os.scandir(backups) if e.is_file() and e.name.endswith(".db")]
    except OSError:
        return None
    if not files:
        return None
    return backups / max(files, key=lambda e: e.stat().st_mtime).name


def _stop_holders(scan: Scan) -> str:
    cmds = [stop_command(h.pid) for h in scan.holders]
    return f"stop the processes using it ({'; '.join(cmds)}), then " if cmds else ""


def _restore_hint(report: Report, scan: Scan) -> str:
    backup = newest_backup(report.data_dir.backups)
    first = _stop_holders(scan)
    if backup is not None:
        # The live file is damaged, so restore must set it aside instead of backing it up.
        step = f"restore the newest backup: vestige restore {backup} --move-damaged"
    else:
        step = (
            f"save what is readable (no backup in {report.data_dir.backups}): "
            "vestige export -o rescue.jsonl"
        )
    text = first + step
    return text[0].upper() + text[1:]


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
    facts.update(bytes=_size(db), wal_bytes=_size(wal), shm_bytes=_size(shm))
    try:
        conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READWRITE)
    except apsw.Error as exc:
        report.add(
            "database", Status.FAIL, f"SQLite cannot open {db}: {exc}", _restore_hint(report, scan)
        )
        return
    try:
        conn.set_busy_timeout(BUSY_TIMEOUT_MS)
        conn.execute("PRAGMA query_only = ON").fetchall()
        _run_checks(report, conn, facts, deep=deep, scan=scan)
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
        report.add("database", Status.FAIL, f"SQLite error on {db}: {exc}")
    finally:
        conn.close()
    _check_wal_size(report, facts, scan)


def _run_checks(
    report: Report, conn: apsw.Connection, facts: dict[str, Any], *, deep: bool, scan: Scan
) -> None:
    journal = str(conn.execute("PRAGMA journal_mode").fetchall()[0][0]).lower()
    facts["journal_mode"] = journal
    if journal == "wal":
        report.add("journal-mode", Status.OK, "wal")
    else:
        report.add(
            "journal-mode",
            Status.WARN,
            f"{journal}, not wal: processes block each other more than they need to",
            "Any Vestige command switches it back to WAL when it opens the store, e.g. "
            "`vestige stats`.",
        )
    pragma = "integrity_check" if deep else "quick_check"
    rows = [
        " ".join(str(r[0]).split())
        for r in conn.execute(f"PRAGMA {pragma}({MAX_CHECK_ERRORS})").fetchall()
    ]
    facts[pragma] = rows
    if rows == ["ok"]:
        report.add(pragma.replace("_", "-"), Status.OK, "ok")
    else:
        report.add(
            pragma.replace("_", "-"),
            Status.FAIL,
            f"found damage: {'; '.join(rows)}",
            _restore_hint(report, scan),
        )
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
