"""`vestige doctor`: who holds the database, and is it healthy?  Checks only, no click.

Each check adds a :class:`CheckResult` (ok | warn | fail) whose hint is the exact next
step.  Doctor creates nothing and changes nothing unless asked (``remove_stale``); it opens
the database files only through SQLite, and finds processes with psutil (which reads the
OS's process table, never the files).  It excludes itself from the process list.
"""

from __future__ import annotations

import os
import platform
import time
from typing import TYPE_CHECKING

import apsw

from vestige import __version__, processes
from vestige.doctor._database import check_database
from vestige.doctor._files import (
    check_data_dir,
    check_filesystem,
    check_permissions,
    check_sqlite_version,
    recheck_foreign,
)
from vestige.doctor._holders import check_gate, check_owner, check_processes
from vestige.doctor._report import CheckResult, Report, Status

if TYPE_CHECKING:
    from vestige.config import DataDir

__all__ = ["CheckResult", "Report", "Status", "run"]


def run(data_dir: DataDir, *, deep: bool = False, remove_stale: bool = False) -> Report:
    """Run every check on ``data_dir``; problems become results, never exceptions.

    :param deep: also read the whole file (integrity_check, O(N log N)); without it the
        report says what it did not check (a ``skipped`` result and ``not_checked``).
    :param remove_stale: delete holder metadata whose process is provably gone.
    """
    started = time.perf_counter()
    report = Report(data_dir)
    report.facts["deep"] = deep
    report.facts.update(
        vestige_version=__version__,
        python=platform.python_version(),
        platform=platform.platform(),
        sqlite_version=apsw.sqlite_lib_version(),
    )
    usable = check_data_dir(report)
    check_sqlite_version(report)
    if usable:
        check_filesystem(report)
        check_permissions(report)
        # Scan before doctor opens the database, and never list doctor itself.
        scan = processes.scan(processes.watched_files(data_dir), exclude_pids=(os.getpid(),))
        report.facts["processes"] = scan.to_dict()
        check_owner(report, scan, remove_stale=remove_stale)
        check_processes(report, scan)
        check_gate(report, scan)
        check_database(report, scan, deep=deep)
        recheck_foreign(report)
    report.elapsed_ms = (time.perf_counter() - started) * 1000
    return report
