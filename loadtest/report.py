"""What a person sees at the end: a printed summary, a JSON report, and one HTML page.

The page reads in the order a person asks: did it pass; if not, which checks failed and by
how much; every check; the charts (loadtest/charts.py, from the optional ``loadtest``
extra); then the details of the run.  It is one file: inline CSS and SVG, no scripts,
nothing fetched.
"""

from __future__ import annotations

import html
import math
import os
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Final

from loadtest import attach, feed
from loadtest.checks import fairness
from loadtest.profiles import READ_OPS, WRITE_OPS

if TYPE_CHECKING:
    from loadtest.checks import Check, Measure
    from loadtest.runner import RunResult

CHARTS_HINT: Final = (
    "Charts need matplotlib, which is not installed: pip install 'vestige[loadtest]'"
)


# -- the verdict -------------------------------------------------------------------------


def passed(results: list[RunResult]) -> bool:
    """Every run checked something and no check failed."""
    return bool(results) and all(r.ok for r in results)


def state(c: Check) -> str:
    """``ok``, ``fail``, or ``info`` (did not pass, but may not fail the run)."""
    return "ok" if c.ok else "info" if c.excused else "fail"


def describe(m: Measure) -> str:
    """The value against its bound: ``95.0 ms > bound 50.0 ms (+90%)``."""
    unit = f" {m.unit}" if m.unit else ""
    word = "floor" if m.at_least else "bound"
    if math.isnan(m.value):
        return f"no value ({word} {fmt(m.bound)}{unit})"
    within = m.value >= m.bound if m.at_least else m.value <= m.bound
    sign = {(True, True): ">=", (True, False): "<", (False, True): "<=", (False, False): ">"}
    text = f"{fmt(m.value)}{unit} {sign[m.at_least, within]} {word} {fmt(m.bound)}{unit}"
    if not within and m.bound:
        text += f" ({(m.value - m.bound) / m.bound:+.0%})"
    return text


def _why(c: Check) -> str:
    return describe(c.measure) if c.measure is not None else c.detail


def result_html(c: Check) -> str:
    """What a check found; for a measure, its value against its bound and where that came from."""
    basis = c.measure.basis if c.measure is not None else ""
    return html.escape(_why(c)) + (f"<br><small>{html.escape(basis)}</small>" if basis else "")


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
        "attach": None if r.attach is None else attach.state_dict(r.attach),
        "feed": None if r.feed is None else feed.state_dict(r.feed),
        "checks": [c.to_dict() for c in r.checks],
    }


def _num(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 3)


def fmt(x: float) -> str:
    """A figure to three significant digits or so: 0.52, 14.5, 283."""
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
    failed = [f"{r.label}: {c.name}: {_why(c)}" for r in results for c in r.checks if c.failed]
    verdict = "PASS" if passed(results) else "FAIL"
    out.append(f"RESULT: {verdict}" + ("" if not failed else f" ({len(failed)} failed)"))
    out += [f"  FAILED {line}" for line in failed]
    return "\n".join(out)


def _run_text(r: RunResult) -> list[str]:
    lines = _run_details(r)
    lines.append("checks:")
    for check in r.checks:
        mark = {"ok": "ok  ", "fail": "FAIL", "info": "info"}[state(check)]
        lines.append(f"  [{mark}] {check.name}: {check.detail}")
    return lines


