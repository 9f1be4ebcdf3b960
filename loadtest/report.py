"""What a person sees at the end: a summary table, a JSON report, and one HTML page.

The page is self-contained (inline SVG, no scripts, no plotting library): per operation kind,
latency over time on a log scale with the fault moments marked, and a histogram.
"""

from __future__ import annotations

import html
import math
import os
import random
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Final

from loadtest.checks import Summary, fairness
from loadtest.profiles import MCP_OPS, READ_OPS, WRITE_OPS

if TYPE_CHECKING:
    from collections.abc import Callable

    from loadtest.runner import RunResult
    from loadtest.workload import Sample

MAX_POINTS: Final = 4_000  # per chart; points above the p99 are always kept
WIDTH, HEIGHT, PAD = 660, 230, 46


# -- numbers -----------------------------------------------------------------------------


def figures(r: RunResult) -> dict[str, Any]:
    """The line docs/STORAGE.md quotes: processes, operations, lost writes, p99, max."""
    write = r.summary_of(WRITE_OPS)
    lost = sum(v.counts["lost"] for v in r.verdicts)
    return {
        "server_processes": r.config.profile.servers,
        "operations": r.recorder.ops,
        "acknowledged_writes": r.ledger_counts.get("write_acked", 0),
        "lost_acknowledged_writes": lost,
        "busy_errors": r.recorder.errors["busy"],
        "write_p99_ms": _num(write.p99),
        "write_max_ms": _num(write.max),
        "fairness": _num(fairness(r.write_rates())),
    }


