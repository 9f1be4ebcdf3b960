"""One change, as `vestige log` and `vestige watch` show it, and the ``--since`` both take.

A change printed by `watch` as it happens must read the same as the row `log` prints for
it later, so the two commands share these helpers instead of each keeping a copy.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from vestige.changelog import ChangeKind
from vestige.cli import _render
from vestige.printable import escape_controls

if TYPE_CHECKING:
    from vestige.changelog import Change

#: The columns of one change, in the order `log` and `watch` print them.
HEADERS = ("SEQ", "WHEN", "KIND", "MEMORY", "WHO", "DETAIL")
#: Characters of the detail column kept on one line (a table row must stay one line).
DETAIL_WIDTH = 70


def parse_since(since: str | None) -> tuple[int | None, str | None]:
    """A change number, or a time; a time without a zone is local, as `log` shows times."""
    if since is None:
        return None, None
    text = since.strip().removeprefix("#")
    if text.isascii() and text.isdigit():
        return int(text), None
    try:
        parsed = datetime.fromisoformat(since.strip())
    except ValueError:
        return None, since  # the library says what a time must look like
    if parsed.tzinfo is None:
        return None, parsed.astimezone().isoformat()
    return None, since


def row(c: Change) -> tuple[Any, ...]:
    """The change's cells under ``HEADERS`` (not yet escaped: the table does that)."""
    return (
        c.seq,
        local(c.at),
        c.kind,
        c.memory_id,
        who(c),
        _render.one_line(detail(c), DETAIL_WIDTH),
    )


def line(c: Change) -> str:
    """The change as one line of text, every cell escaped (a client names itself)."""
    return "  ".join("-" if v is None else escape_controls(str(v)) for v in row(c)).rstrip()


def local(at: str) -> str:
    try:
        return datetime.fromisoformat(at).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return at


def who(c: Change) -> str:
    """The client, with the face it came through (a client names itself: it may say anything)."""
    return f"{c.client} via {c.transport}" if c.client else f"{c.transport}/{c.process}"


def ids(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def detail(c: Change) -> str:
    """One short line on what the change did, from the fields its kind fills in."""
    d = c.detail or {}
    parts = [_what(c, d)]
    if d.get("brought_back"):
        parts.append(f"brought back {ids(d['brought_back'])}")
    if c.origin:
        parts.append(f"imported history ({c.origin})")
    return "; ".join(p for p in parts if p)


def _what(c: Change, d: dict[str, Any]) -> str:
    what = ""
    match c.kind:
        case ChangeKind.CREATED | ChangeKind.REINFORCED | ChangeKind.UPDATED:
            what = f"similarity {d['similarity']}" if "similarity" in d else ""
        case ChangeKind.SUPERSEDED:
            what = f"replaced {c.other_id}"
        case ChangeKind.EDITED:
            what = "changed " + " and ".join(d.get("changed", []))
        case ChangeKind.PURGED:
            what = "" if d.get("was_live", True) else "was deleted already"
        case ChangeKind.UNDONE:
            removed = f"; removed {ids(d['removed'])}" if d.get("removed") else ""
            what = f"undid #{c.undoes} ({d.get('undone_kind', '?')}){removed}"
        case ChangeKind.DECAYED:
            trimmed = d.get("changelog_trimmed")
            more = f"; {trimmed} old changes trimmed" if trimmed else ""
            what = f"{d.get('nodes_processed', '?')} memories{more}"
        case ChangeKind.RESTORED:
            what = f"from {d.get('backup', '?')}"
    return what
