"""`vestige`: operate a Vestige data directory from the shell, safely beside running servers.

The commands are thin: they call the library (``Store``, ``vestige.doctor``,
``vestige.restore``) and render the result.  Errors are handled in one place,
``VestigeGroup.invoke``: a ``VestigeError`` becomes ``Error: <message>`` and ``Hint: <hint>``
on stderr with the exit code from ``vestige.cli._exit``, never a traceback.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
from typing import TYPE_CHECKING, Any, Final, NoReturn

import click

from vestige.cli._exit import ExitCode, exit_code_for
from vestige.cli._options import data_dir_option, resolved_data_dir
from vestige.errors import CorruptionError, VestigeError

if TYPE_CHECKING:
    from types import FrameType

CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"]}

#: Which module defines each command: a command imports its own module only, so `vestige
#: stats` does not pay for doctor's process scan (psutil) nor for the other commands'
#: modules (issue 12).  tests/test_cli_docs.py checks it against each module's COMMANDS.
COMMAND_MODULES: Final[dict[str, str]] = {
    **dict.fromkeys(("stats", "search", "health", "ingest"), "memory"),
    **dict.fromkeys(("log", "undo", "edit", "delete", "purge"), "history"),
    **dict.fromkeys(
        ("backup", "restore", "export", "salvage", "import", "consolidate"), "safekeeping"
    ),
    "config": "config",
    "doctor": "doctor",
    "dashboard": "dashboard",
    "watch": "watch",
    "sql": "sql",
}


def fail(message: str, hint: str | None, code: ExitCode) -> NoReturn:
    click.echo(click.style("Error: ", fg="red", bold=True) + message, err=True)
    if hint:
        click.echo(click.style("Hint: ", fg="cyan") + hint, err=True)
    raise click.exceptions.Exit(int(code))


class VestigeGroup(click.Group):
    """The command group; turns library errors into a message and a named exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMAND_MODULES.get(cmd_name)
        if module is None:
            return None
        if cmd_name not in self.commands:
            loaded = importlib.import_module(f"vestige.cli.{module}")
            for command in loaded.COMMANDS:
                self.add_command(command)
        return self.commands.get(cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        ctx.ensure_object(dict)  # shared with the command's context: its --data-dir shows here
        try:
            return super().invoke(ctx)
        except CorruptionError as exc:
            hint = exc.hint
            if hint == CorruptionError.default_hint:
                # The library's generic words; the CLI knows the data directory, so it
                # names the rescue that works (salvage, then restore or a new database).
                from vestige import transfer  # noqa: PLC0415 - only on this rare path

                with contextlib.suppress(VestigeError):
                    hint = transfer.rescue_hint(resolved_data_dir())
            fail(exc.message, hint, exit_code_for(exc))
        except VestigeError as exc:
            fail(exc.message, exc.hint, exit_code_for(exc))
        except PermissionError as exc:
            fail(
                f"permission denied: {exc.filename or exc}",
                "Run as the user who owns the data directory, or fix its permissions.",
                ExitCode.ERROR,
            )
        except OSError as exc:
            if isinstance(exc, BrokenPipeError):
                raise
            where = f": {exc.filename}" if exc.filename else ""
            fail(f"{exc.strerror or exc}{where}", None, ExitCode.ERROR)


def _show_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """click.version_option's output, with the version read only when asked for."""
    if not value or ctx.resilient_parsing:
        return
    from vestige import __version__  # noqa: PLC0415 - reads the package metadata

    click.echo(f"vestige, version {__version__}")
    ctx.exit()


@click.group(cls=VestigeGroup, context_settings=CONTEXT_SETTINGS)
@click.option(
    "-V",
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_show_version,
    help="Show the version and exit.",
)
@data_dir_option
def cli() -> None:
    """Vestige: a local memory for AI agents, kept in one SQLite file.

    Every command works while vestige-mcp servers run on the same data directory.
    Run `vestige doctor` first when something looks wrong.
    """


def _exit_on_terminate(signum: int, frame: FrameType | None) -> NoReturn:
    """SIGTERM ends a command as Ctrl-C does: by an exception, so that every ``finally``
    runs (a backup, export or salvage removes its temporary file, connections close)."""
    raise SystemExit(128 + signum)


def _reserve_standard_fds() -> None:
    """Started with stdin, stdout or stderr closed (``2>&-``), a command would hand that
    number to the next file it opens, and a lock file would receive its warnings: point
    each closed one at /dev/null first (the lowest free number is the closed one)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (`vestige`)."""
    _reserve_standard_fds()
    signal.signal(signal.SIGTERM, _exit_on_terminate)
    try:
        cli.main(args=argv, prog_name="vestige")
    except BrokenPipeError:
        # `vestige export | head`: the reader left; point stdout at /dev/null so the
        # interpreter's final flush does not raise again, and exit quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(int(ExitCode.ERROR))
