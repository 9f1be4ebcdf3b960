"""The refusal text: what a process that could not take the owner lock tells a person.

Strictly private; ``acquire_owner`` raises it.  It names the database, each live holder
(pid, mode, transport, how long, command line) and the ways out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vestige.config import DATABASE_FILE
from vestige.errors import OwnerLockHeld
from vestige.humanize import human_duration

if TYPE_CHECKING:
    from pathlib import Path

    from vestige.owner._metadata import OwnerInfo


def refusal(path: Path, *, lock_file: Path, shared: bool, owners: list[OwnerInfo]) -> OwnerLockHeld:
    """The error a refused process shows: who holds the directory, since when, what to do."""
    database = path / DATABASE_FILE
    if not owners:
        return OwnerLockHeld(
            f"the Vestige database {database} is in use by another process that has not "
            "published its details (it may still be starting)",
            hint=f"Run `vestige doctor --data-dir {path}` (or `lsof {lock_file}`) to find "
            "it, or pass another --data-dir.",
        )
    holders = "\n".join(_describe(o) for o in owners)
    pids = " ".join(str(o.pid) for o in owners)
    if shared:
        why = "it is owned exclusively (started without --shared-writers), so shared writers "
        why += "cannot join it"
    elif all(o.mode == "shared" for o in owners):
        why = "it is shared by servers started with --shared-writers; this one asked to own it "
        why += "alone (start it with --shared-writers too to join them)"
    else:
        why = "only one vestige-mcp may own a data directory"
    return OwnerLockHeld(
        f"the Vestige database {database} is already served by another process; {why}:\n{holders}",
        hint=f"Use that server from your MCP client instead of starting another; run "
        f"`vestige doctor --data-dir {path}` for details; pass another --data-dir to keep a "
        f"separate memory; or stop it with `kill -INT {pids}` and start again.",
        owners=tuple(owners),
    )


def _describe(o: OwnerInfo) -> str:
    where = o.transport + (f" {o.endpoint}" if o.endpoint else "")
    return (
        f"  pid {o.pid} ({o.mode}, {where}), running for {human_duration(o.held_for_s)} "
        f"since {o.started_at[:19].replace('T', ' ')} UTC\n"
        f"    command: {' '.join(o.cmdline) or '?'}"
    )
