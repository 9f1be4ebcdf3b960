"""Background upkeep, run by one server at a time: decay, planner statistics, checkpoints.

The upkeep owner is whichever process wins the "maintenance" lease (``Store.claim_lease``),
taken inside a write transaction (so two processes can never both win) and renewed every
third of its length.  A server that dies stops renewing, and another takes over once the
lease runs out; a server that stops cleanly releases it at once.

The owner runs ``PRAGMA optimize`` when it wins, a decay pass whenever the newest recorded
pass (``Store.last_decay_at``, any process) is older than the interval (the pass's own lease
still guards the pass itself), and a PASSIVE checkpoint every minute.  Everything goes
through ``ServerApp.run``: worker threads, never the event loop.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Final

import anyio

from vestige import config
from vestige.errors import VestigeError
from vestige.models import Lease

if TYPE_CHECKING:
    from vestige.server.app import ServerApp

log = logging.getLogger("vestige.server.upkeep")

TASK: Final = "maintenance"
START_DELAY_S: Final = 2.0  # as the original: let start-up and the first calls go first
RENEW_EVERY_S: Final = config.MAINTENANCE_LEASE_S / 3
CHECKPOINT_EVERY_S: Final = 60.0
_MIN_SLEEP_S: Final = 0.05


class Upkeep:
    def __init__(self, app: ServerApp) -> None:
        self.app = app
        self.lease: Lease | None = None
        self.interval_s = app.options.consolidation_interval_s

    @property
    def owner(self) -> bool:
        return self.lease is not None

    async def run(self) -> None:
        await anyio.sleep(START_DELAY_S)
        next_checkpoint = time.monotonic() + CHECKPOINT_EVERY_S
        while not self.app.closing:
            wait = RENEW_EVERY_S
            try:
                await self._claim_or_renew()
                if self.lease is not None:
                    wait = min(wait, await self._decay_if_due())
                    if time.monotonic() >= next_checkpoint:
                        await self.app.run(self.app.store.checkpoint)
                        next_checkpoint = time.monotonic() + CHECKPOINT_EVERY_S
                    wait = min(wait, next_checkpoint - time.monotonic())
            except VestigeError as err:
                if self.app.closing:
                    return
                log.warning("upkeep step failed, retrying in %.0f s: %s", wait, err)
            except Exception:  # a bug here must not take the server down with it
                log.exception("upkeep step crashed; retrying in %.0f s", wait)
            await anyio.sleep(max(_MIN_SLEEP_S, wait))

    async def _claim_or_renew(self) -> None:
        store = self.app.store
        if self.lease is None:
            won = await self.app.run(store.claim_lease, TASK)
            if isinstance(won, Lease):
                self.lease = won
                log.info("this server runs upkeep (lease %s)", won.holder)
                await self.app.run(store.optimize)
            return
        if not await self.app.run(store.renew_lease, self.lease):
            log.warning("lost the maintenance lease; another server runs upkeep now")
            self.lease = None

    async def _decay_if_due(self) -> float:
        """Run a decay pass if one is due; return seconds until the next one is."""
        last = await self.app.run(self.app.store.last_decay_at)
        if last is not None:
            due_in = self.interval_s - (time.time() - last.timestamp())
            if due_in > 0:
                return due_in
        report = await self.app.run(self.app.store.decay)
        self.app.wrote()
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
        held, self.lease = self.lease, None
        if held is not None:
            self.app.store.release_lease(held)
