"""Turning any text a person types into a safe FTS5 query, and ranking what it finds.

FTS5 has its own query language (quotes, ``*``, ``AND``/``OR``/``NOT``, ``-``, ``NEAR``,
parentheses, ``column:``).  User text is never passed through: it is split into words and
each word becomes a quoted string, joined with OR.  So ``"unbalanced (paren`` or ``-x AND``
is simply a search for those words and can never raise a syntax error.
"""

from __future__ import annotations

import re
from typing import Final

#: At most this many words of a query are used (the most distinctive: the longest).
MAX_QUERY_TERMS: Final = 32
#: Longer "words" (hashes, base64) are cut; FTS5 indexes the same prefix anyway.
MAX_TERM_CHARS: Final = 64
#: combined = KEYWORD_WEIGHT * keyword + RETENTION_WEIGHT * retention_strength.
KEYWORD_WEIGHT: Final = 0.75
RETENTION_WEIGHT: Final = 0.25

_WORD = re.compile(r"\w+", re.UNICODE)


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
