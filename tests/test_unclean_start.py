"""A server that starts after an unclean stop checks the database before it takes writes.

The stop is a real ``kill -9`` of a real ``vestige-mcp`` (its owner metadata stays behind,
which is the sign); the damage is real random bytes over pages of the database, written
while no process has it open.  A damaged database is then served read-only, and an
undamaged one starts about as fast as after a clean stop (the ratio of the two start
times, measured in the same test).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any, Final

import pytest

from tests.damage_helpers import checkpoint_away, overwrite_pages, pages_of
from tests.server_helpers import ServerProcess
from vestige.errors import CorruptionError
from vestige.owner import read_owners
from vestige.store import UNCLEAN_STOP_CHECK_WAIT_S, Store

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MEMORIES: Final = 200
STARTS: Final = 3
#: An unclean start may take this much longer than a clean one (ratio of the medians).
START_RATIO: Final = 2.0


def _fill(data_dir: Path) -> None:
    with Store.open(data_dir) as store:
        for i in range(MEMORIES):
            store.ingest(f"memory {i}: " + "the quick brown fox jumps over the lazy dog " * 12)


def _tool(srv: ServerProcess, name: str, arguments: dict[str, Any]) -> tuple[bool, str]:
    result = srv.call_tool(name, arguments)
    return bool(result["isError"]), str(result["content"][0]["text"])


def _started(data_dir: Path, home: Path) -> tuple[ServerProcess, float]:
    """A new server, and the seconds from its launch to its answer to ``initialize``."""
    srv = ServerProcess(data_dir, home=home)
    try:
        srv.initialize()
    except BaseException:
        srv.stop()
        raise
    return srv, time.monotonic() - srv.started


def _kill_9(srv: ServerProcess) -> None:
    srv.proc.kill()  # SIGKILL, this pid only: no clean-up at all
    srv.proc.wait(10)
    srv.stop()  # reap and close the pipes
    assert [o.pid for o in read_owners(srv.data_dir)] == [srv.pid]  # the sign stays behind


def test_a_damaged_database_after_kill_9_is_served_read_only(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    home = tmp_path / "home"
    home.mkdir()
    _fill(data_dir)
    first, _ = _started(data_dir, home)
    failed, text = _tool(first, "ingest", {"content": "written just before the kill"})
    assert not failed, text
    _kill_9(first)

    db = data_dir / "vestige.db"
    checkpoint_away(db)  # so that the damage is not hidden behind a newer copy in the WAL
    leaves = pages_of(db, "knowledge_nodes")
    overwrite_pages(db, [leaves[len(leaves) // 2]])

    second, _ = _started(data_dir, home)
    with second:
        failed, text = _tool(second, "ingest", {"content": "must not be written"})
        assert failed, text
        assert "is damaged" in text, text
        assert "writes are refused" in text, text
        assert "vestige salvage" in text, text  # the way out
        failed, text = _tool(second, "smart_ingest", {"content": "nor this"})
        assert failed, text
        assert "writes are refused" in text, text
        failed, text = _tool(second, "health_check", {})  # reads go on
        assert not failed, text
        health = json.loads(text)
        assert health["status"] == "damaged", health
        assert any("writes are refused" in w for w in health["warnings"]), health
        failed, text = _tool(second, "search", {"query": "memory 3"})
        print(f"search on the damaged database: error={failed}")
        log = second.stderr()
    assert "stopped uncleanly" in log, log
    assert "DAMAGED DATABASE" in log, log


def test_an_undamaged_database_after_kill_9_starts_about_as_fast(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    home = tmp_path / "home"
    home.mkdir()
    _fill(data_dir)
    clean: list[float] = []
    unclean: list[float] = []
    # Clean and unclean starts alternate, so load that comes and goes hits both alike.
    srv, _ = _started(data_dir, home)
    for i in range(STARTS):
        srv.stop()  # stdin closed: a clean stop, its metadata removed
        assert read_owners(data_dir) == []
        srv, seconds = _started(data_dir, home)
        clean.append(seconds)
        failed, text = _tool(srv, "ingest", {"content": f"written before kill number {i}"})
        assert not failed, text
        _kill_9(srv)
        srv, seconds = _started(data_dir, home)
        unclean.append(seconds)
        failed, text = _tool(srv, "ingest", {"content": f"written after restart {i}"})
        assert not failed, text  # not damaged: writes go on
    log = srv.stderr()
    srv.stop()
    assert "stopped uncleanly" in log, log
    assert "check after the unclean stop: ok" in log, log
    clean_s, unclean_s = statistics.median(clean), statistics.median(unclean)
    # The design adds at most its check's wait (UNCLEAN_STOP_CHECK_WAIT_S) to a start, and
    # SQLite's recovery of the WAL: the bound allows that wait on top of a ratio.
    bound = clean_s * START_RATIO + UNCLEAN_STOP_CHECK_WAIT_S
    print(f"start after a clean stop {clean}, after kill -9 {unclean}")
    assert unclean_s <= bound, (
        f"median start after kill -9 {unclean_s:.2f} s > {bound:.2f} s "
        f"({START_RATIO} x the clean start's {clean_s:.2f} s + the check's wait of "
        f"{UNCLEAN_STOP_CHECK_WAIT_S} s); clean {clean}, unclean {unclean}"
    )


def test_a_check_longer_than_the_wait_refuses_writes_from_the_background(data_dir: Path) -> None:
    """A large database is checked in the background: the server serves at once, and the
    check refuses writes the moment it finds damage."""
    _fill(data_dir)
    db = data_dir / "vestige.db"
    overwrite_pages(db, [pages_of(db, "knowledge_nodes")[5]])
    with Store.open(data_dir) as store:
        # Without waiting the caller goes on at once; on a small file the check may still
        # win the race to the first GIL switch, so "damaged" is a valid answer too.
        outcome = store.check_after_unclean_stop(wait_s=0.0)
        print(f"check_after_unclean_stop(wait_s=0) -> {outcome}")
        assert outcome in ("running", "damaged")
        deadline = time.monotonic() + 30
        while store.write_refusal is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert store.write_refusal is not None, "the background check never finished"
        with pytest.raises(CorruptionError, match="writes are refused"):
            store.ingest("not into a damaged file")
        assert store.health().status == "damaged"
