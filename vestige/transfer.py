"""Getting memories out and back in: online backups, JSON Lines export and import.

Backups use SQLite's online backup API in a single step (a consistent snapshot taken under
one read lock, safe while other processes write) - never a copy of the file, which can
tear a WAL database or, done inside a process with connections, drop SQLite's locks.

Every file written here (a backup, an export) is made under a hidden temporary name beside
its target, made private (0600) and finished, and only then takes its real name, in one step
that never replaces a file (``_publish``).  A run that fails or is killed leaves no half file
under the real name, and two runs that pick the same name both succeed with different names
(``config.backup_names``) or, for a name the user gave, the second one is refused.

An import file is checked whole, once, before anything is written (``read_import``): a bad
row names its line and imports nothing, unless the caller asks to skip bad rows.  One id on
two rows is a bad row too when the rows differ (the file cannot say which is right), and is
imported once when they are equal.  The rows then go in through the write path in short
batches.  The file is streamed, never held: the check keeps each id's first row number and
a digest, and the writes read the file again.  Lines (and array items) are bounded
(``MAX_IMPORT_LINE_BYTES``), and only a regular file is read, so a FIFO cannot block an
import and ``/dev/zero`` cannot fill the memory.

A damaged database is rescued by ``salvage``: it reads every row it can, in ranges of
``seq`` that it halves around whatever SQLite cannot read, writes a normal export file, and
says what was lost.  It opens the database read-only and never writes to it.

An export carries the changelog too, after the memories: one ``{"change": {...}}`` per
entry, each with its ``origin`` (the exporting database's id and the entry's seq).  Import
keeps such entries as history: new sequence numbers, their own times and actors, never
undoable here, and each origin once, so importing a file twice adds its history once.
Every memory an import adds gets an ``imported`` entry of its own.
"""

from __future__ import annotations

import codecs
import errno
import hashlib
import io
import itertools
import json
import math
import os
import re
import secrets
import shlex
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import (
    IO,
    TYPE_CHECKING,
    Any,
    BinaryIO,
    Final,
    Generic,
    Literal,
    Protocol,
    TypeAlias,
    TypeVar,
    get_args,
)
from urllib.parse import quote

import apsw

from vestige import _rows, _validate, changelog, config, fsrs, migrations, similarity
from vestige._database import disk_is_full, is_busy, translate
from vestige.changelog import Actor, Change, ChangeKind
from vestige.config import DataDir, DataDirSource
from vestige.errors import (
    CorruptionError,
    ImportFileError,
    InvalidInput,
    MigrationError,
    StoreError,
)
from vestige.models import MEMORY_COLUMNS, SELECT_MEMORY, ImportReport, Memory
from vestige.printable import escape_json_controls

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from vestige._database import Database
    from vestige.processes import Scan

EXPORT_PAGE_ROWS: Final = 500
IMPORT_BATCH_ROWS: Final = 500
#: The longest line of an import file (or item of a JSON array) that is read: a memory holds
#: at most ``config.MAX_CONTENT_BYTES`` (1 MB), which JSON escapes to at most 6 MB, and a
#: changelog entry can carry a few memories.  Anything longer is no export, and reading it
#: whole would let one line of a huge file (or of ``/dev/zero``) take all the memory.
MAX_IMPORT_LINE_BYTES: Final = 32 * 1024 * 1024
#: How much of a JSON array import reads at a time (characters).
_READ_CHUNK_CHARS: Final = 1 << 20

#: ``jsonl``: one memory per line; ``json``: one JSON array.  Import reads both.
ExportFormat: TypeAlias = Literal["jsonl", "json"]
#: Told how many more items are done, as the work goes (a progress counter).
Progress: TypeAlias = Callable[[int], None]
#: A memory as the values of one ``knowledge_nodes`` row, in ``MEMORY_COLUMNS`` order.
MemoryRow: TypeAlias = tuple[Any, ...]
T = TypeVar("T")

_INSERT_IGNORE: Final = (
    f"INSERT INTO knowledge_nodes({SELECT_MEMORY}) "
    f"VALUES ({', '.join('?' * len(MEMORY_COLUMNS))}) ON CONFLICT(id) DO NOTHING"
)
#: errno values of a filesystem that cannot make hard links (FAT, some network shares).
_NO_HARD_LINKS: Final = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS})
_BAD_ROW_HINT: Final = (
    "Fix or remove that row, or pass --skip-invalid to import the rest; nothing was imported."
)
_CONFLICT_HINT: Final = (
    "Fix the file: keep one of the two rows (or give one a new id), or pass --skip-invalid "
    "to import the rest without either; nothing was imported."
)
#: Editors on Windows start UTF-8 files with U+FEFF; it is no part of the JSON.
_BOM: Final = "\ufeff"
#: Byte order marks of the encodings Windows tools write besides UTF-8 (UTF-32 LE first:
#: its mark starts with UTF-16 LE's).
_WIDE_BOMS: Final = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)
_ID_INDEX: Final = MEMORY_COLUMNS.index("id")


def iter_memories(db: Database) -> Iterator[Memory]:
    after = 0
    while True:
        with db.read() as conn:
            rows = conn.execute(
                f"SELECT seq, {SELECT_MEMORY} FROM knowledge_nodes WHERE seq > ? "
                "ORDER BY seq LIMIT ?",
                (after, EXPORT_PAGE_ROWS),
            ).fetchall()
        if not rows:
            return
        after = _rows.as_int(rows[-1][0], "seq")
        for row in rows:
            yield Memory.from_row(row[1:])


# -- files that appear whole, under a name that was free ----------------------------------


def _absolute(target: str | os.PathLike[str]) -> Path:
    return Path(os.path.abspath(os.path.expanduser(os.fspath(target))))


def _already_exists(path: Path, what: str) -> InvalidInput:
    return InvalidInput(
        f"the {what} target {path} already exists",
        hint=f"Choose a new file name, or move the old {what} away first.",
    )


def _require_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise InvalidInput(
            f"the folder {folder} does not exist", hint="Create it, or choose another path."
        )


def _temp_beside(folder: Path, stem: str) -> Path:
    """A hidden name in ``folder`` that no other run (process or thread) can pick."""
    return folder / f".{stem}.partial-{os.getpid()}-{secrets.token_hex(4)}"


def _publish(tmp: Path, names: Iterable[Path], what: str) -> Path:
    """Give the finished ``tmp`` the first name of ``names`` that is free; never replace a file.

    The claim is a hard link, which the kernel refuses when the name exists, so two runs
    offered the same name cannot both take it.  Where the filesystem has no hard links, a
    rename after a check is the best it allows (a run in between could be overwritten).
    """
    last: Path | None = None
    for name in names:
        last = name
        try:
            if sys.platform == "win32":
                os.rename(tmp, name)  # Windows' rename refuses an existing target
            else:
                os.link(tmp, name)
            return name
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
        if not os.path.lexists(name):
            os.replace(tmp, name)
            return name
    assert last is not None, "no name was offered"
    raise _already_exists(last, what)


# -- backup --------------------------------------------------------------------------------


#: ``O_NOFOLLOW`` where the platform has it: a planted symbolic link is refused, not followed.
_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
#: Fresh random names tried for a backup's private folder before giving up.
_PRIVATE_FOLDER_ATTEMPTS: Final = 8


