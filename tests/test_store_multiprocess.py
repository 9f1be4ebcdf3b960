"""Several real processes on one database file: waits, deadlines, no lost write, one schema."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import apsw
import pytest

from tests.process_helpers import Worker, WorkerPool, read_lines
from vestige import Store, config, decay
from vestige.errors import StoreBusyError
from vestige.migrations import LATEST_VERSION
from vestige.models import Lease

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow, pytest.mark.timeout(120)]


def count(store: Store) -> int:
    return store.stats().total_memories


def fsrs6(stability: float, days: float, w20: float = 0.1542) -> float:
    return float((1 + (0.9 ** (-1 / w20) - 1) * days / stability) ** (-w20))


# -- waiting for another process's write lock -----------------------------------------------


def hold_lock(pool: WorkerPool, store: Store, tmp_path: Path, hold_s: float) -> tuple[Worker, Path]:
    release = tmp_path / "release-lock"
    holder = pool.spawn(
        "hold-write-lock",
        "holder",
        database=str(store.path),
        hold_s=hold_s,
        release=str(release),
    )
    pool.wait_ready(holder)
    return holder, release


def test_write_waits_for_a_lock_held_in_another_process(
    store: Store, worker_pool: WorkerPool, tmp_path: Path
) -> None:
    holder, _ = hold_lock(worker_pool, store, tmp_path, hold_s=1.0)
    started_at = time.time()
    memory = store.ingest("written after the other process let go")
    done_at = time.time()
    worker_pool.join(holder, deadline_s=30)
    # It started while the lock was held and could only commit once it was let go.
    assert started_at < holder.result()["released_at"] <= done_at
    assert store.get(memory.id).content == "written after the other process let go"
    assert count(store) == 1


def test_busy_begin_is_retried_as_a_whole_transaction(
    store: Store,
    worker_pool: WorkerPool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A 50 ms busy handler gives up long before the 1 s holder lets go, so only the
    # store's own retry loop (pause, BEGIN IMMEDIATE again) can get this write through.
    monkeypatch.setattr(config, "BUSY_TIMEOUT_MS", 50)
    holder, _ = hold_lock(worker_pool, store, tmp_path, hold_s=1.0)
    started_at = time.time()
    with caplog.at_level(logging.INFO, logger="vestige.store"):
        memory = store.smart_ingest("retried until the lock was free").memory
    worker_pool.join(holder, deadline_s=30)
    assert started_at < holder.result()["released_at"]
    retries = [r for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) >= 2
    assert store.get(memory.id).content == "retried until the lock was free"
    assert count(store) == 1


def test_write_past_its_deadline_is_store_busy_and_writes_nothing(
    store: Store, worker_pool: WorkerPool, tmp_path: Path
) -> None:
    store.ingest("before")
    store._db.write_deadline_s = 1.0
    hold_s = 30.0
    holder, release = hold_lock(worker_pool, store, tmp_path, hold_s=hold_s)
    started = time.monotonic()
    with pytest.raises(StoreBusyError) as info:
        store.ingest("must not appear")
    elapsed = time.monotonic() - started
    release.touch()
    worker_pool.join(holder, deadline_s=30)
    assert 0.9 <= elapsed < hold_s  # the deadline fired, not the holder's release
    assert "busy" in info.value.message
    assert "within 1 s" in info.value.message
    assert str(store.path) in info.value.message
    assert "`vestige doctor`" in info.value.hint
    assert isinstance(info.value, TimeoutError)
    assert count(store) == 1
    assert store.search("appear") == []
    assert store.ingest("after").content == "after"  # usable once the lock is free


def test_write_gate_held_by_another_process_is_store_busy(
    store: Store, worker_pool: WorkerPool, tmp_path: Path
) -> None:
    store._db.write_deadline_s = 1.0
    release = tmp_path / "release-gate"
    holder = worker_pool.spawn(
        "hold-gate", "gate", gate=str(store.data_dir.gate), release=str(release)
    )
    worker_pool.wait_ready(holder)
    with pytest.raises(StoreBusyError) as info:
        store.ingest("queued behind the gate")
    release.touch()
    worker_pool.join(holder, deadline_s=30)
    assert "write gate" in info.value.message
    assert "vestige doctor" in info.value.hint
    assert count(store) == 0
    assert store.ingest("the gate is free again").content == "the gate is free again"


def test_a_passive_checkpoint_runs_while_another_process_holds_the_write_gate(
    store: Store, worker_pool: WorkerPool, tmp_path: Path
) -> None:
    # The upkeep's minutely checkpoint: it once took the gate and so held every other
    # process's writes through its fsyncs (and waited behind theirs).  PASSIVE needs no gate.
    for n in range(50):
        store.ingest(f"memory {n} to be checkpointed")
    store._db.write_deadline_s = 1.0
    release = tmp_path / "release-gate"
    holder = worker_pool.spawn(
        "hold-gate", "gate", gate=str(store.data_dir.gate), release=str(release)
    )
    worker_pool.wait_ready(holder)
    try:
        log_pages, done = store.checkpoint()  # StoreBusyError if it waited for the gate
    finally:
        release.touch()
        worker_pool.join(holder, deadline_s=30)
    assert log_pages > 0
    assert done == log_pages
    # TRUNCATE still queues at the gate like a writer: it waits for writers to finish.
    release_again = tmp_path / "release-gate-again"
    holder = worker_pool.spawn(
        "hold-gate", "gate-again", gate=str(store.data_dir.gate), release=str(release_again)
    )
    worker_pool.wait_ready(holder)
    try:
        with pytest.raises(StoreBusyError):
            store.checkpoint(truncate=True)
    finally:
        release_again.touch()
        worker_pool.join(holder, deadline_s=30)


def test_writes_checkpoint_the_wal_once_it_is_long(store: Store) -> None:
    # SQLite's auto-checkpoint is replaced by one after the gate is released: if that were
    # lost, the WAL would grow with every write (about 4 pages each here) and never reset.
    text = "a memory long enough to fill a page or so of the log " * 20
    writes = config.WAL_CHECKPOINT_PAGES  # ~4x the pages that trigger a checkpoint
    for n in range(writes):
        store.ingest(f"{n} {text}")
    page = 4096
    assert store.wal_bytes() < 2 * config.WAL_CHECKPOINT_PAGES * page, store.wal_bytes()


# -- many writers ------------------------------------------------------------------------------


def test_four_processes_500_writes_each_lose_nothing(
    store: Store, worker_pool: WorkerPool, tmp_path: Path
) -> None:
    workers = [
        worker_pool.spawn(
            "ingest",
            f"w{k}",
            data_dir=str(store.data_dir.path),
            acks=str(tmp_path / f"acks-w{k}"),
            count=500,
        )
        for k in range(4)
    ]
    worker_pool.wait_ready()
    worker_pool.release()
    worker_pool.join(deadline_s=100)  # any error at all (busy included) is a non-zero exit

    acked: dict[str, str] = {}
    for k, w in enumerate(workers):
        assert w.result() == {"acked": 500}
        lines = read_lines(tmp_path / f"acks-w{k}")
        assert len(lines) == 500
        acked.update(line.split("\t", 1) for line in lines)  # type: ignore[misc]
    assert len(acked) == 2000
    stored = {m.id: m.content for m in store.iter_memories()}
    assert stored == acked
    assert sorted(stored.values()) == sorted(
        f"w{k} memory number {i}" for k in range(4) for i in range(500)
    )
    with store._db.read() as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    for k in range(4):
        assert len(store.search(f"w{k}", limit=1000, tags=[f"w{k}"])) == 500


@pytest.mark.parametrize("n", [2, 4])
def test_processes_opening_a_new_data_dir_at_once(
    worker_pool: WorkerPool, tmp_path: Path, n: int
) -> None:
    target = tmp_path / "brand" / "new" / "data"
    workers = [worker_pool.spawn("open-new", f"opener{k}", data_dir=str(target)) for k in range(n)]
    worker_pool.wait_ready()
    assert not target.exists()
    worker_pool.release()
    worker_pool.join(deadline_s=60)
    assert [w.result()["schema_version"] for w in workers] == [LATEST_VERSION] * n
    with Store.open(target) as store:
        with store._db.read() as conn:
            versions = conn.execute("SELECT version FROM schema_version ORDER BY rowid").fetchall()
            w20_rows = conn.execute("SELECT COUNT(*) FROM fsrs_config").fetchall()
        assert [v[0] for v in versions] == list(range(1, LATEST_VERSION + 1))
        assert w20_rows == [(1,)]
        assert sorted(m.content for m in store.iter_memories()) == [
            f"opened by opener{k}" for k in range(n)
        ]


# -- maintenance runs once at a time across processes ---------------------------------------------


def aged_memories(store: Store, days: list[float]) -> list[str]:
    ids = []
    for d in days:
        memory = store.ingest(f"aged {d} days")
        stamp = (datetime.now(UTC) - timedelta(days=d)).isoformat()

        def age(conn: apsw.Connection, stamp: str = stamp, mid: str = memory.id) -> None:
            conn.execute("UPDATE knowledge_nodes SET last_accessed = ? WHERE id = ?", (stamp, mid))

        store._db.write(age)
        ids.append(memory.id)
    return ids


def test_lease_held_here_makes_another_process_skip_decay(
    store: Store, worker_pool: WorkerPool
) -> None:
    ids = aged_memories(store, [2, 9])
    before = {i: store.get(i) for i in ids}
    held = store.claim_lease(decay.TASK)
    assert isinstance(held, Lease)
    blocked = worker_pool.spawn("decay", "blocked", data_dir=str(store.data_dir.path))
    worker_pool.wait_ready(blocked)
    worker_pool.release()
    worker_pool.join(blocked, deadline_s=60)
    report = blocked.result()
    assert report["ran"] is False
    assert held.holder in report["reason"]
    assert {i: store.get(i) for i in ids} == before

    store.release_lease(held)
    free = worker_pool.spawn("decay", "free", data_dir=str(store.data_dir.path))
    worker_pool.join(free, deadline_s=60)
    assert free.result()["ran"] is True
    for mid, d in zip(ids, [2, 9], strict=True):
        assert store.get(mid).retrieval_strength == pytest.approx(fsrs6(2.3065, d), rel=1e-5)
    with store._db.read() as conn:
        assert conn.execute("SELECT COUNT(*) FROM maintenance_claims").fetchall() == [(0,)]


def test_two_processes_decaying_at_once(
    store: Store, worker_pool: WorkerPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This process is mid-run (held inside its first batch) when another process starts one:
    exactly one runs, the other is refused and changes nothing."""
    ids = aged_memories(store, [1, 3, 20])
    inside, go = threading.Event(), threading.Event()
    real_decayed = decay._decayed

    def paused_decayed(*args: Any) -> Any:
        inside.set()
        assert go.wait(60), "the test never let the first run continue"
        return real_decayed(*args)

    monkeypatch.setattr(decay, "_decayed", paused_decayed)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(store.decay)
        try:
            assert inside.wait(30), "the first run never reached its batch"
            second = worker_pool.spawn("decay", "second", data_dir=str(store.data_dir.path))
            worker_pool.release()
            worker_pool.join(second, deadline_s=60)
        finally:
            go.set()
        ours = first.result(timeout=60)
    theirs = second.result()
    assert ours.ran is True
    assert (ours.nodes_processed, ours.decay_applied) == (3, 3)
    assert theirs["ran"] is False
    match = re.search(r"another process \((\S+)\) is running it", theirs["reason"])
    assert match is not None, theirs["reason"]
    holder = match.group(1)
    assert f":{os.getpid()}:" in holder  # the refusal names this process's run
    with store._db.read() as conn:
        runs = conn.execute("SELECT holder, decay_applied FROM decay_runs").fetchall()
        held = conn.execute("SELECT COUNT(*) FROM maintenance_claims").fetchall()[0][0]
    assert runs == [(holder, 3)]  # one run, ours; the refused one left no history
    assert held == 0
    for mid, d in zip(ids, [1, 3, 20], strict=True):
        assert store.get(mid).retrieval_strength == pytest.approx(fsrs6(2.3065, d), rel=1e-5)
