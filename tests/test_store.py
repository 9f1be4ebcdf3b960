"""The store on one process: connection settings, transactions, memory operations, bad input."""

from __future__ import annotations

import io
import json
import math
import shutil
import sqlite3
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import apsw
import pytest

from vestige import Memory, Store, errors, fsrs, similarity
from vestige._database import translate
from vestige.config import DURABILITY_ENV, Durability
from vestige.errors import ConfigError, InvalidInput, MemoryNotFound, StoreBusyError, StoreError
from vestige.migrations import LATEST_VERSION
from vestige.store import _INSERT, _row

if TYPE_CHECKING:
    from collections.abc import Callable


def count(store: Store) -> int:
    return store.stats().total_memories


def import_rows(store: Store, rows: list[dict[str, Any]]) -> None:
    """Put rows with chosen times and strengths in through the public import path."""
    text = "".join(json.dumps(r) + "\n" for r in rows)
    report = store.import_jsonl(io.StringIO(text))
    assert report.imported == len(rows)


def row(content: str, **fields: Any) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "content": content, **fields}


def new_memory(store: Store, content: str) -> Memory:
    return store._new_memory(
        content, node_type="fact", tags=None, source=None, valid_from=None, valid_until=None
    )


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat()


def fts_check(store: Store) -> None:
    """Both FTS5 checks: the index itself, and (rank=1) the index against knowledge_nodes."""
    store._db.write(
        lambda c: c.execute("INSERT INTO knowledge_fts(knowledge_fts) VALUES('integrity-check')")
    )
    store._db.write(
        lambda c: c.execute(
            "INSERT INTO knowledge_fts(knowledge_fts, rank) VALUES('integrity-check', 1)"
        )
    )


# -- connection settings ------------------------------------------------------------------------

EXPECTED_PRAGMAS = {
    "journal_mode": "wal",
    "cache_size": -64000,
    "temp_store": 2,
    "foreign_keys": 1,
    "busy_timeout": 5000,
    "mmap_size": 268435456,
    "journal_size_limit": 67108864,
}


def pragmas(conn: apsw.Connection) -> dict[str, Any]:
    names = [*EXPECTED_PRAGMAS, "synchronous"]
    return {n: conn.execute(f"PRAGMA {n}").fetchall()[0][0] for n in names}


@pytest.mark.parametrize(
    ("durability", "env", "synchronous"),
    [
        (None, None, 1),
        ("balanced", None, 1),
        ("hardened", None, 2),
        (Durability.HARDENED, None, 2),
        (None, "hardened", 2),
        (None, "balanced", 1),
        ("balanced", "hardened", 1),  # the argument beats the environment
    ],
)
def test_pragmas_on_both_connections(
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    durability: str | None,
    env: str | None,
    synchronous: int,
) -> None:
    if env is not None:
        monkeypatch.setenv(DURABILITY_ENV, env)
    with Store.open(data_dir, durability=durability) as store:
        for conn in (store._db._writer, store._db._reader):
            assert conn is not None
            assert pragmas(conn) == {**EXPECTED_PRAGMAS, "synchronous": synchronous}
        # The writer's busy timeout is back to 5 s after a write shortened it.
        store.ingest("after a write")
        assert store._db._writer is not None
        assert pragmas(store._db._writer)["busy_timeout"] == 5000


