"""Turning any text a person types into a safe FTS5 query, and ranking what it finds.

FTS5 has its own query language (quotes, ``*``, ``AND``/``OR``/``NOT``, ``-``, ``NEAR``,
parentheses, ``column:``).  User text is never passed through: it is split into words and
each word becomes a quoted string, joined with OR.  So ``"unbalanced (paren`` or ``-x AND``
is simply a search for those words and can never raise a syntax error.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

#: At most this many words of a query are used (the most distinctive: the longest).
MAX_QUERY_TERMS: Final = 32
#: Longer "words" (hashes, base64) are cut; FTS5 indexes the same prefix anyway.
MAX_TERM_CHARS: Final = 64
#: combined = KEYWORD_WEIGHT * keyword + RETENTION_WEIGHT * retention_strength.
KEYWORD_WEIGHT: Final = 0.75
RETENTION_WEIGHT: Final = 0.25

_WORD = re.compile(r"\w+", re.UNICODE)

T = TypeVar("T")


def terms(text: str) -> list[str]:
    """Distinct lower-cased words of ``text``, in order of first appearance."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(text.lower()):
        seen.setdefault(word[:MAX_TERM_CHARS], None)
    return list(seen)


def fts_query(text: str, *, max_terms: int = MAX_QUERY_TERMS) -> str | None:
    """An FTS5 MATCH expression that finds any of the words; None if there are none."""
    words = terms(text)
    if not words:
        return None
    if len(words) > max_terms:
        words = sorted(words, key=len, reverse=True)[:max_terms]
    # Inside double quotes FTS5 takes everything literally; \w+ never contains a quote.
    return " OR ".join(f'"{w}"' for w in words)


def keyword_scores(ranks: list[float]) -> list[float]:
    """FTS5 rank (bm25, more negative is better) scaled to 0..1, best hit = 1."""
    raw = [max(-r, 0.0) for r in ranks]
    best = max(raw, default=0.0)
    if best <= 0:
        return [1.0 for _ in raw]  # tiny corpora can score 0: every hit matched equally
    return [r / best for r in raw]


def combined_score(keyword: float, retention: float) -> float:
    return KEYWORD_WEIGHT * keyword + RETENTION_WEIGHT * retention


def below_successors(
    ranked: list[T], key: Callable[[T], str], successor: Callable[[T], str | None]
) -> list[T]:
    """``ranked`` with every item that its successor outranked moved to just below it.

    A superseded memory may match a query better than its correction, and its retention
    can be as high; it must still never come first (issue 9).  Items keep their order
    otherwise, and one whose successor is not in the list stays where it was.  A cycle,
    possible only in rows edited by hand, comes after the rest, in rank order.
    """
    present = {key(item) for item in ranked}
    placed: set[str] = set()
    waiting: dict[str, list[T]] = {}  # successor id -> the items to place right after it
    out: list[T] = []

    def place(first: T) -> None:
        stack = [first]
        while stack:
            item = stack.pop()
            if key(item) in placed:
                continue
            out.append(item)
            placed.add(key(item))
            stack.extend(reversed(waiting.pop(key(item), [])))

    for item in ranked:
        after = successor(item)
        if after is not None and after in present and after not in placed and after != key(item):
            waiting.setdefault(after, []).append(item)
        else:
            place(item)
    for item in ranked:  # only cycles are left waiting
        place(item)
    return out
