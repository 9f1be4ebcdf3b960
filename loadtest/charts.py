"""The page's charts, drawn with matplotlib (the optional ``loadtest`` extra).

Importing this module fails without matplotlib; the page then shows the verdict and the
checks, and says how to get the charts.  Figures are built with the object-oriented API,
never pyplot: no GUI backend, no global list of open figures.  Each one is inlined as SVG
with its text kept as text (the page stays searchable) and dense point clouds rasterized
inside it (the page stays small).

What is drawn follows the checks: every check that carries a :class:`Measure` gets its
value against its bound; the latency checks also mark their bounds on the latency over
time and on the histogram; the WAL and fairness checks mark theirs on their own charts.
"""

from __future__ import annotations

import functools
import html
import io
import math
import random
from typing import TYPE_CHECKING, Final, ParamSpec

import matplotlib as mpl
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from loadtest.checks import percentile
from loadtest.profiles import MCP_OPS, READ_OPS, WRITE_OPS
from loadtest.report import fmt, result_html, state

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from matplotlib.axes import Axes
    from matplotlib.axis import Axis

    from loadtest.checks import Check, Measure
    from loadtest.runner import RunResult
    from loadtest.workload import Sample

P = ParamSpec("P")

COLOUR: Final = {"ok": "#2e7d32", "fail": "#c62828", "info": "#8d8d8d"}
CALLS, ERRORS, FAULT, LINE = "#1f77b4", "#c62828", "#7b1fa2", "#37474f"
#: Points per latency chart; the slowest 1 % and every error are always kept.
MAX_POINTS: Final = 20_000
MIB: Final = 2**20
#: How the charts find the checks they draw the bounds of (names from loadtest/checks.py).
LATENCY_CHECK: Final = "latency: {}"
WAL_CHECK: Final = "WAL"
FAIRNESS_CHECK: Final = "fairness"


def run_charts(r: RunResult) -> str:
    """Every chart of one run, as HTML figures, in the order a person asks about them."""
    origin = r.load_started
    faults = [(f.at - origin, f.kind) for f in r.faults]
    measured = [c for c in r.checks if c.measure is not None]
    parts = []
    if measured:
        parts.append("<h3>Every measured check against its bound</h3><div class=grid>")
        for c in sorted(measured, key=lambda c: state(c) != "fail"):
            assert c.measure is not None
            parts.append(_figure(measure_bar(c.measure, state(c)), _caption(c)))
        parts.append("</div>")
    for label, kinds in (("Write", WRITE_OPS), ("Read", READ_OPS)):
        samples = [s for s in r.recorder.samples if s.kind in kinds]
        if not samples:
            continue
        bounds = [c for c in measured if c.name.startswith(LATENCY_CHECK.format(label.lower()))]
        parts.append(
            f"<h3>{label} latency (every {label.lower()} call: {', '.join(kinds)})</h3>"
            "<div class=row>"
            + _figure(latency_over_time(samples, origin, faults, bounds))
            + _figure(latency_histogram([s.latency_ms for s in samples], bounds))
            + "</div>"
        )
    parts.append("<div class=row>")
    if r.recorder.wal_sizes:
        wal = _named(measured, WAL_CHECK)
        parts.append(
            "<div><h3>WAL size</h3>"
            + _figure(wal_over_time(r.recorder.wal_sizes, origin, faults, wal))
            + "</div>"
        )
    rates = r.write_rates()
    if rates:
        fair = _named(measured, FAIRNESS_CHECK)
        parts.append("<div><h3>Fairness</h3>" + _figure(fairness_bars(rates, fair)) + "</div>")
    parts.append("</div>")
    if r.recorder.samples:
        parts.append("<h3>Every operation kind</h3>" + _figure(operation_ranges(r)))
    return "".join(parts)


def _named(checks: list[Check], prefix: str) -> Check | None:
    return next((c for c in checks if c.name.startswith(prefix)), None)


def _figure(svg: str, caption: str = "") -> str:
    return f"<figure>{caption and f'<figcaption>{caption}</figcaption>'}{svg}</figure>"


