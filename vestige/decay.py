"""The decay pass: recompute every memory's retrieval and retention from the FSRS-6 curve.

The original Vestige called this pass "consolidation", and the ``consolidate`` MCP tool and
CLI command keep that name; here it is named after what it does.  Run by one process at a
time (a lease, see ``Store.claim_lease``), in batches of ``DECAY_BATCH_ROWS``: each batch is
read in a snapshot, computed in Python outside any transaction, then written in one short
transaction that first renews the lease.  A row touched by someone else in between (its
``last_accessed`` or ``updated_at`` changed: a promote, demote, supersede or update) is left
for the next pass instead of being overwritten with a stale value.  Decay itself never sets
``updated_at``.  Each finished pass is recorded in ``decay_runs``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Final, NamedTuple

from vestige import _leases, config, fsrs
from vestige._rows import as_float, as_int, as_opt_str, as_str, scalar
from vestige.errors import StoreError
from vestige.models import DecayReport, Lease, LeaseHeld

if TYPE_CHECKING:
    import apsw

    from vestige._database import Database
    from vestige._rows import Row

TASK: Final = "decay"


def run(db: Database, *, batch_rows: int = config.DECAY_BATCH_ROWS) -> DecayReport:
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
            w20 = _w20(conn)
        after_seq = 0
        while True:
            with db.read() as conn:
                rows = conn.execute(
                    "SELECT seq, id, last_accessed, updated_at, stability, sentiment_magnitude, "
                    "storage_strength FROM knowledge_nodes WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after_seq, batch_rows),
                ).fetchall()
            if not rows:
                break
            after_seq = as_int(rows[-1][0], "seq")
            processed += len(rows)
            updates = _decayed(rows, w20, datetime.now(UTC))
            applied += db.write(partial(_apply, lease=lease, updates=updates))
        duration_ms = int((time.monotonic() - started) * 1000)
        db.write(
            lambda conn: conn.execute(
                "INSERT INTO decay_runs(completed_at, duration_ms, nodes_processed, "
                "decay_applied, holder) VALUES (?, ?, ?, ?, ?)",
                (datetime.now(UTC).isoformat(), duration_ms, processed, applied, lease.holder),
            )
        )
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


class _Update(NamedTuple):
    """New strengths for one row, and what the row must still hold for them to apply."""

    retrieval: float
    retention: float
    stability: float
    id: str
    last_accessed: str
    updated_at: str


def _w20(conn: apsw.Connection) -> float:
    rows = conn.execute("SELECT value FROM fsrs_config WHERE key = 'w20'").fetchall()
    return as_float(rows[0][0], "fsrs_config.w20") if rows else fsrs.W20_DEFAULT


def _decayed(rows: list[Row], w20: float, now: datetime) -> list[_Update]:
    out = []
    for _seq, mid, last_accessed, updated_at, stability, sentiment, storage in rows:
        accessed = as_str(last_accessed, "last_accessed")
        elapsed = (now - datetime.fromisoformat(accessed)).total_seconds()
        if elapsed <= 0:
            continue
        days = as_float(stability, "stability")
        s_eff = fsrs.effective_stability(days, as_float(sentiment, "sentiment_magnitude"))
        retrieval = fsrs.retrievability(s_eff, elapsed / fsrs.SECONDS_PER_DAY, w20)
        retention = fsrs.retention(retrieval, as_float(storage, "storage_strength"))
        out.append(
            _Update(
                retrieval,
                retention,
                min(days, fsrs.MAX_STABILITY_DAYS),
                as_str(mid, "id"),
                accessed,
                as_str(updated_at, "updated_at"),
            )
        )
    return out


def _apply(conn: apsw.Connection, *, lease: Lease, updates: list[_Update]) -> int:
    if not _leases.renew_in(conn, lease):
        raise LeaseLost(f"lost the {lease.task} lease to another process")
    changed = 0
    for update in updates:
        conn.execute(
            "UPDATE knowledge_nodes SET retrieval_strength = ?, retention_strength = ?, "
            "stability = ? WHERE id = ? AND last_accessed = ? AND updated_at = ?",
            update,
        )
        changed += conn.changes()
    return changed
