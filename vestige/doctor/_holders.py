"""Doctor's checks on who holds the data directory: the owner lock, open files, the gate.

Strictly private.  The lock is authoritative; the metadata files say who holds it and are
claims, trusted only when their process is the one that wrote them and the kernel shows it
holding the lock; an owner's attached sessions (the proxies of ``vestige-mcp --attach``,
with the client names they gave) are listed as that owner published them; the psutil scan
adds every process that has the files open, and says how many it could not inspect.  On
Linux, ``/proc/locks`` names the process that holds the write gate, so a holder stopped
with SIGSTOP or Ctrl-Z (which stalls every writer) is named with the command that resumes
it.

Everything shown that came from a file or the process table is escaped, every path in a
suggested command is shell-quoted, and a ``kill`` command names only a proved holder.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import psutil

from vestige import _linux_proc, owner
from vestige.config import WRITE_DEADLINE_S, DataDirSource
from vestige.doctor._report import Report, Status
from vestige.printable import command_line, escape_controls, shell_arg

if TYPE_CHECKING:
    from vestige.owner import OwnerInfo
    from vestige.processes import Scan

#: psutil's names for a process that does not run until it gets SIGCONT.
STOPPED: tuple[str, ...] = (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)


def _describe(info: OwnerInfo) -> str:
    where = owner.describe_transport(info)
    since = escape_controls(info.started_at[:19].replace("T", " "))
    return (
        f"pid {info.pid} ({escape_controls(info.mode)}, {where}) since {since} UTC: "
        f"{command_line(info.cmdline)}"
    )


def check_owner(report: Report, scan: Scan, *, remove_stale: bool) -> None:
    path = report.data_dir.path
    lock_file = path / owner.LOCK_FILE
    try:
        state = owner.lock_state(path)
    except OSError as exc:
        report.facts["owner_lock"] = {"path": str(lock_file), "state": "unknown"}
        report.add(
            "owner-lock",
            Status.FAIL,
            f"cannot probe {lock_file}: {exc.strerror or exc}",
            "Keep the data directory on a local disk you can write to; servers need this lock.",
        )
        return
    infos = owner.read_owners(path)
    report.facts["owner_lock"] = {
        "path": str(lock_file),
        "state": state.value,
        "holders": [i.to_dict() for i in infos],
    }
    live = [i for i in infos if i.alive]
    stale = [i for i in infos if not i.alive]
    _report_lock(report, state, live, scan)
    _report_sessions(report, live)
    if stale:
        _report_stale(report, stale, remove=remove_stale)


def _report_lock(report: Report, state: owner.LockState, live: list[OwnerInfo], scan: Scan) -> None:
    lock_file = str(report.data_dir.path / owner.LOCK_FILE)
    openers = [h for h in scan.holders if lock_file in h.files]
    if state is owner.LockState.FREE:
        if live:
            pids = ", ".join(str(i.pid) for i in live)
            report.add(
                "owner-lock",
                Status.WARN,
                f"free, yet running process(es) {pids} published themselves as holders "
                "(shutting down, or the files were written by something else)",
                "Run doctor again; if it persists, look at those processes before stopping "
                "any: none of them holds the lock.",
            )
        else:
            report.add("owner-lock", Status.OK, "free: no server owns this data directory")
        return
    kind = "an exclusive owner" if state is owner.LockState.EXCLUSIVE else "shared writers"
    proved = [i for i in live if i.verified]
    claims = [i for i in live if not i.verified]
    doubt = ""
    if claims:
        doubt = "; not proved to hold it, so not named as holders: " + "; ".join(
            f"pid {i.pid} ({owner.why_unproved(i)})" for i in claims
        )
    if proved:
        holders = "; ".join(_describe(i) for i in proved)
        report.add("owner-lock", Status.OK, f"held by {kind}: {holders}{doubt}")
        return
    kernel = owner.kernel_holders(report.data_dir.path)
    if kernel:
        seen = ", ".join(_process(pid) for pid in kernel)
        where = "the kernel shows it held by"
    else:
        seen = ", ".join(f"{escape_controls(h.name)} pid {h.pid}" for h in openers)
        seen = seen or "none visible to this user"
        where = "processes with the lock file open:"
    report.add(
        "owner-lock",
        Status.WARN,
        f"held by {kind} that has not published its details (still starting?); "
        f"{where} {seen}{doubt}",
        "Run doctor again in a moment; the holder publishes itself right after it starts.",
    )


def _report_sessions(report: Report, live: list[OwnerInfo]) -> None:
    """Every session attached to a live holder: proxy pid, client name, since when."""
    serving = [i for i in live if i.sessions]
    if not serving:
        return
    each = "; ".join(f"pid {i.pid} {owner.describe_sessions(i, shown=None)}" for i in serving)
    report.add("attached-sessions", Status.OK, each)


def _process(pid: int) -> str:
    """ "pid N (command)" for a process the kernel named, escaped; "pid N" if it is hidden."""
    try:
        command = command_line(psutil.Process(pid).cmdline())
    except psutil.Error:
        return f"pid {pid}"
    return f"pid {pid} ({command})"


def _report_stale(report: Report, stale: list[OwnerInfo], *, remove: bool) -> None:
    """Metadata left by a holder that died (``kill -9``, a crash) is a warning, not a failure:
    the kernel freed its lock, the next server removes the file, and nothing waits on it.
    Failing here made doctor exit 3 after every kill -9, on a directory that works."""
    described = "; ".join(
        f"{escape_controls(str(i.path))} ({escape_controls(i.problem)})" for i in stale
    )
    if not remove:
        paths = " ".join(shell_arg(i.path) for i in stale)
        report.add(
            "owner-metadata",
            Status.WARN,
            f"stale holder metadata (blocks nothing; the next server removes it): {described}",
            f"To clean up now, run `vestige doctor --remove-stale{_data_dir_arg(report)}`; it "
            f"removes only these files, after checking them again: rm {paths}",
        )
        return
    removed = [str(p) for p in owner.remove_stale_metadata(report.data_dir.path)]
    report.facts["removed_stale"] = removed
    shown = ", ".join(escape_controls(p) for p in removed)
    report.add(
        "owner-metadata",
        Status.OK,
        f"removed stale holder metadata: {shown or 'none left'}",
    )


def _data_dir_arg(report: Report) -> str:
    """`` --data-dir DIR`` when a rule other than the platform default chose it, so the
    command in a hint works pasted into another shell (without that VESTIGE_DATA_DIR)."""
    if report.data_dir.source is DataDirSource.DEFAULT:
        return ""
    return f" --data-dir {shell_arg(report.data_dir.path)}"


def check_processes(report: Report, scan: Scan) -> None:
    if scan.holders:
        names = ", ".join(f"{escape_controls(h.name)} (pid {h.pid})" for h in scan.holders)
        detail = f"{len(scan.holders)} process(es) have the files open: {names}"
    else:
        detail = "no inspected process has the database or lock files open"
    if scan.denied:
        shown = ", ".join(str(pid) for pid in scan.denied[:5])
        more = ", ..." if len(scan.denied) > 5 else ""
        as_root = os.name == "posix" and os.geteuid() == 0
        report.add(
            "processes",
            Status.WARN,
            f"{detail}; {len(scan.denied)} process(es) could not be inspected (access denied: "
            f"pid {shown}{more}), so they may have the files open too",
            "Even root may not inspect these here (a container or sandbox init); the "
            "owner-lock check is authoritative for servers."
            if as_root
            else "Run doctor as root (sudo vestige doctor) or as their user to see them all; "
            "the owner-lock check is authoritative for servers.",
        )
    elif not scan.reliable:
        report.add(
            "processes",
            Status.WARN,
            f"{detail}; this platform does not list every open file",
            "The owner-lock check is authoritative for servers.",
        )
    else:
        report.add("processes", Status.OK, detail)


def check_gate(report: Report, scan: Scan) -> None:
    """Who holds the write gate now, and is it stopped?  A stopped holder stalls every writer.

    The gate is held only for the length of one write, so a holder is normally seen running,
    if at all.  The kernel's lock table names it (Linux); elsewhere doctor can only list the
    stopped processes that have the gate open.  Doctor never takes the gate itself.
    """
    gate = report.data_dir.gate
    if not gate.exists():
        report.add("write-gate", Status.OK, "free (no process has written yet)")
        return
    locks = _linux_proc.lock_holders(gate)
    kernel = None if locks is None else sorted({lock.pid for lock in locks})
    pids = kernel if kernel is not None else [h.pid for h in scan.holders if str(gate) in h.files]
    holders = [h for h in map(_gate_holder, pids) if h is not None]
    report.facts["write_gate"] = {
        "path": str(gate),
        "holders": holders,
        "from": "kernel lock table" if kernel is not None else "open files",
    }
    stopped = [h for h in holders if h["status"] in STOPPED]
    if stopped:
        names = "; ".join(f"pid {h['pid']}: {command_line(h['cmdline'])}" for h in stopped)
        resume = "; ".join(f"kill -CONT {h['pid']}" for h in stopped)
        end = "; ".join(f"kill -INT {h['pid']}; kill -CONT {h['pid']}" for h in stopped)
        held = "holds" if kernel is not None else "has open (and may hold)"
        report.add(
            "write-gate",
            Status.FAIL,
            f"a stopped process {held} the write gate, so every write waits for it and fails "
            f"after {WRITE_DEADLINE_S:g} s: {names}",
            f"Resume it with `{resume}` (it finishes its write and lets go), or end it with "
            f"`{end}` (a stopped process acts on a signal only once continued).",
        )
    elif kernel is None:
        report.add(
            "write-gate",
            Status.OK,
            "no stopped process has it open (this platform cannot tell who holds it)",
        )
    elif holders:
        names = ", ".join(f"pid {h['pid']} ({h['status']})" for h in holders)
        report.add("write-gate", Status.OK, f"held for a write in progress by {names}")
    else:
        report.add("write-gate", Status.OK, "free: no write in progress")


def _gate_holder(pid: int) -> dict[str, Any] | None:
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            status = proc.status()
            try:
                cmdline = list(proc.cmdline())
            except psutil.AccessDenied:
                cmdline = []
    except psutil.NoSuchProcess:
        return None  # it let go and exited while we looked
    except psutil.AccessDenied:
        return {"pid": pid, "status": "unknown", "cmdline": []}
    return {"pid": pid, "status": status, "cmdline": cmdline}
