"""Wording of the JSON-RPC refusals that both the server's framing and the proxy give."""

from __future__ import annotations

import json


def not_json(exc: ValueError | RecursionError) -> str:
    """The parse error for a line that is not JSON: what is wrong, where, and what to send."""
    where = f" at character {exc.pos}" if isinstance(exc, json.JSONDecodeError) else ""
    what = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
    return f"Parse error: the line is not JSON ({what}{where}): send one JSON-RPC message per line"