def _caption(c: Check) -> str:
    return f"<b class={state(c)}>{html.escape(c.name)}</b><br>{result_html(c)}"


# -- drawing -----------------------------------------------------------------------------


def _drawn(draw: Callable[P, Figure]) -> Callable[P, str]:
    """Draw under the page's style and return the figure as inline SVG."""

    @functools.wraps(draw)
    def as_svg(*args: P.args, **kwargs: P.kwargs) -> str:
        with mpl.rc_context(
            {
                "svg.fonttype": "none",
                "font.family": "sans-serif",
                "font.size": 8.5,
                "axes.titlesize": 9,
                "axes.spines.top": False,
                "axes.spines.right": False,
                "axes.grid": True,
                "grid.color": "#e8e8e8",
                "legend.fontsize": 7.5,
                "legend.frameon": False,
                "savefig.dpi": 110,
            }
        ):
            fig = draw(*args, **kwargs)
            out = io.StringIO()
            fig.savefig(out, format="svg", metadata={"Date": None})
        text = out.getvalue()
        return text[text.index("<svg") :]

    return as_svg


@_drawn
def measure_bar(m: Measure, verdict: str) -> Figure:
    """The value as a bar, the bound as a line, the failing side shaded."""
    fig = Figure(figsize=(3.6, 0.95), layout="constrained")
    ax = fig.add_subplot()
    top = max(m.bound, 0.0 if math.isnan(m.value) else m.value) * 1.3 or 1.0
    if m.at_least:
        ax.axvspan(0, m.bound, color=COLOUR["fail"], alpha=0.08, lw=0)
    else:
        ax.axvspan(m.bound, top, color=COLOUR["fail"], alpha=0.08, lw=0)
    if not math.isnan(m.value):
        ax.barh(0, m.value, height=0.6, color=COLOUR[verdict])
    ax.axvline(m.bound, color=LINE, lw=1.5)
    ax.text(m.bound, 0.52, " floor" if m.at_least else " bound", va="bottom", fontsize=7.5)
    ax.set(xlim=(0, top), ylim=(-0.6, 0.9), yticks=[], xlabel=m.unit)
    ax.grid(False)
    ax.spines["left"].set_visible(False)
    return fig


@_drawn
def latency_over_time(
    samples: Sequence[Sample], origin: float, faults: list[tuple[float, str]], bounds: list[Check]
) -> Figure:
    """Every call (log scale), errors in red, the p99 per time slice, faults and bounds."""
    fig = Figure(figsize=(7.6, 3.0), layout="constrained")
    ax = fig.add_subplot()
    shown = _thin(samples)
    for failed, colour, label in ((False, CALLS, "call"), (True, ERRORS, "error")):
        points = [s for s in shown if (s.error is not None) == failed]
        if points:
            ax.scatter(
                [s.t - origin for s in points],
                [max(s.latency_ms, 0.01) for s in points],
                s=5 if not failed else 14,
                color=colour,
                alpha=0.45 if not failed else 0.9,
                marker="o" if not failed else "x",
                lw=0 if not failed else 1,
                label=label,
                rasterized=True,
            )
    width, slices, p99s = _p99_per_slice(samples, origin)
    ax.plot(slices, p99s, color=LINE, lw=1.2, drawstyle="steps-mid", label=f"p99 per {width:.0f} s")
    _bound_lines(ax, bounds, horizontal=True)
    _fault_marks(ax, faults)
    ax.set(yscale="log", xlabel="seconds since the load started", ylabel="latency (ms)")
    ax.set_ylim(_decades([s.latency_ms for s in samples] + _values(bounds)))
    _plain(ax.yaxis)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


