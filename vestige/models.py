"""The values the store hands out: plain frozen dataclasses, JSON-ready through ``to_dict``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from vestige import fsrs
from vestige._rows import as_float, as_int, as_opt_str, as_str, unexpected

if TYPE_CHECKING:
    from vestige._rows import Row, Value


@dataclass(frozen=True, slots=True)
class Memory:
    """One row of ``knowledge_nodes`` (its columns, in order, minus the internal ``seq``)."""

    id: str
    content: str
    node_type: str
    created_at: str
    updated_at: str
    last_accessed: str
    stability: float
    difficulty: float
    reps: int
    lapses: int
    learning_state: str
    storage_strength: float
    retrieval_strength: float
    retention_strength: float
    sentiment_score: float
    sentiment_magnitude: float
    next_review: str | None
    scheduled_days: int
    source: str | None
    tags: tuple[str, ...]
    has_embedding: bool
    embedding_model: str | None
    valid_from: str | None
    valid_until: str | None
    scope: str
    superseded_by: str | None
    content_hash: str
    #: Log-odds that promotes and demotes added to retention (see ``vestige.fsrs``).
    adjustment: float

    @classmethod
    def from_row(cls, row: Row) -> Memory:
        """A row of ``SELECT {SELECT_MEMORY}``, every column checked (see ``vestige._rows``)."""
        col = dict(zip(MEMORY_COLUMNS, row, strict=True))

        def text(name: str) -> str:
            return as_str(col[name], name)

        def opt_text(name: str) -> str | None:
            return as_opt_str(col[name], name)

        def number(name: str) -> float:
            return as_float(col[name], name)

        def integer(name: str) -> int:
            return as_int(col[name], name)

        return cls(
            id=text("id"),
            content=text("content"),
            node_type=text("node_type"),
            created_at=text("created_at"),
            updated_at=text("updated_at"),
            last_accessed=text("last_accessed"),
            stability=number("stability"),
            difficulty=number("difficulty"),
            reps=integer("reps"),
            lapses=integer("lapses"),
            learning_state=text("learning_state"),
            storage_strength=number("storage_strength"),
            retrieval_strength=number("retrieval_strength"),
            retention_strength=number("retention_strength"),
            sentiment_score=number("sentiment_score"),
            sentiment_magnitude=number("sentiment_magnitude"),
            next_review=opt_text("next_review"),
            scheduled_days=integer("scheduled_days"),
            source=opt_text("source"),
            tags=_tags(col["tags"]),
            has_embedding=bool(integer("has_embedding")),
            embedding_model=opt_text("embedding_model"),
            valid_from=opt_text("valid_from"),
            valid_until=opt_text("valid_until"),
            scope=text("scope"),
            superseded_by=opt_text("superseded_by"),
            content_hash=text("content_hash"),
            adjustment=number("adjustment"),
        )

    def fsrs_state(self) -> fsrs.MemoryState:
        """The persistent state its strengths are computed from."""
        return fsrs.MemoryState(
            stability=self.stability,
            storage=self.storage_strength,
            adjustment=self.adjustment,
            sentiment_magnitude=self.sentiment_magnitude,
            last_accessed=as_instant(self.last_accessed, "last_accessed"),
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tags"] = list(self.tags)
        return data


def as_instant(value: Value, column: str) -> datetime:
    """A time column as an aware datetime (a time without zone, as SQLite writes, is UTC)."""
    try:
        instant = datetime.fromisoformat(as_str(value, column))
    except ValueError:
        raise unexpected(value, column, "an ISO 8601 time") from None
    return instant if instant.tzinfo else instant.replace(tzinfo=UTC)


MEMORY_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Memory))
TAGS_INDEX = MEMORY_COLUMNS.index("tags")
HAS_EMBEDDING_INDEX = MEMORY_COLUMNS.index("has_embedding")
#: ``SELECT {SELECT_MEMORY} FROM knowledge_nodes`` yields rows for Memory.from_row.
SELECT_MEMORY = ", ".join(MEMORY_COLUMNS)


def _tags(value: Value) -> tuple[str, ...]:
    """The ``tags`` column: a JSON array of text (NULL or empty text read as no tags)."""
    raw = as_opt_str(value, "tags")
    try:
        tags: object = json.loads(raw or "[]")
    except ValueError:
        tags = None
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise unexpected(value, "tags", "a JSON array of text")
    return tuple(tags)


class Decision(StrEnum):
    """What smart_ingest did with new content."""

    CREATE = "create"
    REINFORCE = "reinforce"  # the same thing was said again: the existing memory is strengthened
    UPDATE = "update"  # close enough: the new text is appended to the existing memory
    SUPERSEDE = "supersede"  # it corrects a memory: new memory, the old one demoted and linked


@dataclass(frozen=True, slots=True)
class IngestResult:
    decision: Decision
    memory: Memory
    similarity: float
    reason: str
    superseded_id: str | None = None
    #: The existing memory as it was before this reinforce, update or supersede changed it
    #: (for the changelog; not part of the result a client sees).
    before: Memory | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision.value,
            "memory": self.memory.to_dict(),
            "similarity": round(self.similarity, 4),
            "reason": self.reason,
            "superseded_id": self.superseded_id,
        }


@dataclass(frozen=True, slots=True)
class SearchHit:
    memory: Memory
    keyword_score: float  # BM25, scaled so the best hit of this query is 1.0
    combined_score: float  # keyword and retention blended (see vestige.search)

    def to_dict(self) -> dict[str, Any]:
        return {
            "memory": self.memory.to_dict(),
            "keyword_score": round(self.keyword_score, 4),
            "combined_score": round(self.combined_score, 4),
        }


@dataclass(frozen=True, slots=True)
class StrengthChange:
    """Before and after of a promote or demote."""

    memory_id: str
    before: dict[str, float]
    after: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class TimelineDay:
    date: str  # YYYY-MM-DD (UTC)
    memories: tuple[Memory, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"date": self.date, "memories": [m.to_dict() for m in self.memories]}


@dataclass(frozen=True, slots=True)
class Lease:
    """A maintenance task this process runs, alone, until ``lease_s`` after its last renewal."""

    task: str
    holder: str  # host:pid:random, unique per claim
    lease_s: float


@dataclass(frozen=True, slots=True)
class LeaseHeld:
    """Who holds a task we could not claim, and for how much longer at most."""

    task: str
    holder: str
    expires_in_s: float


@dataclass(frozen=True, slots=True)
class DecayReport:
    """What a decay pass did (``Store.decay``; the ``consolidate`` tool and command)."""

    ran: bool  # False when another process holds the run
    nodes_processed: int = 0  # memories read
    decay_applied: int = 0  # memories whose strengths were rewritten
    duration_ms: int = 0
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Stats:
    total_memories: int
    due_for_review: int  # recall probably below 0.9 (next_review passed); nothing to act on
    average_retention: float
    average_storage_strength: float
    average_retrieval_strength: float
    oldest_memory: str | None
    newest_memory: str | None
    node_types: dict[str, int]
    retention_bands: dict[str, int]  # high >= 0.7, medium >= 0.4, low < 0.4
    database_bytes: int
    wal_bytes: int
    schema_version: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Health:
    status: str  # empty | critical | degraded | healthy (by average retention), or "damaged"
    total_memories: int
    average_retention: float
    due_for_review: int
    sqlite_version: str
    journal_mode: str
    quick_check: str
    wal_bytes: int
    schema_version: int
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["warnings"] = list(self.warnings)
        return data


@dataclass(frozen=True, slots=True)
class Edited:
    """A memory after ``Store.edit``, and the changelog entry that keeps its previous value."""

    memory: Memory
    change_seq: int

    def to_dict(self) -> dict[str, Any]:
        return {"memory": self.memory.to_dict(), "change_seq": self.change_seq}


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """What ``Store.purge`` removed, and whether the WAL's old pages went too."""

    id: str
    was_live: bool  # False: it had been deleted; only its changelog tombstones were left
    brought_back: tuple[str, ...]  # memories it had superseded, visible again
    changelog_entries_redacted: int
    #: False: another process was reading, so the old pages may still be in vestige.db and
    #: its WAL until a later checkpoint (never delete the -wal by hand: that undoes the purge).
    checkpointed: bool

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["brought_back"] = list(self.brought_back)
        return data


@dataclass(frozen=True, slots=True)
class ImportReport:
    read: int
    imported: int
    skipped_existing: int
    changes_imported: int = 0  # changelog entries of the file kept as history

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
