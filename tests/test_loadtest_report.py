"""The load test's report page, built from recorded runs (no servers are started).

A person opens report.html to learn whether the run passed and, if not, what failed and by
how much.  These tests hold the page to that: the verdict comes first, a failing check
shows its value against its bound, every measured check is drawn against its bound, and
without matplotlib the page still gives the verdict and says how to get the charts.
"""

from __future__ import annotations

import html
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest import report
from loadtest.checks import Check, Measure
from loadtest.faults import FaultEvent
from loadtest.profiles import PROFILES
from loadtest.runner import RunConfig, RunResult, ServerSlot
from loadtest.workload import Sample

ROOT = Path(__file__).resolve().parent.parent
ORIGIN = 50.0  # run-clock time the load started
LOAD_S = 15.0
BASIS = "3 x idle read p99 (4.1 ms) + 20 ms"


def recorded_run(
    workdir: Path, *, write_p99_ms: float = 12.0, label: str = "shared writers"
) -> RunResult:
    """A run as the runner leaves it: samples, WAL sizes, faults, servers and checks.

    Writes take a few ms; 2 % take ``write_p99_ms`` (so that is the p99 the checks carry).
    """
    config = RunConfig(PROFILES["short"], ["vestige-mcp"], ["vestige"], workdir, progress=False)
    r = RunResult(label, config, "lttest", load_started=ORIGIN, load_s=LOAD_S)
    rng = random.Random(7)
    for i in range(900):
        t = ORIGIN + i * LOAD_S / 900
        kind = rng.choice(("ingest", "ingest", "delete", "get", "search"))
        slow = kind in ("ingest", "delete") and rng.random() < 0.02
        ms = write_p99_ms if slow else rng.uniform(2.0, 9.0)
        r.recorder.add(Sample(t, kind, f"s{i % 2}", ms, "timeout" if i == 400 else None))
    r.recorder.add(Sample(ORIGIN + 3, "cli_backup", "cli", 240.0))
    r.recorder.wal_sizes = [(ORIGIN + i / 4, min(i, 16) * 2**18) for i in range(60)]
    r.recorder.load_averages = [(ORIGIN, 0.8), (ORIGIN + 10, 1.4)]
    r.faults = [
        FaultEvent(ORIGIN + 3, "exclusive-launch", "pid 11", ok=True, detail="exit 3"),
        FaultEvent(ORIGIN + 7, "kill-server", "s1 pid 12", ok=True, detail="restarted"),
    ]
    r.slots = [ServerSlot("s0", pids=[10], connected_s=LOAD_S)]
    r.slots.append(ServerSlot("s1", pids=[12, 13], connected_s=LOAD_S - 1))
    r.ledger_counts = {"write_acked": 300}
    bound = 50.0
    r.checks = [
        Check("integrity_check after the run", True, "ok"),
        Check("no other error reached a client", True, "none"),
        Check(
            "latency: write p99",
            write_p99_ms <= bound,
            f"{write_p99_ms:.1f} ms",
            measure=Measure(write_p99_ms, bound, "ms", BASIS),
        ),
        Check("latency: write max", True, "", measure=Measure(write_p99_ms, 1000.0, "ms")),
        Check(
            "fairness: min/max writes per second per server",
            True,
            "",
            measure=Measure(0.93, 0.5, "", "fixed floor", at_least=True),
        ),
        Check("WAL size stayed bounded", True, "", measure=Measure(4.0, 64.0, "MiB")),
    ]
    return r


@pytest.fixture(scope="module")
def failing(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunResult, str]:
    """A run whose write p99 (95 ms) is over its bound (50 ms), and its page (drawn once)."""
    run = recorded_run(tmp_path_factory.mktemp("failing"), write_p99_ms=95.0)
    return run, report.html_page([run], "load test")


def figures_by_caption(page: str) -> dict[str, str]:
    """{caption text: figure html} for every captioned figure of the page."""
    found = re.findall(r"<figure><figcaption>(.*?)</figcaption>(.*?)</figure>", page, re.S)
    return {html.unescape(re.sub("<[^>]+>", " ", cap)): body for cap, body in found}


@pytest.mark.slow
def test_a_failing_run_leads_with_the_verdict_and_the_numbers(
    failing: tuple[RunResult, str],
) -> None:
    page = failing[1]
    banner = page.index("class='banner fail'")
    failed = page.index("<ul class=failed>")
    assert banner < failed < page.index("<table") < page.index("<svg") < page.index("Details")
    assert "FAIL: 1 of 6 checks failed" in page
    listed = html.unescape(page[failed : page.index("</ul>", failed)])
    assert "latency: write p99</b>: 95.0 ms > bound 50.0 ms (+90%)" in listed
    assert BASIS in listed
    assert "fairness" not in listed  # only the failures are listed
    assert "<tr class=fail><td class=fail>fail</td><td>latency: write p99" in page


