"""The schema: versions recorded in order, reopening changes nothing, foreign files refused."""

from __future__ import annotations

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