def backup(
    db: Database,
    data_dir: DataDir,
    target: str | os.PathLike[str] | None = None,
    *,
    prefix: str = config.BACKUP_PREFIX,
) -> Path:
    """Snapshot ``db`` into a new file and return its path (see ``Store.backup``).

    ``target`` is a new file, or a folder (default: the data directory's backups folder) in
    which the file is named by ``config.backup_names``: a taken name moves on to the next,
    while a file the caller named that exists is refused.

    The copy is made inside a new private folder beside the target (``_private_folder``),
    in a file created there before SQLite opens it: no other user can open it mid-copy, and
    no link planted under a guessable name can redirect it.
    """
    if target is None:
        folder: Path = data_dir.backups
        try:
            config.make_private_dir(folder)
        except OSError as exc:
            raise _backup_os_error(exc, folder, db.path) from exc
    else:
        folder = _absolute(target)
    if folder.is_dir():
        names: Iterable[Path] = config.backup_names(folder, prefix)
        shown = folder
    else:
        path, folder = folder, folder.parent
        if path.exists():  # the live database among them: it always exists while open
            raise _already_exists(path, "backup")
        _require_folder(folder)
        shown, names = path, (path,)
    private: Path | None = None
    try:
        private = _private_folder(folder, prefix)
        tmp = private / f"{prefix}.db"
        _create_private_file(tmp)
        db.snapshot_to(tmp)
        _finish_backup(tmp, data_dir)
        return _publish(tmp, names, "backup")
    except apsw.FullError as exc:  # only the copy is written: the full disk is the target's
        raise _backup_disk_full(shown, db.path) from exc
    except OSError as exc:
        raise _backup_os_error(exc, shown, db.path) from exc
    finally:
        if private is not None:
            _remove_private_folder(private)


def _private_folder(folder: Path, stem: str) -> Path:
    """A new folder in ``folder`` that only this user can enter (0700).

    ``mkdir`` fails on any existing name, a planted symbolic link included, and never
    follows one; the mode is then set through a descriptor opened without following links.
    """
    for _ in range(_PRIVATE_FOLDER_ATTEMPTS):
        path = _temp_beside(folder, stem)
        try:
            path.mkdir(mode=config.DIR_MODE)
        except FileExistsError:
            continue
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW)
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, config.DIR_MODE)  # mkdir's mode is masked by the umask
        finally:
            os.close(fd)
        return path
    raise InvalidInput(
        f"no free temporary name in {folder} after {_PRIVATE_FOLDER_ATTEMPTS} tries",
        hint="Remove the hidden .*.partial-* entries there that no backup is using.",
    )


def _create_private_file(path: Path) -> None:
    """Create the copy's file (0600) before SQLite opens it, which would use the umask."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, config.FILE_MODE))


def _remove_private_folder(folder: Path) -> None:
    """Delete the copy's folder and whatever SQLite left in it (a journal); only ours."""
    try:
        for entry in os.scandir(folder):
            os.unlink(entry.path)
        folder.rmdir()
    except FileNotFoundError:
        pass


def _backup_disk_full(shown: Path, database: Path) -> StoreError:
    return StoreError(
        f"the disk holding {shown} is full; the backup was not written, and nothing was "
        f"changed in {database}",
        hint="Free some space on that disk, or give `vestige backup` a path on another disk.",
    )


def _backup_os_error(exc: OSError, shown: Path, database: Path) -> StoreError | InvalidInput:
    """A file step of a backup failed: name the backup's place, not the database."""
    if exc.errno == errno.ENOSPC:
        return _backup_disk_full(shown, database)
    return InvalidInput(
        f"cannot write a backup to {shown}: {exc.strerror or exc}",
        hint="Choose a folder on a local disk that you can write to.",
    )


def _finish_backup(path: Path, data_dir: DataDir) -> None:
    """Make the copy a self-contained single file (rollback journal) and check it.

    The backup API copies pages without reading them, so a damaged page of the live
    database shows up here, in the copy's check.

    :raises apsw.FullError: the copy's disk is full (the caller names it).
    :raises CorruptionError: the copy (so the live database) has damaged pages.
    """
    os.chmod(path, config.FILE_MODE)
    try:
        conn = apsw.Connection(str(path))
        try:
            conn.execute("PRAGMA journal_mode = DELETE").fetchall()
            check = "; ".join(
                _rows.as_str(r[0], "quick_check") for r in conn.execute("PRAGMA quick_check")
            )
        finally:
            conn.close()
    except apsw.FullError:
        raise
    except apsw.Error as exc:  # a damaged page copied from the live database
        check = str(exc)
    if check != "ok":
        raise CorruptionError(
            f"{data_dir.database} is damaged: its backup failed quick_check ({check}), so "
            "it was not kept",
            hint=rescue_hint(data_dir),
        )


# -- export --------------------------------------------------------------------------------


def export(
    db: Database,
    out: IO[str],
    *,
    fmt: ExportFormat = "jsonl",
    progress: Progress | None = None,
    with_changelog: bool = True,
) -> int:
    """Write every memory, every field, to ``out``, then the changelog; return how many
    memories."""
    if fmt not in get_args(ExportFormat):
        raise InvalidInput(f"{fmt!r} is not an export format", hint="Use one of: jsonl, json.")
    count = 0
    if fmt == "json":
        out.write("[")
    items = 0
    for memory in iter_memories(db):
        _write_item(out, memory.to_dict(), fmt=fmt, first=items == 0)
        items += 1
        count += 1
        if progress is not None:
            progress(1)
    for change in iter_changes(db) if with_changelog else ():
        _write_item(out, {"change": change}, fmt=fmt, first=items == 0)
        items += 1
    if fmt == "json":
        out.write("\n]\n" if items else "]\n")
    return count


def _write_item(out: IO[str], item: dict[str, Any], *, fmt: ExportFormat, first: bool) -> None:
    line = escape_json_controls(json.dumps(item, ensure_ascii=False))  # exact, and inert
    if fmt == "json":
        out.write(("\n  " if first else ",\n  ") + line)
    else:
        out.write(line + "\n")


def iter_changes(db: Database) -> Iterator[dict[str, Any]]:
    """Every changelog entry, oldest first, as exported (with its origin), in short reads."""
    after = 0
    while True:
        with db.read() as conn:
            own = changelog.database_id(conn)
            page = changelog.page(conn, after_seq=after, limit=EXPORT_PAGE_ROWS, oldest_first=True)
        if not page.changes:
            return
        after = page.changes[-1].seq
        for change in page.changes:
            data = change.to_dict()
            del data["seq"], data["undoes"]  # numbers of this database only
            data["origin"] = change.origin or f"{own}:{change.seq}"
            yield data


def export_file(
    db: Database,
    target: str | os.PathLike[str],
    *,
    fmt: ExportFormat = "jsonl",
    progress: Progress | None = None,
    with_changelog: bool = True,
) -> int:
    """``export`` into a new private file (0600) that appears only once complete."""
    path = _absolute(target)
    if path.exists():
        raise _already_exists(path, "export")
    _require_folder(path.parent)
    tmp = _temp_beside(path.parent, path.name)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, config.FILE_MODE)
        with open(fd, "w", encoding="utf-8") as out:
            count = export(db, out, fmt=fmt, progress=progress, with_changelog=with_changelog)
            out.flush()
            os.fsync(out.fileno())
        _publish(tmp, (path,), "export")
    finally:
        tmp.unlink(missing_ok=True)
    return count


# -- salvage -------------------------------------------------------------------------------

#: ``seq`` values read per query while salvaging; a range SQLite cannot read is halved.
SALVAGE_RANGE: Final = 512
#: The columns ``Change.from_row`` reads.
_CHANGE_COLUMNS: Final = changelog._COLUMNS


@dataclass(frozen=True, slots=True)
class SalvageReport:
    """What ``salvage`` wrote to ``path`` and what it could not read.

    ``lost_memories``: how many memories the damaged database held that are not in the file
    (known from its index of ids), or None where that index is unreadable too.  ``lost_ids``
    names them.  ``unreadable``: per table, the ``seq`` ranges SQLite could not read.
    """

    path: Path
    memories: int
    changes: int
    lost_memories: int | None
    lost_ids: tuple[str, ...]
    lost_changes: int | None
    unreadable: dict[str, tuple[tuple[int, int], ...]]

    @property
    def complete(self) -> bool:
        return self.lost_memories == 0 and self.lost_changes == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "memories": self.memories,
            "changes": self.changes,
            "lost_memories": self.lost_memories,
            "lost_ids": list(self.lost_ids),
            "lost_changes": self.lost_changes,
            "unreadable_seq_ranges": {
                t: [list(r) for r in rs] for t, rs in self.unreadable.items()
            },
            "complete": self.complete,
        }


