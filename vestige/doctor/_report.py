"""The shapes doctor reports in: one ``CheckResult`` per check, gathered in a ``Report``.

Strictly private to ``vestige.doctor`` (re-exported there).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vestige.config import DataDir


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"  # worth knowing; nothing is broken yet
    FAIL = "fail"  # a problem: doctor exits non-zero
    SKIPPED = "skipped"  # not checked this time (the detail says what, the hint how)


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    status: Status
    detail: str
    hint: str = ""  # the exact next step; empty when there is nothing to do

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Report:
    """Every check's result plus the facts behind them (what ``--json`` prints)."""

    data_dir: DataDir
    checks: list[CheckResult] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    elapsed_ms: float = 0.0

    @property
    def healthy(self) -> bool:
        return all(c.status is not Status.FAIL for c in self.checks)

    def add(self, name: str, status: Status, detail: str, hint: str = "") -> None:
        self.checks.append(CheckResult(name, status, detail, hint))

    def to_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            **self.facts,
            "checks": [c.to_dict() for c in self.checks],
            "elapsed_ms": round(self.elapsed_ms, 1),
        }
