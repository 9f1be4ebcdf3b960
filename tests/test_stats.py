"""`Store.stats()` reads kept figures (migration 6): they must equal a scan of every row.

The reference is the query stats() ran before issue 12, over the whole table.  Every write
path is exercised, and a property test runs random sequences of changes.
"""

from __future__ import annotations

import contextlib
import io
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import apsw
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vestige import InvalidInput, MemoryNotFound, Store, config
from vestige.migrations import LATEST_VERSION, MIGRATIONS
from vestige.restore import restore

if TYPE_CHECKING:
    from tests.process_helpers import WorkerPool
    from vestige.models import Stats


def scanned(store: Store) -> dict[str, Any]:
    """The figures counted the slow way, from every row (stats() before migration 6)."""
    now = datetime.now(UTC).isoformat()
    with store._db.read() as conn:
        total, ret, sto, rtr, oldest, newest = conn.execute(
            "SELECT COUNT(*), COALESCE(AVG(retention_strength), 0.0), "
            "COALESCE(AVG(storage_strength), 0.0), COALESCE(AVG(retrieval_strength), 0.0), "
            "MIN(created_at), MAX(created_at) FROM knowledge_nodes"
        ).fetchall()[0]
        (due,) = conn.execute(
            "SELECT COUNT(*) FROM knowledge_nodes WHERE next_review <= ?", (now,)
        ).fetchall()[0]
        types = dict(
            conn.execute("SELECT node_type, COUNT(*) FROM knowledge_nodes GROUP BY node_type")
        )
        high, medium, low = conn.execute(
            "SELECT COALESCE(SUM(retention_strength >= 0.7), 0), "
            "COALESCE(SUM(retention_strength >= 0.4 AND retention_strength < 0.7), 0), "
            "COALESCE(SUM(retention_strength < 0.4), 0) FROM knowledge_nodes"
        ).fetchall()[0]
    return {
        "total_memories": total,
        "due_for_review": due,
        "average_retention": round(ret, 4),
        "average_storage_strength": round(sto, 4),
        "average_retrieval_strength": round(rtr, 4),
        "oldest_memory": oldest,
        "newest_memory": newest,
        "node_types": types,
        "retention_bands": {"high": high, "medium": medium, "low": low},
    }


def kept(stats: Stats) -> dict[str, Any]:
    return {name: getattr(stats, name) for name in scanned_names()}


def scanned_names() -> tuple[str, ...]:
    return (
        "total_memories",
        "due_for_review",
        "average_retention",
        "average_storage_strength",
        "average_retrieval_strength",
        "oldest_memory",
        "newest_memory",
        "node_types",
        "retention_bands",
    )


def assert_exact(store: Store) -> None:
    assert kept(store.stats()) == scanned(store)
    # The sums behind the averages, before rounding: drift stays at rounding-error size.
    with store._db.read() as conn:
        sums = conn.execute(
            "SELECT retention_sum, storage_sum, retrieval_sum FROM memory_totals"
        ).fetchall()[0]
        real = conn.execute(
            "SELECT TOTAL(retention_strength), TOTAL(storage_strength), "
            "TOTAL(retrieval_strength) FROM knowledge_nodes"
        ).fetchall()[0]
    assert sums == pytest.approx(real, rel=1e-9, abs=1e-9)


def set_rows(store: Store, sql: str, *args: object) -> None:
    store._db.write(lambda c: c.execute(sql, args))


def test_stats_equal_a_full_scan_after_every_kind_of_write(data_dir: Path, tmp_path: Path) -> None:
    store = Store.open(data_dir)
    try:
        assert_exact(store)  # empty
        memories = [
            store.ingest(f"memory {i} about topic{i % 4}", node_type=("fact", "event")[i % 2])
            for i in range(12)
        ]
        assert_exact(store)
        store.ingest("The user prefers dark mode")
        detail = "The user prefers dark mode in the terminal and in the editor"
        decisions = {
            store.smart_ingest(text).decision.value
            for text in (detail, detail.upper(), "Actually, the user now prefers light mode")
        }
        assert {"reinforce", "supersede"} <= decisions, decisions
        assert_exact(store)
        store.edit(memories[0].id, content="memory 0, edited")
        store.promote(memories[1].id)
        store.demote(memories[2].id)
        store.demote(memories[2].id)
        assert_exact(store)
        store.delete(memories[3].id)
        store.purge(memories[4].id)
        assert_exact(store)
        deleted = store.changes(memory_id=memories[3].id, kinds=["deleted"]).changes[0]
        store.undo(deleted.seq)  # the memory comes back
        assert_exact(store)
        # Old accesses, so that decay moves strengths, bands and review hours.
        set_rows(
            store,
            "UPDATE knowledge_nodes SET last_accessed = ? WHERE seq % 3 = 0",
            (datetime.now(UTC) - timedelta(days=40)).isoformat(),
        )
        store.decay()
        assert_exact(store)
        assert store.stats().retention_bands["high"] < store.stats().total_memories
        exported = io.StringIO()
        store.export_jsonl(exported)
        backup = store.backup(tmp_path / "before-import.db")
    finally:
        store.close()

    other = Store.open(tmp_path / "other")
    try:
        lines = [json.loads(line) for line in exported.getvalue().splitlines()]
        rows = [r for r in lines if "change" not in r]  # memories only, not their history
        for r in rows:
            r["id"] = str(uuid.uuid4())
            r["node_type"] = "imported"
        other.import_jsonl(io.StringIO("".join(json.dumps(r) + "\n" for r in rows)))
        assert_exact(other)
        assert other.stats().node_types == {"imported": len(rows)}
    finally:
        other.close()

    with Store.open(data_dir) as store:
        store.import_jsonl(io.StringIO("".join(json.dumps(r) + "\n" for r in rows)))
        assert_exact(store)
        grown = store.stats().total_memories
    restore(config.resolve_data_dir(data_dir), backup)
    with Store.open(data_dir) as store:
        assert_exact(store)
        assert store.stats().total_memories < grown  # the backup's own figures came back


