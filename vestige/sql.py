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

import itertools
import math
import time
from dataclasses import dataclass
from typing import Any, Final

import apsw

from vestige.errors import InvalidInput
from vestige.printable import escape_controls

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
    {
        "foreign_key_list",
        "index_info",
        "index_list",
        "index_xinfo",
        "table_info",
        "table_list",
        "table_xinfo",
    }
)
_HINT: Final = (
    "vestige sql only reads, one statement at a time: change memories with vestige ingest, "
    "edit, delete or import, so the write gate, the changelog and the counts stay right."
)


#: A statement is stopped after this long (``vestige sql --timeout``): a recursive query
#: with no end runs inside SQLite, where neither Ctrl-C nor SIGTERM is seen until it returns.
QUERY_DEADLINE_S: Final = 30.0
#: At most this many rows are kept (``--max-rows``); the result says when there were more.
MAX_ROWS: Final = 10_000
#: SQLite's heap in a process that only queries (the CLI): a query that would need more is
#: stopped with an error instead of taking the machine's memory (``limit_heap``).
QUERY_HEAP_BYTES: Final = 512 * 1024 * 1024
#: SQLite runs the progress check every this many virtual machine steps (~1 ms of work).
_PROGRESS_STEPS: Final = 10_000


@dataclass(frozen=True, slots=True)
class QueryResult:
    """A statement's columns and the rows it returned, at most ``max_rows`` (blobs as bytes);
    ``truncated`` when it had more."""

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: a blob becomes its hex text, an infinite REAL the text JSON lacks."""
        return {
            "columns": list(self.columns),
            "rows": [[_json_value(v) for v in r] for r in self.rows],
            "truncated": self.truncated,
        }


def limit_heap(limit: int = QUERY_HEAP_BYTES) -> None:
    """Cap SQLite's heap for the whole process: only for a process that does nothing but
    query (the CLI), since every connection in it shares the cap."""
    apsw.hard_heap_limit(limit)


def run(
    conn: apsw.Connection,
    statement: str,
    *,
    max_rows: int = MAX_ROWS,
    deadline_s: float = QUERY_DEADLINE_S,
) -> QueryResult:
    """Run one reading statement on ``conn`` (inside the caller's read transaction).

    The statement is compiled afresh (never from the statement cache, so the authorizer
    sees it), stopped at ``deadline_s``, and reset before returning, whatever happens: a
    statement left mid-way would keep the reader's snapshot, and with it the WAL, pinned.

    :raises InvalidInput: not one statement, a statement that would do more than read, one
        SQLite cannot run (the message is SQLite's), or one that ran out of time or memory.
    """
    refused: list[str] = []  # what the authorizer denied, in SQLite's words
    statements = actions = 0
    deadline = time.monotonic() + deadline_s

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

    def past_deadline() -> bool:
        # Python code: a pending Ctrl-C or SIGTERM handler runs here, inside a long step.
        return time.monotonic() > deadline

    conn.authorizer = authorize
    conn.set_progress_handler(past_deadline, _PROGRESS_STEPS)
    cursor = conn.cursor()
    cursor.exec_trace = one_at_a_time
    try:
        cursor.execute(statement, can_cache=False)
        columns = _columns(cursor)  # known only while the statement has rows to give
        rows = list(itertools.islice(cursor, max_rows))
        truncated = next(cursor, None) is not None
    except apsw.ExecTraceAbort:
        raise InvalidInput("more than one SQL statement", hint=_HINT) from None
    except apsw.AuthError:
        raise InvalidInput(
            f"refused: the statement does more than read ({', '.join(refused)})", hint=_HINT
        ) from None
    except apsw.InterruptError:
        raise InvalidInput(
            f"the statement ran for more than {deadline_s:g} s and was stopped",
            hint="Narrow it (a WHERE, a LIMIT), or give it more time with --timeout SECONDS.",
        ) from None
    except apsw.NoMemError:
        raise InvalidInput(
            "the statement needed more memory than vestige sql allows "
            f"({QUERY_HEAP_BYTES // 2**20} MiB) and was stopped",
            hint="Narrow it: fewer rows (a LIMIT), smaller values, no unbounded recursion.",
        ) from None
    except (apsw.CorruptError, apsw.NotADBError, apsw.IOError, apsw.FullError):
        raise  # about the database, not the statement: the store names the rescue
    except apsw.BindingsError:
        raise InvalidInput(
            "the statement has a parameter (? or :name), and vestige sql takes none",
            hint="Write the value into the SQL itself, quoted as an SQL string.",
        ) from None
    except apsw.Error as exc:
        raise InvalidInput(
            f"SQLite could not run it: {escape_controls(str(exc))}",
            hint="See docs/STORAGE.md, 'Reading the database with SQL', for the tables.",
        ) from None
    except UnicodeEncodeError:
        raise InvalidInput(
            "the statement is not valid UTF-8 text",
            hint="Write it in UTF-8 (check the terminal's or the script's encoding).",
        ) from None
    except UnicodeDecodeError:
        raise InvalidInput(
            "a value in the result is not valid UTF-8 text (a damaged row, or bytes stored "
            "as text)",
            hint="Select that column as CAST(column AS BLOB) to see its bytes, and run "
            "`vestige doctor --deep` if the database may be damaged.",
        ) from None
    finally:
        cursor.close(force=True)
        conn.set_progress_handler(None)
        conn.authorizer = None
    if not statements:
        raise InvalidInput("no SQL statement given", hint=_HINT)
    return QueryResult(columns, rows, truncated)


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float) and math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


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
