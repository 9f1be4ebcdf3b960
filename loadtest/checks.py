"""The invariants, checked the way a person with ``sqlite3`` would: read-only, from outside.

- ``PRAGMA integrity_check`` returns ``ok`` (live file, after each kill, every backup).
- The full-text index matches its table.  ``integrity_check`` does not look inside an
  external-content FTS5 index (verified: a row missing from the index still reads "ok"),
  so the FTS5 ``'integrity-check'`` command with rank 1 runs too - but it is an INSERT, so
  it runs on a private copy taken with the online backup API, never on the live file.
  Then every row of the run must be found by a MATCH on its unique token, at its own rowid.
- Latency bounds and fairness, from the recorded samples.

Every database read is a short read transaction on a read-only connection: it never blocks
the servers' writers (WAL) and never opens SQLite's files any other way.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

import apsw

from loadtest.ledger import Row

if TYPE_CHECKING:
    from loadtest.profiles import Bounds

#: The database's documented tables (docs/STORAGE.md "direct SQL").
NODES: Final = "knowledge_nodes"
FTS: Final = "knowledge_fts"
#: The external writer's own table.
EXTERNAL: Final = "loadtest_external"
BUSY_TIMEOUT_MS: Final = 5_000
MAX_PROBLEMS: Final = 10


@dataclass(frozen=True, slots=True)
class Measure:
    """The number behind a bound check, so a report can draw it against its bound.

    ``bound`` is what the run was judged against; ``basis`` says where it came from (a fixed
    goal, or a same-run baseline such as "3 x idle read p99 (4.1 ms) + 20 ms").
    """

    value: float
    bound: float
    unit: str
    basis: str = ""
    #: True for floors (fairness >= 0.5), False for ceilings (p99 <= bound).
    at_least: bool = False

    def to_dict(self) -> dict[str, object]:
        return {
            "value": None if math.isnan(self.value) else round(self.value, 4),
            "bound": round(self.bound, 4),
            "unit": self.unit,
            "basis": self.basis,
            "at_least": self.at_least,
        }


@dataclass
class Check:
    """One pass/fail line of the summary.  ``excused`` checks are shown but do not fail."""

    name: str
    ok: bool
    detail: str = ""
    excused: bool = False
    measure: Measure | None = None

    @property
    def failed(self) -> bool:
        return not self.ok and not self.excused

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "ok": self.ok,
            "detail": self.detail,
            "excused": self.excused,
            "measure": self.measure.to_dict() if self.measure else None,
        }


@dataclass
class Snapshot:
    rows: list[Row]
    external: set[str] = field(default_factory=set)
    integrity: list[str] = field(default_factory=list)

    @property
    def integrity_ok(self) -> bool:
        return self.integrity == ["ok"]


def open_readonly(path: Path) -> apsw.Connection:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    conn.set_busy_timeout(BUSY_TIMEOUT_MS)
    return conn


def read_snapshot(path: Path, *, integrity: bool = True) -> Snapshot:
    """Every memory row and external token (one snapshot), then ``integrity_check``."""
    conn = open_readonly(path)
    try:
        conn.execute("BEGIN")
        try:
            rows = [
                Row(seq, mid, content)
                for seq, mid, content in conn.execute(f"SELECT seq, id, content FROM {NODES}")
            ]
            has_external = conn.execute(
                "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?", (EXTERNAL,)
            ).fetchall()
            external = (
                {t for (t,) in conn.execute(f"SELECT token FROM {EXTERNAL}")}
                if has_external
                else set()
            )
        finally:
            conn.execute("COMMIT")
        messages = [str(m) for (m,) in conn.execute("PRAGMA integrity_check")] if integrity else []
    finally:
        conn.close()
    return Snapshot(rows, external, messages)


def fts_problems(path: Path, marker: str) -> list[str]:
    """What is wrong with the full-text index of ``path`` (empty when it matches the table)."""
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="vestige-fts-check-") as tmp:
        copy = Path(tmp) / "copy.db"
        source = open_readonly(path)
        try:
            dest = apsw.Connection(str(copy))
            try:
                with dest.backup("main", source, "main") as backup:
                    backup.step(-1)  # one step: one consistent snapshot
            finally:
                dest.close()
        finally:
            source.close()
        conn = apsw.Connection(str(copy))
        try:
            try:
                conn.execute(f"INSERT INTO {FTS}({FTS}, rank) VALUES ('integrity-check', 1)")
            except apsw.Error as exc:
                problems.append(f"FTS5 integrity-check failed: {exc}")
            rows = conn.execute(f"SELECT seq, content FROM {NODES}").fetchall()
            mismatched = 0
            for seq, content in rows:
                token = str(content).split(None, 1)[0] if content else ""
                if not token.startswith(marker):
                    continue
                hits = {
                    r
                    for (r,) in conn.execute(
                        f"SELECT rowid FROM {FTS} WHERE {FTS} MATCH ?", (f'"{token}"',)
                    )
                }
                if seq not in hits:
                    mismatched += 1
                    if len(problems) < MAX_PROBLEMS:
                        problems.append(f"MATCH {token} does not find row {seq} (got {hits})")
            if mismatched:
                problems.append(f"{mismatched} rows not found by their own token")
        finally:
            conn.close()
    return problems


# -- latency and fairness ----------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100); nan when empty."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(frozen=True, slots=True)
class Summary:
    count: int
    p50: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: list[float]) -> Summary:
        s = sorted(values)
        return cls(
            len(s),
            percentile(s, 50),
            percentile(s, 95),
            percentile(s, 99),
            s[-1] if s else math.nan,
        )

    def to_dict(self) -> dict[str, float | int | None]:
        def num(x: float) -> float | None:
            return None if math.isnan(x) else round(x, 3)

        return {
            "count": self.count,
            "p50_ms": num(self.p50),
            "p95_ms": num(self.p95),
            "p99_ms": num(self.p99),
            "max_ms": num(self.max),
        }


def fairness(rates: dict[str, float]) -> float:
    """min/max of per-process throughput: 1.0 is perfectly even, 0 means one starved."""
    values = list(rates.values())
    if len(values) < 2 or max(values) <= 0:
        return 1.0 if values else math.nan
    return min(values) / max(values)


def latency_checks(
    write: Summary,
    read: Summary,
    idle: Summary,
    fair: float,
    bounds: Bounds,
    *,
    excused: bool,
) -> list[Check]:
    """Bound checks; ``excused`` (the naive baseline) reports them without failing the run.

    ``idle`` is the idle read baseline measured before the load: relative bounds need it.
    """
    checks: list[Check] = []
    rel = bounds.relative
    if rel is not None:
        if idle.count == 0 or read.count == 0:
            checks.append(
                Check("latency: write vs read", False, "no read samples to judge by", excused)
            )
        else:
            room = rel.idle_rounds * idle.p50
            idle_basis = f"{rel.idle_rounds:g} x idle read p50 ({idle.p50:.1f} ms)"
            for label, w, r, times in (
                ("p50", write.p50, read.p50, rel.times),
                ("p99", write.p99, read.p99, rel.p99_times),
            ):
                basis = f"{times:g} x read {label} ({r:.1f} ms) + {idle_basis}"
                checks.append(
                    _bound(f"latency: write {label}", w, times * r + room, basis, excused)
                )
            by_reads = rel.max_times * read.max
            by_tail = rel.max_tail_times * write.p99
            basis = (
                f"the larger of {rel.max_times:g} x read max ({read.max:.1f} ms) and "
                f"{rel.max_tail_times:g} x write p99 ({write.p99:.1f} ms), + {idle_basis}"
            )
            checks.append(
                _bound(
                    "latency: write max", write.max, max(by_reads, by_tail) + room, basis, excused
                )
            )
    g = bounds.goals
    for name, value, goal in (
        ("latency: write p99", write.p99, g.p99_write_ms),
        ("latency: write max", write.max, g.max_write_ms),
        ("latency: read p99", read.p99, g.p99_read_ms),
        ("latency: read max", read.max, g.max_read_ms),
    ):
        if goal is not None:
            checks.append(_bound(f"{name} (fixed goal)", value, goal, "a fixed goal", excused))
    ok = not math.isnan(fair) and fair >= bounds.min_fairness
    checks.append(
        Check(
            "fairness: min/max writes per second per server",
            ok,
            f"{fair:.2f} (bound >= {bounds.min_fairness:.2f})",
            excused,
            Measure(fair, bounds.min_fairness, "", "min/max over servers", at_least=True),
        )
    )
    return checks


def wal_check(sizes: list[tuple[float, int]], bound_mib: float) -> Check:
    """The WAL stayed bounded (checkpoints kept up; no reader pinned it for long)."""
    peak = max((size for _, size in sizes), default=0)
    return Check(
        "WAL size stayed bounded",
        peak <= bound_mib * 2**20,
        f"peak {peak / 2**20:.1f} MiB (bound <= {bound_mib:g} MiB), {len(sizes)} samples",
        measure=Measure(peak / 2**20, bound_mib, "MiB", "journal_size_limit"),
    )


def _bound(name: str, value: float, bound: float, basis: str, excused: bool) -> Check:
    if math.isnan(value):
        return Check(name, False, "no samples", excused)
    return Check(
        name,
        value <= bound,
        f"{value:.1f} ms (bound <= {bound:.1f} ms = {basis})",
        excused,
        Measure(value, bound, "ms", basis),
    )
