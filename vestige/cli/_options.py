"""Options every command shares, and the one way a command opens the store.

``--data-dir`` is accepted both before the command (``vestige --data-dir D stats``) and after
it (``vestige stats --data-dir D``); the later one wins.  It deliberately has no click
``envvar``: ``vestige.config`` applies ``VESTIGE_DATA_DIR`` itself, so the CLI, the server
and the library share one set of rules and `vestige doctor` can say which rule chose the
directory.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import click

from vestige import config
from vestige.cli._exit import NoDatabase
from vestige.config import DataDir, DataDirSource
from vestige.errors import DataDirError
from vestige.store import Store

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

F = TypeVar("F", bound="Callable[..., Any]")

_DATA_DIR_KEY = "data_dir"
_DATA_DIR_HELP = (
    "The data directory (holds vestige.db). Default: $VESTIGE_DATA_DIR, else the platform's "
    "data folder."
)


def _remember_data_dir(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(dict)[_DATA_DIR_KEY] = value


def data_dir_option(f: F) -> F:
    """Add ``--data-dir`` to a command (or the group)."""
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=True, dir_okay=True, path_type=str),
        default=None,
        expose_value=False,
        is_eager=True,
        callback=_remember_data_dir,
        help=_DATA_DIR_HELP,
    )(f)


def json_option(f: F) -> F:
    """Add ``--json``: the same facts as one JSON document, for scripts."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print the result as JSON (for scripts)."
    )(f)


def resolved_data_dir() -> DataDir:
    """The data directory for this run, by the library's rules (flag > env > default)."""
    ctx = click.get_current_context()
    flag = (ctx.obj or {}).get(_DATA_DIR_KEY)
    return config.resolve_data_dir(flag)


def describe_source(data_dir: DataDir) -> str:
    return {
        DataDirSource.ARGUMENT: "chosen by --data-dir",
        DataDirSource.ENVIRONMENT: f"chosen by {config.DATA_DIR_ENV}",
        DataDirSource.DEFAULT: "the platform default",
    }[data_dir.source]


def require_database(data_dir: DataDir) -> None:
    """Refuse, with a clear message, when there is no database to read (never create one)."""
    path = data_dir.path
    where = f"{path} ({describe_source(data_dir)})"
    if path.exists() and not path.is_dir():
        raise DataDirError(
            f"the data directory {where} is a file, not a directory",
            hint="Point --data-dir (or VESTIGE_DATA_DIR) at the directory that holds "
            f"{config.DATABASE_FILE}.",
        )
    if not path.exists():
        raise NoDatabase(
            f"the data directory {where} does not exist",
            hint="Check --data-dir / VESTIGE_DATA_DIR; `vestige doctor` shows which one is used.",
        )
    if not os.access(path, os.R_OK | os.X_OK):
        raise DataDirError(
            f"the data directory {where} cannot be read by this user",
            hint=f"Run as the user who owns it, or fix its permissions (chmod u+rwx {path}).",
        )
    db = data_dir.database
    if not db.exists():
        raise NoDatabase(
            f"there is no Vestige database in {where}",
            hint="Check --data-dir / VESTIGE_DATA_DIR, or create it by starting vestige-mcp "
            "or running `vestige ingest TEXT`.",
        )
    if not db.is_file():
        raise DataDirError(
            f"{db} is not a regular file", hint="Move it away; Vestige keeps a SQLite file there."
        )


@contextmanager
def open_store(*, create: bool = False) -> Iterator[Store]:
    """Open the store of this run's data directory; read commands pass create=False."""
    data_dir = resolved_data_dir()
    if not create:
        require_database(data_dir)
    store = Store.open(data_dir, create=create)
    try:
        yield store
    finally:
        store.close()
