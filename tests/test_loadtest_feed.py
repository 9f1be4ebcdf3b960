"""The ``feed`` profiles (loadtest/feed.py): their checks can fail, and a run end to end.

The unit tests give the checks made-up figures: a delay over its same-run bound, too few
timed writes for a p99, a write never announced.  The end-to-end tests run the profile for
a few seconds, once as it is (it passes and reports its figures) and once with the
subscriber never subscribing (every write is missed, and the run fails saying so).
``feed-ci`` itself runs in ``nox -s loadtest``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loadtest.__main__ import build_parser, configure
from loadtest.checks import Summary
from loadtest.feed import (
    DELAY_CHECK,
    MIN_TIMED_WRITES,
    MISSED_CHECK,
    FeedState,
    FeedWrite,
    delay_check,
    missed_check,
)
from loadtest.profiles import PROFILES
from vestige.feed import FEED_POLL_S
from vestige.server.notify import NOTIFY_MIN_INTERVAL_S

#: Same-run figures the unit tests judge against (ms): a write and a changelog round trip.
WRITE = Summary.of([5.0] * 20 + [20.0])
READ = Summary.of([4.0] * 20 + [6.0])
BOUND_MS = WRITE.p99 + (NOTIFY_MIN_INTERVAL_S + FEED_POLL_S) * 1000 + READ.p99


def _write(n: int, *, noticed: float | None, seen: float | None) -> FeedWrite:
    w = FeedWrite(n, f"tok{n}", sent=float(n), timed=True, acked=n + 0.005, memory_id=f"id-{n}")
    w.noticed, w.seen = noticed, seen
    w.missed = not w.reached
    return w


class TestDelayBound:
    def test_delays_within_the_same_runs_bound_pass(self) -> None:
        check = delay_check([0.05] * 20 + [0.14], WRITE, READ, timed=21)
        assert check.ok, check.detail
        assert check.measure is not None
        assert check.measure.bound == pytest.approx(BOUND_MS)

    def test_a_notice_held_past_the_bound_fails(self) -> None:
        """A notifier that polled every second instead of every tenth would look like this."""
        check = delay_check([0.05] * 20 + [1.0], WRITE, READ, timed=21)
        assert check.failed
        assert check.name == DELAY_CHECK

    def test_too_few_timed_writes_noticed_cannot_pass(self) -> None:
        few = [0.05] * (MIN_TIMED_WRITES - 1)
        assert delay_check(few, WRITE, READ, timed=len(few)).failed
        # Every timed write must be among the delays: a missing one is not a fast one.
        assert delay_check([0.05] * 10, WRITE, READ, timed=11).failed

    def test_without_a_baseline_nothing_passes_and_nothing_is_drawn(self) -> None:
        check = delay_check([0.05] * 10, WRITE, Summary.of([]), timed=10)
        assert check.failed
        assert check.measure is None


class TestMissed:
    def test_every_write_noticed_and_read_passes(self) -> None:
        state = FeedState(writes=[_write(n, noticed=n + 0.1, seen=n + 0.11) for n in range(3)])
        check = missed_check(state)
        assert check.ok, check.detail
        assert check.name == MISSED_CHECK

    def test_a_write_never_announced_fails_naming_it(self) -> None:
        writes = [_write(n, noticed=n + 0.1, seen=n + 0.11) for n in range(3)]
        writes.append(_write(3, noticed=None, seen=None))
        check = missed_check(FeedState(writes=writes))
        assert check.failed
        assert "1 missed" in check.detail
        assert "id-3 (no notification)" in check.detail

    def test_a_write_announced_but_never_read_fails(self) -> None:
        """The notice came, but memory_changelog since_seq never returned the write."""
        check = missed_check(FeedState(writes=[_write(0, noticed=0.1, seen=None)]))
        assert check.failed
        assert "notified, never read" in check.detail

    def test_no_acknowledged_write_is_no_pass(self) -> None:
        assert missed_check(FeedState()).failed

    def test_a_notice_that_overtook_the_ack_counts_zero_from_the_ack(self) -> None:
        early = _write(0, noticed=0.003, seen=0.01)  # sent 0.0, acked 0.005
        state = FeedState(writes=[early])
        assert state.delays_from_ack() == [0.0]
        assert state.delays_from_send() == [pytest.approx(0.003)]


def test_the_fault_and_the_idle_window_are_feed_options() -> None:
    parser = build_parser()
    config = configure(parser.parse_args(["--profile", "feed-ci", "--idle-window", "3"]))
    assert config.profile.feed is not None
    assert config.profile.feed.idle_window_s == 3.0
    assert not config.no_subscribe
    with pytest.raises(ValueError, match="feed profiles"):
        configure(parser.parse_args(["--profile", "ci", "--inject-no-subscribe"]))
    feed, ci = PROFILES["feed"], PROFILES["feed-ci"]
    assert feed.duration_s > ci.duration_s
    assert feed.feed is not None
    assert ci.feed is not None
    assert feed.feed.idle_window_s > ci.feed.idle_window_s


# -- end to end --------------------------------------------------------------------------


def _run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VESTIGE_")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtest",
            "--profile",
            "feed-ci",
            *args,
            "--quiet",
            "--out",
            str(out),
            "--tmp",
            str(tmp_path / "tmp"),
        ],
        capture_output=True,
        text=True,
        timeout=280,
        env=env,
        check=False,
    )
    assert (out / "report.json").exists(), proc.stdout[-4000:] + proc.stderr[-4000:]
    run = json.loads((out / "report.json").read_text())["runs"][0]
    print(proc.stdout[-3000:])  # the figures, for the log of `nox -s loadtest` (pytest -rP)
    return proc, run


@pytest.mark.loadtest
@pytest.mark.multiprocess
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_tiny_feed_run_passes_and_reports_its_figures(tmp_path: Path) -> None:
    proc, run = _run(tmp_path, "--duration", "6", "--idle-window", "2")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "RESULT: PASS" in proc.stdout
    assert "notification delay after the ack: p50" in proc.stdout
    assert "CPU-s/min" in proc.stdout
    feed = run["feed"]
    assert feed["subscribed"] is True
    assert feed["missed"] == 0
    assert feed["writes_acknowledged"] > feed["writes_timed"] >= MIN_TIMED_WRITES
    for figure in ("p50_ms", "p99_ms", "max_ms"):
        assert feed["delay_after_ack"][figure] is not None
        assert feed["delay_after_send"][figure] >= feed["delay_after_ack"][figure]
    assert feed["idle"]["window_s"] >= 2.0
    assert feed["idle"]["watching_cpu_s_per_min"] >= 0.0
    assert run["errors"] == {}
    assert run["leftover_pids"] == []
    assert {c["name"] for c in run["checks"] if c["ok"]} >= {MISSED_CHECK, DELAY_CHECK}
    assert (tmp_path / "out" / "report.html").exists()
    assert not list((tmp_path / "tmp").iterdir())  # a passing run leaves no data behind


@pytest.mark.loadtest
@pytest.mark.multiprocess
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_subscriber_that_never_subscribed_fails_with_missed_writes(tmp_path: Path) -> None:
    """The same run with the subscription left out: no notification comes, so every write
    waits out its deadline and is reported missed (two writes keep that short)."""
    proc, run = _run(tmp_path, "--ops", "2", "--idle-window", "1", "--inject-no-subscribe")
    assert proc.returncode == 1, proc.stdout[-4000:] + proc.stderr[-4000:]
    feed = run["feed"]
    assert feed["subscribed"] is False
    assert feed["writes_acknowledged"] == 2
    assert feed["missed"] == 2
    assert feed["notifications"] == 0
    failed = {c["name"] for c in run["checks"] if not c["ok"] and not c["excused"]}
    assert failed == {MISSED_CHECK, DELAY_CHECK}
    assert f"FAILED feed: {MISSED_CHECK}: 2 acknowledged, 2 missed" in proc.stdout
    assert run["leftover_pids"] == []