def rescue_hint(data_dir: DataDir, scan: Scan | None = None) -> str:
    """The next step for a damaged database: the one rule that ``doctor``, ``backup`` and a
    server that refuses writes all print.

    Salvage first (it reads whatever is still readable); then restore the newest backup if
    there is one, and import the salvaged file over it to bring back what came later
    (import skips the memories the backup already has).
    """
    where = shlex.quote(str(data_dir.path))
    stop = ""
    if scan is not None and scan.holders:
        from vestige.processes import stop_command  # noqa: PLC0415 - psutil, only here

        commands = "; ".join(stop_command(h.pid) for h in scan.holders)
        stop = f"stop the processes using it ({commands}), then "
    salvage_cmd = f"vestige salvage --data-dir {where} -o rescue.jsonl"
    backup = newest_backup(data_dir.backups)
    if backup is None:
        aside = shlex.quote(f"{data_dir.path}.damaged")
        text = (
            f"{stop}save what is readable (there is no backup in {data_dir.backups}): "
            f"{salvage_cmd}; then, with no process using it, move the whole data directory "
            f"aside (mv {where} {aside}) and import the file into a new one: "
            f"vestige import --data-dir {where} rescue.jsonl"
        )
    else:
        text = (
            f"{stop}save what is readable: {salvage_cmd}; then restore the newest backup: "
            f"vestige restore --data-dir {where} {shlex.quote(str(backup))} --move-damaged; "
            f"then bring back what came after it: vestige import --data-dir {where} "
            "rescue.jsonl"
        )
    return text[0].upper() + text[1:]


def newest_backup(backups: Path) -> Path | None:
    """The most recent ``.db`` file in the backups folder, or None."""
    try:
        files = [e for e in os.scandir(backups) if e.is_file() and e.name.endswith(".db")]
    except OSError:
        return None
    if not files:
        return None
    return backups / max(files, key=lambda e: e.stat().st_mtime).name


def salvage(database: Path, target: str | os.PathLike[str]) -> SalvageReport:
    """Read every row of a (damaged) database that SQLite can still read into a new export file.

    The database is opened read-only and nothing is written to it.  The file is the same
    as ``export`` writes (memories, then the changelog), private and whole, so ``vestige
    import`` reads it.  Rows are read in ranges of ``seq``; a range that fails is halved
    until the single rows that cannot be read are known, and those are reported.
    """
    path = _absolute(target)
    if path.exists():
        raise _already_exists(path, "salvage")
    _require_folder(path.parent)
    conn = _open_for_salvage(database)
    tmp = _temp_beside(path.parent, path.name)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, config.FILE_MODE)
        try:
            with open(fd, "w", encoding="utf-8") as out:
                report = _salvage_into(conn, out, path)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            raise StoreError(
                f"the disk holding {path} is full; the salvage file was not written (no "
                f"partial file is left), and nothing was changed in {database}",
                hint="Free some space on that disk, or salvage to another disk: "
                "vestige salvage -o PATH",
            ) from exc
        _publish(tmp, (path,), "salvage")
    finally:
        tmp.unlink(missing_ok=True)
        conn.close()
    return report


def _salvage_uri(database: Path) -> str:
    """How salvage reads ``database``, changing no byte of it, its ``-wal`` or its ``-shm``
    (as doctor reads): ``readonly_shm`` with both files there (a stale ``-shm`` after a kill
    -9 or a full disk is rebuilt in private memory, not in the file), the file alone
    (``immutable``) when no process has it open or a crash left a ``-wal`` without changes."""
    wal, shm = (database.with_name(database.name + s) for s in ("-wal", "-shm"))
    uri = f"file:{quote(str(database))}?mode=ro"
    if shm.exists() and wal.exists():
        return f"{uri}&readonly_shm=1"
    if wal.exists() and wal.stat().st_size > 0:
        return uri  # changes that only a -shm can make readable: SQLite builds it
    return f"{uri}&immutable=1"


def _open_for_salvage(database: Path) -> apsw.Connection:
    """A read-only connection that writes nothing; a file SQLite cannot open is called
    damaged only when it is: a full disk, a file of another user, or a file that is no
    Vestige database are named as such (as every other command names them)."""
    if not database.is_file():
        raise InvalidInput(
            f"there is no database at {database}", hint="Check --data-dir / VESTIGE_DATA_DIR."
        )
    data_dir = DataDir(database.parent, DataDirSource.ARGUMENT)
    config.refuse_foreign_files(data_dir, writing=False)
    try:
        conn = apsw.Connection(
            _salvage_uri(database), flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI
        )
    except apsw.Error as exc:
        raise _unopenable(database, exc) from exc
    try:
        conn.set_busy_timeout(config.BUSY_TIMEOUT_MS)
        conn.execute("PRAGMA schema_version").fetchall()
        migrations.current_version(conn)  # a foreign file is refused, not salvaged
    except MigrationError:
        conn.close()
        raise
    except apsw.Error as exc:
        conn.close()
        raise _unopenable(database, exc) from exc
    return conn


def _unopenable(database: Path, exc: apsw.Error) -> StoreError:
    if isinstance(exc, apsw.NotADBError):
        return CorruptionError(
            f"{database} is not a SQLite database (SQLite: {exc}), so it is no Vestige database "
            "and nothing can be salvaged from it",
            hint="Check --data-dir / VESTIGE_DATA_DIR; if this file held your memories, restore "
            "the newest backup: vestige restore FILE --move-damaged",
        )
    if not isinstance(exc, apsw.CorruptError) or disk_is_full(exc, database):
        # Not the file's fault (a full disk, permissions, a busy lock): named as the other
        # commands name it, and never the advice to replace a healthy file.
        return translate(exc, database)
    return CorruptionError(
        f"SQLite cannot read {database} at all ({exc}): nothing can be salvaged from it",
        hint="Restore the newest backup: vestige restore FILE --move-damaged",
    )


def _salvage_into(conn: apsw.Connection, out: IO[str], path: Path) -> SalvageReport:
    memories = 0
    read_seqs: set[int] = set()
    index = _id_index(conn)
    nodes = _Unreadable()
    top = _max_seq(conn, "knowledge_nodes", index)
    for seq, row in _readable_rows(conn, "knowledge_nodes", SELECT_MEMORY, top, nodes):
        try:
            memory = Memory.from_row(row)
        except (StoreError, ValueError, TypeError):  # a value SQLite read but makes no sense
            nodes.add(seq, seq)
            continue
        _write_item(out, memory.to_dict(), fmt="jsonl", first=memories == 0)
        read_seqs.add(seq)
        memories += 1
    lost_ids = None if index is None else sorted(i for seq, i in index if seq not in read_seqs)
    changes, lost_changes, unread_changes = _salvage_changes(conn, out)
    return SalvageReport(
        path=path,
        memories=memories,
        changes=changes,
        lost_memories=None if lost_ids is None else len(lost_ids),
        lost_ids=tuple(lost_ids or ()),
        lost_changes=lost_changes,
        unreadable={"knowledge_nodes": nodes.spans(), "changelog": unread_changes.spans()},
    )


