"""Checks on caller input, done before any transaction starts, so bad input writes nothing.

Every failure is an ``InvalidInput`` whose message says what was wrong and what is allowed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from vestige import config
from vestige.changelog import ChangeKind
from vestige.errors import InvalidInput

_NODE_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,49}$")
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
MAX_TIMELINE_LIMIT: Final = 200
ISO_HINT: Final = "Use ISO 8601, e.g. 2026-11-24 or 2026-11-24T10:00:00Z."
#: Characters of a refused value quoted back in a message: a value can be megabytes long.
SHOWN_CHARS: Final = 40


def shown(value: Any) -> str:
    """``repr(value)``, cut to about SHOWN_CHARS characters, saying how long it was."""
    if isinstance(value, str) and len(value) > SHOWN_CHARS:
        return f"{value[:SHOWN_CHARS]!r}... ({len(value):,} characters)"
    if isinstance(value, list | tuple | dict) and len(value) > SHOWN_CHARS:
        return f"a {type(value).__name__} of {len(value):,} items"
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}..."


def content(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"content must be text, not {type(value).__name__}")
    if not value.strip():
        raise InvalidInput("content is empty", hint="Pass the text to remember.")
    size = len(_utf8(value, "content"))
    if size > config.MAX_CONTENT_BYTES:
        raise InvalidInput(
            f"content is {size:,} bytes; the limit is {config.MAX_CONTENT_BYTES:,} bytes (UTF-8)",
            hint="Split it into several smaller memories.",
        )
    return value


def _utf8(value: str, name: str) -> bytes:
    """The UTF-8 bytes; a lone surrogate (JSON can carry "\\ud800") cannot be stored."""
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(
            f"{name} has {value[exc.start]!r} at position {exc.start}: a lone surrogate, "
            "not a character",
            hint="Send valid Unicode text (UTF-8); surrogates come only in pairs.",
        ) from None


def node_type(value: Any) -> str:
    if not isinstance(value, str) or not _NODE_TYPE.match(value):
        raise InvalidInput(
            f"node_type {shown(value)} is not valid",
            hint="Use a short word such as fact, concept, decision, pattern, event or note "
            "(letters, digits, _ or -, at most 50 characters).",
        )
    return value


def tags(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise InvalidInput(
            "tags must be a list of strings", hint='For example ["identity", "python"].'
        )
    result: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise InvalidInput(
                f"every tag must be a string; got {shown(item)} ({type(item).__name__})"
            )
        tag = item.strip()
        _utf8(tag, "a tag")
        if not tag:
            raise InvalidInput("a tag is empty", hint="Remove empty tags.")
        if len(tag) > config.MAX_TAG_CHARS:
            raise InvalidInput(f"tag {tag[:20]!r}... is longer than {config.MAX_TAG_CHARS} chars")
        if tag not in result:
            result.append(tag)
    if len(result) > config.MAX_TAGS:
        raise InvalidInput(f"{len(result)} tags given; at most {config.MAX_TAGS} are allowed")
    return result


def source(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"source must be text, not {type(value).__name__}")
    if len(value) > config.MAX_SOURCE_CHARS:
        raise InvalidInput(f"source is longer than {config.MAX_SOURCE_CHARS} characters")
    _utf8(value, "source")
    return value or None


def memory_id(value: Any) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise InvalidInput(
            f"{shown(value)} is not a memory id",
            hint="Ids look like 7c9e6679-7425-40de-944b-e07fc1f90ae7; search lists them.",
        )
    return value


def limit(value: Any, *, maximum: int = config.MAX_LIMIT, name: str = "limit") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} must be a whole number, not {shown(value)}")
    if not 1 <= value <= maximum:
        raise InvalidInput(f"{name} is {value}; it must be between 1 and {maximum}")
    return value


def seq(value: Any, *, name: str) -> int:
    """A changelog sequence number (0 asks for everything after the start)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} must be a whole number, not {shown(value)}")
    if not 0 <= value < 2**63:
        raise InvalidInput(
            f"{name} is {_short_number(value)}; change numbers run from 1 to 2**63-1",
            hint="The changelog (vestige log, or the memory_changelog tool) lists them.",
        )
    return value


def _short_number(value: int) -> str:
    text = str(value)
    return text if len(text) <= 20 else f"{text[:12]}...({len(text)} digits)"


def change_kinds(values: Any) -> frozenset[str] | None:
    """Changelog kinds to filter by; None or empty means every kind."""
    if values is None:
        return None
    if isinstance(values, str) or not isinstance(values, list | tuple):
        raise InvalidInput(f"kinds must be a list of kinds, not {shown(values)}")
    known = {k.value for k in ChangeKind}
    unknown = [v for v in values if v not in known]
    if unknown:
        raise InvalidInput(
            f"unknown change kind {shown(unknown[0])}",
            hint=f"Use some of: {', '.join(k.value for k in ChangeKind)}.",
        )
    return frozenset(values) or None


def fraction(value: Any, *, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise InvalidInput(f"{name} must be a number between 0 and 1, not {shown(value)}")
    if not 0.0 <= value <= 1.0:
        raise InvalidInput(f"{name} is {value}; it must be between 0 and 1")
    return float(value)


def query(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"query must be text, not {type(value).__name__}")
    if not value.strip():
        raise InvalidInput("the search query is empty", hint="Pass some words to look for.")
    if len(value) > config.MAX_QUERY_CHARS:
        raise InvalidInput(f"the query is longer than {config.MAX_QUERY_CHARS} characters")
    return value


def timestamp(value: Any, *, name: str, end_of_day: bool = False) -> str | None:
    """An ISO 8601 date or date-time, returned as RFC 3339 UTC; None passes through.

    A bare date means the start of that day (UTC), or its last microsecond with
    ``end_of_day``, so "until 2026-11-24" includes the 24th.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(f"{name} {shown(value)} is not a date", hint=ISO_HINT) from None
    else:
        raise InvalidInput(f"{name} must be an ISO 8601 date string, not {type(value).__name__}")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        if end_of_day and isinstance(value, str) and _DATE_ONLY.match(value.strip()):
            parsed += timedelta(days=1, microseconds=-1)
        return parsed.astimezone(UTC).isoformat()
    except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00 is in the year 10000 in UTC
        raise out_of_range(name, value) from None


def out_of_range(name: str, value: Any) -> InvalidInput:
    return InvalidInput(
        f"{name} {shown(value)} is out of range (years 1 to 9999, in UTC)", hint=ISO_HINT
    )
