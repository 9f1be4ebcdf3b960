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


def root_page(db: Path, table: str) -> int:
    """The page number of ``table``'s b-tree root (read-only connection, closed after)."""
    conn = apsw.Connection(
        f"file:{quote(str(db))}?mode=ro", flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI
    )
    try:
        rows = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,))
        page = rows.fetchall()[0][0]
    finally:
        conn.close()
    assert isinstance(page, int), page
    return page


def loop_back_to_root(db: Path, table: str, cell: int) -> None:
    """Point child ``cell`` of ``table``'s root (an interior page) back at the root itself.

    A cursor that walks the table then goes round: down into the root again, and again,
    returning the rows before that child each time, until SQLite's depth limit stops it; a
    seek into that child never reaches a leaf.  The leaf that child pointed at is lost.
    """
    root = root_page(db, table)
    with db.open("rb") as f:
        header = f.read(100)
        page_size = int.from_bytes(header[16:18], "big") or 65536
        f.seek((root - 1) * page_size)
        page = f.read(page_size)
    start = 100 if root == 1 else 0
    assert page[start] == 0x05, f"the root of {table} is not an interior page of a table"
    cells = int.from_bytes(page[start + 3 : start + 5], "big")
    assert 0 <= cell < cells, (cell, cells)
    pointer_at = start + 12 + 2 * cell
    offset = int.from_bytes(page[pointer_at : pointer_at + 2], "big")
    fd = os.open(db, os.O_WRONLY)
    try:
        os.pwrite(fd, root.to_bytes(4, "big"), (root - 1) * page_size + offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def set_sequence(db: Path, table: str, seq: int) -> None:
    """Make ``sqlite_sequence`` claim that ``table`` went up to ``seq`` (a damaged top)."""
    conn = apsw.Connection(str(db))
    try:
        conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = ?", (seq, table))
        conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE)
    finally:
        conn.close()