def _salvage_changes(conn: apsw.Connection, out: IO[str]) -> tuple[int, int | None, _Unreadable]:
    """Write every readable changelog entry; return (written, lost or None, unreadable)."""
    try:
        own = changelog.database_id(conn)
    except (apsw.Error, StoreError):
        own = "salvaged"
    unread = _Unreadable()
    written = 0
    top = _max_seq(conn, "changelog", None)
    for seq, row in _readable_rows(conn, "changelog", _CHANGE_COLUMNS, top, unread):
        try:
            change = Change.from_row(row)
        except (StoreError, ValueError, TypeError):
            unread.add(seq, seq)
            continue
        data = change.to_dict()
        del data["seq"], data["undoes"]  # numbers of this database only
        data["origin"] = change.origin or f"{own}:{change.seq}"
        _write_item(out, {"change": data}, fmt="jsonl", first=False)
        written += 1
    # AUTOINCREMENT keeps no index of its rows: only the unreadable seqs are known, and not
    # even those when the reading was given up (the top may be as damaged as the rest).
    lost = unread.count() if top is not None and not unread.gave_up else None
    return written, lost, unread


class _Unreadable:
    """The ``seq`` ranges of one table that could not be read, kept as ranges (a damaged
    table may claim billions of rows: a list of single numbers would fill the memory)."""

    def __init__(self) -> None:
        self._spans: list[tuple[int, int]] = []
        #: The read stopped early (``SALVAGE_MAX_FAILURES``); the last span is the rest.
        self.gave_up = False

    def add(self, lo: int, hi: int) -> None:
        if self._spans and self._spans[-1][1] + 1 >= lo:
            self._spans[-1] = (self._spans[-1][0], max(hi, self._spans[-1][1]))
        else:
            self._spans.append((lo, hi))

    def discard(self, seq: int) -> None:
        """``seq`` was read after all (by the final sweep): split it out of its span."""
        for i, (lo, hi) in enumerate(self._spans):
            if lo <= seq <= hi:
                self._spans[i : i + 1] = [
                    (a, b) for a, b in ((lo, seq - 1), (seq + 1, hi)) if a <= b
                ]
                return

    def count(self) -> int:
        return sum(hi - lo + 1 for lo, hi in self._spans)

    def spans(self) -> tuple[tuple[int, int], ...]:
        return tuple(self._spans)


class _BadRange(Exception):
    """A range read that returned what a sound b-tree cannot: a row outside the range, a row
    out of order, or more rows than the range has numbers (pages that point back at their
    own ancestors make the cursor go round for ever)."""


def _max_seq(conn: apsw.Connection, table: str, index: list[tuple[int, str]] | None) -> int | None:
    """The largest ``seq`` of ``table``: from the table, else its id index or sqlite_sequence."""
    try:
        rows = conn.execute(f"SELECT max(seq) FROM {table}").fetchall()
        return _rows.as_int(rows[0][0], "seq") if rows and rows[0][0] is not None else 0
    except apsw.Error:
        pass
    if table == "knowledge_nodes":
        return max((seq for seq, _ in index), default=0) if index is not None else None
    try:
        rows = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchall()
    except apsw.Error:
        return None
    return _rows.as_int(rows[0][0], "seq") if rows and rows[0][0] is not None else 0


def _id_index(conn: apsw.Connection) -> list[tuple[int, str]] | None:
    """(seq, id) of every entry of the index of memory ids; None if it cannot be read whole.

    Read a row at a time: the ids must come in strictly increasing order, which a looping
    b-tree breaks at once, so a damaged index can never make this run for ever.
    """
    out: list[tuple[int, str]] = []
    last: str | None = None
    try:
        for seq, memory_id in conn.execute(
            "SELECT seq, id FROM knowledge_nodes INDEXED BY sqlite_autoindex_knowledge_nodes_1"
        ):
            if not isinstance(memory_id, str) or (last is not None and memory_id <= last):
                return None
            last = memory_id
            out.append((_rows.as_int(seq, "seq"), memory_id))
    except (apsw.Error, StoreError):
        return None
    return out


#: Range reads that may fail per table before salvage stops halving and calls the rest
#: unreadable: a bound on the work (a damaged ``sqlite_sequence`` can claim 10^12 rows, and
#: each unreadable range of SALVAGE_RANGE costs up to 2 * SALVAGE_RANGE reads).
SALVAGE_MAX_FAILURES: Final = 16_384


def _readable_rows(
    conn: apsw.Connection, table: str, columns: str, top: int | None, unread: _Unreadable
) -> Iterator[tuple[int, tuple[Any, ...]]]:
    """Every row of ``table`` that SQLite can read, each once: first by ``seq`` in 1..top.

    A range that fails is halved, down to single rows; the seqs that still fail go to
    ``unread``.  Rows are yielded as they are read, never a whole range held.  Without
    ``top`` (nothing says how far the table goes), rows are read until the first range that
    fails.  After SALVAGE_MAX_FAILURES failed reads the rest is given up.  Then one sweep
    walks the table's pages in their stored order for rows the ranges missed: a damaged
    interior page can send a seek past rows that are still there, or a damaged top hide
    the last ones.
    """
    seen: set[int] = set()
    for seq, row in _rows_by_range(conn, table, columns, top, unread):
        seen.add(seq)
        yield seq, row
    for seq, row in _sweep(conn, table, columns, len(seen)):
        if seq not in seen:
            seen.add(seq)
            unread.discard(seq)
            yield seq, row


#: The sweep reads at most this many rows more than the ranges found: a walk of a b-tree
#: whose pages point back at their ancestors repeats rows until SQLite's depth limit stops
#: it, and this bounds the work even so.
SALVAGE_SWEEP_EXTRA_ROWS: Final = 1_000_000


def _sweep(
    conn: apsw.Connection, table: str, columns: str, found: int
) -> Iterator[tuple[int, tuple[Any, ...]]]:
    """The rows of one walk over ``table``, until it fails or has read too many."""
    budget = found + SALVAGE_SWEEP_EXTRA_ROWS
    try:
        for row in conn.execute(f"SELECT seq, {columns} FROM {table}"):
            budget -= 1
            if budget < 0:
                return
            yield _rows.as_int(row[0], "seq"), tuple(row[1:])
    except (apsw.Error, StoreError) as exc:
        if is_busy(exc):
            raise


def _rows_by_range(
    conn: apsw.Connection, table: str, columns: str, top: int | None, unread: _Unreadable
) -> Iterator[tuple[int, tuple[Any, ...]]]:
    sql = f"SELECT seq, {columns} FROM {table} WHERE seq BETWEEN ? AND ? ORDER BY seq"
    limit = top if top is not None else 2**62
    last = 0  # the highest seq yielded: a re-read after a failure yields nothing twice
    failures = 0
    start = 1
    while start <= limit:
        pending = [(start, min(limit, start + SALVAGE_RANGE - 1))]
        start += SALVAGE_RANGE
        while pending:
            lo, hi = pending.pop()
            if failures >= SALVAGE_MAX_FAILURES:
                unread.add(max(lo, last + 1), limit)
                unread.gave_up = True
                return
            found = 0
            try:
                for seq, row in _range(conn, sql, lo, hi):
                    found += 1
                    if seq > last:
                        last = seq
                        yield seq, row
            except (apsw.Error, _BadRange) as exc:
                if is_busy(exc):
                    raise
                failures += 1
                if top is None:
                    return
                if lo == hi:
                    if lo > last:
                        unread.add(lo, lo)
                else:
                    mid = (lo + hi) // 2
                    pending += [(mid + 1, hi), (lo, mid)]  # the lower half next: seq order
                continue
            if top is None and not found and lo > 1:
                return


def _range(
    conn: apsw.Connection, sql: str, lo: int, hi: int
) -> Iterator[tuple[int, tuple[Any, ...]]]:
    """The rows of ``lo..hi``, checked as they come (``_BadRange``)."""
    previous = lo - 1
    for row in conn.execute(sql, (lo, hi)):
        seq = _rows.as_int(row[0], "seq")
        if not previous < seq <= hi:
            raise _BadRange(f"seq {seq} after {previous} in {lo}..{hi}")
        previous = seq
        yield seq, tuple(row[1:])


