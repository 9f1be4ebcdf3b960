"""Options every command shares, and the one way a command opens the store.

``--data-dir`` is accepted both before the command (``vestige --data-dir D stats``) and after
it (``vestige stats --data-dir D``); the later one wins.  It deliberately has no click
``envvar``: ``vestige.config`` applies ``VESTIGE_DATA_DIR`` itself, so the CLI, the server
and the library share one set of rules and `vestige doctor` can say which rule chose the
directory.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import click

from vestige import config
from vestige.changelog import Actor
from vestige.store import Store

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from vestige.config import DataDir

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


@contextmanager
def open_store(*, create: bool = False) -> Iterator[Store]:
    """Open the store of this run's data directory; read commands pass create=False.

    Its changes are named in the changelog as the CLI's, with the command that made them.
    """
    data_dir = resolved_data_dir()
    if not create:
        config.require_database(data_dir)
    command = click.get_current_context().info_name
    actor = Actor.this_process("cli", f"vestige {command}")
    store = Store.open(data_dir, create=create, actor=actor)
    try:
        yield store
    finally:
        store.close()
