"""Real damage for the rescue tests: pages of a database overwritten with random bytes.

The pages are found through SQLite's ``dbstat`` table on a read-only connection that is
closed before a byte is written, so the test process holds no connection to the file while
it damages it (a write beside an open connection would also drop SQLite's locks).  The
database must have no WAL content left (closed cleanly, or checkpointed): a page written
in the WAL would hide the damage done to the same page in the file.
"""

from __future__ import annotations

import os
import random
from typing import TYPE_CHECKING
from urllib.parse import quote

import apsw

if TYPE_CHECKING:
    from pathlib import Path


def pages_of(db: Path, table: str, *, leaves_only: bool = True) -> list[int]:
    """The page numbers of ``table`` (its b-tree's leaves, or every page), ascending."""
    conn = apsw.Connection(
        f"file:{quote(str(db))}?mode=ro", flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI
    )
    try:
        kind = " AND pagetype = 'leaf'" if leaves_only else ""
        rows = conn.execute(
            f"SELECT pageno FROM dbstat WHERE name = ?{kind} ORDER BY pageno", (table,)
        ).fetchall()
    finally:
        conn.close()
    return [int(r[0]) for r in rows]


def checkpoint_away(db: Path) -> None:
    """Move every change from the WAL into the database file (the last close removes it)."""
    conn = apsw.Connection(str(db))
    try:
        conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE)
    finally:
        conn.close()


def overwrite_pages(db: Path, pages: list[int], *, seed: int = 11) -> None:
    """Write random bytes over each of ``pages`` of ``db`` (no connection may be open)."""
    rnd = random.Random(seed)
    with db.open("rb") as f:
        header = f.read(100)
    page_size = int.from_bytes(header[16:18], "big") or 65536
    fd = os.open(db, os.O_WRONLY)
    try:
        for page in pages:
            os.pwrite(fd, rnd.randbytes(page_size), (page - 1) * page_size)
        os.fsync(fd)
    finally:
        os.close(fd)