@_drawn
def latency_histogram(values: list[float], bounds: list[Check]) -> Figure:
    """How the latencies are spread (log bins), with the p50, p99 and bounds marked."""
    fig = Figure(figsize=(4.2, 3.0), layout="constrained")
    ax = fig.add_subplot()
    values = [max(v, 0.01) for v in values]
    lo, hi = min(values), max(values) * 1.01
    edges = [lo * (hi / lo) ** (i / 40) for i in range(41)]
    ax.hist(values, bins=edges, color=CALLS)
    ordered = sorted(values)
    for q, style in ((50, ":"), (99, "-")):
        v = percentile(ordered, q)
        ax.axvline(v, color=LINE, ls=style, lw=1, label=f"p{q} {fmt(v)} ms")
    _bound_lines(ax, bounds, horizontal=False)
    ax.set(xscale="log", xlabel="latency (ms)", ylabel="calls")
    ax.set_xlim(_decades(values + _values(bounds)))
    _plain(ax.xaxis)
    fig.legend(loc="outside upper center", ncols=2)
    return fig


@_drawn
def wal_over_time(
    sizes: list[tuple[float, int]],
    origin: float,
    faults: list[tuple[float, str]],
    check: Check | None,
) -> Figure:
    """vestige.db-wal over time: checkpoints show as drops; the bound if it is in view."""
    fig = Figure(figsize=(5.6, 2.6), layout="constrained")
    ax = fig.add_subplot()
    ts = [t - origin for t, _ in sizes]
    mib = [b / MIB for _, b in sizes]
    ax.fill_between(ts, mib, step="post", color=CALLS, alpha=0.25, lw=0)
    ax.step(ts, mib, where="post", color=CALLS, lw=1)
    top = max(mib) * 1.25 or 1.0
    if check is not None and check.measure is not None:
        m = check.measure
        if m.bound <= top * 2:
            top = max(top, m.bound * 1.1)
            ax.axhline(m.bound, color=COLOUR[state(check)], ls="--", label=f"bound {m.bound:g} MiB")
            ax.legend(loc="upper left")
        else:
            ax.set_title(
                f"peak {max(mib):.1f} MiB; bound {m.bound:g} MiB is off the scale",
                loc="left",
                color=COLOUR[state(check)],
            )
    _fault_marks(ax, faults)
    ax.set(ylim=(0, top), xlabel="seconds since the load started", ylabel="WAL (MiB)")
    return fig


@_drawn
def fairness_bars(rates: dict[str, float], check: Check | None) -> Figure:
    """Acknowledged writes per connected second, per server; the floor is floor x fastest."""
    names = sorted(rates, reverse=True)
    fig = Figure(figsize=(4.6, 0.9 + 0.3 * len(names)), layout="constrained")
    ax = fig.add_subplot()
    fastest = max(rates.values())
    m = check.measure if check is not None else None
    slow = {n for n in names if m is not None and rates[n] < m.bound * fastest}
    ax.barh(
        names,
        [rates[n] for n in names],
        height=0.6,
        color=[COLOUR["fail"] if n in slow else CALLS for n in names],
    )
    title = f"slowest / fastest = {min(rates.values()) / fastest:.2f}" if fastest else "no writes"
    if check is not None and m is not None:
        ax.axvline(m.bound * fastest, color=COLOUR[state(check)], ls="--", lw=2)
        ax.text(
            m.bound * fastest,
            1.0,
            f" floor: {m.bound:g} x fastest",
            transform=ax.get_xaxis_transform(),
            fontsize=7.5,
            va="bottom",
        )
        title += f", floor {m.bound:g}"
    ax.set_title(title, loc="left", pad=14)
    ax.set(xlabel="acknowledged writes per connected second")
    ax.grid(axis="y", visible=False)
    return fig


