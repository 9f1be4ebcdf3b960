"""Replace a data directory's database with a backup, safely.  Used by `vestige restore`.

The order is the safety argument:

1. Check the backup first (SQLite opens it read-only; integrity_check; a Vestige schema no
   newer than this library's), so a wrong file is refused before anything is touched.
2. Take the owner lock exclusively and hold it to the end: no server can start meanwhile,
   and a running server (exclusive or shared) makes the lock, hence the restore, refuse.
3. Scan for any other process with the files open (psutil) and refuse, naming them.
4. Keep the current database as a backup (the store's online backup, verified).
5. Overwrite the live database *through SQLite*: the backup API in the other direction,
   under the write gate.  SQLite rewrites the file and its WAL itself; -wal and -shm are
   never deleted or copied by hand.
6. Re-open the result as a store (WAL mode, migrations) and quick_check it.

Step 5 is the one write that does not go through ``Database.write``, on purpose:

- It replaces the whole file, schema included, not rows: an older backup comes back with
  its older schema, which step 6 migrates through the write path as usual.
- SQLite's backup API cannot run inside ``Database.write``: ``sqlite3_backup_init`` refuses
  a destination connection with an open transaction ("destination database is in use"),
  and ``Database.write`` runs its function inside ``BEGIN IMMEDIATE``.
- ``Database.write`` needs an open store, and opening one checks and migrates the live file,
  which may be damaged (set aside by ``--move-damaged``) or missing.

What the write path guarantees still holds: the copy takes the same write gate with the same
deadline, so a writer that starts meanwhile queues behind it; SQLite copies every page in one
write transaction of the live file, so readers keep their snapshot until it commits and a copy
that fails is never committed.  And restore adds what no ordinary write has: the owner lock,
exclusively, for the whole run, and no other process seen with the files open.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

import apsw

from vestige import __version__, changelog, config, migrations, owner, processes
from vestige._gate import GateTimeout, WriteGate
from vestige.errors import (
    CorruptionError,
    DatabaseInUse,
    InvalidInput,
    MigrationError,
    OwnerLockHeld,
    StoreError,
)
from vestige.printable import command_line, escape_controls, shell_arg
from vestige.store import Store

if TYPE_CHECKING:
    from vestige.config import DataDir

#: The kept database's name: ``vestige-before-restore-<UTC time>.db`` in the backups folder.
PREVIOUS_PREFIX: Final = "vestige-before-restore"
#: The folder a damaged database is moved into: ``backups/damaged-<UTC time>/``.
DAMAGED_PREFIX: Final = "damaged"


@dataclass(frozen=True, slots=True)
class BackupFile:
    """A checked backup: what `restore` would put in place."""

    path: Path
    schema_version: int
    memories: int


@dataclass(frozen=True, slots=True)
class RestoreResult:
    restored_from: Path
    previous: Path | None  # where the replaced database was kept (None: there was none)
    moved_damaged: Path | None  # where a damaged database was moved (--move-damaged)
    memories: int
    schema_version: int
    quick_check: str

    def to_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


def check_backup(path: Path) -> BackupFile:
    """Open ``path`` read-only through SQLite and prove it is a whole Vestige database."""
    if not path.is_file():
        raise InvalidInput(f"{path} is not a file", hint="Give the path of a backup .db file.")
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    try:
        conn = apsw.Connection(uri, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    except apsw.Error as exc:
        raise InvalidInput(f"SQLite cannot open {path}: {exc}") from exc
    try:
        check = [str(r[0]) for r in conn.execute("PRAGMA integrity_check(10)").fetchall()]
        if check != ["ok"]:
            raise InvalidInput(
                f"{path} is damaged (integrity_check: {'; '.join(check)})",
                hint="Choose another backup; `ls <data-dir>/backups` lists the automatic ones.",
            )
        version = migrations.current_version(conn)
        if version == 0:
            raise InvalidInput(f"{path} is an empty SQLite database, not a Vestige backup")
        if version > migrations.LATEST_VERSION:
            raise InvalidInput(
                f"{path} has schema version {version}, newer than this Vestige knows "
                f"({migrations.LATEST_VERSION})",
                hint="Upgrade Vestige first: pip install --upgrade vestige",
            )
        memories = conn.execute("SELECT COUNT(*) FROM knowledge_nodes").fetchall()[0][0]
        assert isinstance(memories, int)
    except apsw.CorruptError as exc:
        raise InvalidInput(
            f"{path} is damaged ({exc})",
            hint="Choose another backup; `ls <data-dir>/backups` lists the automatic ones.",
        ) from exc
    except apsw.NotADBError as exc:
        raise InvalidInput(
            f"{path} is not a SQLite database ({exc})",
            hint="`vestige restore` takes a .db backup; a JSON export goes in with "
            "`vestige import FILE`.",
        ) from exc
    except MigrationError as exc:
        raise InvalidInput(f"{path} is not a Vestige database: {exc.message}") from exc
    except apsw.Error as exc:
        raise InvalidInput(f"{path} cannot be read as a Vestige backup: {exc}") from exc
    finally:
        conn.close()
    return BackupFile(path, version, memories)


def restore(
    data_dir: DataDir,
    source: Path,
    *,
    move_damaged: bool = False,
    actor: changelog.Actor | None = None,
) -> RestoreResult:
    """Replace the database of ``data_dir`` with the backup ``source`` (see module doc).

    The restored database's changelog gets a ``restored`` entry, after the backup's own
    history, naming the backup and where the replaced database was kept.

    :param move_damaged: if the current database is too damaged to back up through SQLite,
        move its files (together) into ``backups/damaged-<time>/`` instead of refusing.
    :raises OwnerLockHeld: a server holds the data directory.
    :raises DatabaseInUse: another process has the database files open.
    :raises InvalidInput: ``source`` is not a whole Vestige database.
    """
    backup = check_backup(source)
    if data_dir.database.exists() and os.path.samefile(source, data_dir.database):
        raise InvalidInput(f"{source} is the live database itself", hint="Give a backup file.")
    config.prepare_data_dir(data_dir)
    lock = _take_owner_lock(data_dir)
    try:
        _refuse_if_open(data_dir)
        previous = moved = None
        newest = 0  # unknown for a damaged database: its numbers may be given again
        if data_dir.database.exists():
            damage = _damage(data_dir.database)
            if damage is None:
                previous, newest = _keep_previous(data_dir)
            elif move_damaged:
                moved = _move_damaged(data_dir)
            else:
                raise CorruptionError(
                    f"the current database is damaged ({damage}), so it cannot be kept as a "
                    "backup through SQLite",
                    hint="Run the restore again with --move-damaged: the damaged files "
                    "(vestige.db with its -wal and -shm) are moved into the backups folder "
                    "together; nothing is deleted.",
                )
        _overwrite(data_dir, backup.path)
        with Store.open(data_dir, create=False, actor=actor) as store:
            health = store.health()
            if health.quick_check == "ok":
                kept = previous or moved
                store.record_restore(
                    str(backup.path), str(kept) if kept else None, previous_newest_seq=newest
                )
                restored = store.stats().total_memories  # counted again by record_restore
        if health.quick_check != "ok":
            raise CorruptionError(f"the restored database failed quick_check: {health.quick_check}")
    finally:
        lock.release()
    return RestoreResult(backup.path, previous, moved, restored, health.schema_version, "ok")


def _take_owner_lock(data_dir: DataDir) -> owner.OwnerLock:
    """The owner lock, exclusively: proof that no server runs, held for the whole restore."""
    try:
        return owner.acquire_owner(data_dir, transport="restore", version=__version__)
    except OwnerLockHeld as exc:
        live = [o for o in exc.owners if getattr(o, "alive", True)]
        if not live:
            raise OwnerLockHeld(
                f"cannot restore: the owner lock of {data_dir.path} is held by a process that "
                "has not published its details (a server still starting?)",
                hint=f"Run `vestige doctor --data-dir {shell_arg(data_dir.path)}` to find it, "
                "stop it, and run the restore again.",
            ) from None
        holders = "\n".join(_holder_lines(o) for o in live)
        # Only a holder proved to hold the lock is named in a kill command (a forged file
        # could name any process); the others are left to doctor.
        stop = owner.stop_advice(live) or (
            f"find the holder with `vestige doctor --data-dir {shell_arg(data_dir.path)}`"
        )
        caveat = owner.sessions_caveat(live)
        stop += f"; {caveat}" if caveat else ""
        raise OwnerLockHeld(
            f"cannot restore while a server uses {escape_controls(str(data_dir.database))}; "
            f"it is held by:\n{holders}",
            hint=f"Stop it first ({stop}), then run the restore again. No server can start "
            "while a restore runs.",
            owners=tuple(live),
        ) from None


def _holder_lines(o: owner.OwnerInfo) -> str:
    line = (
        f"  pid {o.pid} ({escape_controls(o.mode)}, {owner.describe_transport(o)}) since "
        f"{escape_controls(o.started_at[:19])}: {command_line(o.cmdline)}"
    )
    sessions = owner.describe_sessions(o)
    return f"{line}\n    {sessions}" if sessions else line


def _refuse_if_open(data_dir: DataDir) -> None:
    scan = processes.scan(processes.watched_files(data_dir), exclude_pids=(os.getpid(),))
    if not scan.holders:
        return
    names = "; ".join(
        f"pid {h.pid} {escape_controls(h.name)} ({', '.join(Path(f).name for f in h.files)}): "
        f"{command_line(h.cmdline)}"
        for h in scan.holders
    )
    raise DatabaseInUse(
        f"the database is in use by {len(scan.holders)} other process(es): {names}",
        hint="Stop them first ("
        + "; ".join(processes.stop_command(h.pid) for h in scan.holders)
        + "), then run the restore again.",
    )


def _damage(db: Path) -> str | None:
    """What is wrong with the live database, or None when SQLite can read it whole."""
    try:
        conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READWRITE)  # never creates
    except apsw.Error as exc:
        return str(exc)
    try:
        conn.set_busy_timeout(config.BUSY_TIMEOUT_MS)
        conn.execute("PRAGMA query_only = ON").fetchall()
        rows = [str(r[0]) for r in conn.execute("PRAGMA quick_check(10)").fetchall()]
    except (apsw.CorruptError, apsw.NotADBError) as exc:
        return str(exc)
    finally:
        conn.close()
    return None if rows == ["ok"] else "; ".join(rows)


def _keep_previous(data_dir: DataDir) -> tuple[Path, int]:
    """Back the current database up; return the backup and its newest change number."""
    config.make_private_dir(data_dir.backups)
    with Store.open(data_dir, create=False) as store:
        newest = store.changes(limit=1).newest_seq
        return store.backup(data_dir.backups, prefix=PREVIOUS_PREFIX), newest


def _move_damaged(data_dir: DataDir) -> Path:
    """Set a damaged database aside: its three files move together, nothing is deleted.

    Only called while this process holds the owner lock exclusively, no other process was
    seen with the files open, and this process has no connection to them (so no SQLite
    lock of ours can be dropped by the rename).
    """
    config.make_private_dir(data_dir.backups)
    for folder in config.backup_names(data_dir.backups, DAMAGED_PREFIX, suffix=""):
        try:
            folder.mkdir(mode=config.DIR_MODE)  # the claim: mkdir fails if the name is taken
        except FileExistsError:
            continue
        folder.chmod(config.DIR_MODE)  # mkdir's mode is masked by the umask
        break
    for path in data_dir.sqlite_files:
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, folder / path.name)
    return folder


def _overwrite(data_dir: DataDir, source: Path) -> None:
    """Copy every page of ``source`` into the live database with SQLite's backup API.

    The one write outside ``Database.write`` (the module doc says why); it takes the same
    write gate, with the same deadline.
    """
    gate = WriteGate(data_dir.gate)
    try:
        try:
            gate.acquire(config.WRITE_DEADLINE_S)
        except GateTimeout:
            raise DatabaseInUse(
                "another Vestige process kept the write gate; the database was not replaced",
                hint="Run `vestige doctor` to see which process writes, stop it, and retry.",
            ) from None
        uri = f"file:{quote(str(source.resolve()))}?mode=ro"
        src = apsw.Connection(uri, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
        try:
            live = apsw.Connection(
                str(data_dir.database), flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
            )
            try:
                live.set_busy_timeout(config.BUSY_TIMEOUT_MS)
                with live.backup("main", src, "main") as step:
                    step.step(-1)
            finally:
                live.close()
        except apsw.Error as exc:
            raise StoreError(
                f"SQLite could not write the backup into {data_dir.database}: {exc}",
                hint="The previous database is kept in the backups folder; run `vestige doctor`.",
            ) from exc
        finally:
            src.close()
        config.secure_file(data_dir.database)
    finally:
        gate.release()
        gate.close()
