"""The refusal text: what a process that could not take the owner lock tells a person.

Strictly private; ``acquire_owner`` raises it.  It names the database, each live holder
(pid, mode, transport, how long, command line, the sessions attached to it) and the ways
out, among them ``--attach``, which shares an exclusive owner instead of competing for it.
Everything in it that came from a metadata file or the process table is escaped (a command
line may carry terminal escape sequences), every path in a suggested command is
shell-quoted, and a ``kill`` command names only holders proved to hold the lock
(``OwnerInfo.verified``): a forged file must never turn Vestige into the tool that stops an
unrelated process.  A proxy of an attached session is a claim too and is never in one.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Final

from vestige.config import DATABASE_FILE
from vestige.errors import OwnerLockHeld
from vestige.humanize import human_duration
from vestige.printable import command_line, escape_controls, shell_arg

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    from vestige.owner._metadata import AttachedSession, OwnerInfo

#: A refusal lists this many attached sessions of one holder and counts the rest.
SESSIONS_SHOWN: Final = 5
#: The launch option and variable that share a running owner (``vestige-mcp --help``).
ATTACH_WAY: Final = "--attach (or VESTIGE_ATTACH=1 in the client's environment)"


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
    exclusive = [o for o in owners if o.mode == "exclusive"]
    if shared:
        why = "it is owned exclusively (started without --shared-writers), so shared writers "
        why += "cannot join it"
    elif not exclusive:
        why = "it is shared by servers started with --shared-writers; this one asked to own it "
        why += "alone (start it with --shared-writers too to join them)"
    else:
        why = "only one vestige-mcp may own a data directory"
    way = (
        f"Start this one with {ATTACH_WAY} to share that server instead"
        if exclusive
        else "Use that server from your MCP client instead of starting another"
    )
    advice = stop_advice(owners)
    caveat = sessions_caveat(owners)
    also = f" ({caveat})" if caveat else ""
    stop = (
        f"or stop it with `{advice}`{also} and start again"
        if advice
        else f"or find the process that really holds it with `{doctor}` and stop that one{also}"
    )
    return OwnerLockHeld(
        f"the Vestige database {database} is already served by another process; {why}:\n{holders}",
        hint=f"{way}; run `{doctor}` for details; pass another --data-dir to keep a separate "
        f"memory; {stop}.",
        owners=tuple(owners),
    )


def describe_transport(o: OwnerInfo) -> str:
    """What a holder serves, for people: "stdio", "http <url>", "vestige-mcp --attach owner"."""
    label = "vestige-mcp --attach owner" if o.transport == "attach" else o.transport
    return escape_controls(label + (f" {o.endpoint}" if o.endpoint else ""))


def describe_sessions(o: OwnerInfo, *, shown: int | None = SESSIONS_SHOWN) -> str:
    """ "serves 2 attached sessions through proxies: proxy pid 11 (client claude-code) since
    2026-12-02 17:45:53 UTC, ..." (at most ``shown`` listed, the rest counted); "" for none."""
    if not o.sessions:
        return ""
    listed = o.sessions if shown is None else o.sessions[:shown]
    each = ", ".join(_session(s) for s in listed)
    more = f", and {len(o.sessions) - len(listed)} more" if len(o.sessions) > len(listed) else ""
    return f"serves {_count(len(o.sessions))} through proxies: {each}{more}"


def sessions_caveat(owners: Iterable[OwnerInfo]) -> str:
    """Why stopping these holders alone may not free the directory ("" with no sessions).

    An attached session's proxy takes the owner lock over when its owner stops (that is how
    its client keeps its memory tools), so the directory is free only once they are gone too.
    """
    serving = [o for o in owners if o.sessions]
    n = sum(len(o.sessions) for o in serving)
    if not n:
        return ""
    whose = "it" if len(serving) == 1 else "them"
    which = (
        f"the session attached to {whose}" if n == 1 else f"the {n} sessions attached to {whose}"
    )
    return (
        f"{which} would then elect a new owner among their proxies; close those clients too "
        "to free the directory"
    )


def _count(n: int) -> str:
    return f"{n} attached session" + ("" if n == 1 else "s")


def _session(s: AttachedSession) -> str:
    client = f"client {s.client}" if s.client else "client not named yet"
    return f"proxy pid {s.pid} ({client}) since {_since(s)} UTC"


def _since(s: AttachedSession) -> str:
    """When a session attached, "YYYY-MM-DD HH:MM:SS" in UTC ("?" for a time out of range)."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(s.since))
    except (OverflowError, OSError, ValueError):
        return "?"


def describe(o: OwnerInfo) -> str:
    """Two lines on one holder (three with attached sessions), every outside value escaped."""
    where = describe_transport(o)
    since = escape_controls(o.started_at[:19].replace("T", " "))
    doubt = "" if o.verified else f"\n    not proved to hold the lock: {why_unproved(o)}"
    sessions = describe_sessions(o)
    attached = f"\n    {sessions}" if sessions else ""
    return (
        f"  pid {o.pid} ({escape_controls(o.mode)}, {where}), running for "
        f"{human_duration(o.held_for_s)} since {since} UTC\n"
        f"    command: {command_line(o.cmdline)}{doubt}{attached}"
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
