"""What the tools return: the store's values shaped into result models, and kept bounded.

A response is built for an agent's context window, not as an export: with memories of up
to a megabyte each, an unbounded list came to hundreds of megabytes (a 396 MB timeline).
So ``summary`` detail cuts each text to ``SUMMARY_CONTENT_CHARS``, and every list is cut,
at whole items, where its JSON would pass ``RESPONSE_BUDGET_BYTES``; the result then says
``truncated`` and how to ask for less.  One memory is never cut: a list keeps at least its
first item, and a tool that returns a single memory returns it whole.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

import pydantic_core

from vestige import fsrs
from vestige.server import result_models as rm

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from vestige.changelog import Change, ChangePage
    from vestige.models import Memory, SearchHit, TimelineDay
    from vestige.server.app import ServerApp

Detail = Literal["brief", "summary", "full"]
T = TypeVar("T")

STATE_SAMPLE: Final = 500  # memories counted for stats' state distribution (as the original)
#: Characters (Unicode code points) of a memory's text that ``summary`` detail shows.
SUMMARY_CONTENT_CHARS: Final = 500
#: Bytes of JSON that the items of one list result may take, the structured content counted
#: once (the SDK repeats it as a text block).  1 MiB is about 250k tokens: more than any
#: agent can use from one call.
RESPONSE_BUDGET_BYTES: Final = 1_048_576
#: Bytes kept back from the budget for the fields around the list.
ENVELOPE_BYTES: Final = 4_096


def content_read(detail: Detail) -> int | None:
    """Characters of each text to read from the store for ``detail`` (None: all of it).

    One more than a summary shows, so that ``content_truncated`` can still be told.
    """
    return {"brief": 0, "summary": SUMMARY_CONTENT_CHARS + 1, "full": None}[detail]


def fit(items: Iterable[T], budget: int = RESPONSE_BUDGET_BYTES) -> tuple[list[T], bool]:
    """The leading items whose JSON fits in ``budget`` (at least one), and whether any were cut.

    ``items`` is consumed lazily: nothing past the cut is built.
    """
    kept: list[T] = []
    used = ENVELOPE_BYTES
    for item in items:
        used += len(pydantic_core.to_json(item)) + 1  # and a comma
        if kept and used > budget:
            return kept, True
        kept.append(item)
    return kept, False


def cut_hint(what: str, detail: Detail) -> str:
    lighter = "detail_level brief or summary" if detail == "full" else "detail_level brief"
    return (
        f"the {what} were cut at {RESPONSE_BUDGET_BYTES:,} bytes of JSON: ask for fewer "
        f"(a smaller limit or a narrower query) or use {lighter}"
    )


def record(m: Memory) -> rm.MemoryRecord:
    return rm.MemoryRecord.model_validate(m.to_dict())


def _summary(content: str) -> tuple[str, bool]:
    return content[:SUMMARY_CONTENT_CHARS], len(content) > SUMMARY_CONTENT_CHARS


def hit(found: SearchHit, detail: Detail) -> rm.BriefHit | rm.SummaryHit | rm.FullHit:
    m = found.memory
    keyword, combined = round(found.keyword_score, 4), round(found.combined_score, 4)
    if detail == "full":
        return rm.FullHit(**m.to_dict(), keyword_score=keyword, combined_score=combined)
    brief: dict[str, Any] = {
        "id": m.id,
        "node_type": m.node_type,
        "tags": list(m.tags),
        "retention_strength": round(m.retention_strength, 4),
        "combined_score": combined,
        # At every level: an outdated fact must never read as current (issue 9).
        "superseded_by": m.superseded_by,
    }
    if detail == "brief":
        return rm.BriefHit(**brief)
    text, cut = _summary(m.content)
    return rm.SummaryHit(**brief, content=text, content_truncated=cut, keyword_score=keyword)


def search(query: str, hits: Sequence[SearchHit], detail: Detail) -> rm.SearchResult:
    shown, cut = fit(hit(h, detail) for h in hits)
    return rm.SearchResult(
        query=query,
        detail_level=detail,
        total=len(shown),
        results=shown,
        truncated=cut,
        hint=cut_hint("results", detail) if cut else None,
    )


def timeline_item(
    m: Memory, detail: Detail
) -> rm.TimelineBrief | rm.TimelineSummary | rm.MemoryRecord:
    if detail == "full":
        return record(m)
    if detail == "brief":
        return rm.TimelineBrief(
            id=m.id, node_type=m.node_type, tags=list(m.tags), created_at=m.created_at
        )
    text, cut = _summary(m.content)
    return rm.TimelineSummary(
        id=m.id,
        node_type=m.node_type,
        tags=list(m.tags),
        created_at=m.created_at,
        content=text,
        content_truncated=cut,
    )


def timeline(days: Sequence[TimelineDay], detail: Detail) -> rm.TimelineResult:
    shown, cut = fit((d.date, timeline_item(m, detail)) for d in days for m in d.memories)
    grouped = [
        rm.TimelineDay(date=date, count=len(items), memories=[item for _, item in items])
        for date, group in itertools.groupby(shown, key=lambda pair: pair[0])
        for items in [list(group)]
    ]
    return rm.TimelineResult(
        total=len(shown),
        days=grouped,
        truncated=cut,
        hint=cut_hint("memories", detail) if cut else None,
    )


def change(c: Change, *, with_before: bool) -> rm.ChangeEntry:
    return rm.ChangeEntry.model_validate(c.to_dict(with_before=with_before))


def changelog(page: ChangePage, *, with_before: bool) -> rm.ChangelogPage:
    shown, cut = fit(change(c, with_before=with_before) for c in page.changes)
    return rm.ChangelogPage(
        changes=shown,
        newest_seq=page.newest_seq,
        gap=rm.Gap.model_validate(page.gap.to_dict()) if page.gap else None,
        more=page.more or cut,
        truncated=cut,
        hint=(
            f"the changes were cut at {RESPONSE_BUDGET_BYTES:,} bytes of JSON: page on with "
            "before_seq (the last seq shown), ask for a smaller limit, or leave out "
            "include_before"
        )
        if cut
        else None,
    )


def state(m: Memory) -> rm.MemoryAnswer:
    score = fsrs.accessibility(m.retention_strength, m.retrieval_strength, m.storage_strength)
    return rm.MemoryAnswer.model_validate(
        {
            "action": "state",
            "id": m.id,
            "memory": None,
            "state": fsrs.memory_state(score),
            "accessibility": round(score, 4),
            "components": {
                "retention_strength": m.retention_strength,
                "retrieval_strength": m.retrieval_strength,
                "storage_strength": m.storage_strength,
            },
            "thresholds": {
                "active": fsrs.ACCESSIBILITY_ACTIVE,
                "dormant": fsrs.ACCESSIBILITY_DORMANT,
                "silent": fsrs.ACCESSIBILITY_SILENT,
            },
        }
    )


def fresh_wal(app: ServerApp, key: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A cached answer, with the WAL size read now: a checkpoint moves it without a commit."""
    return {**app.cache.get(key, compute), "wal_bytes": app.store.wal_bytes()}


def stats(app: ServerApp) -> dict[str, Any]:
    counts = app.store.memory_states(STATE_SAMPLE)
    return {
        **app.store.stats().to_dict(),
        "state_distribution": counts,
        "state_sample": sum(counts.values()),
    }
