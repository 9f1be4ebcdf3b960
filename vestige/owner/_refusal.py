"""The refusal text: what a process that could not take the owner lock tells a person.

Strictly private; ``acquire_owner`` raises it.  It names the database, each live holder
(pid, mode, transport, how long, command line) and the ways out.  Everything in it that
came from a metadata file or the process table is escaped (a command line may carry
terminal escape sequences), every path in a suggested command is shell-quoted, and a
``kill`` command names only holders proved to hold the lock (``OwnerInfo.verified``): a
forged file must never turn Vestige into the tool that stops an unrelated process.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from vestige.config import DATABASE_FILE
from vestige.errors import OwnerLockHeld
from vestige.humanize import human_duration
from vestige.printable import command_line, escape_controls, shell_arg

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    from vestige.owner._metadata import OwnerInfo


def stop_command(pid: int) -> str:
    """The exact, narrow command that asks one process to shut down cleanly (never pkill)."""
    if sys.platform.startswith("win"):
        return f"taskkill /PID {pid}"
    return f"kill -INT {pid}"


def stop_advice(owners: Iterable[OwnerInfo]) -> str:
    """``kill -INT <pid>`` for every holder proved to hold the lock ("" when none is).

    A holder is proved when it is alive, the kernel shows it holding the owner lock, and its
    command line is Vestige's; a published pid that fails any of these is never named.
    """
    return "; ".join(stop_command(o.pid) for o in owners if o.verified)


def refusal(path: Path, *, lock_file: Path, shared: bool, owners: list[OwnerInfo]) -> OwnerLockHeld:
    """The error a refused process shows: who holds the directory, since when, what to do."""
    database = escape_controls(str(path / DATABASE_FILE))
    doctor = f"vestige doctor --data-dir {shell_arg(path)}"
    if not owners:
        return OwnerLockHeld(
            f"the Vestige database {database} is in use by another process that has not "
            "published its details (it may still be starting)",
            hint=f"Run `{doctor}` (or `lsof {shell_arg(lock_file)}`) to find it, or pass "
            "another --data-dir.",
        )
    holders = "\n".join(describe(o) for o in owners)
    if shared:
        why = "it is owned exclusively (started without --shared-writers), so shared writers "
        why += "cannot join it"
    elif all(o.mode == "shared" for o in owners):
        why = "it is shared by servers started with --shared-writers; this one asked to own it "
        why += "alone (start it with --shared-writers too to join them)"
    else:
        why = "only one vestige-mcp may own a data directory"
    advice = stop_advice(owners)
    stop = (
        f"or stop it with `{advice}` and start again"
        if advice
        else f"or find the process that really holds it with `{doctor}` and stop that one"
    )
    return OwnerLockHeld(
        f"the Vestige database {database} is already served by another process; {why}:\n{holders}",
        hint=f"Use that server from your MCP client instead of starting another; run "
        f"`{doctor}` for details; pass another --data-dir to keep a separate memory; {stop}.",
        owners=tuple(owners),
    )


def describe(o: OwnerInfo) -> str:
    """Two lines on one holder, every outside value escaped."""
    where = escape_controls(o.transport + (f" {o.endpoint}" if o.endpoint else ""))
    since = escape_controls(o.started_at[:19].replace("T", " "))
    doubt = "" if o.verified else f"\n    not proved to hold the lock: {why_unproved(o)}"
    return (
        f"  pid {o.pid} ({escape_controls(o.mode)}, {where}), running for "
        f"{human_duration(o.held_for_s)} since {since} UTC\n"
        f"    command: {command_line(o.cmdline)}{doubt}"
    )


def why_unproved(o: OwnerInfo) -> str:
    """Why a published holder is not named in a ``kill`` command."""
    if not o.alive:
        return escape_controls(o.problem) or "its process is gone"
    if o.problem:
        return escape_controls(o.problem)
    if not o.holds_lock:
        return "the kernel shows no owner lock held by this pid"
    return "its command line is not Vestige's"
