"""Text from outside Vestige made safe to show a person: escaped for a terminal, quoted for a shell.

Command lines, paths and metadata come from files any local process could have written (a
forged ``owners/*.json``, a file name chosen by someone else).  Printed raw, an escape sequence
in them can retitle or clear the terminal, or hide the rest of a message; pasted raw into a
shell, a name like ``x; touch PWNED; .json`` runs a command.  Every message that shows such text
goes through :func:`escape_controls`, and every path inside a suggested command goes through
:func:`shell_arg`.
"""

from __future__ import annotations

import re
import shlex
from typing import Final

#: C0 controls, DEL, C1 controls (0x9b is a one-byte CSI), and the bidirectional overrides
#: and isolates that reorder what a terminal shows.
_CONTROLS: Final = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


#: The characters of ``_CONTROLS`` that ``json.dumps(..., ensure_ascii=False)`` leaves raw (it
#: escapes C0 itself, and JSON's own line breaks and indents are C0 that must stay).
_JSON_RAW_CONTROLS: Final = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` with every control character shown as ``\\xNN`` (or ``\\uNNNN``)."""
    return _CONTROLS.sub(_escape, text)


def escape_json_controls(json_text: str) -> str:
    """JSON text with the controls ``json.dumps`` leaves raw written as ``\\uNNNN`` escapes.

    Outside its strings JSON is ASCII, so such a character can only be inside a string, where
    the escape stands for the very same character: a parser reads back exactly what was
    written, and a terminal that shows the text runs no escape sequence (0x9b is a C1 CSI).
    """
    return _JSON_RAW_CONTROLS.sub(lambda m: f"\\u{ord(m.group()):04x}", json_text)


def shell_arg(value: object) -> str:
    """``value`` as one shell word a person can paste: ``shlex.quote``, or ``$'...'`` with escapes.

    A word with control characters in it cannot be shown raw, so it is written in the
    ANSI-C quoting of bash and zsh, which turns the escapes back into the same bytes.
    """
    text = str(value)
    if not _CONTROLS.search(text):
        return shlex.quote(text)
    inner = text.replace("\\", "\\\\").replace("'", "\\'")
    return "$'" + escape_controls(inner) + "'"


def command_line(argv: tuple[str, ...] | list[str]) -> str:
    """A process's command line for a message: arguments joined by spaces, escaped; "?" if none."""
    return escape_controls(" ".join(argv)) or "?"
