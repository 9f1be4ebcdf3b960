"""The schema: versions recorded in order, reopening changes nothing, foreign files refused."""

from __future__ import annotations

import math
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import apsw
import pytest

from vestige import Store
from vestige.errors import MigrationError
from vestige.migrations import LATEST_VERSION, MIGRATIONS


def schema(db: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    conn = apsw.Connection(str(db))
    try:
        objects = conn.execute(
            "SELECT name, sql FROM sqlite_schema WHERE sql IS NOT NULL ORDER BY name"
        ).fetchall()
        versions = conn.execute(
            "SELECT version, description, applied_at FROM schema_version ORDER BY rowid"
        ).fetchall()
    finally:
        conn.close()
    return objects, versions


def test_migrations_are_numbered_from_one_without_gaps() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert len(MIGRATIONS) == LATEST_VERSION


def test_new_database_records_every_version_in_order(data_dir: Path) -> None:
    with Store.open(data_dir) as store:
        assert store.schema_version == LATEST_VERSION
    _, versions = schema(data_dir / "vestige.db")
    assert [v[0] for v in versions] == list(range(1, LATEST_VERSION + 1))
    assert [v[1] for v in versions] == [m.description for m in MIGRATIONS]
    assert [v[2] for v in versions] == sorted(v[2] for v in versions)


def test_expected_tables_exist(data_dir: Path) -> None:
    with Store.open(data_dir):
        pass
    objects, _ = schema(data_dir / "vestige.db")
    names = {name for name, _ in objects}
    assert {
        "knowledge_nodes",
        "knowledge_fts",
        "schema_version",
        "fsrs_config",
        "decay_runs",
        "maintenance_claims",
        "knowledge_ai",
        "knowledge_ad",
        "knowledge_au",
    } <= names


def test_reopening_is_a_no_op(data_dir: Path) -> None:
    with Store.open(data_dir) as store:
        store.ingest("survives reopening")
    before = schema(data_dir / "vestige.db")
    for _ in range(3):
        with Store.open(data_dir) as store:
            assert store.schema_version == LATEST_VERSION
            assert [m.content for m in store.iter_memories()] == ["survives reopening"]
            with store._db.read() as conn:
                assert conn.execute("SELECT COUNT(*) FROM fsrs_config").fetchall() == [(1,)]
    assert schema(data_dir / "vestige.db") == before


def test_foreign_sqlite_file_is_refused_and_left_alone(data_dir: Path) -> None:
    data_dir.mkdir()
    db = data_dir / "vestige.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT)")
    conn.execute("INSERT INTO notes(body) VALUES ('not yours')")
    conn.commit()
    conn.close()
    db.chmod(0o644)
    with pytest.raises(MigrationError) as info:
        Store.open(data_dir)
    assert "not a Vestige database" in info.value.message
    assert "--data-dir" in info.value.hint
    assert db.stat().st_mode & 0o777 == 0o644  # not chmodded
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not made WAL
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type='table'")}
        assert tables == {"notes"}
        assert conn.execute("SELECT body FROM notes").fetchall() == [("not yours",)]
    finally:
        conn.close()


def test_empty_sqlite_file_is_adopted(data_dir: Path) -> None:
    data_dir.mkdir()
    sqlite3.connect(data_dir / "vestige.db").close()  # a database with no tables at all
    with Store.open(data_dir) as store:
        assert store.schema_version == LATEST_VERSION


def test_newer_schema_is_refused(data_dir: Path) -> None:
    with Store.open(data_dir) as store:
        store.ingest("from the future")
    future = LATEST_VERSION + 5
    conn = apsw.Connection(str(data_dir / "vestige.db"))
    conn.execute(
        "INSERT INTO schema_version(version, description, applied_at) VALUES (?, 'x', 'now')",
        (future,),
    )
    conn.close()
    with pytest.raises(MigrationError) as info:
        Store.open(data_dir)
    assert f"schema version {future}" in info.value.message
    assert "Upgrade" in info.value.hint
    _, versions = schema(data_dir / "vestige.db")
    assert [v[0] for v in versions] == [*range(1, LATEST_VERSION + 1), future]


def test_damaged_schema_version_is_refused(data_dir: Path) -> None:
    with Store.open(data_dir):
        pass
    conn = apsw.Connection(str(data_dir / "vestige.db"))
    conn.execute("DELETE FROM schema_version")
    conn.close()
    with pytest.raises(MigrationError, match="not a positive version"):
        Store.open(data_dir)


