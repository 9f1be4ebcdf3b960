"""Getting memories out and back in: online backups, JSON Lines export and import.

Backups use SQLite's online backup API in a single step (a consistent snapshot taken under
one read lock, safe while other processes write) - never a copy of the file, which can
tear a WAL database or, done inside a process with connections, drop SQLite's locks.
"""

from __future__ import annotations

import json
import math
import os
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

import apsw

from vestige import _validate, config, fsrs, similarity
from vestige.errors import ImportFileError, InvalidInput, StoreError
from vestige.models import MEMORY_COLUMNS, SELECT_MEMORY, ImportReport, Memory

if TYPE_CHECKING:
    from collections.abc import Iterator

    from vestige._database import Database
    from vestige.config import DataDir

EXPORT_PAGE_ROWS: Final = 500
IMPORT_BATCH_ROWS: Final = 500

_INSERT_IGNORE: Final = (
    f"INSERT INTO knowledge_nodes({SELECT_MEMORY}) "
    f"VALUES ({', '.join('?' * len(MEMORY_COLUMNS))}) ON CONFLICT(id) DO NOTHING"
)


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
        after = rows[-1][0]
        for row in rows:
            yield Memory.from_row(row[1:])


def default_backup_path(data_dir: DataDir) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    path = data_dir.backups / f"vestige-{stamp}.db"
    n = 1
    while path.exists():
        n += 1
        path = data_dir.backups / f"vestige-{stamp}-{n}.db"
    return path


def backup(db: Database, data_dir: DataDir, target: str | os.PathLike[str] | None) -> Path:
    if target is None:
        data_dir.backups.mkdir(mode=config.DIR_MODE, parents=True, exist_ok=True)
        path = default_backup_path(data_dir)
    else:
        path = Path(os.path.abspath(os.path.expanduser(os.fspath(target))))
    if path.exists():
        raise InvalidInput(
            f"the backup target {path} already exists",
            hint="Choose a new file name, or move the old backup away first.",
        )
    if not path.parent.is_dir():
        raise InvalidInput(
            f"the folder {path.parent} does not exist", hint="Create it, or choose another path."
        )
    if path.resolve() == db.path.resolve():
        raise InvalidInput("the backup target is the live database itself")
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        db.snapshot_to(tmp)
        _finish_backup(tmp)
        if path.exists():  # raced with another backup of the same name
            raise InvalidInput(f"the backup target {path} already exists")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _finish_backup(path: Path) -> None:
    """Make the copy a self-contained single file (rollback journal) and check it."""
    os.chmod(path, config.FILE_MODE)
    conn = apsw.Connection(str(path))
    try:
        conn.execute("PRAGMA journal_mode = DELETE").fetchall()
        check = "; ".join(r[0] for r in conn.execute("PRAGMA quick_check").fetchall())
    finally:
        conn.close()
    if check != "ok":
        raise StoreError(
            f"the backup failed its quick_check ({check}); it was not kept",
            hint="Run `vestige doctor`: the live database may be damaged.",
        )


def export_jsonl(db: Database, out: IO[str]) -> int:
    count = 0
    for memory in iter_memories(db):
        out.write(json.dumps(memory.to_dict(), ensure_ascii=False) + "\n")
        count += 1
    return count


def import_jsonl(db: Database, source: IO[str]) -> ImportReport:
    rows = [parse_line(n, line) for n, line in enumerate(source, start=1) if line.strip()]
    imported = 0
    for start in range(0, len(rows), IMPORT_BATCH_ROWS):
        batch = rows[start : start + IMPORT_BATCH_ROWS]
        imported += db.write(partial(_insert, batch=batch))
    return ImportReport(read=len(rows), imported=imported, skipped_existing=len(rows) - imported)


def _insert(conn: apsw.Connection, *, batch: list[tuple[Any, ...]]) -> int:
    inserted = 0
    for row in batch:
        conn.execute(_INSERT_IGNORE, row)
        inserted += conn.changes()
    return inserted


_NUMBERS: Final = {
    "stability": fsrs.INITIAL_STABILITY_DAYS,
    "difficulty": fsrs.INITIAL_DIFFICULTY,
    "storage_strength": 1.0,
    "retrieval_strength": 1.0,
    "retention_strength": 1.0,
    "sentiment_score": 0.0,
    "sentiment_magnitude": 0.0,
}
_INTEGERS: Final = {"reps": 0, "lapses": 0, "scheduled_days": 0}
#: SQLite's INTEGER range; a larger value would fail at insert, after earlier batches.
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**63 - 1
_OPTIONAL_TEXT: Final = ("embedding_model", "superseded_by")
_TIMES: Final = ("next_review", "valid_from", "valid_until")


def parse_line(number: int, line: str) -> tuple[Any, ...]:
    """Validate one exported memory and return its row; any problem names the line."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ImportFileError(f"not valid JSON ({exc.msg})", line=number) from None
    except ValueError:  # an integer of more than 4300 digits (sys.get_int_max_str_digits)
        raise ImportFileError("a number has too many digits", line=number) from None
    if not isinstance(data, dict):
        raise ImportFileError("expected a JSON object (one memory per line)", line=number)
    try:
        return _row_from(data)
    except InvalidInput as exc:
        raise ImportFileError(exc.message, line=number) from None


def _row_from(data: dict[str, Any]) -> tuple[Any, ...]:
    unknown = set(data) - set(MEMORY_COLUMNS)
    if unknown:
        raise InvalidInput(f"unknown fields {sorted(unknown)}")
    if "id" not in data or "content" not in data:
        raise InvalidInput("a memory needs at least an id and a content")
    now = datetime.now(UTC).isoformat()
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