def run_to_dict(r: RunResult) -> dict[str, Any]:
    rec = r.recorder
    by_proc: dict[str, dict[str, Any]] = {}
    for proc in sorted({s.proc for s in rec.samples}):
        by_proc[proc] = {
            "write": r.summary_of(WRITE_OPS, proc).to_dict(),
            "read": r.summary_of(READ_OPS, proc).to_dict(),
        }
    return {
        "label": r.label,
        "ok": r.ok,
        "naive": r.config.naive,
        "profile": asdict(r.config.profile),
        "workdir": str(r.config.workdir),
        "load_s": round(r.load_s, 3),
        "figures": figures(r),
        "throughput_ops_s": round(rec.ops / r.load_s, 1) if r.load_s else None,
        "latency": {k: s.to_dict() for k, s in r.summaries().items()},
        "latency_write": r.summary_of(WRITE_OPS).to_dict(),
        "latency_read": r.summary_of(READ_OPS).to_dict(),
        "latency_by_process": by_proc,
        "write_rates_per_s": {k: round(v, 2) for k, v in r.write_rates().items()},
        "errors": dict(rec.errors),
        "error_examples": rec.error_examples,
        "read_violations": dict(rec.violations),
        "read_violation_examples": rec.violation_examples,
        "notes": dict(rec.notes),
        "load_average": [round(v, 2) for _, v in rec.load_averages],
        "cpus": os.cpu_count(),
        "wal_peak_bytes": max((b for _, b in rec.wal_sizes), default=0),
        "wal_bytes_over_time": [
            [round(t - r.load_started, 2), b]
            for t, b in rec.wal_sizes[:: max(1, len(rec.wal_sizes) // 500)]
        ],
        "ledger": r.ledger_counts,
        "verdicts": [v.to_dict() for v in r.verdicts],
        "faults": [f.to_dict() for f in r.faults],
        "backups": [
            {"path": str(b.path), "started_s": b.started, "ended_s": b.ended, "ok": b.ok}
            for b in r.backups
        ],
        "servers": [
            {
                "name": s.name,
                "pids": s.pids,
                "connected_s": round(s.connected_s, 2),
                "exits": s.exits,
                "health_check": s.health,
            }
            for s in r.slots
        ],
        "leftover_pids": r.leftover_pids,
        "checks": [c.to_dict() for c in r.checks],
    }


def _num(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 3)


def _fmt(x: float) -> str:
    if math.isnan(x):
        return "-"
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def samples_csv(results: list[RunResult]) -> str:
    """Every timed call, for your own analysis (time since the load started)."""
    lines = ["run,t_s,kind,process,latency_ms,error"]
    for r in results:
        origin = _origin(r)
        lines += [
            f"{r.label},{s.t - origin:.4f},{s.kind},{s.proc},{s.latency_ms:.3f},{s.error or ''}"
            for s in r.recorder.samples
        ]
    return "\n".join(lines) + "\n"


# -- text --------------------------------------------------------------------------------


def text_summary(results: list[RunResult]) -> str:
    out: list[str] = []
    for r in results:
        out += _run_text(r)
    if len(results) == 2:
        out += _side_by_side(results[0], results[1])
    failed = [f"{r.label}: {c.name}" for r in results for c in r.checks if c.failed]
    verdict = "PASS" if not failed and all(r.checks for r in results) else "FAIL"
    out.append(f"RESULT: {verdict}" + ("" if not failed else f" ({len(failed)} failed)"))
    out += [f"  FAILED {name}" for name in failed]
    return "\n".join(out)


def _run_text(r: RunResult) -> list[str]:
    p = r.config.profile
    rec = r.recorder
    lines = [
        "",
        f"== {r.label}: profile {p.name}, {p.servers} servers x {p.inflight} in flight, "
        f"{r.load_s:.0f} s, {rec.ops} MCP operations ({rec.ops / max(r.load_s, 1e-9):.0f}/s)",
        f"{'operation':<18}{'count':>7}{'errors':>8}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}  (ms)",
    ]
    errors: dict[str, int] = {}
    for s in rec.samples:
        if s.error is not None:
            errors[s.kind] = errors.get(s.kind, 0) + 1
    for kind, summ in r.summaries().items():
        lines.append(
            f"{kind:<18}{summ.count:>7}{errors.get(kind, 0):>8}{_fmt(summ.p50):>9}"
            f"{_fmt(summ.p95):>9}{_fmt(summ.p99):>9}{_fmt(summ.max):>9}"
        )
    for label, kinds in (("all writes", WRITE_OPS), ("all reads", READ_OPS)):
        summ = r.summary_of(kinds)
        lines.append(
            f"{label:<18}{summ.count:>7}{'':>8}{_fmt(summ.p50):>9}{_fmt(summ.p95):>9}"
            f"{_fmt(summ.p99):>9}{_fmt(summ.max):>9}"
        )
    owners = [s.name for s in r.slots if (s.final_health or {}).get("maintenance_owner")]
    loads = [v for _, v in rec.load_averages]
    if loads:
        lines.append(
            f"machine: {os.cpu_count()} CPUs, 1-min load average {min(loads):.1f}-"
            f"{max(loads):.1f} during the run (this run's own processes add about 1)"
        )
    rates = r.write_rates()
    if owners:
        lines.append(f"maintenance owner: {', '.join(owners)}")
    lines.append(
        "per server: "
        + "  ".join(
            f"{s.name} {rates.get(s.name, 0):.1f} writes/s, p99 "
            f"{_fmt(r.summary_of(WRITE_OPS, s.name).p99)} ms, pids {len(s.pids)}"
            for s in r.slots
        )
        + f"  -> fairness {fairness(rates):.2f}"
    )
    final = next((v for v in r.verdicts if v.name == "ledger after the run"), None)
    if final is not None:
        c = final.counts
        lines.append(
            f"ledger: {c['acked']} writes acknowledged, {c['present']} present, "
            f"{c['deleted']} deleted as acknowledged, LOST {c['lost']}, corrupted "
            f"{c['corrupted']}, resurrected {c['resurrected']}; answer lost in a kill: "
            f"{c['in_doubt_recovered']} stored, {c['in_doubt_absent']} not"
        )
    if rec.errors:
        lines.append("errors: " + ", ".join(f"{k} {v}" for k, v in sorted(rec.errors.items())))
    for f in r.faults:
        took = f" (recovered in {f.recovery_s:.2f} s)" if f.recovery_s is not None else ""
        lines.append(f"fault at {f.at - _origin(r):5.1f} s: {f.kind} {f.target}: {f.detail}{took}")
    lines.append("checks:")
    for check in r.checks:
        mark = "ok  " if check.ok else ("info" if check.excused else "FAIL")
        lines.append(f"  [{mark}] {check.name}: {check.detail}")
    return lines


def _origin(r: RunResult) -> float:
    """Run-clock time of the load's start (samples are stamped from the harness start)."""
    return r.load_started


def _side_by_side(safe: RunResult, naive: RunResult) -> list[str]:
    rows: list[tuple[str, float, float]] = []
    for label, kinds in (("write", WRITE_OPS), ("read", READ_OPS)):
        ours, theirs = safe.summary_of(kinds), naive.summary_of(kinds)
        for stat in ("p50", "p95", "p99", "max"):
            rows.append((f"{label} {stat} ms", getattr(ours, stat), getattr(theirs, stat)))
    rows += [
        ("MCP operations", safe.recorder.ops, naive.recorder.ops),
        ("busy errors", safe.recorder.errors["busy"], naive.recorder.errors["busy"]),
        ("fairness (min/max)", fairness(safe.write_rates()), fairness(naive.write_rates())),
        (
            "lost acknowledged writes",
            sum(v.counts["lost"] for v in safe.verdicts),
            sum(v.counts["lost"] for v in naive.verdicts),
        ),
    ]
    lines = ["", "== side by side", f"{'':<26}{safe.label:>16}{naive.label:>16}{'ratio':>9}"]
    for name, a, b in rows:
        ratio = b / a if a and not math.isnan(a) and not math.isnan(b) else math.nan
        lines.append(f"{name:<26}{_fmt(a):>16}{_fmt(b):>16}{_fmt(ratio):>9}")
    return lines


# -- HTML --------------------------------------------------------------------------------


def html_page(results: list[RunResult], title: str) -> str:
    body = [f"<h1>{html.escape(title)}</h1>", f"<pre>{html.escape(text_summary(results))}</pre>"]
    for r in results:
        body.append(f"<h2>{html.escape(r.label)}</h2>")
        origin = _origin(r)
        faults = [(f.at - origin, f.kind) for f in r.faults]
        by_kind: dict[str, list[Sample]] = {}
        for s in r.recorder.samples:
            by_kind.setdefault(s.kind, []).append(s)
        bound = r.config.profile.bounds.p99_write_ms
        if r.recorder.wal_sizes:
            peak = max(b for _, b in r.recorder.wal_sizes)
            body.append(
                f"<h3>WAL size: peak {peak / 2**20:.1f} MiB</h3>"
                + wal_svg(r.recorder.wal_sizes, origin, faults)
            )
        for kind in sorted(by_kind, key=lambda k: (k not in MCP_OPS, k)):
            samples = by_kind[kind]
            summ = Summary.of([s.latency_ms for s in samples])
            body.append(
                f"<h3>{html.escape(kind)}: {summ.count} calls, p50 {_fmt(summ.p50)} ms, "
                f"p99 {_fmt(summ.p99)} ms, max {_fmt(summ.max)} ms</h3><div class=row>"
                + timeline_svg(samples, origin, faults, bound if kind in WRITE_OPS else None)
                + histogram_svg([s.latency_ms for s in samples], summ)
                + "</div>"
            )
    style = (
        "body{font:14px sans-serif;margin:24px;max-width:1400px}pre{background:#f6f6f6;"
        "padding:12px;overflow-x:auto}.row{display:flex;gap:16px;flex-wrap:wrap}"
        "svg{background:#fff;border:1px solid #ddd}"
    )
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>"
    )


def _log_y(ms: float, lo: float, hi: float) -> float:
    v = math.log10(max(ms, lo))
    return (
        HEIGHT - PAD - (v - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * (HEIGHT - 2 * PAD)
    )


def timeline_svg(
    samples: list[Sample], origin: float, faults: list[tuple[float, str]], bound: float | None
) -> str:
    """Latency (log) over time; errors in red; faults as dashed red lines; the p99 bound."""
    points = _thin(samples)
    xs = [s.t - origin for s in samples] + [t for t, _ in faults]
    x0, x1 = min(0.0, *xs), max(1.0, *xs)
    lo = 10 ** math.floor(math.log10(max(min(s.latency_ms for s in samples), 0.01)))
    top = max(*(s.latency_ms for s in samples), bound or 0, lo * 10)
    hi = 10 ** math.ceil(math.log10(top))

    def x(t: float) -> float:
        return PAD + (t - x0) / (x1 - x0) * (WIDTH - 2 * PAD)

    parts = [_frame("time since load start (s)", "latency (ms, log)")]
    parts += _y_ticks(lo, hi)
    for t in _nice_ticks(x0, x1):
        parts.append(
            f'<text x="{x(t):.1f}" y="{HEIGHT - PAD + 16}" font-size="10" '
            f'text-anchor="middle">{t:g}</text>'
        )
    if bound is not None:
        y = _log_y(bound, lo, hi)
        parts.append(
            f'<line x1="{PAD}" x2="{WIDTH - PAD}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e69500" '
            f'stroke-dasharray="6 3"/><text x="{WIDTH - PAD}" y="{y - 3:.1f}" font-size="10" '
            f'text-anchor="end" fill="#e69500">p99 bound {bound:g} ms</text>'
        )
    for s in points:
        color = "#d62728" if s.error else "#1f77b4"
        parts.append(
            f'<circle cx="{x(s.t - origin):.1f}" cy="{_log_y(s.latency_ms, lo, hi):.1f}" '
            f'r="1.6" fill="{color}" fill-opacity="0.55"/>'
        )
    parts.extend(_fault_marks(faults, x))
    return _svg(parts)


def _fault_marks(faults: list[tuple[float, str]], x: Callable[[float], float]) -> list[str]:
    """A dashed red line with the fault's name at each fault moment."""
    return [
        f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{PAD - 8}" y2="{HEIGHT - PAD}" '
        f'stroke="#d62728" stroke-dasharray="4 3"/><text x="{x(t) + 3:.1f}" y="{PAD - 10}" '
        f'font-size="10" fill="#d62728">{html.escape(kind)}</text>'
        for t, kind in faults
    ]


def wal_svg(sizes: list[tuple[float, int]], origin: float, faults: list[tuple[float, str]]) -> str:
    """vestige.db-wal bytes over time (linear), faults marked: checkpoints show as drops."""
    xs = [t - origin for t, _ in sizes] + [t for t, _ in faults]
    x0, x1 = min(0.0, *xs), max(1.0, *xs)
    top = max(1, *(b for _, b in sizes))

    def x(t: float) -> float:
        return PAD + (t - x0) / (x1 - x0) * (WIDTH - 2 * PAD)

    def y(b: float) -> float:
        return HEIGHT - PAD - b / top * (HEIGHT - 2 * PAD)

    line = " ".join(f"{x(t - origin):.1f},{y(b):.1f}" for t, b in sizes)
    parts = [
        _frame("time since load start (s)", "WAL (MiB)"),
        f'<polyline points="{line}" fill="none" stroke="#2ca02c"/>',
        f'<text x="{PAD - 4}" y="{PAD + 4}" font-size="10" text-anchor="end">'
        f"{top / 2**20:.1f}</text>",
    ]
    for t in _nice_ticks(x0, x1):
        parts.append(
            f'<text x="{x(t):.1f}" y="{HEIGHT - PAD + 16}" font-size="10" '
            f'text-anchor="middle">{t:g}</text>'
        )
    parts.extend(_fault_marks(faults, x))
    return _svg(parts)


def histogram_svg(values: list[float], summ: Summary) -> str:
    """Counts in log-spaced latency bins, with the p50 and p99 marked."""
    lo = max(min(values), 0.01)
    hi = max(*values, lo * 1.01)
    bins = 40
    edges = [lo * (hi / lo) ** (i / bins) for i in range(bins + 1)]
    counts = [0] * bins
    for v in values:
        i = min(bins - 1, int(math.log(max(v, lo) / lo) / math.log(hi / lo) * bins))
        counts[i] += 1
    top = max(counts)

    def x(ms: float) -> float:
        return PAD + math.log(max(ms, lo) / lo) / math.log(hi / lo) * (WIDTH - 2 * PAD)

    parts = [_frame("latency (ms, log)", "calls")]
    for i, c in enumerate(counts):
        if c:
            h = c / top * (HEIGHT - 2 * PAD)
            parts.append(
                f'<rect x="{x(edges[i]):.1f}" y="{HEIGHT - PAD - h:.1f}" '
                f'width="{max(1.0, x(edges[i + 1]) - x(edges[i]) - 1):.1f}" height="{h:.1f}" '
                f'fill="#1f77b4"/>'
            )
    for label, ms in (("p50", summ.p50), ("p99", summ.p99)):
        parts.append(
            f'<line x1="{x(ms):.1f}" x2="{x(ms):.1f}" y1="{PAD}" y2="{HEIGHT - PAD}" '
            f'stroke="#e69500"/><text x="{x(ms) + 3:.1f}" y="{PAD + 10}" font-size="10" '
            f'fill="#e69500">{label} {_fmt(ms)}</text>'
        )
    for ms in (lo, math.sqrt(lo * hi), hi):
        parts.append(
            f'<text x="{x(ms):.1f}" y="{HEIGHT - PAD + 16}" font-size="10" '
            f'text-anchor="middle">{_fmt(ms)}</text>'
        )
    parts.append(f'<text x="{PAD - 4}" y="{PAD + 4}" font-size="10" text-anchor="end">{top}</text>')
    return _svg(parts)


def _thin(samples: list[Sample]) -> list[Sample]:
    if len(samples) <= MAX_POINTS:
        return samples
    cut = sorted(s.latency_ms for s in samples)[int(len(samples) * 0.99)]
    slow = [s for s in samples if s.latency_ms >= cut or s.error]
    rest = [s for s in samples if s.latency_ms < cut and not s.error]
    keep = random.Random(0).sample(rest, max(0, MAX_POINTS - len(slow)))
    return slow + keep


def _frame(xlabel: str, ylabel: str) -> str:
    return (
        f'<rect x="{PAD}" y="{PAD}" width="{WIDTH - 2 * PAD}" height="{HEIGHT - 2 * PAD}" '
        f'fill="none" stroke="#999"/><text x="{WIDTH / 2}" y="{HEIGHT - 8}" font-size="11" '
        f'text-anchor="middle">{xlabel}</text><text x="12" y="{HEIGHT / 2}" font-size="11" '
        f'text-anchor="middle" transform="rotate(-90 12 {HEIGHT / 2})">{ylabel}</text>'
    )


def _y_ticks(lo: float, hi: float) -> list[str]:
    out = []
    v = lo
    while v <= hi * 1.0001:
        y = _log_y(v, lo, hi)
        out.append(
            f'<line x1="{PAD}" x2="{WIDTH - PAD}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
            f'<text x="{PAD - 4}" y="{y + 3:.1f}" font-size="10" text-anchor="end">{v:g}</text>'
        )
        v *= 10
    return out


def _nice_ticks(a: float, b: float) -> list[float]:
    span = b - a
    step = next(s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1e9) if span / s <= 10)
    first = math.ceil(a / step) * step
    return [first + i * step for i in range(int((b - first) / step) + 1)]


def _svg(parts: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}">{"".join(parts)}</svg>'
    )