def test_a_partly_migrated_database_is_completed(data_dir: Path) -> None:
    """A file that stopped after migration 1 gets the rest, and keeps its rows."""
    data_dir.mkdir()
    conn = apsw.Connection(str(data_dir / "vestige.db"))
    first = MIGRATIONS[0]
    with conn:
        for _ in conn.execute(first.sql):
            pass
        conn.execute(
            "INSERT INTO schema_version VALUES (1, ?, '2026-01-01T00:00:00+00:00')",
            (first.description,),
        )
    conn.close()
    with Store.open(data_dir) as store:
        assert store.schema_version == LATEST_VERSION
        store.ingest("works after completing the schema")
        assert store.decay().ran
    _, versions = schema(data_dir / "vestige.db")
    assert [v[0] for v in versions] == list(range(1, LATEST_VERSION + 1))


def test_decay_history_keeps_its_rows_under_the_new_name(data_dir: Path) -> None:
    """Version 3 renames consolidation_history (whose memories_replayed held the decay count)."""
    data_dir.mkdir()
    conn = apsw.Connection(str(data_dir / "vestige.db"))
    with conn:
        for migration in MIGRATIONS[:2]:
            for _ in conn.execute(migration.sql):
                pass
            conn.execute(
                "INSERT INTO schema_version VALUES (?, ?, '2026-01-01T00:00:00+00:00')",
                (migration.version, migration.description),
            )
        conn.execute(
            "INSERT INTO consolidation_history(completed_at, duration_ms, memories_replayed, "
            "holder) VALUES ('2026-03-01T10:00:00+00:00', 12, 7, 'old-host:1:abc')"
        )
    conn.close()
    with Store.open(data_dir) as store:
        assert store.last_decay_at() == datetime(2026, 3, 1, 10, tzinfo=UTC)
        store.ingest("decayed after the upgrade")
        assert store.decay().ran
        with store._db.read() as conn:
            runs = conn.execute(
                "SELECT duration_ms, nodes_processed, decay_applied, holder FROM decay_runs "
                "ORDER BY id"
            ).fetchall()
    assert runs[0] == (12, None, 7, "old-host:1:abc")  # the count it had; no node count then
    assert runs[1][1:3] == (1, 1)  # the new pass records both counts
    objects, _ = schema(data_dir / "vestige.db")
    assert "consolidation_history" not in {name for name, _ in objects}


def test_version_4_keeps_old_rows_and_schedules_their_reviews(data_dir: Path) -> None:
    """Old rows get no adjustment (a superseded one keeps its demote) and an FSRS schedule."""
    data_dir.mkdir()
    conn = apsw.Connection(str(data_dir / "vestige.db"))
    columns = (
        "id, content, created_at, updated_at, last_accessed, stability, retention_strength, "
        "next_review, superseded_by, content_hash"
    )
    with conn:
        for migration in MIGRATIONS[:3]:
            for _ in conn.execute(migration.sql):
                pass
            conn.execute(
                "INSERT INTO schema_version VALUES (?, ?, '2026-01-01T00:00:00+00:00')",
                (migration.version, migration.description),
            )
        for mid, accessed, superseded_by in (
            ("plain", "2026-03-01T10:00:00+00:00", None),
            ("old", "2026-03-01T10:00:00.250000+00:00", "plain"),
            ("odd", "not a time", None),
        ):
            conn.execute(
                f"INSERT INTO knowledge_nodes({columns}) VALUES (?, ?, ?, ?, ?, 2.0, 1.0, ?, ?, ?)",
                (mid, mid, accessed, accessed, accessed, accessed, superseded_by, mid),
            )
    conn.close()
    with Store.open(data_dir) as store:
        assert store.schema_version >= 4
        with store._db.read() as c:
            got = c.execute(
                "SELECT id, adjustment, next_review, retention_strength FROM knowledge_nodes "
                "ORDER BY seq"
            ).fetchall()
    assert got == [
        ("plain", 0.0, "2026-03-03T10:00:00.000+00:00", 1.0),  # two days of stability later
        ("old", math.log(0.5), "2026-03-03T10:00:00.250+00:00", 1.0),
        ("odd", 0.0, None, 1.0),  # never due; strengths are left to the next pass
    ]
    with Store.open(data_dir) as store:  # the first pass after the upgrade
        report = store.decay()
        assert (report.nodes_processed, report.decay_applied) == (3, 2)  # "odd" left alone
        plain, old, odd = (store.get(mid) for mid in ("plain", "old", "odd"))
    r = plain.retrieval_strength
    assert plain.retention_strength == pytest.approx(0.7 * r + 0.03)  # the old pass's formula
    assert old.retention_strength < plain.retention_strength  # superseding demoted it
    assert odd.retention_strength == 1.0
