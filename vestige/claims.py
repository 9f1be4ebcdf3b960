"""Leases on maintenance tasks, so one process at a time runs each (decay, optimize, ...).

A claim is a row in ``maintenance_claims`` taken inside a write transaction, so two
processes can never both see the task free.  The holder renews the lease as it works; a
holder that dies simply stops renewing and the task is free again after the lease.
Times are wall-clock seconds (``time.time()``) because they are compared across processes.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from vestige import config

if TYPE_CHECKING:
    import apsw

    from vestige._database import Database


@dataclass(frozen=True, slots=True)
class Claim:
    task: str
    holder: str
    lease_s: float


@dataclass(frozen=True, slots=True)
class ClaimHeld:
    """Who holds a task we could not claim."""

    task: str
    holder: str
    expires_in_s: float


def new_holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def claim(
    db: Database, task: str, *, lease_s: float = config.MAINTENANCE_LEASE_S
) -> Claim | ClaimHeld:
    holder = new_holder_id()

    def tx(conn: apsw.Connection) -> Claim | ClaimHeld:
        now = time.time()
        row = conn.execute(
            "SELECT holder, expires_at FROM maintenance_claims WHERE task = ?", (task,)
        ).fetchall()
        if row and row[0][1] > now:
            return ClaimHeld(task, row[0][0], row[0][1] - now)
        conn.execute(
            "INSERT INTO maintenance_claims(task, holder, claimed_at, expires_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT(task) DO UPDATE SET holder = excluded.holder, "
            "claimed_at = excluded.claimed_at, expires_at = excluded.expires_at",
            (task, holder, datetime.now(UTC).isoformat(), now + lease_s),
        )
        return Claim(task, holder, lease_s)

    return db.write(tx)


def renew(conn: apsw.Connection, c: Claim) -> bool:
    """Extend the lease inside the caller's write transaction; False if it was lost."""
    conn.execute(
        "UPDATE maintenance_claims SET expires_at = ? WHERE task = ? AND holder = ?",
        (time.time() + c.lease_s, c.task, c.holder),
    )
    return conn.changes() == 1


def release(db: Database, c: Claim) -> None:
    db.write(
        lambda conn: conn.execute(
            "DELETE FROM maintenance_claims WHERE task = ? AND holder = ?", (c.task, c.holder)
        )
    )
