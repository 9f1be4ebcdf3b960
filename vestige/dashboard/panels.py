"""What the dashboard shows besides the feed: who holds the data directory, health, stats,
and the latest load-test report.

Holders and health are `vestige doctor`'s own checks (its fast path: no whole-file read),
so the page and doctor never disagree.  The load-test report is read from the files the
load test writes (``report.json``, ``summary.txt``, ``report.html``), never by importing
the load test: the dashboard ships to users who never run it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from vestige import doctor

if TYPE_CHECKING:
    from vestige.config import DataDir
    from vestige.store import Store

#: Where the load test writes its reports unless told otherwise (relative to where it ran).
LOADTEST_OUT: Final = Path("loadtest-out")
#: The files of one report folder the dashboard reads or serves.
REPORT_JSON: Final = "report.json"
REPORT_SUMMARY: Final = "summary.txt"
REPORT_PAGE: Final = "report.html"
#: A report file larger than this is not read (a report is tens of kilobytes).
REPORT_MAX_BYTES: Final = 32 * 1024 * 1024


def status(store: Store, data_dir: DataDir) -> dict[str, Any]:
    """Doctor's report (holders, checks) and the store's counts, as the page shows them."""
    report = doctor.run(data_dir)
    return {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "doctor": report.to_dict(),
        "stats": store.stats().to_dict(),
    }


@dataclass(frozen=True, slots=True)
class ReportSource:
    """Where to look for the load-test report: a folder given, or the newest run's folder."""

    given: Path | None  # --report: a report folder, or its report.json
    default_root: Path = LOADTEST_OUT

    def folder(self) -> Path | None:
        """The report folder to show now, or None when there is none (yet)."""
        if self.given is not None:
            return self.given.parent if self.given.is_file() else self.given
        if not self.default_root.is_dir():
            return None
        runs = [p for p in self.default_root.iterdir() if (p / REPORT_JSON).is_file()]
        return max(runs, key=lambda p: (p / REPORT_JSON).stat().st_mtime, default=None)

    def read(self) -> dict[str, Any]:
        """The report's verdict and summary, or why there is none; never an exception."""
        folder = self.folder()
        if folder is None:
            return {
                "found": False,
                "message": f"no load-test report in {self.default_root.resolve()}",
                "hint": "Run `python -m loadtest --profile ci`, or start the dashboard with "
                "--report PATH.",
            }
        try:
            data = json.loads(_read(folder / REPORT_JSON))
            summary = _read(folder / REPORT_SUMMARY) if (folder / REPORT_SUMMARY).is_file() else ""
        except (OSError, ValueError) as exc:
            return {
                "found": False,
                "message": f"cannot read the load-test report in {folder}: {exc}",
                "hint": "Give --report the folder the load test printed (report: …).",
            }
        runs = data.get("runs") if isinstance(data, dict) else None
        return {
            "found": True,
            "folder": str(folder.resolve()),
            "ok": bool(data.get("ok")) if isinstance(data, dict) else False,
            "finished": str(data.get("finished", "")) if isinstance(data, dict) else "",
            "runs": len(runs) if isinstance(runs, list) else 0,
            "summary": summary,
            "has_page": (folder / REPORT_PAGE).is_file(),
        }

    def page(self) -> str | None:
        """The report's own HTML page, if the folder has one."""
        folder = self.folder()
        if folder is None or not (folder / REPORT_PAGE).is_file():
            return None
        try:
            return _read(folder / REPORT_PAGE)
        except (OSError, ValueError):
            return None


def _read(path: Path) -> str:
    if path.stat().st_size > REPORT_MAX_BYTES:
        raise ValueError(f"{path.name} is larger than {REPORT_MAX_BYTES:,} bytes")
    return path.read_text(encoding="utf-8")