def test_the_due_count_splits_exactly_at_now(store: Store) -> None:
    """Hours before now come from memory_counts, now's hour from the index: nothing between
    them is counted twice or missed, including the first instant of now's hour."""
    for i in range(10):
        store.ingest(f"scheduled {i}")
    now = datetime.now(UTC)
    hour_start = now.replace(minute=0, second=0, microsecond=0)
    times = [
        (now - timedelta(days=30)).isoformat(),
        (now - timedelta(hours=1)).isoformat(),
        hour_start.isoformat(),
        now.strftime("%Y-%m-%dT%H"),  # no more than the hour: a prefix of now, so due
        (now - timedelta(seconds=1)).isoformat(),
        (now + timedelta(minutes=5)).isoformat(),
        (now + timedelta(hours=2)).isoformat(),
        "9999-12-31T23:59:59+00:00",
        "not a time",  # sorts after every date: never due, as before
        None,
    ]
    for seq, when in enumerate(times, start=1):
        set_rows(store, "UPDATE knowledge_nodes SET next_review = ? WHERE seq = ?", when, seq)
    assert_exact(store)
    assert store.stats().due_for_review >= 4


def _v5_database(data_dir: Path, rows: list[tuple[Any, ...]]) -> None:
    data_dir.mkdir()
    conn = apsw.Connection(str(data_dir / "vestige.db"))
    with conn:
        for migration in MIGRATIONS[:5]:
            for _ in conn.execute(migration.sql):
                pass
            conn.execute(
                "INSERT INTO schema_version VALUES (?, ?, '2026-01-01T00:00:00+00:00')",
                (migration.version, migration.description),
            )
        conn.executemany(
            "INSERT INTO knowledge_nodes(id, content, node_type, created_at, updated_at, "
            "last_accessed, retention_strength, storage_strength, retrieval_strength, "
            "next_review, content_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    conn.close()


def test_a_version_5_database_with_rows_gets_its_figures_filled(data_dir: Path) -> None:
    past, future = "2026-01-02T03:04:05+00:00", "2999-01-01T00:00:00+00:00"
    rows = [
        (f"m{i}", f"old memory {i}", ("fact", "concept", "event")[i % 3],
         f"2026-01-{i % 28 + 1:02d}T00:00:00+00:00", past, past,
         (0.05, 0.4, 0.69, 0.7, 1.0)[i % 5], 1.0 + i, 0.5, (past, future, None)[i % 3], f"h{i}")
        for i in range(50)
    ]  # fmt: skip
    _v5_database(data_dir, rows)
    with Store.open(data_dir) as store:
        assert store.schema_version == LATEST_VERSION
        assert_exact(store)
        stats = store.stats()
        assert stats.total_memories == 50
        assert stats.node_types == {"fact": 17, "concept": 17, "event": 16}
        assert stats.retention_bands == {"high": 20, "medium": 20, "low": 10}
        assert stats.due_for_review == 17
        store.ingest("after the upgrade", node_type="concept")
        store.decay()
        assert_exact(store)


def test_migrating_an_empty_version_5_database(data_dir: Path) -> None:
    _v5_database(data_dir, [])
    with Store.open(data_dir) as store:
        assert_exact(store)
        assert store.stats().total_memories == 0


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("ingest"), st.sampled_from(["fact", "event", "note"])),
        st.tuples(st.just("delete"), st.integers(0, 30)),
        st.tuples(st.just("edit"), st.integers(0, 30)),
        st.tuples(st.just("promote"), st.integers(0, 30)),
        st.tuples(st.just("demote"), st.integers(0, 30)),
        st.tuples(st.just("retype"), st.integers(0, 30), st.sampled_from(["fact", "x"])),
        st.tuples(
            st.just("strength"),
            st.integers(0, 30),
            st.sampled_from([0.0, 0.3999999, 0.4, 0.6999999, 0.7, 1.0, 2.5]),
        ),
        st.tuples(st.just("review"), st.integers(0, 30), st.integers(-72, 72) | st.just(None)),
        st.tuples(st.just("undo_last")),
    ),
    max_size=25,
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=_OPS)
def test_kept_figures_match_a_scan_after_any_sequence_of_changes(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[Any, ...]]
) -> None:
    with Store.open(tmp_path_factory.mktemp("prop") / "data") as store:
        ids: list[str] = []
        for op in ops:
            kind = op[0]
            if kind == "ingest":
                ids.append(store.ingest(f"memory {len(ids)}", node_type=op[1]).id)
                continue
            if kind == "undo_last":
                newest = store.changes(limit=1).changes
                with contextlib.suppress(InvalidInput):  # a creation is not undone: deleted
                    if newest:
                        store.undo(newest[0].seq)
                continue
            if ids:
                apply(store, op, ids[op[1] % len(ids)])
            assert_exact(store)


