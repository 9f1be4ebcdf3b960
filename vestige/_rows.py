"""Where SQLite values become typed Python: the one boundary between APSW rows and the store.

Strictly private.  APSW hands back every column as ``int | float | str | bytes | None``,
whatever the schema declares.  Type affinity makes Vestige's own writes come back as
declared, but a row changed by hand (a ``sqlite3`` shell, another program) may hold anything.
Each converter checks one value and raises a ``StoreError`` naming the column, instead of
letting a wrong type surface later as a ``TypeError`` deep inside the store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

from vestige.errors import StoreError

if TYPE_CHECKING:
    import apsw

    #: One result row, as APSW returns it.
    Row: TypeAlias = apsw.SQLiteValues
    Value: TypeAlias = apsw.SQLiteValue
    Bindings: TypeAlias = tuple[apsw.SQLiteValue, ...]


def as_int(value: Value, column: str) -> int:
    # bool is an int too, but SQLite never returns one.
    if isinstance(value, int):
        return value
    raise unexpected(value, column, "an integer")


def as_float(value: Value, column: str) -> float:
    """A REAL column, or an aggregate of one; SQLite may return whole numbers as integers."""
    if isinstance(value, float | int):
        return float(value)
    raise unexpected(value, column, "a number")


def as_str(value: Value, column: str) -> str:
    if isinstance(value, str):
        return value
    raise unexpected(value, column, "text")


def as_opt_str(value: Value, column: str) -> str | None:
    return None if value is None else as_str(value, column)


def one(conn: apsw.Connection, sql: str, bindings: Bindings = ()) -> Row:
    """The single row of a query that always yields one (an aggregate, a PRAGMA)."""
    rows = conn.execute(sql, bindings).fetchall()
    if len(rows) != 1:
        raise StoreError(
            f"{sql!r} returned {len(rows)} rows instead of one",
            hint="Run `vestige doctor` to check the database.",
        )
    return rows[0]


def scalar(conn: apsw.Connection, sql: str, bindings: Bindings = ()) -> Value:
    """The first column of ``one(...)``."""
    return one(conn, sql, bindings)[0]


def unexpected(value: Value, column: str, expected: str) -> StoreError:
    """The error for a column that does not hold what Vestige wrote there."""
    shown = repr(value)
    if len(shown) > 60:
        shown = f"{shown[:57]}..."
    return StoreError(
        f"the database holds {shown} ({type(value).__name__}) in {column}, "
        f"where Vestige expects {expected}",
        hint="The row was probably changed outside Vestige. Correct it with sqlite3, or "
        "restore a backup with `vestige restore FILE`.",
    )
