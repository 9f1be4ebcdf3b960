"""What the tools return: plain dicts shaped from the store's values (structured content)."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Final

from vestige import fsrs

if TYPE_CHECKING:
    from collections.abc import Callable

    from vestige.models import Memory, SearchHit
    from vestige.server.app import ServerApp

STATE_SAMPLE: Final = 500  # memories counted for stats' state distribution (as the original)


def hit(found: SearchHit, detail: str) -> dict[str, Any]:
    m = found.memory
    scores = {
        "keyword_score": round(found.keyword_score, 4),
        "combined_score": round(found.combined_score, 4),
    }
    if detail == "full":
        return {**m.to_dict(), **scores}
    brief = {
        "id": m.id,
        "node_type": m.node_type,
        "tags": list(m.tags),
        "retention_strength": round(m.retention_strength, 4),
        "combined_score": scores["combined_score"],
        # At every level: an outdated fact must never read as current (issue 9).
        "superseded_by": m.superseded_by,
    }
    return brief if detail == "brief" else {**brief, "content": m.content, **scores}


def state(m: Memory) -> dict[str, Any]:
    score = fsrs.accessibility(m.retention_strength, m.retrieval_strength, m.storage_strength)
    return {
        "id": m.id,
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


def fresh_wal(app: ServerApp, key: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A cached answer, with the WAL size read now: a checkpoint moves it without a commit."""
    return {**app.cache.get(key, compute), "wal_bytes": app.store.wal_bytes()}


def timeline_item(m: Memory, detail: str) -> dict[str, Any]:
    if detail == "full":
        return m.to_dict()
    item = {"id": m.id, "node_type": m.node_type, "tags": list(m.tags), "created_at": m.created_at}
    return item if detail == "brief" else {**item, "content": m.content}


def stats(app: ServerApp) -> dict[str, Any]:
    counts = dict.fromkeys(("active", "dormant", "silent", "unavailable"), 0)
    for m in itertools.islice(app.store.iter_memories(), STATE_SAMPLE):
        score = fsrs.accessibility(m.retention_strength, m.retrieval_strength, m.storage_strength)
        counts[fsrs.memory_state(score)] += 1
    return {
        **app.store.stats().to_dict(),
        "state_distribution": counts,
        "state_sample": sum(counts.values()),
    }
