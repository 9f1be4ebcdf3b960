"""Read-only SQL over a store: looking inside the file while servers write to it.

The database is plain SQLite and people want to query it.  A ``sqlite3`` shell is the
obvious tool, and often the wrong one: Debian 12 ships 3.40.1, inside the range of the
WAL-reset bug (3.7.0-3.51.2) that can corrupt a database written by several processes, and
a shell left inside ``BEGIN`` pins the WAL.  ``Store.query`` runs the statement on the
store's own reader, with the SQLite Vestige requires, in one short snapshot, and lets it
read only: SQLite's authorizer refuses anything but reading (no write, no ``ATTACH``, no
transaction control, only pragmas that report), on top of the reader's ``query_only``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import apsw

from vestige.errors import InvalidInput

#: What a read does, in SQLite's authorizer codes.
_READING: Final = frozenset(
    {apsw.SQLITE_SELECT, apsw.SQLITE_READ, apsw.SQLITE_FUNCTION, apsw.SQLITE_RECURSIVE}
)
#: Pragmas that only report (a pragma with a value would change a setting, e.g. query_only).
_REPORTING_PRAGMAS: Final = frozenset(
    {
        "compile_options",
        "data_version",
        "database_list",
        "foreign_key_list",
        "freelist_count",
        "function_list",
        "index_info",
        "index_list",
        "index_xinfo",
        "journal_mode",
        "page_count",
        "page_size",
        "pragma_list",
        "schema_version",
        "table_info",
        "table_list",
        "table_xinfo",
        "user_version",
    }
)
#: Pragmas whose argument names a table or index instead of setting a value.
_PRAGMAS_ON_A_NAME: Final = frozenset(
    {"foreign_key_list", "index_info", "index_list", "index_xinfo", "table_info", "table_xinfo"}
)
_HINT: Final = (
    "vestige sql only reads, one statement at a time: change memories with vestige ingest, "
    "edit, delete or import, so the write gate, the changelog and the counts stay right."
)


@dataclass(frozen=True, slots=True)
class QueryResult:
    """A statement's columns and every row it returned (blobs as bytes)."""

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: a blob becomes its hex text."""
        return {
            "columns": list(self.columns),
            "rows": [[v.hex() if isinstance(v, bytes) else v for v in r] for r in self.rows],
        }


def run(conn: apsw.Connection, statement: str) -> QueryResult:
    """Run one reading statement on ``conn`` (inside the caller's read transaction).

    :raises InvalidInput: not one statement, a statement that would do more than read, or
        one SQLite cannot run (the message is SQLite's).
    """
    refused: list[str] = []  # what the authorizer denied, in SQLite's words
    statements = actions = 0

    def authorize(op: int, p1: str | None, p2: str | None, db: str | None, _: str | None) -> int:
        nonlocal actions
        actions += 1
        if op in _READING or (op == apsw.SQLITE_PRAGMA and _reports(p1, p2)):
            return apsw.SQLITE_OK
        action = str(apsw.mapping_authorizer_function.get(op, op))
        refused.append(action.removeprefix("SQLITE_").lower().replace("_", " "))
        return apsw.SQLITE_DENY

    def one_at_a_time(_cursor: apsw.Cursor, _text: str, _bindings: object) -> bool:
        # Called after each statement is prepared, also for a text that is only a comment
        # or a trailing ";": only a statement SQLite compiled has asked the authorizer.
        nonlocal statements, actions
        statements += actions > 0
        actions = 0
        return statements <= 1

    conn.authorizer = authorize
    try:
        cursor = conn.cursor()
        cursor.exec_trace = one_at_a_time
        try:
            cursor.execute(statement)
            columns = _columns(cursor)  # known only while the statement has rows to give
            rows = cursor.fetchall()
        except apsw.ExecTraceAbort:
            raise InvalidInput("more than one SQL statement", hint=_HINT) from None
        except apsw.AuthError:
            raise InvalidInput(
                f"refused: the statement does more than read ({', '.join(refused)})", hint=_HINT
            ) from None
        except (apsw.SQLError, apsw.ReadOnlyError) as exc:
            raise InvalidInput(
                f"SQLite could not run it: {exc}",
                hint="See docs/STORAGE.md, 'Reading the database with SQL', for the tables.",
            ) from None
    finally:
        conn.authorizer = None
    if not statements:
        raise InvalidInput("no SQL statement given", hint=_HINT)
    return QueryResult(columns, rows)


def _reports(name: str | None, argument: str | None) -> bool:
    if name is None or name.lower() not in _REPORTING_PRAGMAS:
        return False
    return argument is None or name.lower() in _PRAGMAS_ON_A_NAME


def _columns(cursor: apsw.Cursor) -> tuple[str, ...]:
    """The statement's column names; none when it returned no row (SQLite has finished it)."""
    try:
        return tuple(str(c[0]) for c in cursor.get_description())
    except apsw.ExecutionCompleteError:
        return ()
