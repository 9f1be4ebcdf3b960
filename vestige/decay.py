"""The decay pass: refresh every memory's cached strengths from its state and the clock.

The original Vestige called this pass "consolidation", and the ``consolidate`` MCP tool and
CLI command keep that name; here it is named after what it does.  Each row's retrieval,
retention and next review are computed by ``fsrs.strengths`` from the row's persistent state
(stability, last access, storage, the promote/demote adjustment, sentiment), never from the
cached values a previous pass or write left.  So a pass at an unchanged clock changes nothing,
passes at later clocks only lower retention, and a promote or demote survives any number of
them (issue 9).

Run by one process at a time (a lease, see ``Store.claim_lease``), in batches of
``DECAY_BATCH_ROWS``: each batch is read in a snapshot, computed in Python outside any
transaction, then written in one short transaction that first renews the lease.  A row is
written only if its cached values change, and only if the state they were computed from is
still the row's: one promoted, demoted, reinforced or touched in between is left for the
next pass instead of being overwritten with a stale value.  Decay itself never sets
``updated_at``.  Each finished pass is recorded in ``decay_runs``.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Final, NamedTuple

from vestige import _leases, changelog, config, fsrs, migrations
from vestige._rows import as_float, as_int, as_opt_str, as_str, scalar
from vestige.errors import StoreError
from vestige.models import DecayReport, Lease, LeaseHeld, as_instant

if TYPE_CHECKING:
    import apsw

    from vestige._database import Database
    from vestige._rows import Row

TASK: Final = "decay"

log = logging.getLogger("vestige.decay")


def run(
    db: Database,
    *,
    actor: changelog.Actor | None = None,
    changelog_keep: int = config.CHANGELOG_KEEP_ROWS,
    batch_rows: int = config.DECAY_BATCH_ROWS,
    now: datetime | None = None,
) -> DecayReport:
    """One pass over every memory; ``now`` fixes the clock (default: each batch's own now).

    The pass also trims the changelog to its newest ``changelog_keep`` entries,
    in short batches, and records itself there (one entry per pass).
    """
    started = time.monotonic()
    lease = _leases.claim(db, TASK, lease_s=config.MAINTENANCE_LEASE_S)
    if isinstance(lease, LeaseHeld):
        return DecayReport(
            ran=False,
            reason=f"another process ({lease.holder}) is running it; "
            f"its lease ends within {lease.expires_in_s:.0f} s",
        )
    processed = applied = 0
    try:
        with db.read() as conn:
            w20 = read_w20(conn)
        after_seq = 0
        while True:
            with db.read() as conn:
                rows = conn.execute(
                    f"SELECT seq, {_STATE}, retrieval_strength, retention_strength, next_review "
                    "FROM knowledge_nodes WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after_seq, batch_rows),
                ).fetchall()
            if not rows:
                break
            after_seq = as_int(rows[-1][0], "seq")
            processed += len(rows)
            updates = _decayed(rows, w20, now or datetime.now(UTC))
            applied += db.write(partial(_apply, lease=lease, updates=updates))
        trimmed = 0
        while batch := db.write(partial(_trim, lease=lease, keep=changelog_keep)):
            trimmed += batch
        duration_ms = int((time.monotonic() - started) * 1000)

        def finish(conn: apsw.Connection) -> None:
            migrations.recount_kept_stats(conn)  # the pass read every row: no drift outlives it
            conn.execute(
                "INSERT INTO decay_runs(completed_at, duration_ms, nodes_processed, "
                "decay_applied, holder) VALUES (?, ?, ?, ?, ?)",
                (datetime.now(UTC).isoformat(), duration_ms, processed, applied, lease.holder),
            )
            changelog.record(
                conn,
                actor or changelog.Actor.this_process("library"),
                changelog.ChangeKind.DECAYED,
                detail={
                    "nodes_processed": processed,
                    "decay_applied": applied,
                    "changelog_trimmed": trimmed,
                    "duration_ms": duration_ms,
                },
            )

        db.write(finish)
    finally:
        _leases.release(db, lease)
    return DecayReport(
        ran=True, nodes_processed=processed, decay_applied=applied, duration_ms=duration_ms
    )


def last_run_at(db: Database) -> datetime | None:
    """When the newest recorded pass (of any process) finished, or None if none has."""
    with db.read() as conn:
        stamp = as_opt_str(
            scalar(conn, "SELECT MAX(completed_at) FROM decay_runs"), "decay_runs.completed_at"
        )
    return datetime.fromisoformat(stamp) if stamp else None


class LeaseLost(StoreError):
    """Raised when our lease expired mid-run and another process took the run over."""

    default_hint = "The other process finishes the pass; nothing needs doing."


#: The columns a row's strengths are computed from; a write applies only if they are unchanged.
_STATE: Final = "id, last_accessed, stability, storage_strength, adjustment, sentiment_magnitude"


class _Update(NamedTuple):
    """New cached strengths for one row, and the state they were computed from."""

    retrieval: float
    retention: float
    next_review: str | None
    stability: float  # clamped to fsrs.MAX_STABILITY_DAYS
    id: str
    last_accessed: str
    old_stability: float
    storage: float
    adjustment: float
    sentiment: float


def read_w20(conn: apsw.Connection) -> float:
    """The database's FSRS-6 decay exponent (``fsrs_config``), or the default."""
    rows = conn.execute("SELECT value FROM fsrs_config WHERE key = 'w20'").fetchall()
    return as_float(rows[0][0], "fsrs_config.w20") if rows else fsrs.W20_DEFAULT


def _decayed(rows: list[Row], w20: float, now: datetime) -> list[_Update]:
    out = []
    for row in rows:
        try:
            update = _update(row, w20, now)
        except StoreError as err:  # one row edited by hand must not stop the pass for all
            log.warning("decay left memory %r alone: %s", row[1], err.message)
            continue
        if update is not None:
            out.append(update)
    return out


def _update(row: Row, w20: float, now: datetime) -> _Update | None:
    """The row's strengths at ``now``, or None if its cached values already are."""
    _seq, mid, accessed, stability, storage, adjustment, sentiment = row[:7]
    state = fsrs.MemoryState(
        stability=as_float(stability, "stability"),
        storage=as_float(storage, "storage_strength"),
        adjustment=as_float(adjustment, "adjustment"),
        sentiment_magnitude=as_float(sentiment, "sentiment_magnitude"),
        last_accessed=as_instant(accessed, "last_accessed"),
    )
    new = fsrs.strengths(state, now, w20)
    review = new.next_review.isoformat() if new.next_review else None
    clamped = min(state.stability, fsrs.MAX_STABILITY_DAYS)
    cached = (
        as_float(row[7], "retrieval_strength"),
        as_float(row[8], "retention_strength"),
        as_opt_str(row[9], "next_review"),
    )
    if cached == (new.retrieval, new.retention, review) and clamped == state.stability:
        return None
    return _Update(
        new.retrieval,
        new.retention,
        review,
        clamped,
        as_str(mid, "id"),
        as_str(accessed, "last_accessed"),
        state.stability,
        state.storage,
        state.adjustment,
        state.sentiment_magnitude,
    )


def _trim(conn: apsw.Connection, *, lease: Lease, keep: int) -> int:
    if not _leases.renew_in(conn, lease):
        raise LeaseLost(f"lost the {lease.task} lease to another process")
    return changelog.trim(conn, keep_rows=keep, batch_rows=config.CHANGELOG_TRIM_BATCH_ROWS)


def _apply(conn: apsw.Connection, *, lease: Lease, updates: list[_Update]) -> int:
    if not _leases.renew_in(conn, lease):
        raise LeaseLost(f"lost the {lease.task} lease to another process")
    changed = 0
    for update in updates:
        conn.execute(
            "UPDATE knowledge_nodes SET retrieval_strength = ?, retention_strength = ?, "
            "next_review = ?, stability = ? WHERE id = ? AND last_accessed = ? "
            "AND stability = ? AND storage_strength = ? AND adjustment = ? "
            "AND sentiment_magnitude = ?",
            update,
        )
        changed += conn.changes()
    return changed
