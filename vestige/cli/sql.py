"""``vestige sql``: read the database with SQL, safely, while servers write to it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from vestige.cli import _render
from vestige.cli._options import data_dir_option, json_option, open_store

if TYPE_CHECKING:
    from vestige.sql import QueryResult


@click.command()
@click.argument("statement")
@data_dir_option
@json_option
def sql(statement: str, as_json: bool) -> None:
    """Run one SQL statement that only reads, and print its rows.

    It runs with the SQLite Vestige requires, in one short snapshot, and is refused if it
    would change anything: writes go through the other commands.

    \b
    Example:
      vestige sql "SELECT content FROM knowledge_nodes ORDER BY retention_strength DESC LIMIT 5"
      vestige sql "PRAGMA table_info(knowledge_nodes)" --json
    """
    with open_store() as store:
        result = store.query(statement)
    _render.emit(result.to_dict(), as_json=as_json, text=lambda: _rows_text(result))


def _rows_text(result: QueryResult) -> None:
    if not result.rows:
        click.echo("(no rows)")
        return
    _render.table(
        result.columns,
        [tuple(f"x'{v.hex()}'" if isinstance(v, bytes) else v for v in r) for r in result.rows],
    )


COMMANDS = (sql,)
