"""Turning any text a person types into a safe FTS5 query, and ranking what it finds.

Rare terms first (issue 12).  FTS5 ranks by computing bm25 for every row that matches, and
counts each term's rows to weigh it: a query with "the" or "user" in it cost time in
proportion to the store.  How many rows a term is in is counted only up to ``COMMON_ROWS``,
so the count costs the same in any store; the rarest terms whose rows add up to less than
that are *rare*, the others *common*.  ``split_common`` keeps the rare terms for the queries
that find and rank: a row that has one of them mostly outranks one with common terms only
(a common term's idf is small; in more than half the rows, nil).  Only when a query has no
rare term, or the rare ones find fewer rows than asked for, do the common terms find rows,
and then a bounded number of them (see ``vestige.store`` and docs/ARCHITECTURE.md).

FTS5 has its own query language (quotes, ``*``, ``AND``/``OR``/``NOT``, ``-``, ``NEAR``,
parentheses, ``column:``).  User text is never passed through: it is split into words and
each word becomes a quoted string, joined with OR.  So ``"unbalanced (paren`` or ``-x AND``
is simply a search for those words and can never raise a syntax error.
"""

from __future__ import annotations

import itertools
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

#: The rows a query's rare terms may have between them; its other terms are common.  A
#: common term neither finds nor ranks while the query has rarer terms.  Absolute, not a
#: fraction of the store, so that what a query reads and ranks stays bounded as the store
#: grows; a store smaller than this ranks exhaustively.
COMMON_ROWS: Final = 4_000
#: Words in equally many rows are rare together (see ``split_common``): up to this many
#: times the bound of rows between them, as a store where two words are each in a third of
#: the rows has it (their order in the query must not decide which of them finds rows).
TIED_ROWS_FACTOR: Final = 2
#: smart_ingest's ``COMMON_ROWS``: lower, since it ranks on every content word of a text
#: (often 20 or more, each scored on every row its rare ones find) and needs only the top
#: 20.  A memory that shares only common words with the new text is found by the
#: all-common-words query instead, which a lower bound reaches more often.  300, not 1,000:
#: the rows of the rare words are all ranked on every call, and at 100k rows ranking 1,000
#: of them was a fifth of a smart_ingest.
CANDIDATE_ROWS: Final = 300
#: The rows with rare terms up to which those that also have a common term are scored by
#: ``vestige.store``'s own bm25 (a Python call per row, ~2.5 us) on row counts it keeps, not by
#: FTS5's (which counts every row of every common term of the query first, whatever the
#: rows it scores: 2-12 ms at 100k, ten times that at 1M).
SCORED_HERE_ROWS: Final = 1_000
#: How many of the newest rows tell whether a common term is in most rows.
SAMPLE_ROWS: Final = 1_000
#: A query of common terms only ranks at most this many of the newest rows that match it.
COMMON_WINDOW: Final = 300

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
    return quoted(query_terms(text, max_terms=max_terms)) or None


def query_terms(text: str, *, max_terms: int = MAX_QUERY_TERMS) -> list[str]:
    """The words of ``text`` a search uses: at most ``max_terms``, the longest kept.

    Which words are kept never depends on their order in the query (ties go by the word
    itself): the same words in any order are the same search.
    """
    words = terms(text)
    if len(words) > max_terms:
        words = sorted(words, key=lambda w: (-len(w), w))[:max_terms]
    return words


def quoted(words: list[str], *, joiner: str = "OR") -> str | None:
    """An FTS5 MATCH expression of ``words`` (from ``terms``) joined by OR or AND."""
    # Inside double quotes FTS5 takes everything literally; \w+ never contains a quote.
    return f" {joiner} ".join(f'"{w}"' for w in words) or None


def split_common(
    words: list[str], rows_with: Callable[[str], int], *, common: int
) -> tuple[list[str], list[str]]:
    """``words`` as (rare, common), each rarest first; ``rows_with`` counts up to ``common``.

    The rare ones are the rarest whose rows add up to less than ``common``: what a query
    finds and ranks through them stays bounded however many terms it has.  Words in as many
    rows as each other are rare or common together, and ties are ordered by the word: the
    query's word order never changes what it finds ("postgres mysql", 2,667 rows each,
    found only the first word's rows).  Such a group may take the rows up to
    ``TIED_ROWS_FACTOR`` times ``common``; a group that would go further is common.
    """
    counts = {w: rows_with(w) for w in words}
    ordered = sorted(words, key=lambda w: (counts[w], w))
    total = rare = 0
    for count, group in itertools.groupby(ordered, key=counts.__getitem__):
        tied = len(list(group))
        if total + count >= common or total + count * tied > common * TIED_ROWS_FACTOR:
            break
        total += count * tied
        rare += tied
    return ordered[:rare], ordered[rare:]


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