@pytest.mark.slow
def test_a_passing_run_says_so_and_lists_no_failure(tmp_path: Path) -> None:
    page = report.html_page([recorded_run(tmp_path)], "load test")
    assert "class='banner ok'>PASS: all 6 checks passed" in page
    assert "<ul class=failed>" not in page
    assert "<tr class=fail>" not in page
    assert "<script" not in page  # one file: no scripts, nothing fetched
    for ref in re.findall(r'(?:href|src)="([^"]*)"', page):
        assert ref.startswith(("#", "data:")), ref


@pytest.mark.slow
def test_every_measured_check_is_drawn_against_its_bound(failing: tuple[RunResult, str]) -> None:
    run, page = failing
    charts = figures_by_caption(page)
    measured = [c for c in run.checks if c.measure is not None]
    for check in measured:
        assert check.measure is not None
        caption = next(cap for cap in charts if cap.startswith(f" {check.name} "))
        assert report.describe(check.measure) in caption
        assert "<svg" in charts[caption]
        assert re.search(r">\s*(bound|floor)</text>", charts[caption])
    assert BASIS in next(cap for cap in charts if "write p99" in cap)
    assert not any(c.name in cap for c in run.checks if c.measure is None for cap in charts)


@pytest.mark.slow
def test_the_latency_charts_mark_bounds_and_faults(failing: tuple[RunResult, str]) -> None:
    page = failing[1]
    start = page.index("<h3>Write latency")
    writes = page[start : page.index("<h3>Read latency")]
    assert writes.count("<svg") == 2  # over time, and the histogram
    assert writes.count(">write p99 bound 50.0 ms<") == 2
    assert writes.count(">write max bound 1000 ms<") == 2
    assert "kill-server" in writes
    assert "exclusive-launch" in writes
    assert "p99 95.0 ms" in writes  # the histogram marks the measured p99
    wal = page[page.index("<h3>WAL size") :]
    assert "bound 64 MiB is off the scale" in wal
    assert "floor: 0.5 x fastest" in wal  # the fairness chart follows


def test_the_text_summary_ends_with_what_failed_and_by_how_much(tmp_path: Path) -> None:
    text = report.text_summary([recorded_run(tmp_path, write_p99_ms=95.0)])
    assert text.splitlines()[-2:] == [
        "RESULT: FAIL (1 failed)",
        "  FAILED shared writers: latency: write p99: 95.0 ms > bound 50.0 ms (+90%)",
    ]


@pytest.mark.parametrize(
    ("measure", "text"),
    [
        (Measure(95.0, 50.0, "ms"), "95.0 ms > bound 50.0 ms (+90%)"),
        (Measure(37.25, 50.0, "ms"), "37.2 ms <= bound 50.0 ms"),
        (Measure(0.3, 0.5, "", at_least=True), "0.30 < floor 0.50 (-40%)"),
        (Measure(0.8, 0.5, "", at_least=True), "0.80 >= floor 0.50"),
        (Measure(float("nan"), 50.0, "ms"), "no value (bound 50.0 ms)"),
    ],
)
def test_a_measure_reads_as_value_against_bound(measure: Measure, text: str) -> None:
    assert report.describe(measure) == text


def test_a_run_that_checked_nothing_fails_and_still_renders(tmp_path: Path) -> None:
    config = RunConfig(PROFILES["short"], ["vestige-mcp"], ["vestige"], tmp_path, progress=False)
    page = report.html_page([RunResult("shared writers", config, "lttest")], "load test")
    assert "FAIL: nothing was checked" in page
    assert "RESULT: FAIL" in report.text_summary([RunResult("shared writers", config, "x")])


@pytest.mark.slow
def test_with_a_baseline_both_runs_are_named_and_compared(tmp_path: Path) -> None:
    naive = recorded_run(tmp_path, write_p99_ms=95.0, label="naive baseline")
    naive.checks[2].excused = True  # the baseline's latency is reported, not enforced
    page = report.html_page([recorded_run(tmp_path), naive], "load test")
    assert "PASS: all 12 checks passed (1 reported as info only)" in page
    assert "<h2>Checks: naive baseline</h2>" in page
    assert "<tr class=info><td class=info>info</td><td>latency: write p99" in page
    assert "<h2>Charts: naive baseline</h2>" in page
    assert page.count("<h3>Write latency") == 2
    assert "== side by side" in page


@pytest.mark.slow
def test_without_matplotlib_the_page_still_gives_the_verdict(tmp_path: Path) -> None:
    """matplotlib is an optional extra: the page keeps the verdict and says how to get charts."""
    script = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from pathlib import Path\n"
        "from loadtest import report\n"
        "from tests.test_loadtest_report import recorded_run\n"
        f"run = recorded_run(Path({str(tmp_path)!r}), write_p99_ms=95.0)\n"
        "print(report.html_page([run], 'load test'))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    page = proc.stdout
    assert "FAIL: 1 of 6 checks failed" in page
    assert "95.0 ms &gt; bound 50.0 ms (+90%)" in page
    assert "pip install &#x27;vestige[loadtest]&#x27;" in page
    assert "<svg" not in page
    assert page.index("<ul class=failed>") < page.index("<table") < page.index("class=hint")