@_drawn
def operation_ranges(r: RunResult) -> Figure:
    """Every kind of timed call on one log axis: p50 to p99 as a bar, the max as a tick."""
    summaries = r.summaries()
    kinds = sorted(summaries, key=lambda k: (k not in MCP_OPS, k), reverse=True)
    fig = Figure(figsize=(7.6, 0.6 + 0.22 * len(kinds)), layout="constrained")
    ax = fig.add_subplot()
    for y, kind in enumerate(kinds):
        s = summaries[kind]
        lo, hi = max(s.p50, 0.01), max(s.p99, 0.01)
        ax.plot([lo, hi], [y, y], color=CALLS, lw=5, solid_capstyle="butt")
        ax.plot([max(s.max, 0.01)], [y], marker="|", ms=9, color=LINE)
        ax.text(
            max(s.max, 0.01) * 1.15,
            y,
            f"{s.count} call{'s' * (s.count != 1)}",
            va="center",
            fontsize=7,
        )
    ax.set_yticks(range(len(kinds)), kinds)
    ax.set(xscale="log", xlabel="latency (ms): p50 to p99 as a bar, max as a tick")
    ax.set_xlim(
        _decades(
            [max(s.p50, 0.01) for s in summaries.values()] + [s.max * 2 for s in summaries.values()]
        )
    )
    _plain(ax.xaxis)
    ax.grid(axis="y", visible=False)
    return fig


def _bound_lines(ax: Axes, bounds: list[Check], *, horizontal: bool) -> None:
    """A dashed line per bound, green if it held, red if not; named on the line or in the
    legend (vertical lines)."""
    for c in bounds:
        if c.measure is None:
            continue
        colour = COLOUR[state(c)]
        label = f"{c.name.removeprefix('latency: ')} bound {fmt(c.measure.bound)} {c.measure.unit}"
        if horizontal:
            ax.axhline(c.measure.bound, color=colour, ls="--", lw=1.3)
            ax.text(
                0.995,
                c.measure.bound,
                label,
                transform=ax.get_yaxis_transform(),
                color=colour,
                fontsize=7.5,
                ha="right",
                va="bottom",
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1},
            )
        else:
            ax.axvline(c.measure.bound, color=colour, ls="--", lw=1.3, label=label)


def _values(bounds: list[Check]) -> list[float]:
    return [c.measure.bound for c in bounds if c.measure is not None]


def _decades(values: list[float]) -> tuple[float, float]:
    """Limits on whole decades around ``values``: a log axis always gets labelled ticks."""
    lo = math.floor(math.log10(max(min(values) * 0.9, 0.01)))
    hi = math.ceil(math.log10(max(*values, 0.01) * 1.1))
    return 10.0**lo, 10.0 ** max(hi, lo + 1)


def _plain(axis: Axis) -> None:
    """Ticks read 0.1, 1, 10, 100 rather than powers of ten, and no minor tick labels."""
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _fault_marks(ax: Axes, faults: list[tuple[float, str]]) -> None:
    """A dashed line with the fault's name at each fault moment (names staggered)."""
    for i, (t, kind) in enumerate(sorted(faults)):
        ax.axvline(t, color=FAULT, ls=(0, (4, 3)), lw=1)
        ax.text(
            t,
            0.98 - 0.08 * (i % 3),
            f" {kind}",
            transform=ax.get_xaxis_transform(),
            color=FAULT,
            fontsize=7.5,
            va="top",
        )


def _p99_per_slice(
    samples: Sequence[Sample], origin: float
) -> tuple[float, list[float], list[float]]:
    """The p99 of each time slice (about 40 per run, at least 1 s) with enough calls."""
    ts = [s.t - origin for s in samples]
    width = float(max(1, round((max(ts) - min(ts)) / 40)))
    slices: dict[int, list[float]] = {}
    for t, s in zip(ts, samples, strict=True):
        slices.setdefault(math.floor(t / width), []).append(s.latency_ms)
    kept = sorted((i, sorted(v)) for i, v in slices.items() if len(v) >= 5)
    return width, [(i + 0.5) * width for i, _ in kept], [percentile(v, 99) for _, v in kept]


def _thin(samples: Sequence[Sample]) -> list[Sample]:
    if len(samples) <= MAX_POINTS:
        return list(samples)
    cut = sorted(s.latency_ms for s in samples)[int(len(samples) * 0.99)]
    slow = [s for s in samples if s.latency_ms >= cut or s.error]
    rest = [s for s in samples if s.latency_ms < cut and not s.error]
    return slow + random.Random(0).sample(rest, max(0, MAX_POINTS - len(slow)))
