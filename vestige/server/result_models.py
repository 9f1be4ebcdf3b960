"""The shape of every tool result, as pydantic models the SDK publishes as ``outputSchema``.

An agent learns from the tool list alone what each call returns (``id``, ``decision``,
``superseded_id``, ``results[].combined_score``), and a client can validate the structured
content it gets against it: every model forbids keys it does not declare.  One name per
concept: a memory's id is ``id`` in every result; ``memory_id`` is only the field of a
changelog entry (whose own id is ``seq``) that names the memory it changed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Result(BaseModel):
    """Base of every result model: no undeclared keys, in the schema and at validation."""

    model_config = ConfigDict(extra="forbid")


class MemoryRecord(Result):
    """One whole memory, every stored field."""

    id: str = Field(description="The memory's id: pass it to memory, edit_memory, ...")
    content: str
    node_type: str
    created_at: str = Field(description="ISO 8601, UTC.")
    updated_at: str
    last_accessed: str
    stability: float = Field(description="Days until recall probability falls to 0.9 (FSRS).")
    difficulty: float
    reps: int
    lapses: int
    learning_state: str
    storage_strength: float = Field(description="How well it is stored, 1 to 10.")
    retrieval_strength: float = Field(description="How easily it comes back now, 0 to 1.")
    retention_strength: float = Field(description="How likely it is to be recalled, 0 to 1.")
    sentiment_score: float
    sentiment_magnitude: float
    next_review: str | None
    scheduled_days: int
    source: str | None
    tags: list[str]
    has_embedding: bool
    embedding_model: str | None
    valid_from: str | None
    valid_until: str | None
    scope: str
    superseded_by: str | None = Field(
        description="The id of the memory that corrected this one (it is outdated), or null."
    )
    content_hash: str
    adjustment: float = Field(description="Log-odds that promotes and demotes added.")


class IngestResult(Result):
    id: str
    memory: MemoryRecord


class SmartIngestResult(Result):
    id: str = Field(description="The memory created, reinforced, updated, or the correction.")
    decision: Literal["create", "reinforce", "update", "supersede"]
    memory: MemoryRecord
    similarity: float = Field(description="Similarity to the closest existing memory, 0 to 1.")
    reason: str
    superseded_id: str | None = Field(
        description="supersede only: the memory this one corrects (now demoted); else null."
    )


class BriefHit(Result):
    id: str
    node_type: str
    tags: list[str]
    retention_strength: float
    combined_score: float = Field(description="Relevance blended with strength: the rank.")
    superseded_by: str | None = Field(
        description="Set when a correction superseded this memory: it is outdated."
    )


class SummaryHit(BriefHit):
    content: str = Field(description="The text, cut to its first characters if long.")
    content_truncated: bool = Field(
        description="The text was cut: memory (action get) or detail_level full has all of it."
    )
    keyword_score: float = Field(description="Keyword relevance, the best hit scaled to 1.")


class FullHit(MemoryRecord):
    keyword_score: float
    combined_score: float


class SearchResult(Result):
    query: str
    detail_level: Literal["brief", "summary", "full"]
    total: int = Field(description="How many results are returned.")
    results: list[BriefHit | SummaryHit | FullHit] = Field(
        description="Best first; the shape follows detail_level."
    )
    truncated: bool = Field(description="Results were left out to keep the response bounded.")
    hint: str | None = Field(description="What to do when truncated, else null.")


class Strengths(Result):
    retrieval: float
    retention: float
    stability: float
    adjustment: float


class AccessComponents(Result):
    retention_strength: float
    retrieval_strength: float
    storage_strength: float


class AccessThresholds(Result):
    active: float
    dormant: float
    silent: float


class MemoryAnswer(Result):
    action: Literal["get", "state"]
    id: str
    memory: MemoryRecord | None = Field(description="get: the whole memory; state: null.")
    state: Literal["active", "dormant", "silent", "unavailable"] | None = Field(
        description="state: how accessible the memory is; get: null."
    )
    accessibility: float | None = Field(
        description="state: 0.5*retention + 0.3*retrieval + 0.2*storage/10; get: null."
    )
    components: AccessComponents | None
    thresholds: AccessThresholds | None


class DeleteResult(Result):
    id: str
    deleted: Literal[True]
    change_seq: int = Field(description="Its changelog entry: memory_undo puts it back.")


class StrengthResult(Result):
    action: Literal["promote", "demote"]
    id: str
    reason: str | None
    before: Strengths
    after: Strengths


class EditResult(Result):
    id: str
    memory: MemoryRecord
    change_seq: int = Field(description="Its changelog entry, which keeps the previous value.")


class Gap(Result):
    trimmed_through: int
    message: str


class ChangeEntry(Result):
    seq: int
    at: str
    kind: str
    memory_id: str | None = Field(description="The memory this change is about.")
    other_id: str | None
    undoes: int | None
    client: str | None
    process: str
    transport: str
    detail: dict[str, Any] | None
    origin: str | None
    before: dict[str, Any] | None = Field(
        default=None, description="With include_before: the whole rows it replaced or removed."
    )


class ChangelogPage(Result):
    changes: list[ChangeEntry]
    newest_seq: int = Field(description="Pass as since_seq next time to get only what is new.")
    gap: Gap | None
    more: bool = Field(description="Other entries matched: page on with before_seq.")
    truncated: bool = Field(description="Entries were left out to keep the response bounded.")
    hint: str | None


class UndoResult(Result):
    undone_seq: int
    change: ChangeEntry = Field(description="The undone entry recorded for this undo.")


class TimelineBrief(Result):
    id: str
    node_type: str
    tags: list[str]
    created_at: str


class TimelineSummary(TimelineBrief):
    content: str = Field(description="The text, cut to its first characters if long.")
    content_truncated: bool


class TimelineDay(Result):
    date: str = Field(description="YYYY-MM-DD (UTC).")
    count: int
    memories: list[TimelineBrief | TimelineSummary | MemoryRecord]


class TimelineResult(Result):
    total: int
    days: list[TimelineDay] = Field(description="Newest first.")
    truncated: bool = Field(description="Memories were left out to keep the response bounded.")
    hint: str | None


class ConsolidateResult(Result):
    ran: bool = Field(description="False when another process is running the pass.")
    nodes_processed: int
    decay_applied: int
    duration_ms: int
    reason: str


class StateCounts(Result):
    active: int
    dormant: int
    silent: int
    unavailable: int


class StatsResult(Result):
    total_memories: int
    due_for_review: int
    average_retention: float
    average_storage_strength: float
    average_retrieval_strength: float
    oldest_memory: str | None
    newest_memory: str | None
    node_types: dict[str, int]
    retention_bands: dict[str, int] = Field(description="high >= 0.7, medium >= 0.4, low.")
    database_bytes: int
    wal_bytes: int
    schema_version: int
    state_distribution: StateCounts
    state_sample: int = Field(description="How many memories state_distribution counted.")


class ServerInfo(Result):
    pid: int
    version: str
    data_dir: str
    lock_mode: str
    transport: str
    endpoint: str | None
    maintenance_owner: bool
    uptime_s: float


class HealthResult(Result):
    status: Literal["empty", "healthy", "degraded", "critical", "damaged"]
    total_memories: int
    average_retention: float
    due_for_review: int
    sqlite_version: str
    journal_mode: str
    quick_check: str
    wal_bytes: int
    schema_version: int
    warnings: list[str]
    server: ServerInfo