# -- import --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RejectedRow:
    """A row that ``read_import`` skipped: its line (or item) number and what was wrong."""

    number: int
    error: str


class Planned(Generic[T]):
    """Rows an import will write: counted by the check, read from the file again when iterated.

    Holding them would take memory in proportion to the file (a 106 MB array once peaked at
    470 MB); the check keeps only each id's first row number and a digest.
    """

    def __init__(self, count: int, read: Callable[[], Iterator[T]]) -> None:
        self._count = count
        self._read = read

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[T]:
        return self._read() if self._count else iter(())


@dataclass(frozen=True, slots=True)
class ImportFile:
    """An import file read and checked whole: what will be written and the rows refused.

    Every memory row found is counted once: ``read`` is ``len(rows)`` plus ``duplicates``
    plus ``len(rejected)`` (a bad changelog entry is rejected too).  ``rows`` and
    ``changes`` read the file again, row by row, when iterated.
    """

    #: ``line`` for JSON Lines, ``item`` for a JSON array: what a row's number counts.
    unit: Literal["line", "item"]
    read: int  # rows found (blank lines are not rows)
    rows: Planned[MemoryRow]
    rejected: tuple[RejectedRow, ...] = ()
    #: Rows equal to an earlier row with the same id, left out (that id is written once).
    duplicates: int = 0
    #: Changelog entries of the exporting database, kept as history by the import.
    changes: Planned[Change] = field(default_factory=lambda: Planned(0, lambda: iter(())))


def read_import(path: Path, *, skip_invalid: bool = False) -> ImportFile:
    """Read an export (JSON Lines or a JSON array) and check every row; write nothing.

    The file is streamed, a line (or an array item) at a time, each at most
    ``MAX_IMPORT_LINE_BYTES``; only a regular file is read (a FIFO or a device could block or
    never end).

    :param skip_invalid: keep the valid rows and list the others in ``rejected``, instead
        of refusing the file at its first bad row.
    :raises ImportFileError: the file is not a regular file, not UTF-8 or not JSON, or
        (without ``skip_invalid``) a row is not a valid memory or shares its id with an
        earlier, different row; the message names the file and row (and the earlier row).
    """
    return _check(_FileSource(path), skip_invalid=skip_invalid)


def parse_import(text: str, *, source: str | None = None, skip_invalid: bool = False) -> ImportFile:
    """``read_import`` for text already in memory (``source`` names it in messages)."""
    return _check(_StreamSource(io.StringIO(text), source), skip_invalid=skip_invalid)


# -- reading an import file, a bounded piece at a time ------------------------------------


class _TooLong(Exception):
    """A line (or array item) over ``MAX_IMPORT_LINE_BYTES``."""


class _Reader(Protocol):
    def readline(self) -> str:
        """The next line with its "\\n" ("" at the end); ``_TooLong`` past the limit."""

    def read(self, size: int) -> str:
        """Up to about ``size`` more characters ("" at the end)."""


class _Utf8Reader:
    """A binary file read as UTF-8; a byte that is not UTF-8 is named with its offset."""

    def __init__(self, raw: BinaryIO, name: str, offset: int) -> None:
        self._raw = raw
        self._name = name
        self._offset = offset  # of the next byte not yet decoded
        self._line = 1
        self._carry = b""  # the start of a character cut by the last read

    def readline(self) -> str:
        data = self._raw.readline(MAX_IMPORT_LINE_BYTES + 1)
        if len(data) > MAX_IMPORT_LINE_BYTES and not data.endswith(b"\n"):
            raise _TooLong
        return self._decode(data)

    def read(self, size: int) -> str:
        data = self._carry + self._raw.read(size)
        cut = len(data)
        # Keep a character whose bytes were cut by the read for the next one.
        for back in range(1, min(4, len(data)) + 1):
            byte = data[-back]
            if byte & 0xC0 != 0x80:  # the first byte of the last character
                needed = 2 if byte >= 0xC0 else 1
                needed = 3 if byte >= 0xE0 else needed
                needed = 4 if byte >= 0xF0 else needed
                if needed > back:
                    cut = len(data) - back
                break
        text_bytes, self._carry = data[:cut], data[cut:]
        if not text_bytes and self._carry:
            text_bytes, self._carry = self._carry, b""  # the end of the file: decode what is left
        return self._decode(text_bytes)

    def _decode(self, data: bytes) -> str:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ImportFileError(
                f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                f"{self._offset + exc.start} of the file)",
                line=self._line + data.count(b"\n", 0, exc.start),
                source=self._name,
                hint="Export again with `vestige export`, or convert the file to UTF-8 (for "
                "example with iconv -f LATIN1 -t UTF-8, naming the encoding it was saved in).",
            ) from None
        self._offset += len(data)
        self._line += data.count(b"\n")
        return text


class _TextReader:
    """A text stream the caller opened (``Store.import_jsonl``); limits count characters."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def readline(self) -> str:
        line = self._stream.readline(MAX_IMPORT_LINE_BYTES + 1)
        if len(line) > MAX_IMPORT_LINE_BYTES and not line.endswith("\n"):
            raise _TooLong
        return line

    def read(self, size: int) -> str:
        return self._stream.read(size)


class _FileSource:
    """An import file on disk, opened anew for every pass, and refused if it changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name: str | None = str(path)
        self._identity: tuple[int, ...] | None = None

    @contextmanager
    def open(self) -> Iterator[_Reader]:
        try:
            # O_NONBLOCK: opening a FIFO with no writer returns at once instead of waiting.
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | _CLOEXEC)
        except OSError as exc:
            raise ImportFileError(
                f"cannot read {self.path}: {exc.strerror or exc}",
                hint="Check the path and that you may read the file.",
            ) from None
        with os.fdopen(fd, "rb") as raw:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ImportFileError(
                    f"{self.path} is {_file_kind(st.st_mode)}, not a regular file; import "
                    "reads a file that `vestige export` wrote",
                    hint="Save the data to a file first (for example: ... > memories.jsonl), "
                    "then import that file.",
                )
            if hasattr(os, "set_blocking"):
                os.set_blocking(fd, True)
            identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            if self._identity is None:
                self._identity = identity
                _refuse_wide_text(raw, self.path)
            elif identity != self._identity:
                raise ImportFileError(
                    f"{self.path} changed while it was being imported",
                    hint="Run the import again once the file is complete: rows already "
                    "imported are skipped.",
                )
            # Editors on Windows start UTF-8 files with a byte order mark: no part of the JSON.
            start = len(codecs.BOM_UTF8) if raw.read(3) == codecs.BOM_UTF8 else 0
            raw.seek(start)
            yield _Utf8Reader(raw, str(self.path), start)


class _StreamSource:
    """A text stream, read again from where it started for every pass (spooled if it can't)."""

    def __init__(self, stream: IO[str], name: str | None = None) -> None:
        self.name = name
        if not stream.seekable():
            spool = tempfile.TemporaryFile("w+", encoding="utf-8", errors="surrogatepass")  # noqa: SIM115 - lives as long as the source
            shutil.copyfileobj(stream, spool)
            stream = spool
        self._stream = stream
        self._start = stream.tell()

    @contextmanager
    def open(self) -> Iterator[_Reader]:
        self._stream.seek(self._start)
        head = self._stream.read(1)
        if head != _BOM:
            self._stream.seek(self._start)
        yield _TextReader(self._stream)


