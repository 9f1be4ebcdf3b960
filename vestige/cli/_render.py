"""How results reach the terminal: aligned text for people, JSON for scripts.

Commands build plain data (dicts and lists from the library's dataclasses) and hand it here,
so the text and the ``--json`` form always carry the same facts.

Memories hold whatever an agent or a file put in them, escape sequences included.  Printed
raw, ``\x1b]0;...`` retitles the terminal and ``\x1b[2J`` (or the one-byte C1 CSI ``\x9b``)
clears it, so every value shown to a person goes through ``escape_controls`` here.  The JSON
form stays exact: controls that JSON leaves raw are written as ``\\uNNNN`` escapes, which a
parser reads back as the same characters.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any, Final

import click

from vestige.printable import escape_controls, escape_json_controls

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

#: A terminal counter is redrawn at most this often, so progress never slows the work.
PROGRESS_REDRAW_S: Final = 0.1


def emit(data: Any, *, as_json: bool, text: Callable[[], None]) -> None:
    """Print ``data`` as JSON, or call ``text`` to print it for a person."""
    if as_json:
        click.echo(
            escape_json_controls(json.dumps(data, indent=2, ensure_ascii=False, default=str))
        )
    else:
        text()


def key_values(rows: Iterable[tuple[str, Any]], *, indent: int = 0) -> None:
    items = [
        (label, "-" if value is None else escape_controls(str(value))) for label, value in rows
    ]
    if not items:
        return
    width = max(len(label) for label, _ in items)
    pad = " " * indent
    for label, value in items:
        click.echo(f"{pad}{label + ':':<{width + 1}}  {value}")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A left-aligned table; the last column is not padded (it may be long text)."""
    cells = [[escape_controls(str(c)) for c in headers]] + [
        ["-" if c is None else escape_controls(str(c)) for c in r] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        line = "  ".join(c if i == len(row) - 1 else f"{c:<{widths[i]}}" for i, c in enumerate(row))
        click.echo(click.style(line, bold=True) if n == 0 else line)


def one_line(text: str, limit: int = 80) -> str:
    """``text`` on one line (runs of white space made one space), escaped, cut at ``limit``."""
    flat = escape_controls(" ".join(text.split()))
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def percent(fraction: float) -> str:
    return f"{fraction * 100:.1f}%"


def warn(message: str) -> None:
    click.echo(click.style("Warning: ", fg="yellow") + escape_controls(message), err=True)


class Progress:
    """A status line on stderr, drawn only when stderr is a terminal (never in pipes).

    With ``counting`` it shows how many items are done (``Exporting… 1200/5000``); without,
    just what is happening (``Backing up…``) until the work ends.
    """

    def __init__(self, label: str, total: int | None = None, *, counting: bool = True) -> None:
        self.label = label
        self.total = total
        self.counting = counting
        self.count = 0
        self.enabled = sys.stderr.isatty()
        self._drawn_at = 0.0

    def __enter__(self) -> Progress:
        self._draw(force=True)
        return self

    def advance(self, n: int = 1) -> None:
        self.count += n
        self._draw()

    def _line(self) -> str:
        if not self.counting:
            return f"{self.label}…"
        of = f"/{self.total}" if self.total is not None else ""
        return f"{self.label}… {self.count}{of}"

    def _draw(self, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._drawn_at < PROGRESS_REDRAW_S:
            return
        self._drawn_at = now
        click.echo(f"\r{self._line()}", err=True, nl=False)

    def __exit__(self, *exc: object) -> None:
        if not self.enabled:
            return
        if self.counting:
            self._draw(force=True)
            click.echo("", err=True)
        else:
            click.echo("\r" + " " * len(self._line()) + "\r", err=True, nl=False)
