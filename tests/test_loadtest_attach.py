"""The ``attach`` profile's own logic (loadtest/attach.py), and its run end to end.

The unit tests prove its checks can fail: a write stored twice, an acknowledged delete still
there, a proxy that never answered after a kill, a failover slower than the same run's cold
start plus its room, a duplicate spawn whose launches were too far apart, and an owner pick
that would take a proxy (or an unproved or foreign holder) for the owner.  One test kills a
real detached ``vestige-mcp`` the way the profile kills an owner: found by ``vestige doctor
--json``, pinned by a pidfd.  The profile itself runs in ``nox -s loadtest`` (``attach-ci``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

from loadtest import attach, changelog
from loadtest.__main__ import build_parser, configure
from loadtest.attach import (
    EXACTLY_ONCE_CHECK,
    Answer,
    OwnerSeen,
    exactly_once,
    failover_check,
    failover_times,
    judge_duplicate,
    open_owner,
    pick_owner,
    wait_gone,
)
from loadtest.ledger import Ledger
from loadtest.profiles import PROFILES, AttachPlan

MARKER = "ltatt"


def _acked(ledger: Ledger, n: int) -> tuple[str, str]:
    token = f"{MARKER}p0n{n:07d}"
    text = f"{token} words {n}"
    record = ledger.begin_write(token, text, op="ingest", slot="p0", at=0.5)
    ledger.acknowledge(record, f"id-{n}", at=1.0)
    return token, text


def _export(memories: dict[str, str]) -> changelog.Export:
    lines = [json.dumps({"id": mid, "content": text}) for mid, text in memories.items()]
    return changelog.Export.parse(lines)


# -- exactly once --------------------------------------------------------------------------


class TestExactlyOnce:
    def test_every_acknowledged_write_once_passes(self) -> None:
        ledger = Ledger(MARKER)
        memories = {f"id-{n}": _acked(ledger, n)[1] for n in range(4)}
        verdict = exactly_once(ledger, _export(memories))
        assert verdict.ok
        assert verdict.counts["present"] == 4
        assert verdict.name == EXACTLY_ONCE_CHECK

    def test_a_write_applied_twice_is_a_duplicate(self) -> None:
        """A retried ingest the owner applied again: the same text under a second id."""
        ledger = Ledger(MARKER)
        memories = {f"id-{n}": _acked(ledger, n)[1] for n in range(3)}
        memories["id-retried"] = memories["id-1"]
        verdict = exactly_once(ledger, _export(memories))
        assert not verdict.ok
        assert verdict.counts["duplicate"] == 1
        assert f"{MARKER}p0n0000001 stored 2 times" in verdict.problems[0]
        check = attach.verdict_check(verdict, "exactly once")
        assert check.failed

    def test_a_lost_write_and_a_resurrected_delete_fail(self) -> None:
        ledger = Ledger(MARKER)
        memories = {f"id-{n}": _acked(ledger, n)[1] for n in range(3)}
        deleted = ledger.by_id["id-2"]
        ledger.acknowledge_change(ledger.begin_delete(deleted, at=2.0), at=2.1)
        del memories["id-0"]
        verdict = exactly_once(ledger, _export(memories))
        assert verdict.counts["lost"] == 1
        assert verdict.counts["resurrected"] == 1
        assert not verdict.ok

    def test_the_changelog_catches_a_promote_applied_twice(self) -> None:
        """A retried promote leaves no second row, but a second changelog entry."""
        ledger = Ledger(MARKER)
        _, text = _acked(ledger, 1)
        record = ledger.by_id["id-1"]
        ledger.acknowledge_change(ledger.begin_touch(record, "promote", at=2.0), at=2.1)
        lines = [json.dumps({"id": "id-1", "content": text})]
        lines += [
            json.dumps({"change": {"kind": kind, "memory_id": "id-1", "origin": f"db:{seq}"}})
            for seq, kind in enumerate(("created", "promoted", "promoted"), 1)
        ]
        verdict = changelog.entries_verdict(ledger, changelog.Export.parse(lines))
        assert verdict.counts["duplicated"] == 1
        assert not verdict.ok


# -- failover --------------------------------------------------------------------------------


class TestFailover:
    def test_the_first_answer_to_a_call_sent_after_the_kill_times_it(self) -> None:
        answers = [
            Answer("p0", 9.0, 10.05, True),  # in flight at the kill: not a failover answer
            Answer("p0", 10.0, 11.2, True),
            Answer("p0", 10.5, 11.0, True),  # the first answer after the kill
            Answer("p1", 10.0, 10.8, False),  # an error answers nothing
            Answer("p1", 10.2, 12.5, True),
            Answer("p2", 9.9, 10.4, True),  # sent before the kill
        ]
        times = failover_times(10.0, answers, ["p0", "p1", "p2"])
        assert times["p0"] == pytest.approx(1.0)
        assert times["p1"] == pytest.approx(2.5)
        assert times["p2"] is None

    def test_the_bound_is_the_cold_start_p99_plus_the_room(self) -> None:
        cold = [1.0, 1.2, 1.4]
        ok = failover_check([0.4, 0.9, 1.9], cold, 0.5)
        assert ok.ok
        assert ok.detail.startswith("PASS")
        assert ok.measure is not None
        assert ok.measure.bound == pytest.approx(1900.0)
        miss = failover_check([0.4, 0.9, 1.95], cold, 0.5)
        assert miss.failed
        assert miss.detail.startswith("MISS")
        assert "p50: failover 900 ms, cold start 1200 ms" in miss.detail

    def test_the_idle_cold_start_is_shown_but_does_not_judge(self) -> None:
        check = failover_check([2.0], [1.8], 0.5, idle_s=[0.8, 0.9])
        assert check.ok
        assert "against the idle cold start p99 (900 ms) the bound would be 1400 ms: MISS" in (
            check.detail
        )

    def test_the_ci_guard_judges_the_slowest_failover_and_shows_the_goal(self) -> None:
        cold = [1.0, 1.2, 1.4]
        ok = failover_check([0.9, 2.5, 4.1], cold, 0.5, guard_factor=3.0)
        assert ok.ok
        assert "4100 ms <= 4200 ms" in ok.detail
        assert "the goal, shown: MISS" in ok.detail
        stuck = failover_check([0.9, 1.0, 10.2], cold, 0.5, guard_factor=3.0)
        assert stuck.failed
        assert stuck.detail.startswith("MISS")

    def test_no_failover_or_no_baseline_is_a_miss(self) -> None:
        assert failover_check([], [1.0], 0.5).failed
        assert failover_check([1.0], [], 0.5).failed


def test_a_failover_with_a_duplicate_spawn_during_it_is_shown_not_judged() -> None:
    state = attach.AttachState()
    state.failovers = [(10.0, {"p0": 1.0, "p1": None}), (20.0, {"p0": 9.0})]
    state.crowded.add(20.0)
    assert state.failover_values() == [1.0]
    lines = attach.summary_lines(state, AttachPlan(), 0.0)
    assert any("20.0 s: p0 9000 (ms, a duplicate spawn during it: not judged)" in x for x in lines)


def test_the_failover_room_can_be_set_for_attach_profiles_only() -> None:
    parser = build_parser()
    config = configure(parser.parse_args(["--profile", "attach-ci", "--failover-room", "1.5"]))
    assert config.profile.attach is not None
    assert config.profile.attach.failover_room_s == 1.5
    with pytest.raises(ValueError, match="attach profiles only"):
        configure(parser.parse_args(["--profile", "ci", "--failover-room", "1"]))


def test_a_duplicate_spawn_must_be_within_its_gap_and_both_must_work() -> None:
    assert judge_duplicate(3.0, 10.0, [0, 0], [True, True])[0]
    too_far, why = judge_duplicate(25.0, 10.0, [0, 0], [True, True])
    assert not too_far
    assert "25.0 ms apart" in why
    assert not judge_duplicate(3.0, 10.0, [0, 1], [True, True])[0]
    assert not judge_duplicate(3.0, 10.0, [0, 0], [True, False])[0]


def test_the_schedule_puts_a_cold_start_before_the_first_kill_and_between_kills() -> None:
    plan = AttachPlan(owner_kills_at=(0.2, 0.6), duplicate_spawn_at=(0.4,), probe_at=(0.8,))
    assert plan.schedule(10.0) == [
        (1.0, "cold-start"),
        (2.0, "kill-owner"),
        (4.0, "cold-start"),
        (4.0, "duplicate-spawn"),
        (6.0, "kill-owner"),
        (8.0, "probe"),
    ]
    full, ci = PROFILES["attach"].attach, PROFILES["attach-ci"].attach
    assert full is not None
    assert len(full.owner_kills_at) >= 10
    assert ci is not None
    assert len(ci.owner_kills_at) >= 3
    assert all(0 < at < 1 for at in full.owner_kills_at + ci.owner_kills_at)


# -- the owner, as doctor names it -------------------------------------------------------------


def _holder(pid: int, data_dir: Path, **changes: Any) -> dict[str, Any]:
    holder = {
        "pid": pid,
        "create_time": 1000.0,
        "data_dir": str(data_dir),
        "alive": True,
        "verified": True,
        "holds_lock": True,
        "started_at": "2026-12-02T18:00:00+00:00",
    }
    return holder | changes


def test_the_owner_is_the_one_proved_holder_that_is_none_of_ours(tmp_path: Path) -> None:
    def doctor(*holders: dict[str, Any]) -> dict[str, Any]:
        return {"owner_lock": {"state": "exclusive", "holders": list(holders)}}

    here = tmp_path
    assert pick_owner(doctor(_holder(7, here)), here, set()) == OwnerSeen(
        7, 1000.0, "2026-12-02T18:00:00+00:00"
    )
    assert pick_owner(doctor(_holder(7, here)), here, {7}) is None  # a proxy of ours
    assert pick_owner(doctor(_holder(7, here, verified=False)), here, set()) is None
    assert pick_owner(doctor(_holder(7, here, alive=False)), here, set()) is None
    assert pick_owner(doctor(_holder(7, here, holds_lock=False)), here, set()) is None
    assert pick_owner(doctor(_holder(7, tmp_path / "other")), here, set()) is None
    assert pick_owner(doctor(_holder(7, here), _holder(8, here)), here, set()) is None
    assert pick_owner(doctor(_holder(7, here), _holder(8, here)), here, {8}) is not None
    listed = _holder(7, here, sessions=[{"pid": 11, "client": "x"}, {"pid": "junk"}, 5])
    seen = pick_owner(doctor(listed), here, set())
    assert seen is not None
    assert seen.sessions == (11,)
    assert pick_owner({}, here, set()) is None
    assert pick_owner({"owner_lock": {"holders": "junk"}}, here, set()) is None


def test_a_process_still_holding_the_files_after_the_run_is_named() -> None:
    assert attach.holders_left({"processes": {"holders": []}}) == []
    assert attach.holders_left({}) == []
    doctor = {"processes": {"holders": [{"name": "vestige-mcp", "pid": 42}, "junk"]}}
    assert attach.holders_left(doctor) == ["vestige-mcp pid 42"]


def test_a_pid_that_is_no_longer_the_named_owner_is_not_opened() -> None:
    me = os.getpid()
    created = psutil.Process(me).create_time()
    fd = open_owner(OwnerSeen(me, created))
    assert fd is not None
    os.close(fd)
    assert open_owner(OwnerSeen(me, created - 5.0)) is None  # same pid, another process


@pytest.mark.multiprocess
@pytest.mark.timeout(120)
def test_a_detached_server_is_found_by_doctor_and_killed_through_a_pidfd(tmp_path: Path) -> None:
    """The profile's kill, on a real ``vestige-mcp`` that is not a child of the harness's
    registry: doctor names it, the pidfd pins it, SIGKILL ends it."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VESTIGE_")}
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "vestige-mcp"), "--data-dir", str(data)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    try:
        vestige = str(Path(sys.executable).parent / "vestige")
        owner = None
        deadline = time.monotonic() + 60
        while owner is None and time.monotonic() < deadline:
            out = subprocess.run(
                [vestige, "doctor", "--json", "--data-dir", str(data)],
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
                check=False,
            ).stdout
            owner = pick_owner(json.loads(out), data, set())
            if owner is None:
                time.sleep(0.1)
        assert owner is not None
        assert owner.pid == server.pid
        fd = open_owner(owner)
        assert fd is not None
        try:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            assert anyio.run(wait_gone, fd, 30.0)
        finally:
            os.close(fd)
        assert server.wait(timeout=30) == -signal.SIGKILL
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=30)
        assert server.stdin is not None
        server.stdin.close()