_Source: TypeAlias = _FileSource | _StreamSource
_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISFIFO, "a FIFO (a named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
    )
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _refuse_wide_text(raw: BinaryIO, path: Path) -> None:
    """A UTF-16 or UTF-32 file (Windows tools write them) is refused with the way to convert."""
    head = raw.read(4)
    raw.seek(0)
    for bom, encoding in _WIDE_BOMS:
        if head.startswith(bom):
            raise ImportFileError(
                f"{path} is {encoding} text; import reads UTF-8",
                hint=f"Convert it to UTF-8 (for example: iconv -f {encoding} -t UTF-8 "
                f"{path.name} > {path.stem}-utf8{path.suffix}), or export it again with "
                "`vestige export`.",
            )


def _too_long(number: int, unit: str, source: str | None) -> ImportFileError:
    return ImportFileError(
        f"longer than {MAX_IMPORT_LINE_BYTES:,} bytes, more than any exported row",
        line=number,
        unit=unit,
        source=source,
        hint="Check that this is a file written by `vestige export` (JSON Lines: one memory "
        "per line); nothing was imported.",
    )


#: A row and how to check it: ``check(now)`` gives the memory row or changelog entry.
_Entry: TypeAlias = tuple[int, Callable[[str], "MemoryRow | Change"]]


def _unit(source: _Source) -> Literal["line", "item"]:
    """``item`` when the file starts (after white space) with "[", else ``line``."""
    with source.open() as reader:
        while chunk := reader.read(_READ_CHUNK_CHARS):
            stripped = chunk.lstrip(_JSON_WHITE)
            if stripped:
                return "item" if stripped.startswith("[") else "line"
    return "line"


def _entries(source: _Source, unit: Literal["line", "item"]) -> Iterator[_Entry]:
    with source.open() as reader:
        if unit == "item":
            for number, item in _ArrayItems(reader, source.name):
                yield number, partial(_row_from_json, item)
            return
        number = 0
        while True:
            number += 1
            try:
                line = reader.readline()
            except _TooLong:
                raise _too_long(number, "line", source.name) from None
            if not line:
                return
            # Only "\n" ends a line: export leaves U+2028, U+2029 and U+0085 raw inside
            # strings (ensure_ascii=False), and str.splitlines() would split a memory there.
            # A mark at the start of a line is where two files that began with one were
            # joined (cat).
            text = line.removesuffix("\n").removesuffix("\r").removeprefix(_BOM)
            if text.strip():
                yield number, partial(_row_from_line, text)


class _NotAnArray(Exception):
    """More JSON follows the array the file starts with: it is JSON Lines after all."""


_JSON_WHITE: Final = " \t\n\r"
_WHITE: Final = re.compile(f"[{_JSON_WHITE}]*")


class _ArrayItems:
    """The items of the JSON array a reader holds, one at a time, each within the limit.

    ``json`` parses a whole document at once; this keeps only the item being read (and what
    was read past it) in memory.  Iterating raises ``_NotAnArray`` at the end when more than
    white space follows the array.
    """

    def __init__(self, reader: _Reader, source: str | None) -> None:
        self._reader = reader
        self._source = source
        self._decoder = json.JSONDecoder()
        self._buf = ""
        self._pos = 0
        self._lines_before = 0  # line breaks in what was dropped from the buffer
        self._at_end = False

    def __iter__(self) -> Iterator[tuple[int, object]]:
        self._skip_white()
        if not self._buf.startswith("[", self._pos):
            raise _NotAnArray
        self._pos += 1
        self._skip_white()
        number = 0
        closed = self._buf.startswith("]", self._pos)
        self._pos += closed
        while not closed:
            number += 1
            yield number, self._item(number)
            closed = self._after_item()
        self._skip_white()
        if self._pos < len(self._buf):
            raise _NotAnArray

    def _more(self) -> bool:
        if self._at_end:
            return False
        # At least as much as is buffered: an item read across many chunks costs linear time.
        chunk = self._reader.read(max(_READ_CHUNK_CHARS, len(self._buf) - self._pos))
        if not chunk:
            self._at_end = True
            return False
        self._lines_before += self._buf.count("\n", 0, self._pos)
        self._buf, self._pos = self._buf[self._pos :] + chunk, 0
        return True

    def _skip_white(self) -> None:
        while True:
            white = _WHITE.match(self._buf, self._pos)
            assert white is not None  # "*": it always matches
            self._pos = white.end()
            if self._pos < len(self._buf) or not self._more():
                return

    def _item(self, number: int) -> object:
        while True:
            try:
                item, end = self._decoder.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError as exc:
                if len(self._buf) - self._pos > MAX_IMPORT_LINE_BYTES:
                    raise _too_long(number, "item", self._source) from None
                if self._more():
                    continue  # the item may just go on past what was read
                raise self._invalid(exc.msg, exc.pos) from None
            except ValueError:  # an integer of more than 4300 digits
                raise ImportFileError(
                    "a number has too many digits", line=number, unit="item", source=self._source
                ) from None
            if end == len(self._buf) and self._more():
                continue  # a number at the end of what was read may go on
            if end - self._pos > MAX_IMPORT_LINE_BYTES:
                raise _too_long(number, "item", self._source)
            self._pos = end
            return item

    def _after_item(self) -> bool:
        """Step over the "," after an item; True at the "]" that closes the array."""
        self._skip_white()
        if self._pos >= len(self._buf):
            raise self._invalid("the array is not closed", self._pos)
        mark = self._buf[self._pos]
        if mark not in ",]":
            raise self._invalid("Expecting ',' delimiter", self._pos)
        self._pos += 1
        if mark == ",":
            self._skip_white()
        return mark == "]"

    def _invalid(self, why: str, at: int) -> ImportFileError:
        return ImportFileError(
            f"the file starts like a JSON array but is not valid JSON ({why})",
            line=self._lines_before + self._buf.count("\n", 0, at) + 1,
            source=self._source,
            hint="Export again with `vestige export`, or fix the JSON.",
        )


# -- the check: every row, once, before anything is written --------------------------------