def _run_details(r: RunResult) -> list[str]:
    """Everything but the checks: operations, machine, servers, ledger, errors, faults."""
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
            f"{kind:<18}{summ.count:>7}{errors.get(kind, 0):>8}{fmt(summ.p50):>9}"
            f"{fmt(summ.p95):>9}{fmt(summ.p99):>9}{fmt(summ.max):>9}"
        )
    for label, kinds in (("all writes", WRITE_OPS), ("all reads", READ_OPS)):
        summ = r.summary_of(kinds)
        lines.append(
            f"{label:<18}{summ.count:>7}{'':>8}{fmt(summ.p50):>9}{fmt(summ.p95):>9}"
            f"{fmt(summ.p99):>9}{fmt(summ.max):>9}"
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
    if r.feed is None:  # one writer and one reader: the figures are in feed's lines
        lines.append(
            "per server: "
            + "  ".join(
                f"{s.name} {rates.get(s.name, 0):.1f} writes/s, p99 "
                f"{fmt(r.summary_of(WRITE_OPS, s.name).p99)} ms, pids {len(s.pids)}"
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
    if r.attach is not None and p.attach is not None:
        lines += attach.summary_lines(r.attach, p.attach, r.load_started)
    if r.feed is not None:
        lines += feed.summary_lines(r.feed)
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
        lines.append(f"{name:<26}{fmt(a):>16}{fmt(b):>16}{fmt(ratio):>9}")
    return lines


# -- HTML --------------------------------------------------------------------------------

STYLE: Final = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1200px;padding:0 16px;
color:#222}
h1{font-size:20px;margin:0 0 12px}h2{margin-top:32px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:20px 0 6px}
.banner{padding:14px 18px;border-radius:6px;color:#fff;font-size:22px;font-weight:600}
.banner small{display:block;font-size:14px;font-weight:400;color:#fff}
.banner.ok{background:#2e7d32}.banner.fail{background:#c62828}
ul.failed{background:#fdecea;border-left:5px solid #c62828;padding:10px 12px 10px 32px}
ul.failed li{margin:4px 0}small{color:#555}
table{border-collapse:collapse;width:100%;font-size:13px}
td,th{text-align:left;padding:3px 8px;border-bottom:1px solid #eee;vertical-align:top}
tr.fail{background:#fdecea}tr.info{background:#f4f4f4;color:#555}
b.ok,td.ok{color:#2e7d32}b.fail,td.fail{color:#c62828;font-weight:600}b.info,td.info{color:#777}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:10px}
.row{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
figure{margin:0}figcaption{font-size:13px}svg{max-width:100%;height:auto}
.hint{background:#fff8e1;border-left:5px solid #f9a825;padding:10px 14px}
pre{background:#f6f6f6;padding:10px;overflow-x:auto;font-size:12px}
"""


def html_page(results: list[RunResult], title: str) -> str:
    """Verdict, failed checks, every check, charts, details: one self-contained page."""
    e = html.escape
    body = [f"<h1>{e(title)}</h1>", _banner(results), _failed_list(results)]
    for r in results:
        heading = f"Checks: {r.label}" if len(results) > 1 else "Checks"
        body += [f"<h2>{e(heading)}</h2>", _checks_table(r)]
    body.append(_charts(results))
    body.append("<h2>Details</h2>")
    for r in results:
        profile = "\n".join(f"{k}: {v}" for k, v in asdict(r.config.profile).items())
        body.append(
            f"<h3>{e(r.label)}</h3><pre>{e(chr(10).join(_run_details(r)).strip())}</pre>"
            f"<details><summary>profile {e(r.config.profile.name)}</summary>"
            f"<pre>{e(profile)}</pre></details>"
        )
    if len(results) == 2:
        body.append(f"<pre>{e(chr(10).join(_side_by_side(*results)).strip())}</pre>")
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>{e(title)}</title>"
        f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>"
    )


def _banner(results: list[RunResult]) -> str:
    checks = [c for r in results for c in r.checks]
    failed = sum(c.failed for c in checks)
    info = sum(state(c) == "info" for c in checks)
    verdict = "ok" if passed(results) else "fail"
    if verdict == "ok":
        head = f"PASS: all {len(checks)} checks passed"
    elif checks:
        head = f"FAIL: {failed} of {len(checks)} checks failed"
    else:
        head = "FAIL: nothing was checked"
    runs = "; ".join(
        f"{r.label}: {r.config.profile.servers} servers, {r.load_s:.0f} s, "
        f"{r.recorder.ops} MCP calls" + ("" if r.ok else f"; data kept in {r.config.workdir}")
        for r in results
    )
    extra = f" ({info} reported as info only)" if info else ""
    return f"<div class='banner {verdict}'>{head}{extra}<small>{html.escape(runs)}</small></div>"


def _failed_list(results: list[RunResult]) -> str:
    items = []
    for r in results:
        for c in r.checks:
            if not c.failed:
                continue
            who = f"{r.label}: " if len(results) > 1 else ""
            items.append(f"<li><b>{html.escape(who + c.name)}</b>: {result_html(c)}</li>")
    return f"<h2>Failed</h2><ul class=failed>{''.join(items)}</ul>" if items else ""


def _checks_table(r: RunResult) -> str:
    """One row per check; a measured check shows its value against its bound and why."""
    rows = [
        f"<tr class={state(c)}><td class={state(c)}>{state(c)}</td>"
        f"<td>{html.escape(c.name)}</td><td>{result_html(c)}</td></tr>"
        for c in r.checks
    ]
    return "<table><tr><th></th><th>check</th><th>result</th></tr>" + "".join(rows) + "</table>"


def _charts(results: list[RunResult]) -> str:
    try:
        from loadtest.charts import run_charts  # noqa: PLC0415 - matplotlib is optional
    except ImportError:
        return f"<h2>Charts</h2><p class=hint>{html.escape(CHARTS_HINT)}</p>"
    if len(results) == 1:
        return f"<h2>Charts</h2>{run_charts(results[0])}"
    return "".join(f"<h2>Charts: {html.escape(r.label)}</h2>{run_charts(r)}" for r in results)
