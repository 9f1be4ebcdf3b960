"""Doctor's checks on who holds the data directory: the owner lock and open files.

Strictly private.  The lock is authoritative; the metadata files say who holds it and are
trusted only when their pid is alive with the recorded creation time; the psutil scan adds
every process that has the files open, and says how many it could not inspect.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from vestige import owner
from vestige.doctor._report import Report, Status
from vestige.processes import stop_command

if TYPE_CHECKING:
    from vestige.owner import OwnerInfo
    from vestige.processes import Scan


def _describe(info: OwnerInfo) -> str:
    where = info.transport + (f" {info.endpoint}" if info.endpoint else "")
    command = " ".join(info.cmdline) or "?"
    return (
        f"pid {info.pid} ({info.mode}, {where}) since {info.started_at[:19].replace('T', ' ')} "
        f"UTC: {command}"
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
                "(shutting down, or they lost the lock)",
                "Run doctor again; if it persists, restart them: "
                + "; ".join(stop_command(i.pid) for i in live),
            )
        else:
            report.add("owner-lock", Status.OK, "free: no server owns this data directory")
        return
    kind = "an exclusive owner" if state is owner.LockState.EXCLUSIVE else "shared writers"
    if live:
        holders = "; ".join(_describe(i) for i in live)
        report.add("owner-lock", Status.OK, f"held by {kind}: {holders}")
        return
    seen = ", ".join(f"{h.name} pid {h.pid}" for h in openers) or "none visible to this user"
    report.add(
        "owner-lock",
        Status.WARN,
        f"held by {kind} that has not published its details (still starting?); "
        f"processes with the lock file open: {seen}",
        "Run doctor again in a moment; the holder publishes itself right after it starts.",
    )


def _report_stale(report: Report, stale: list[OwnerInfo], *, remove: bool) -> None:
    described = "; ".join(f"{i.path} ({i.problem})" for i in stale)
    if not remove:
        paths = " ".join(str(i.path) for i in stale)
        report.add(
            "owner-metadata",
            Status.FAIL,
            f"stale holder metadata: {described}",
            f"Its process is gone and the kernel already freed its lock; remove only "
            f"these files: rm {paths}  (or run `vestige doctor --remove-stale`)",
        )
        return
    removed = [str(p) for p in owner.remove_stale_metadata(report.data_dir.path)]
    report.facts["removed_stale"] = removed
    report.add(
        "owner-metadata",
        Status.OK,
        f"removed stale holder metadata: {', '.join(removed) or 'none left'}",
    )


def check_processes(report: Report, scan: Scan) -> None:
    if scan.holders:
        names = ", ".join(f"{h.name} (pid {h.pid})" for h in scan.holders)
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
