"""The decay pass: recompute every memory's retrieval and retention from the FSRS-6 curve.

Run by one process at a time (a claimed lease, see ``vestige.claims``), in batches of
``DECAY_BATCH_ROWS``: each batch is read in a snapshot, computed in Python outside any
transaction, then written in one short transaction that first renews the lease.  A row
touched by someone else in between (its ``last_accessed`` or ``updated_at`` changed: a
promote, demote, supersede or update) is left for the next pass instead of being
overwritten with a stale value.  Decay itself never sets ``updated_at``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Final

from vestige import claims, config, fsrs
from vestige.errors import StoreError
from vestige.models import ConsolidationReport

if TYPE_CHECKING:
    import apsw

    from vestige._database import Database

TASK: Final = "consolidate"


def consolidate(db: Database, *, batch_rows: int = config.DECAY_BATCH_ROWS) -> ConsolidationReport:
    started = time.monotonic()
    claim = claims.claim(db, TASK)
    if isinstance(claim, claims.ClaimHeld):
        return ConsolidationReport(
            ran=False,
            reason=f"another process ({claim.holder}) is running it; "
            f"its lease ends within {claim.expires_in_s:.0f} s",
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
            after_seq = rows[-1][0]
            processed += len(rows)
            updates = _decayed(rows, w20, datetime.now(UTC))
            applied += db.write(partial(_apply, claim=claim, updates=updates))
        duration_ms = int((time.monotonic() - started) * 1000)
        db.write(
            lambda conn: conn.execute(
                "INSERT INTO consolidation_history(completed_at, duration_ms, "
                "memories_replayed, holder) VALUES (?, ?, ?, ?)",
                (datetime.now(UTC).isoformat(), duration_ms, applied, claim.holder),
            )
        )
    finally:
        claims.release(db, claim)
    return ConsolidationReport(
        ran=True, nodes_processed=processed, decay_applied=applied, duration_ms=duration_ms
    )


class LeaseLost(StoreError):
    """Raised when our claim expired mid-run and another process took the run over."""

    default_hint = "The other process finishes the pass; nothing needs doing."


def _w20(conn: apsw.Connection) -> float:
    rows = conn.execute("SELECT value FROM fsrs_config WHERE key = 'w20'").fetchall()
    return float(rows[0][0]) if rows else fsrs.W20_DEFAULT


def _decayed(
    rows: list[tuple[object, ...]], w20: float, now: datetime
) -> list[tuple[float, float, float, str, str, str]]:
    out = []
    for _seq, mid, last_accessed, updated_at, stability, sentiment, storage in rows:
        elapsed = (now - datetime.fromisoformat(str(last_accessed))).total_seconds()
        if elapsed <= 0:
            continue
        s_eff = fsrs.effective_stability(float(stability), float(sentiment))  # type: ignore[arg-type]
        retrieval = fsrs.retrievability(s_eff, elapsed / fsrs.SECONDS_PER_DAY, w20)
        retention = fsrs.retention(retrieval, float(storage))  # type: ignore[arg-type]
        capped = min(float(stability), fsrs.MAX_STABILITY_DAYS)  # type: ignore[arg-type]
        out.append((retrieval, retention, capped, str(mid), str(last_accessed), str(updated_at)))
    return out


def _apply(
    conn: apsw.Connection,
    *,
    claim: claims.Claim,
    updates: list[tuple[float, float, float, str, str, str]],
) -> int:
    if not claims.renew(conn, claim):
        raise LeaseLost(f"lost the {claim.task} lease to another process")
    changed = 0
    for retrieval, retention, stability, mid, last_accessed, updated_at in updates:
        conn.execute(
            "UPDATE knowledge_nodes SET retrieval_strength = ?, retention_strength = ?, "
            "stability = ? WHERE id = ? AND last_accessed = ? AND updated_at = ?",
            (retrieval, retention, stability, mid, last_accessed, updated_at),
        )
        changed += conn.changes()
    return changed