def _digest(row: MemoryRow) -> bytes:
    """Equal for rows ``_differing`` finds equal (content_hash follows content; -0.0 is 0.0)."""
    normal = tuple(v + 0.0 if isinstance(v, float) else v for v in row)
    return hashlib.blake2b(repr(normal).encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _check(source: _Source, *, skip_invalid: bool) -> ImportFile:
    now = datetime.now(UTC).isoformat()  # one default time, so repeated rows compare equal
    unit = _unit(source)
    if unit == "item":
        try:
            return _check_as(source, "item", now, skip_invalid=skip_invalid)
        except _NotAnArray:
            pass  # its first line is an array and more JSON follows: JSON Lines
        except ImportFileError:
            if _array_ends_the_file(source):
                raise
    return _check_as(source, "line", now, skip_invalid=skip_invalid)


def _array_ends_the_file(source: _Source) -> bool:
    try:
        with source.open() as reader:
            for _ in _ArrayItems(reader, source.name):
                pass
    except _NotAnArray:
        return False
    return True


def _check_as(
    source: _Source, unit: Literal["line", "item"], now: str, *, skip_invalid: bool
) -> ImportFile:
    """The first pass: every row checked, each id's first row and digest kept, nothing else."""
    first: dict[str, tuple[int, bytes]] = {}  # id -> its first row's number, digest
    later: dict[str, list[tuple[int, bytes]]] = {}  # ids on several rows: the other rows
    rejected: list[RejectedRow] = []
    changes: set[int] = set()
    read = 0
    for number, check in _entries(source, unit):
        try:
            row = check(now)
        except InvalidInput as exc:
            read += 1
            if not skip_invalid:
                raise ImportFileError(
                    exc.message, line=number, unit=unit, source=source.name, hint=_BAD_ROW_HINT
                ) from None
            rejected.append(RejectedRow(number, exc.message))
            continue
        if isinstance(row, Change):
            changes.add(number)
            continue
        read += 1
        memory_id, digest = row[_ID_INDEX], _digest(row)
        earlier = first.setdefault(memory_id, (number, digest))
        if earlier[0] == number:
            continue
        if earlier[1] != digest and not skip_invalid:
            (other,) = _fetch(source, unit, now, {earlier[0]}).values()
            raise ImportFileError(
                _conflict(memory_id, unit, [earlier[0]], _differing(other, [row])),
                line=number,
                unit=unit,
                source=source.name,
                hint=_CONFLICT_HINT,
            )
        later.setdefault(memory_id, []).append((number, digest))
    duplicates, conflicts = _resolve(source, unit, now, first, later)
    skipped = {r.number for r in rejected} | {r.number for r in conflicts}
    rejected.extend(conflicts)
    rejected.sort(key=lambda r: r.number)
    conflicted = frozenset(
        mid for mid, others in later.items() if any(d != first[mid][1] for _, d in others)
    )
    plan = _Plan(source, unit, now, frozenset(skipped), first, conflicted, frozenset(changes))
    return ImportFile(
        unit,
        read,
        Planned(len(first) - len(conflicted), plan.rows),
        tuple(rejected),
        duplicates,
        Planned(len(changes), plan.changes),
    )


def _resolve(
    source: _Source,
    unit: Literal["line", "item"],
    now: str,
    first: dict[str, tuple[int, bytes]],
    later: dict[str, list[tuple[int, bytes]]],
) -> tuple[int, list[RejectedRow]]:
    """How many equal repeats were left out, and the rows of ids whose rows differ.

    Conflicts get here only with ``skip_invalid`` (``_check_as`` raised otherwise).  Which of
    two different rows is right cannot be known, so every row of such an id is refused,
    each naming the others; their fields are read again to say which ones differ.
    """
    duplicates = 0
    numbers: dict[str, list[int]] = {}
    for memory_id, others in later.items():
        if all(d == first[memory_id][1] for _, d in others):
            duplicates += len(others)
        else:
            numbers[memory_id] = [first[memory_id][0], *(n for n, _ in others)]
    if not numbers:
        return duplicates, []
    rows = _fetch(source, unit, now, {n for ns in numbers.values() for n in ns})
    conflicts: list[RejectedRow] = []
    for memory_id, ns in numbers.items():
        differing = _differing(rows[ns[0]], [rows[n] for n in ns[1:]])
        conflicts.extend(
            RejectedRow(n, _conflict(memory_id, unit, [o for o in ns if o != n], differing))
            for n in ns
        )
    return duplicates, conflicts


def _fetch(
    source: _Source, unit: Literal["line", "item"], now: str, numbers: set[int]
) -> dict[int, MemoryRow]:
    """The memory rows with these numbers, read again (only to name differing fields)."""
    found: dict[int, MemoryRow] = {}
    for number, check in _entries(source, unit):
        if number in numbers:
            row = check(now)
            assert not isinstance(row, Change)
            found[number] = row
    return found


def _differing(first: MemoryRow, others: list[MemoryRow]) -> list[str]:
    """The fields in which any of ``others`` differs from ``first`` (as they would be stored,
    so an omitted field and the same field given with its default value agree)."""
    return [
        name
        for i, name in enumerate(MEMORY_COLUMNS)
        if name != "content_hash" and any(row[i] != first[i] for row in others)
    ]


def _conflict(memory_id: str, unit: str, elsewhere: list[int], differing: list[str]) -> str:
    """``the id 'x' is also on line 3, with different content`` (``is also item 3`` in an
    array): the other rows and the fields, so the person can pick which row to keep."""
    where = f"{unit}s" if len(elsewhere) > 1 else unit
    if unit == "line":
        where = f"on {where}"
    numbers = ", ".join(map(str, elsewhere))
    return f"the id {memory_id!r} is also {where} {numbers}, with different {', '.join(differing)}"


@dataclass(frozen=True, slots=True)
class _Plan:
    """What the check decided, for the second pass: which rows are written."""

    source: _Source
    unit: Literal["line", "item"]
    now: str
    skipped: frozenset[int]  # rows refused (bad, or one of a conflicting id)
    first: dict[str, tuple[int, bytes]]  # id -> the number of its row that is written
    conflicted: frozenset[str]
    change_numbers: frozenset[int]  # rows that are changelog entries

    def rows(self) -> Iterator[MemoryRow]:
        for number, row in self._reread(memories=True):
            assert not isinstance(row, Change)
            memory_id = row[_ID_INDEX]
            if memory_id not in self.first:
                raise self._changed(number)
            if self.first[memory_id][0] == number and memory_id not in self.conflicted:
                yield row

    def changes(self) -> Iterator[Change]:
        for number, row in self._reread(memories=False):
            if not isinstance(row, Change):
                raise self._changed(number)
            yield row

    def _reread(self, *, memories: bool) -> Iterator[tuple[int, MemoryRow | Change]]:
        """The accepted rows of one kind, checked again as they are read."""
        for number, check in _entries(self.source, self.unit):
            if number in self.skipped or (number in self.change_numbers) == memories:
                continue
            try:
                yield number, check(self.now)
            except InvalidInput:
                raise self._changed(number) from None

    def _changed(self, number: int) -> ImportFileError:
        return ImportFileError(
            "the file changed while it was being imported",
            line=number,
            unit=self.unit,
            source=self.source.name,
            hint="Run the import again once the file is complete: rows already imported are "
            "skipped.",
        )


def import_rows(
    db: Database, checked: ImportFile, *, actor: Actor, progress: Progress | None = None
) -> ImportReport:
    """Write checked rows in short batches; ids already present are left alone.

    The file's history goes first, then the memories, each with an ``imported`` entry.  The
    rows are read from the file again, a batch at a time, outside the transactions.  Both
    kinds of write are idempotent (memories by id, history by origin), so an import that
    was interrupted is completed by running it again.
    """
    history = imported = 0
    try:
        for entries in _batches(checked.changes):
            history += db.write(partial(_insert_history, entries=entries))
        for batch in _batches(checked.rows):
            imported += db.write(partial(_insert, batch=batch, actor=actor))
            if progress is not None:
                progress(len(batch))
    except StoreError as exc:
        if not (history or imported):
            raise
        # Whole batches went in before the failure: say how far it got, and how to finish.
        raise type(exc)(
            f"{exc.message}; before that, {imported:,} of {len(checked.rows):,} memories "
            f"(and {history:,} changelog entries) were imported, in whole batches",
            hint=f"{exc.hint} Then run the same import again: it skips what is already in "
            "and adds the rest.",
        ) from exc
    return ImportReport(
        read=checked.read,
        imported=imported,
        skipped_existing=len(checked.rows) - imported,
        changes_imported=history,
    )


def _batches(items: Iterable[T]) -> Iterator[tuple[T, ...]]:
    it = iter(items)
    while batch := tuple(itertools.islice(it, IMPORT_BATCH_ROWS)):
        yield batch


def import_jsonl(db: Database, source: IO[str], *, actor: Actor) -> ImportReport:
    """Import a stream of JSON Lines (or a JSON array); one bad row imports nothing."""
    return import_rows(db, _check(_StreamSource(source), skip_invalid=False), actor=actor)


def _insert(conn: apsw.Connection, *, batch: tuple[MemoryRow, ...], actor: Actor) -> int:
    inserted = 0
    for row in batch:
        conn.execute(_INSERT_IGNORE, row)
        if conn.changes():
            inserted += 1
            # An id can come back by import after a delete: kept as absent before it, so an
            # undo of an earlier change sees that the memory changed since.
            mid = row[_ID_INDEX]
            changelog.record(conn, actor, ChangeKind.IMPORTED, memory_id=mid, before={mid: None})
    return inserted


def _insert_history(conn: apsw.Connection, *, entries: tuple[Change, ...]) -> int:
    own = changelog.database_id(conn) + ":"
    return sum(
        changelog.insert_imported(conn, entry, entry.origin)
        for entry in entries
        if entry.origin is not None and not entry.origin.startswith(own)
    )


_NUMBERS: Final = {
    "stability": fsrs.INITIAL_STABILITY_DAYS,
    "difficulty": fsrs.INITIAL_DIFFICULTY,
    "storage_strength": 1.0,
    "retrieval_strength": 1.0,
    "retention_strength": 1.0,
    "sentiment_score": 0.0,
    "sentiment_magnitude": 0.0,
    "adjustment": 0.0,  # promotes and demotes (vestige.fsrs); older exports have none
}
#: What the strengths can be.  The store keeps their sums for `stats` (migration 6), and one
#: imported 1e17 beside values near 1 wiped out their sum for good once deleted again.
#: Storage strength is capped at fsrs.MAX_STORAGE_STRENGTH here; other tools' exports may
#: count higher, so the bound is wide but finite.
_STRENGTH_RANGES: Final = {
    "retention_strength": (0.0, 1.0),
    "retrieval_strength": (0.0, 1.0),
    "storage_strength": (0.0, 1e6),
}
_INTEGERS: Final = {"reps": 0, "lapses": 0, "scheduled_days": 0}
#: SQLite's INTEGER range; a larger value would fail at insert, after earlier batches.
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**63 - 1
_OPTIONAL_TEXT: Final = ("embedding_model", "superseded_by")
_TIMES: Final = ("next_review", "valid_from", "valid_until")


def _row_from_line(line: str, now: str) -> MemoryRow | Change:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"not valid JSON ({exc.msg})") from None
    except ValueError:  # an integer of more than 4300 digits (sys.get_int_max_str_digits)
        raise InvalidInput("a number has too many digits") from None
    return _row_from_json(data, now)