@pytest.mark.parametrize("value", ["paranoid", "", "FULL"])
def test_bad_durability_argument_is_a_config_error(data_dir: Path, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Store.open(data_dir, durability=value)
    assert "hardened" in info.value.hint
    assert not data_dir.exists()


def test_bad_durability_env_is_a_config_error(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DURABILITY_ENV, "fast")
    with pytest.raises(ConfigError, match=DURABILITY_ENV):
        Store.open(data_dir)
    assert not data_dir.exists()


def test_reader_connection_refuses_writes(store: Store) -> None:
    with pytest.raises(StoreError), store._db.read() as conn:
        conn.execute("DELETE FROM knowledge_nodes")


def test_closed_store_says_so(data_dir: Path) -> None:
    store = Store.open(data_dir)
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.ingest("too late")
    store.close()  # closing twice is harmless


class CloseFirst:
    """The reader mutex, with another thread's close() landing just before it is taken."""

    def __init__(self, store: Store) -> None:
        self.store, self.lock, self.fired = store, store._db._reader_lock, False

    def __enter__(self) -> None:
        if not self.fired:
            self.fired = True
            self.store.close()  # passes through here once more, then takes the real lock
        self.lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


@pytest.mark.parametrize("call", ["get", "backup"])
def test_close_between_the_open_check_and_the_reader_lock_says_closed(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    store = Store.open(data_dir)
    memory = store.ingest("read while another thread closes the store")
    monkeypatch.setattr(store._db, "_reader_lock", CloseFirst(store))
    run: dict[str, Callable[[], object]] = {
        "get": lambda: store.get(memory.id),
        "backup": lambda: store.backup(tmp_path / "c.db"),
    }
    with pytest.raises(StoreError) as info:
        run[call]()
    assert info.value.message == "the store is closed"
    assert not (tmp_path / "c.db").exists()


def test_an_unexpected_sqlite_error_in_a_read_names_the_file_and_a_next_step(
    store: Store,
) -> None:
    with pytest.raises(StoreError) as info, store._db.read() as conn:
        conn.execute("SELECT * FROM no_such_table")
    assert info.value.message == f"SQLite error on {store.path}: no such table: no_such_table"
    assert "`vestige doctor`" in info.value.hint


def test_busy_translated_says_nothing_about_writes(store: Store) -> None:
    """translate() also serves reads: a BUSY there must not claim a write failed."""
    busy = apsw.BusyError("database is locked")
    busy.result = busy.extendedresult = 5  # type: ignore[attr-defined]  # as SQLite sets them
    error = translate(busy, store.path)
    assert isinstance(error, StoreBusyError)
    assert "busy" in error.message
    assert str(store.path) in error.message
    assert "write" not in error.message
    assert "`vestige doctor`" in error.hint


# -- the seed's example queries, run by other SQLite clients ---------------------------


def _run_cli(db: Path, sql: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["sqlite3", "-bail", "-json", str(db), sql],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return json.loads(out) if out.strip() else []


def _run_stdlib(db: Path, sql: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    try:
        cur = conn.execute(sql)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    finally:
        conn.close()


CLIENTS = [
    pytest.param(
        _run_cli,
        id="sqlite3-cli",
        marks=pytest.mark.skipif(shutil.which("sqlite3") is None, reason="no sqlite3 on PATH"),
    ),
    pytest.param(_run_stdlib, id="python-sqlite3"),
]


@pytest.mark.parametrize("run", CLIENTS)
def test_seed_example_queries(data_dir: Path, run: Callable[[Path, str], Any]) -> None:
    strengths = [0.95, 0.9, 0.81, 0.77, 0.6, 0.55, 0.42, 0.33, 0.2, 0.12, 0.09, 0.01]
    rows = [row(f"memory at {r}", retention_strength=r, tags=["misc"]) for r in strengths]
    rows[1] = row("I am Sam, I write Rust", retention_strength=0.9, tags=["identity"])
    rows[6] = row("Sam lives in Lisbon", retention_strength=0.42, tags=["identity", "home"])
    rows[8] = row("identity theft is a crime", retention_strength=0.2, tags=["security"])
    with Store.open(data_dir) as store:
        import_rows(store, rows)
        fresh = store.ingest("just now", tags=["fresh"])  # retention 0.73: ranked among them
    db = data_dir / "vestige.db"

    top = run(
        db,
        "SELECT content, retention_strength FROM knowledge_nodes "
        "ORDER BY retention_strength DESC LIMIT 10;",
    )
    ranked = sorted(
        [("just now", fresh.retention_strength)]
        + [(r["content"], r["retention_strength"]) for r in rows],
        key=lambda p: -p[1],
    )
    expected = ranked[:10]
    assert ("just now", fresh.retention_strength) in expected
    assert [(t["content"], t["retention_strength"]) for t in top] == expected

    identity = run(db, "SELECT content FROM knowledge_nodes WHERE tags LIKE '%identity%';")
    assert sorted(r["content"] for r in identity) == [
        "I am Sam, I write Rust",
        "Sam lives in Lisbon",
    ]

    weak = run(db, "SELECT COUNT(*) FROM knowledge_nodes WHERE retention_strength < 0.1;")
    assert weak == [{"COUNT(*)": 2}]


# -- transactions ------------------------------------------------------------------------------


def test_failing_fn_rolls_back_every_statement(store: Store) -> None:
    store.ingest("kept")
    rows = [_row(new_memory(store, f"partial {i}")) for i in range(3)]

    def fn(conn: apsw.Connection) -> None:
        for r in rows:
            conn.execute(_INSERT, r)
        raise RuntimeError("the caller's own bug")

    with pytest.raises(RuntimeError, match="own bug"):
        store._db.write(fn)
    assert count(store) == 1
    assert store.search("partial") == []
    fts_check(store)
    assert store.ingest("still writable").content == "still writable"


def test_sql_error_midway_rolls_back_and_is_translated(store: Store) -> None:
    first = _row(new_memory(store, "dup"))

    def fn(conn: apsw.Connection) -> None:
        conn.execute(_INSERT, first)
        conn.execute(_INSERT, first)  # UNIQUE(id) fails on the second statement

    with pytest.raises(StoreError) as info:
        store._db.write(fn)
    assert str(store.path) in info.value.message
    assert count(store) == 0
    assert not store._db._writer.in_transaction  # type: ignore[union-attr]


def test_busy_inside_a_transaction_reruns_the_whole_transaction(store: Store) -> None:
    """A real SQLITE_BUSY from inside fn: the first attempt's insert must vanish."""
    store._db.write(lambda c: c.execute("CREATE TABLE attempts(n INTEGER)"))
    calls = 0

    def fn(conn: apsw.Connection) -> int:
        nonlocal calls
        calls += 1
        conn.execute("INSERT INTO attempts(n) VALUES (?)", (calls,))
        if calls == 1:
            rival = apsw.Connection(str(store.path))
            try:
                rival.set_busy_timeout(0)
                rival.execute("BEGIN IMMEDIATE")  # our writer holds the lock: SQLITE_BUSY
            finally:
                rival.close()
        return calls

    assert store._db.write(fn) == 2
    with store._db.read() as conn:
        assert conn.execute("SELECT n FROM attempts").fetchall() == [(2,)]


# -- ingest, get, delete ------------------------------------------------------------------------


def test_ingest_stores_every_field_and_get_reads_it_back(store: Store) -> None:
    before = datetime.now(UTC)
    memory = store.ingest(
        "  The deploy key lives in 1Password  ",
        node_type="decision",
        tags=["ops", " ops ", "secrets"],
        source="chat 2026-11-24",
        valid_from="2026-01-01",
        valid_until="2026-12-31T12:00:00+02:00",
    )
    assert store.get(memory.id) == memory
    assert memory.content == "  The deploy key lives in 1Password  "  # kept exactly
    assert memory.node_type == "decision"
    assert memory.tags == ("ops", "secrets")
    assert memory.source == "chat 2026-11-24"
    assert memory.valid_from == "2026-01-01T00:00:00+00:00"
    assert memory.valid_until == "2026-12-31T10:00:00+00:00"
    assert memory.content_hash == similarity.content_hash(memory.content)
    # Full recall; retention 0.7 * 1 + 0.3 * storage 1/10, as every decay pass computes it.
    assert memory.retrieval_strength == 1.0
    assert memory.retention_strength == pytest.approx(0.73)
    assert (memory.storage_strength, memory.adjustment) == (1.0, 0.0)
    assert memory.stability == pytest.approx(2.3065)
    assert memory.superseded_by is None
    created = datetime.fromisoformat(memory.created_at)
    assert before <= created <= datetime.now(UTC)
    assert memory.created_at == memory.updated_at == memory.last_accessed
    assert memory.next_review is not None  # recall falls to 0.9 after S days
    assert datetime.fromisoformat(memory.next_review) == created + timedelta(days=2.3065)
    uuid.UUID(memory.id)


def test_ingest_accepts_exactly_the_byte_limit(store: Store) -> None:
    content = "é" * 500_000  # 1,000,000 UTF-8 bytes
    assert store.get(store.ingest(content).id).content == content


def test_delete_removes_the_memory_and_its_index_entry(store: Store) -> None:
    keep = store.ingest("alpha keeps")
    gone = store.ingest("omega leaves")
    store.delete(gone.id)
    with pytest.raises(MemoryNotFound) as info:
        store.get(gone.id)
    assert info.value.memory_id == gone.id
    assert store.search("omega") == []
    assert [h.memory.id for h in store.search("alpha")] == [keep.id]
    assert count(store) == 1
    with pytest.raises(MemoryNotFound):
        store.delete(gone.id)


@pytest.mark.parametrize("method", ["get", "delete", "promote", "demote"])
def test_unknown_id_is_memory_not_found(store: Store, method: str) -> None:
    store.ingest("something")
    missing = str(uuid.uuid4())
    with pytest.raises(MemoryNotFound) as info:
        getattr(store, method)(missing)
    assert info.value.memory_id == missing
    assert missing in str(info.value)
    assert "search" in info.value.hint
    assert count(store) == 1


@pytest.mark.parametrize("bad_id", ["", " ", "has space", "x" * 129, "../etc/passwd", None, 42])
@pytest.mark.parametrize("method", ["get", "delete", "promote", "demote"])
def test_malformed_id_is_invalid_input(store: Store, method: str, bad_id: Any) -> None:
    memory = store.ingest("untouched")
    with pytest.raises(InvalidInput, match="not a memory id"):
        getattr(store, method)(bad_id)
    assert store.get(memory.id) == memory


# -- promote and demote ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("stability", "abc", "a number"),
        ("reps", 1.5, "an integer"),
        ("content", b"\x00\x01", "text"),
        ("tags", "not json", "a JSON array of text"),
        ("tags", "[1, 2]", "a JSON array of text"),
    ],
)
def test_a_row_changed_by_hand_is_one_clear_error(
    data_dir: Path, column: str, value: Any, expected: str
) -> None:
    """A value of the wrong type, written by another SQLite client, is named, not a TypeError."""
    with Store.open(data_dir) as store:
        memory = store.ingest("edited by hand", tags=["x"])
        plain = apsw.Connection(str(data_dir / "vestige.db"))  # an external writer
        try:
            plain.execute(
                f"UPDATE knowledge_nodes SET {column} = ? WHERE id = ?", (value, memory.id)
            )
        finally:
            plain.close()
        for call in (lambda: store.get(memory.id), lambda: store.search("hand x")):
            with pytest.raises(StoreError) as info:
                call()
            assert f"in {column}, where Vestige expects {expected}" in info.value.message
            assert "vestige restore" in info.value.hint


def test_a_strength_changed_by_hand_stops_promote_before_it_writes(data_dir: Path) -> None:
    with Store.open(data_dir) as store:
        memory = store.ingest("promoted after a bad edit")
        plain = apsw.Connection(str(data_dir / "vestige.db"))
        try:
            plain.execute(
                "UPDATE knowledge_nodes SET retrieval_strength = 'high' WHERE id = ?", (memory.id,)
            )
        finally:
            plain.close()
        with pytest.raises(
            StoreError, match="in retrieval_strength, where Vestige expects a number"
        ):
            store.promote(memory.id)
        with store._db.read() as conn:
            assert conn.execute(
                "SELECT retrieval_strength, stability, last_accessed FROM knowledge_nodes"
            ).fetchall() == [("high", memory.stability, memory.last_accessed)]


def odds_times(p: float, factor: float) -> float:
    """The probability whose odds are ``factor`` times those of ``p``."""
    odds = p / (1 - p) * factor
    return odds / (1 + odds)


def test_promote_a_fresh_memory(store: Store) -> None:
    memory = store.ingest("useful")
    change = store.promote(memory.id)
    assert change.before == pytest.approx(
        {"retrieval": 1.0, "retention": 0.73, "stability": 2.3065, "adjustment": 0.0}
    )
    assert change.after == pytest.approx(
        {
            "retrieval": 1.0,
            "retention": odds_times(0.73, 1.8),  # 0.8296
            "stability": 3.45975,
            "adjustment": math.log(1.8),
        }
    )
    after = store.get(memory.id)
    assert (after.stability, after.adjustment) == pytest.approx((3.45975, math.log(1.8)))
    assert after.retention_strength == pytest.approx(change.after["retention"])
    # promote counts as an access, and reschedules the review from it
    accessed = datetime.fromisoformat(after.last_accessed)
    assert accessed > datetime.fromisoformat(memory.last_accessed)
    assert after.next_review == (accessed + timedelta(days=3.45975)).isoformat()


def test_demote_then_promote_numbers(store: Store) -> None:
    memory = store.ingest("misleading at first")
    down = store.demote(memory.id)
    assert down.after == pytest.approx(
        {
            "retrieval": 1.0,  # what it was: a demote is not an access, and no time passed
            "retention": odds_times(0.73, 0.5),  # 0.5748
            "stability": 1.15325,
            "adjustment": math.log(0.5),
        },
        abs=1e-6,
    )
    demoted = store.get(memory.id)
    assert demoted.last_accessed == memory.last_accessed  # demote keeps it
    assert datetime.fromisoformat(demoted.updated_at) > datetime.fromisoformat(memory.updated_at)
    up = store.promote(memory.id)
    assert up.before == pytest.approx(down.after, abs=1e-6)
    assert up.after == pytest.approx(
        {
            "retrieval": 1.0,
            "retention": odds_times(0.73, 0.9),  # halved, then x1.8
            "stability": 1.729875,
            "adjustment": math.log(0.9),
        }
    )
    got = store.get(memory.id)
    assert (got.retention_strength, got.stability, got.adjustment) == pytest.approx(
        (odds_times(0.73, 0.9), 1.729875, math.log(0.9))
    )


def test_demotes_add_up_to_odds_over_64_and_one_promote_lifts_at_once(store: Store) -> None:
    memory = store.ingest("wrong")
    changes = [store.demote(memory.id) for _ in range(7)]
    assert [c.after["adjustment"] for c in changes] == pytest.approx(
        [math.log(0.5) * min(k, 6) for k in range(1, 8)]
    )
    retentions = [c.after["retention"] for c in changes]
    assert retentions[:6] == sorted(retentions[:6], reverse=True)
    assert retentions[-1] == pytest.approx(odds_times(0.73, 1 / 64), abs=1e-6)  # 0.0419
    assert changes[-1].after["stability"] == pytest.approx(2.3065 * 0.5**7)
    assert store.get(memory.id).last_accessed == memory.last_accessed
    lifted = store.promote(memory.id)
    assert lifted.after["retention"] == pytest.approx(odds_times(0.73, 1.8 / 64))


def test_stability_stays_within_fsrs_bounds(store: Store) -> None:
    memory = store.ingest("demoted over and over")
    for _ in range(12):
        last = store.demote(memory.id)
    assert last.after["stability"] == fsrs.MIN_STABILITY_DAYS
    for _ in range(40):
        last = store.promote(memory.id)
    assert last.after["stability"] == fsrs.MAX_STABILITY_DAYS


# -- timeline ------------------------------------------------------------------------------------


def test_timeline_default_is_the_last_seven_days_newest_first(store: Store) -> None:
    now = datetime.now(UTC)
    import_rows(
        store,
        [
            row("three days ago", created_at=iso(now - timedelta(days=3))),
            row("six days ago", created_at=iso(now - timedelta(days=6, hours=23))),
            row("eight days ago", created_at=iso(now - timedelta(days=8))),
            row("last month", created_at=iso(now - timedelta(days=30))),
        ],
    )
    today = store.ingest("today")
    days = store.timeline()
    contents = [m.content for d in days for m in d.memories]
    assert contents == ["today", "three days ago", "six days ago"]
    assert days[0].date == today.created_at[:10]
    for day in days:
        assert all(m.created_at[:10] == day.date for m in day.memories)
    assert [d.date for d in days] == sorted({d.date for d in days}, reverse=True)


def test_timeline_groups_by_day_and_filters(store: Store) -> None:
    import_rows(
        store,
        [
            row("a", created_at="2026-01-10T09:00:00Z", node_type="event", tags=["x"]),
            row("b", created_at="2026-01-10T15:00:00Z", node_type="fact", tags=["x", "y"]),
            row("c", created_at="2026-01-11T08:00:00Z", node_type="fact"),
            row("d", created_at="2026-01-13T23:59:00Z", node_type="event", tags=["y"]),
            row("e", created_at="2026-01-20T00:00:00Z"),
            row("f", created_at="2026-01-09T23:59:59Z"),
        ],
    )
    days = store.timeline(start="2026-01-10", end="2026-01-14")
    assert [(d.date, [m.content for m in d.memories]) for d in days] == [
        ("2026-01-13", ["d"]),
        ("2026-01-11", ["c"]),
        ("2026-01-10", ["b", "a"]),
    ]
    by_type = store.timeline(start="2026-01-01", end="2026-02-01", node_type="event")
    assert [m.content for d in by_type for m in d.memories] == ["d", "a"]
    by_tag = store.timeline(start="2026-01-01", end="2026-02-01", tags=["y"])
    assert [m.content for d in by_tag for m in d.memories] == ["d", "b"]
    both = store.timeline(start="2026-01-01", end="2026-02-01", tags=["x", "y"])
    assert [m.content for d in both for m in d.memories] == ["b"]
    limited = store.timeline(start="2026-01-01", end="2026-02-01", limit=3)
    assert [m.content for d in limited for m in d.memories] == ["e", "d", "c"]
    # An offset is converted to UTC: 10:00+02:00 is 08:00Z, so "c" is on the boundary.
    edge = store.timeline(start="2026-01-11T10:00:00+02:00", end="2026-01-12")
    assert [m.content for d in edge for m in d.memories] == ["c"]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"start": "last tuesday"}, "start"),
        ({"end": "2026-02-30"}, "end"),
        ({"start": 20260101}, "start"),
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"limit": "10"}, "limit"),
        ({"node_type": "two words"}, "node_type"),
        ({"tags": "identity"}, "tags"),
    ],
)
def test_timeline_bad_input(store: Store, kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        store.timeline(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"end": "9999-12-31T23:59:59-01:00"}, "end"),  # the year 10000 in UTC
        ({"start": "0001-01-01T00:00:00+01:00"}, "start"),  # the year 0 in UTC
        ({"end": "0001-01-03"}, "end"),  # the default start, a week earlier, is before year 1
    ],
)
def test_timeline_dates_beyond_the_calendar_are_invalid_input(
    store: Store, kwargs: dict[str, Any], name: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        store.timeline(**kwargs)
    assert (
        info.value.message == f"{name} {kwargs[name]!r} is out of range (years 1 to 9999, in UTC)"
    )
    assert "ISO 8601" in info.value.hint


# -- stats and health ---------------------------------------------------------------------------


def test_stats(store: Store) -> None:
    future = iso(datetime.now(UTC) + timedelta(days=3))
    import_rows(
        store,
        [
            row(
                "old",
                created_at="2025-03-01T00:00:00Z",
                retention_strength=0.9,
                storage_strength=4.0,
                retrieval_strength=0.8,
                next_review=future,
            ),
            row(
                "mid",
                node_type="concept",
                created_at="2025-06-01T00:00:00Z",
                retention_strength=0.5,
                storage_strength=2.0,
                retrieval_strength=0.6,
                next_review=future,
            ),
            row(
                "weak",
                node_type="concept",
                created_at="2025-09-01T00:00:00Z",
                retention_strength=0.1,
                storage_strength=1.0,
                retrieval_strength=0.1,
                next_review="2025-09-02T00:00:00Z",
            ),
        ],
    )
    stats = store.stats()
    assert stats.total_memories == 3
    assert stats.due_for_review == 1
    assert stats.average_retention == pytest.approx(0.5)
    assert stats.average_storage_strength == pytest.approx(7 / 3, abs=1e-4)
    assert stats.average_retrieval_strength == pytest.approx(0.5)
    assert stats.oldest_memory == "2025-03-01T00:00:00+00:00"
    assert stats.newest_memory == "2025-09-01T00:00:00+00:00"
    assert stats.node_types == {"concept": 2, "fact": 1}
    assert stats.retention_bands == {"high": 1, "medium": 1, "low": 1}
    assert stats.schema_version == LATEST_VERSION
    assert stats.database_bytes > 0
    assert stats.database_bytes % 4096 == 0


def test_stats_of_an_empty_store(store: Store) -> None:
    stats = store.stats()
    assert stats.total_memories == 0
    assert stats.average_retention == 0.0
    assert stats.oldest_memory is None
    assert stats.retention_bands == {"high": 0, "medium": 0, "low": 0}


@pytest.mark.parametrize(
    ("retentions", "status"),
    [
        ([], "empty"),
        ([1.0, 0.0], "healthy"),  # average exactly 0.5 is not below 0.5
        ([0.9], "healthy"),
        ([0.49], "degraded"),
        ([0.6, 0.0], "degraded"),  # 0.3 is not below 0.3
        ([0.29], "critical"),
        ([0.05, 0.1], "critical"),
    ],
)
def test_health_status_rules(store: Store, retentions: list[float], status: str) -> None:
    future = iso(datetime.now(UTC) + timedelta(days=1))
    rows = [
        row(f"m{i}", retention_strength=r, next_review=future) for i, r in enumerate(retentions)
    ]
    import_rows(store, rows)
    health = store.health()
    assert health.status == status
    assert health.total_memories == len(retentions)
    assert health.quick_check == "ok"
    assert health.journal_mode == "wal"
    assert health.sqlite_version == apsw.sqlite_lib_version()
    assert health.schema_version == LATEST_VERSION
    # Fading is what memories do: it is a status, never a warning nobody could clear.
    assert health.warnings == ()


def test_health_warns_only_about_what_a_user_can_act_on(store: Store) -> None:
    """Reproduction 6: every store over 10 memories was "due for review", and stayed so."""
    for i in range(11):
        store.ingest(f"fresh memory {i}")
    health = store.health()
    assert health.due_for_review == 0
    assert not any("review" in w for w in health.warnings), health.warnings


def test_a_review_falls_due_when_recall_falls_to_90_percent(store: Store) -> None:
    """next_review is scheduled by FSRS; promote (a review) moves it, health never nags."""
    memory = store.ingest("learned three days ago")
    store.ingest("learned just now")
    three_days_ago = datetime.now(UTC) - timedelta(days=3)
    store._db.write(
        lambda c: c.execute(
            "UPDATE knowledge_nodes SET last_accessed = ? WHERE id = ?",
            (iso(three_days_ago), memory.id),
        )
    )
    store.decay()
    due = store.get(memory.id)
    assert due.next_review == iso(three_days_ago + timedelta(days=2.3065))
    assert fsrs.retrievability(2.3065, 2.3065) == pytest.approx(fsrs.REVIEW_TARGET)
    assert due.retrieval_strength < fsrs.REVIEW_TARGET
    health = store.health()
    assert (store.stats().due_for_review, health.due_for_review) == (1, 1)
    assert not any("review" in w for w in health.warnings), health.warnings

    store.promote(memory.id)  # reviewed: recall is full again, and lasts longer
    reviewed = store.get(memory.id)
    assert reviewed.next_review is not None
    assert datetime.fromisoformat(reviewed.next_review) > datetime.now(UTC) + timedelta(days=3)
    assert store.stats().due_for_review == 0


# -- full-text index stays in step with the table ----------------------------------------------


def test_fts_index_consistent_after_inserts_updates_deletes(store: Store) -> None:
    memories = [store.ingest(f"note {i} about topic{i % 5} and shared words") for i in range(30)]
    fts_check(store)
    for m in memories[:10]:
        store.delete(m.id)
    for m in memories[10:15]:
        store.promote(m.id)
        store.demote(m.id)
    result = store.smart_ingest("note 20 about topic0 and shared words plus zebra appended")
    assert result.decision.value == "update"
    assert result.memory.id == memories[20].id
    store.decay()
    import_rows(store, [row("imported giraffe", tags=["zoo"])])
    fts_check(store)
    assert [h.memory.content for h in store.search("giraffe")] == ["imported giraffe"]
    assert [h.memory.id for h in store.search("zebra")] == [memories[20].id]
    hits = store.search("note 3 about topic3", limit=100)
    assert hits
    assert memories[3].id not in {h.memory.id for h in hits}
    with store._db.read() as conn:
        indexed = conn.execute("SELECT COUNT(*) FROM knowledge_fts").fetchall()[0][0]
    assert indexed == count(store) == 21


def test_fts_check_detects_drift(store: Store) -> None:
    """Control for the test above: the rank=1 check fails when the index misses a row."""
    store.ingest("indexed")
    store._db.write(lambda c: c.execute("DROP TRIGGER knowledge_ai"))
    store.ingest("never indexed")
    with pytest.raises(StoreError):
        fts_check(store)


# -- bad input writes nothing ------------------------------------------------------------------

BAD_INGEST: list[tuple[str, dict[str, Any], str]] = [
    ("empty", {"content": ""}, "empty"),
    ("whitespace", {"content": " \n\t "}, "empty"),
    ("too-big", {"content": "é" * 500_001}, "1,000,002 bytes"),
    ("int", {"content": 123}, "content must be text"),
    ("surrogate", {"content": "bad \ud800 text"}, "content has '\\ud800' at position 4"),
    ("surrogate-tag", {"tags": ["ok", "\udfff"]}, "a tag has"),
    ("surrogate-source", {"source": "chat \udbff"}, "source has"),
    ("none", {"content": None}, "content must be text"),
    ("bytes", {"content": b"bytes"}, "content must be text"),
    ("list", {"content": ["x"]}, "content must be text"),
    ("tag-int", {"tags": [1]}, "tag must be a string"),
    ("tag-none", {"tags": ["ok", None]}, "tag must be a string"),
    ("tags-string", {"tags": "identity"}, "list of strings"),
    ("tags-int", {"tags": 5}, "list of strings"),
    ("too-many-tags", {"tags": [f"t{i}" for i in range(51)]}, "at most 50"),
    ("empty-tag", {"tags": [" "]}, "tag is empty"),
    ("long-tag", {"tags": ["x" * 101]}, "longer than 100"),
    ("node-type-empty", {"node_type": ""}, "node_type"),
    ("node-type-space", {"node_type": "two words"}, "node_type"),
    ("node-type-digit", {"node_type": "1fact"}, "node_type"),
    ("node-type-long", {"node_type": "x" * 51}, "node_type"),
    ("node-type-none", {"node_type": None}, "node_type"),
    ("source-int", {"source": 5}, "source"),
    ("source-long", {"source": "x" * 2001}, "source"),
    ("date-words", {"valid_from": "yesterday"}, "valid_from"),
    ("date-impossible", {"valid_until": "2026-13-45"}, "valid_until"),
    ("date-int", {"valid_from": 20260101}, "valid_from"),
    ("date-after-9999", {"valid_until": "9999-12-31T23:59:59-01:00"}, "valid_until"),
    ("date-before-1", {"valid_from": "0001-01-01T00:30:00+01:00"}, "out of range"),
]


BAD_CALLS = [
    pytest.param(method, kwargs, fragment, id=f"{method}-{name}")
    for method in ("ingest", "smart_ingest")
    for name, kwargs, fragment in BAD_INGEST
    if method == "ingest" or not any(k.startswith("valid_") for k in kwargs)
]


@pytest.mark.parametrize(("method", "kwargs", "fragment"), BAD_CALLS)
def test_bad_ingest_input_writes_nothing(
    store: Store, method: str, kwargs: dict[str, Any], fragment: str
) -> None:
    store.ingest("already here")
    version = store.data_version()
    call = {"content": "valid content", **kwargs}
    with pytest.raises(InvalidInput) as info:
        getattr(store, method)(**call)
    assert fragment in info.value.message
    assert count(store) == 1
    assert store.data_version() == version  # no commit happened at all


def test_data_version_moves_on_every_commit_without_a_read_between(data_dir: Path) -> None:
    """A cache keyed on data_version must see this process's and other stores' commits."""
    with Store.open(data_dir) as store, Store.open(data_dir) as other:
        v0 = store.data_version()
        assert store.data_version() == v0  # nothing committed: no change
        store.ingest("own write")
        v1 = store.data_version()
        assert v1 != v0
        other.ingest("someone else's write")
        v2 = store.data_version()
        assert v2 != v1
        store.search("write")
        assert store.data_version() == v2  # reads do not move it


def test_open_without_create_refuses_a_missing_database_and_creates_nothing(
    data_dir: Path,
) -> None:
    with pytest.raises(errors.DatabaseMissing, match="does not exist"):
        Store.open(data_dir, create=False)
    assert not data_dir.exists()
    data_dir.mkdir()
    with pytest.raises(errors.DatabaseMissing, match="no Vestige database"):
        Store.open(data_dir, create=False)
    assert list(data_dir.iterdir()) == []


def test_health_never_reports_damage_after_ordinary_writes(store: Store) -> None:
    """A check on the long-lived reader said "fts5: corruption found" after another
    connection's FTS5 secure-delete (a reinforce, an edit, a delete): the check runs on a
    fresh connection of its own."""
    first = store.ingest("Ada prefers tabs over spaces in Go code", tags=["style"])
    assert store.health().quick_check == "ok"  # the reader has now run a check once
    store.smart_ingest("Ada prefers tabs over spaces in Go code")  # reinforce: tags rewritten
    assert store.health().quick_check == "ok"
    store.edit(first.id, content="Ada prefers spaces in Python code")
    store.delete(store.ingest("short lived").id)
    health = store.health()
    assert (health.quick_check, health.status) == ("ok", "healthy")


def test_timeline_refuses_a_start_after_its_end(store: Store) -> None:
    """Issue 10: an empty success hid the swapped arguments."""
    with pytest.raises(InvalidInput, match=r"start '2026-03-02' is after end '2026-03-01'"):
        store.timeline(start="2026-03-02", end="2026-03-01")
    assert store.timeline(start="2026-03-01", end="2026-03-01") == []  # one day is a window