def apply(store: Store, op: tuple[Any, ...], target: str) -> None:
    """One change from the property test's sequence, to a memory that may be gone."""
    kind = op[0]
    try:
        store.get(target)
    except MemoryNotFound:  # deleted earlier in the sequence
        return
    if kind == "delete":
        store.delete(target)
    elif kind == "edit":
        store.edit(target, content=f"edited {op[1]}")
    elif kind == "promote":
        store.promote(target)
    elif kind == "demote":
        store.demote(target)
    elif kind == "retype":
        set_rows(store, "UPDATE knowledge_nodes SET node_type = ? WHERE id = ?", op[2], target)
    elif kind == "strength":
        set_rows(
            store,
            "UPDATE knowledge_nodes SET retention_strength = ?, storage_strength = ? WHERE id = ?",
            op[2],
            op[2] * 3,
            target,
        )
    elif kind == "review":
        hours = op[2]
        when = None if hours is None else (datetime.now(UTC) + timedelta(hours=hours)).isoformat()
        set_rows(store, "UPDATE knowledge_nodes SET next_review = ? WHERE id = ?", when, target)


@pytest.mark.multiprocess
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_processes_upgrading_a_version_5_database_at_once_fill_it_once(
    data_dir: Path, worker_pool: WorkerPool
) -> None:
    """Migration 6 runs under the write gate: one process fills the figures, the others find
    version 6 and write through the triggers, so no memory is counted twice or missed."""
    now = datetime.now(UTC).isoformat()
    rows = [
        (f"m{i}", f"old {i}", "fact", now, now, now, 0.5, 1.0, 0.5, now, f"h{i}") for i in range(40)
    ]
    _v5_database(data_dir, rows)
    workers = [
        worker_pool.spawn("open-new", f"opener{k}", data_dir=str(data_dir)) for k in range(3)
    ]
    worker_pool.wait_ready()
    worker_pool.release()
    worker_pool.join(deadline_s=60)
    assert [w.result()["schema_version"] for w in workers] == [LATEST_VERSION] * 3
    with Store.open(data_dir) as store:
        with store._db.read() as conn:
            versions = conn.execute("SELECT version FROM schema_version ORDER BY rowid").fetchall()
        assert [v[0] for v in versions] == list(range(1, LATEST_VERSION + 1))
        assert_exact(store)
        assert store.stats().total_memories == 43


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("storage_strength", 1e17),
        ("storage_strength", -1.0),
        ("retention_strength", 1.5),
        ("retrieval_strength", -0.1),
    ],
)
def test_an_import_of_a_strength_out_of_range_is_refused_and_the_figures_stay_exact(
    store: Store, field: str, value: float
) -> None:
    """A hostile test imported storage_strength 1e17 beside three memories and deleted it:
    the kept sum had lost the three (1 + 1e17 - 1e17 = 0), for good.  Now such a row is
    refused with the range, nothing is imported, and the figures are those of a scan."""
    for i in range(3):
        store.ingest(f"memory {i} about sqlite")
    row = {"id": str(uuid.uuid4()), "content": "huge", field: value}
    with pytest.raises(InvalidInput, match=f"{field} must be between"):
        store.import_jsonl(io.StringIO(json.dumps(row) + "\n"))
    assert store.stats().total_memories == 3
    assert_exact(store)


def test_a_decay_pass_and_a_restore_put_wrong_kept_figures_right(
    data_dir: Path, tmp_path: Path
) -> None:
    """A hostile test restored a backup whose rows and totals were crafted (strengths of
    1e300, a count of 1000 for 9 rows) and was told "Restored 1000 memories"; deleting the
    huge rows then left sums wrong for good.  A restore recounts, and so does every decay
    pass (it reads every row anyway)."""
    with Store.open(data_dir) as store:
        for i in range(9):
            store.ingest(f"memory {i} about sqlite")
        backup = store.backup(tmp_path / "crafted.db")
        set_rows(store, "UPDATE memory_totals SET retention_sum = 1e300, memories = 1000")
        assert store.stats().total_memories == 1000  # wrong, as a crafted file could say
        store.decay()
        assert_exact(store)
    crafted = apsw.Connection(str(backup))
    crafted.execute("UPDATE memory_totals SET memories = 1000, retention_sum = -5")
    crafted.close()
    result = restore(config.resolve_data_dir(data_dir), backup)
    assert result.memories == 9
    with Store.open(data_dir) as store:
        assert_exact(store)
