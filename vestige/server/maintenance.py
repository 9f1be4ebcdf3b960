"""Background upkeep, run by one server at a time: decay, planner statistics, checkpoints.

The maintenance owner is whichever process wins ``claims.claim(db, "maintenance")``, a
lease taken inside a write transaction (so two processes can never both win) and renewed
every third of its length.  A server that dies stops renewing, and another takes over
once the lease runs out; a server that stops cleanly releases it at once.

The owner runs ``PRAGMA optimize`` when it wins, a decay pass whenever the newest
``consolidation_history`` row is older than the interval (decay's own claim still guards
the pass itself), and a PASSIVE checkpoint every minute.  Everything goes through
``ServerApp.run``: worker threads, never the event loop.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import TYPE_CHECKING, Final

import anyio

from vestige import claims, config
from vestige.errors import VestigeError

if TYPE_CHECKING:
    from vestige.server.app import ServerApp
    from vestige.store import Store

log = logging.getLogger("vestige.server.maintenance")

TASK: Final = "maintenance"
START_DELAY_S: Final = 2.0  # as the original: let start-up and the first calls go first
RENEW_EVERY_S: Final = config.MAINTENANCE_LEASE_S / 3
CHECKPOINT_EVERY_S: Final = 60.0
_MIN_SLEEP_S: Final = 0.05


def last_consolidation(store: Store) -> float | None:
    """Wall-clock time of the newest completed decay pass (any process), or None."""
    with store._db.read() as conn:
        rows = conn.execute("SELECT MAX(completed_at) FROM consolidation_history").fetchall()
    stamp = rows[0][0] if rows else None
    return datetime.fromisoformat(str(stamp)).timestamp() if stamp else None


class Maintenance:
    def __init__(self, app: ServerApp) -> None:
        self.app = app
        self.claim: claims.Claim | None = None
        self.interval_s = app.options.consolidation_interval_s

    @property
    def owner(self) -> bool:
        return self.claim is not None

    async def run(self) -> None:
        await anyio.sleep(START_DELAY_S)
        next_checkpoint = time.monotonic() + CHECKPOINT_EVERY_S
        while not self.app.closing:
            wait = RENEW_EVERY_S
            try:
                await self._claim_or_renew()
                if self.claim is not None:
                    wait = min(wait, await self._decay_if_due())
                    if time.monotonic() >= next_checkpoint:
                        await self.app.run(self.app.store.checkpoint)
                        next_checkpoint = time.monotonic() + CHECKPOINT_EVERY_S
                    wait = min(wait, next_checkpoint - time.monotonic())
            except VestigeError as err:
                if self.app.closing:
                    return
                log.warning("maintenance step failed, retrying in %.0f s: %s", wait, err)
            except Exception:  # a bug here must not take the server down with it
                log.exception("maintenance step crashed; retrying in %.0f s", wait)
            await anyio.sleep(max(_MIN_SLEEP_S, wait))

    async def _claim_or_renew(self) -> None:
        db = self.app.store._db
        if self.claim is None:
            won = await self.app.run(claims.claim, db, TASK)
            if isinstance(won, claims.Claim):
                self.claim = won
                log.info("this server runs maintenance (lease %s)", won.holder)
                await self.app.run(self.app.store.optimize)
            return
        held = self.claim
        if not await self.app.run(db.write, lambda conn: claims.renew(conn, held)):
            log.warning("lost the maintenance lease; another server runs it now")
            self.claim = None

    async def _decay_if_due(self) -> float:
        """Run a decay pass if one is due; return seconds until the next one is."""
        last = await self.app.run(last_consolidation, self.app.store)
        due_in = self.interval_s if last is None else self.interval_s - (time.time() - last)
        if last is not None and due_in > 0:
            return due_in
        report = await self.app.run(self.app.store.consolidate)
        if report.ran:
            log.info(
                "decay pass: %d memories, %d changed, %d ms",
                report.nodes_processed,
                report.decay_applied,
                report.duration_ms,
            )
        else:
            log.info("decay pass skipped: %s", report.reason)
        return self.interval_s

    def release(self) -> None:
        """Hand the lease back (blocking; called once at shutdown, best effort)."""
        held, self.claim = self.claim, None
        if held is not None:
            claims.release(self.app.store._db, held)
