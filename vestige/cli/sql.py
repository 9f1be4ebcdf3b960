"""``vestige sql``: read the database with SQL, safely, while servers write to it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import click

from vestige import sql as _sql
from vestige.cli import _render
from vestige.cli._options import data_dir_option, json_option, open_store

if TYPE_CHECKING:
    from vestige.sql import QueryResult

#: A blob longer than this shows only its start in the table.
BLOB_SHOWN_BYTES: Final = 32


@click.command()
@click.argument("statement")
@click.option(
    "--max-rows",
    type=click.IntRange(1, 10_000_000),
    default=_sql.MAX_ROWS,
    show_default=True,
    help="Print at most this many rows (the rest is counted as truncated).",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(0.1, 86_400.0),
    default=_sql.QUERY_DEADLINE_S,
    show_default=True,
    help="Stop the statement after this many seconds.",
)
@data_dir_option
@json_option
def sql(statement: str, max_rows: int, timeout_s: float, as_json: bool) -> None:
    """Run one SQL statement that only reads, and print its rows.

    It runs with the SQLite Vestige requires, in one short snapshot, and is refused if it
    would change anything: writes go through the other commands.  A statement that begins
    with "--" (a comment) goes after a lone --:  vestige sql -- "-- note\\nSELECT 1".

    \b
    Example:
      vestige sql "SELECT content FROM knowledge_nodes ORDER BY retention_strength DESC LIMIT 5"
      vestige sql "PRAGMA table_info(knowledge_nodes)" --json
    """
    _sql.limit_heap()  # this process only queries: a runaway statement stops, not the machine
    with open_store() as store:
        result = store.query(statement, max_rows=max_rows, deadline_s=timeout_s)
    if as_json:
        _render.emit(result.to_dict(), as_json=True, text=lambda: None)
    else:
        _rows_text(result)
    if result.truncated:
        _render.warn(f"only the first {max_rows:,} rows are shown; --max-rows N shows more")


def _rows_text(result: QueryResult) -> None:
    if not result.rows:
        click.echo("(no rows)")
        return
    _render.table(result.columns, [tuple(map(_cell, r)) for r in result.rows])


def _cell(value: object) -> object:
    """A blob as SQL's x'..' hex, cut for a person (``--json`` gives all of it)."""
    if not isinstance(value, bytes):
        return value
    if len(value) <= BLOB_SHOWN_BYTES:
        return f"x'{value.hex()}'"
    return f"x'{value[:BLOB_SHOWN_BYTES].hex()}'... ({len(value):,} bytes)"


COMMANDS = (sql,)