def _row_from_json(data: object, now: str) -> MemoryRow | Change:
    """Validate one exported memory and return its row (``now``: the default times), or
    one changelog entry (``{"change": {...}}``)."""
    if not isinstance(data, dict):
        raise InvalidInput("expected a JSON object (one memory per row)")
    if set(data) == {"change"}:
        return _change_from_json(data["change"])
    unknown = set(data) - set(MEMORY_COLUMNS)
    if unknown:
        raise InvalidInput(f"unknown fields {sorted(unknown)}")
    if "id" not in data or "content" not in data:
        raise InvalidInput("a memory needs at least an id and a content")
    content = _validate.content(data["content"])
    created = _validate.timestamp(data.get("created_at"), name="created_at") or now
    values: dict[str, Any] = {
        "id": _validate.memory_id(data["id"]),
        "content": content,
        "node_type": _validate.node_type(data.get("node_type", "fact")),
        "created_at": created,
        "updated_at": _validate.timestamp(data.get("updated_at"), name="updated_at") or created,
        "last_accessed": _validate.timestamp(data.get("last_accessed"), name="last_accessed")
        or created,
        "learning_state": _text(data, "learning_state", "new"),
        "source": _validate.source(data.get("source")),
        "tags": json.dumps(_validate.tags(data.get("tags")), ensure_ascii=False),
        "has_embedding": int(bool(data.get("has_embedding", False))),
        "scope": _text(data, "scope", "user"),
        "content_hash": similarity.content_hash(content),
    }
    for name, default in _NUMBERS.items():
        values[name] = _number(data, name, default)
        low, high = _STRENGTH_RANGES.get(name, (-math.inf, math.inf))
        if not low <= values[name] <= high:
            raise InvalidInput(
                f"{name} must be between {low:g} and {high:g}, not {_short(data[name])}"
            )
    for name, default_int in _INTEGERS.items():
        values[name] = _integer(data, name, default_int)
    for name in _OPTIONAL_TEXT:
        values[name] = _text(data, name, None)
    for name in _TIMES:
        values[name] = _validate.timestamp(data.get(name), name=name)
    return tuple(values[c] for c in MEMORY_COLUMNS)


def _number(data: dict[str, Any], name: str, default: float) -> float:
    # json.loads accepts NaN and Infinity (and 1e400 is inf): none fits a REAL NOT NULL.
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{name} must be a number, not {value!r}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise InvalidInput(f"{name} must be a finite number, not {_short(value)}")
    return number


def _integer(data: dict[str, Any], name: str, default: int) -> int:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{name} must be a number, not {value!r}")
    if isinstance(value, float):
        if not value.is_integer():  # also NaN and infinities
            raise InvalidInput(f"{name} must be a whole number, not {value!r}")
        value = int(value)
    if not _INT_MIN <= value <= _INT_MAX:
        raise InvalidInput(f"{name} is {_short(value)}; it must be between -2**63 and 2**63-1")
    return value


def _short(value: float) -> str:
    text = repr(value)
    return text if len(text) <= 30 else f"{text[:12]}...({len(text)} digits)"


def _text(data: dict[str, Any], name: str, default: str | None) -> Any:
    value = data.get(name, default)
    if value is not None and not isinstance(value, str):
        raise InvalidInput(f"{name} must be text, not {value!r}")
    if value is not None:
        _validate._utf8(value, name)
    return value


_CHANGE_FIELDS: Final = frozenset(
    {
        "at",
        "kind",
        "memory_id",
        "other_id",
        "client",
        "process",
        "transport",
        "before",
        "detail",
        "origin",
    }
)


#: Bounds of an imported changelog entry: a row kept for undo holds at most a few memories
#: (a delete and what it brought back); a detail is a few counts and ids.
MAX_CHANGE_BEFORE_BYTES: Final = 4 * config.MAX_CONTENT_BYTES + 65_536
MAX_CHANGE_DETAIL_BYTES: Final = 4_096
MAX_CHANGE_TEXT_CHARS: Final = 200


def _change_from_json(data: object) -> Change:
    """Validate one exported changelog entry (history: it is stored, never acted on)."""
    if not isinstance(data, dict):
        raise InvalidInput("a change must be a JSON object")
    unknown = set(data) - _CHANGE_FIELDS
    if unknown:
        raise InvalidInput(f"unknown change fields {sorted(unknown)}")
    kind = data.get("kind")
    if kind not in {k.value for k in ChangeKind}:
        raise InvalidInput(f"{kind!r} is not a change kind")
    origin = data.get("origin")
    if not isinstance(origin, str) or not 3 <= len(origin) <= 200:
        raise InvalidInput("a change needs its origin (exported by `vestige export`)")
    ids = {
        name: None if data.get(name) is None else _validate.memory_id(data[name])
        for name in ("memory_id", "other_id")
    }
    objects = {}
    bounds = {"before": MAX_CHANGE_BEFORE_BYTES, "detail": MAX_CHANGE_DETAIL_BYTES}
    for name, limit in bounds.items():
        value = data.get(name)
        if value is not None and not isinstance(value, dict):
            raise InvalidInput(f"the change's {name} must be an object or null")
        size = len(json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"))
        if size > limit:
            raise InvalidInput(f"the change's {name} is {size:,} bytes; at most {limit:,} fit")
        objects[name] = value
    for name in ("client", "process", "transport"):
        text = data.get(name)
        if isinstance(text, str) and len(text) > MAX_CHANGE_TEXT_CHARS:
            raise InvalidInput(
                f"the change's {name} is {len(text):,} characters; at most "
                f"{MAX_CHANGE_TEXT_CHARS} fit"
            )
    at = _validate.timestamp(data.get("at"), name="at")
    if at is None:
        raise InvalidInput("a change needs its time (at)")
    return Change(
        seq=0,
        at=at,
        kind=str(kind),
        memory_id=ids["memory_id"],
        other_id=ids["other_id"],
        undoes=None,
        client=_text(data, "client", None),
        process=_text(data, "process", "unknown") or "unknown",
        transport=_text(data, "transport", "unknown") or "unknown",
        before=objects["before"],
        detail=objects["detail"],
        origin=origin,
    )
