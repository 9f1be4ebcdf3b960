"""Leases on maintenance tasks, so one process at a time runs each (decay, upkeep, ...).

Strictly private: callers go through ``Store.claim_lease``, ``renew_lease`` and
``release_lease``.  A lease is a row in ``maintenance_claims`` taken inside a write
transaction, so two processes can never both see the task free.  The holder renews the lease
as it works; a holder that dies simply stops renewing and the task is free again after the
lease.  Times are wall-clock seconds (``time.time()``) because they are compared across
processes.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from vestige._rows import as_float, as_str
from vestige.models import Lease, LeaseHeld

if TYPE_CHECKING:
    import apsw

    from vestige._database import Database


def new_holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def claim(db: Database, task: str, *, lease_s: float) -> Lease | LeaseHeld:
    holder = new_holder_id()

    def tx(conn: apsw.Connection) -> Lease | LeaseHeld:
        now = time.time()
        rows = conn.execute(
            "SELECT holder, expires_at FROM maintenance_claims WHERE task = ?", (task,)
        ).fetchall()
        if rows:
            expires_at = as_float(rows[0][1], "maintenance_claims.expires_at")
            if expires_at > now:
                return LeaseHeld(
                    task, as_str(rows[0][0], "maintenance_claims.holder"), expires_at - now
                )
        conn.execute(
            "INSERT INTO maintenance_claims(task, holder, claimed_at, expires_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT(task) DO UPDATE SET holder = excluded.holder, "
            "claimed_at = excluded.claimed_at, expires_at = excluded.expires_at",
            (task, holder, datetime.now(UTC).isoformat(), now + lease_s),
        )
        return Lease(task, holder, lease_s)

    return db.write(tx)


def renew_in(conn: apsw.Connection, lease: Lease) -> bool:
    """Extend the lease inside the caller's write transaction; False if it was lost."""
    conn.execute(
        "UPDATE maintenance_claims SET expires_at = ? WHERE task = ? AND holder = ?",
        (time.time() + lease.lease_s, lease.task, lease.holder),
    )
    return conn.changes() == 1


def release(db: Database, lease: Lease) -> None:
    db.write(
        lambda conn: conn.execute(
            "DELETE FROM maintenance_claims WHERE task = ? AND holder = ?",
            (lease.task, lease.holder),
        )
    )
