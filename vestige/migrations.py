"""The schema, as an ordered list of numbered migrations.

Each migration runs in its own ``BEGIN IMMEDIATE`` transaction, re-reads the version inside
it (another process may have applied it a moment earlier), and records itself in
``schema_version``.  The runner is called while the write gate is held, so two processes
opening a brand-new file take turns instead of racing.

Never edit a released migration: add a new one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Final

from vestige._rows import as_str
from vestige.errors import MigrationError

if TYPE_CHECKING:
    import apsw

    from vestige._database import Database


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    sql: str


MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        1,
        "memories, full-text index and its sync triggers",
        """
        CREATE TABLE schema_version (
            version     INTEGER PRIMARY KEY,
            description TEXT NOT NULL,
            applied_at  TEXT NOT NULL
        );

        -- seq is an explicit INTEGER PRIMARY KEY so the full-text index's rowids survive a
        -- VACUUM (SQLite may renumber implicit rowids, silently breaking external content).
        CREATE TABLE knowledge_nodes (
            seq                 INTEGER PRIMARY KEY,
            id                  TEXT NOT NULL UNIQUE,
            content             TEXT NOT NULL,
            node_type           TEXT NOT NULL DEFAULT 'fact',
            created_at          TEXT NOT NULL,
            updated_at          TEXT NOT NULL,
            last_accessed       TEXT NOT NULL,
            stability           REAL NOT NULL DEFAULT 1.0,
            difficulty          REAL NOT NULL DEFAULT 5.0,
            reps                INTEGER NOT NULL DEFAULT 0,
            lapses              INTEGER NOT NULL DEFAULT 0,
            learning_state      TEXT NOT NULL DEFAULT 'new',
            storage_strength    REAL NOT NULL DEFAULT 1.0,
            retrieval_strength  REAL NOT NULL DEFAULT 1.0,
            retention_strength  REAL NOT NULL DEFAULT 1.0,
            sentiment_score     REAL NOT NULL DEFAULT 0.0,
            sentiment_magnitude REAL NOT NULL DEFAULT 0.0,
            next_review         TEXT,
            scheduled_days      INTEGER NOT NULL DEFAULT 0,
            source              TEXT,
            tags                TEXT NOT NULL DEFAULT '[]',
            has_embedding       INTEGER NOT NULL DEFAULT 0,
            embedding_model     TEXT,
            valid_from          TEXT,
            valid_until         TEXT,
            scope               TEXT NOT NULL DEFAULT 'user',
            superseded_by       TEXT,
            content_hash        TEXT NOT NULL
        );
        CREATE INDEX idx_nodes_retention ON knowledge_nodes(retention_strength);
        CREATE INDEX idx_nodes_next_review ON knowledge_nodes(next_review);
        CREATE INDEX idx_nodes_created ON knowledge_nodes(created_at);
        CREATE INDEX idx_nodes_content_hash ON knowledge_nodes(content_hash);

        CREATE VIRTUAL TABLE knowledge_fts USING fts5(
            id UNINDEXED, content, tags,
            content='knowledge_nodes', content_rowid='seq',
            tokenize='porter unicode61 remove_diacritics 2'
        );
        CREATE TRIGGER knowledge_ai AFTER INSERT ON knowledge_nodes BEGIN
            INSERT INTO knowledge_fts(rowid, id, content, tags)
            VALUES (NEW.seq, NEW.id, NEW.content, NEW.tags);
        END;
        CREATE TRIGGER knowledge_ad AFTER DELETE ON knowledge_nodes BEGIN
            INSERT INTO knowledge_fts(knowledge_fts, rowid, id, content, tags)
            VALUES ('delete', OLD.seq, OLD.id, OLD.content, OLD.tags);
        END;
        -- Only a change to indexed text touches the index: decay updates stay cheap.
        CREATE TRIGGER knowledge_au AFTER UPDATE OF content, tags ON knowledge_nodes BEGIN
            INSERT INTO knowledge_fts(knowledge_fts, rowid, id, content, tags)
            VALUES ('delete', OLD.seq, OLD.id, OLD.content, OLD.tags);
            INSERT INTO knowledge_fts(rowid, id, content, tags)
            VALUES (NEW.seq, NEW.id, NEW.content, NEW.tags);
        END;
        """,
    ),
    Migration(
        2,
        "maintenance: decay history, FSRS settings, run claims",
        """
        CREATE TABLE fsrs_config (
            key        TEXT PRIMARY KEY,
            value      REAL NOT NULL,
            updated_at TEXT NOT NULL
        );
        INSERT INTO fsrs_config(key, value, updated_at) VALUES ('w20', 0.1542, datetime('now'));

        CREATE TABLE consolidation_history (
            id                INTEGER PRIMARY KEY AUTOINCREMENT,
            completed_at      TEXT NOT NULL,
            duration_ms       INTEGER NOT NULL,
            memories_replayed INTEGER NOT NULL DEFAULT 0,
            holder            TEXT
        );

        -- A maintenance task (decay, optimize, checkpoint) is run by one process at a time:
        -- the holder claims the row in a write transaction and renews its lease per batch.
        CREATE TABLE maintenance_claims (
            task       TEXT PRIMARY KEY,
            holder     TEXT NOT NULL,
            claimed_at TEXT NOT NULL,
            expires_at REAL NOT NULL
        );
        """,
    ),
    Migration(
        3,
        "decay history named after what it records",
        """
        -- The original Vestige's name; it stored the decay pass's count in memories_replayed.
        ALTER TABLE consolidation_history RENAME TO decay_runs;
        ALTER TABLE decay_runs RENAME COLUMN memories_replayed TO decay_applied;
        -- NULL for runs recorded before this migration: they did not keep the count.
        ALTER TABLE decay_runs ADD COLUMN nodes_processed INTEGER;
        """,
    ),
    Migration(
        4,
        "promote and demote kept as state; reviews scheduled from FSRS",
        """
        -- The log-odds that promotes and demotes add to retention (vestige.fsrs).  Before,
        -- they edited the cached strengths and the next decay pass erased them, so old rows
        -- start at 0 (one changed since the last pass is lost at the next, as it was before).
        -- Superseding demoted the old memory: that demote is kept.
        ALTER TABLE knowledge_nodes ADD COLUMN adjustment REAL NOT NULL DEFAULT 0.0;
        UPDATE knowledge_nodes SET adjustment = -0.6931471805599453  -- ln(0.5): one demote
        WHERE superseded_by IS NOT NULL;
        -- Deleting a memory brings back what it superseded: found by this index.
        CREATE INDEX idx_nodes_superseded_by ON knowledge_nodes(superseded_by)
        WHERE superseded_by IS NOT NULL;

        -- next_review was set to the ingest time and never moved.  A review is due when
        -- recall falls to 0.9: S_eff days after the last access (fsrs.next_review).  NULL
        -- (never due) where last_accessed is no date or the result is past the year 9999.
        UPDATE knowledge_nodes SET next_review = strftime(
            '%Y-%m-%dT%H:%M:%f+00:00',
            julianday(last_accessed)
                + MIN(stability, 36500.0) * (1.0 + 0.5 * sentiment_magnitude)
        );
        """,
    ),
    Migration(
        5,
        "a changelog of every change, with enough to undo it; deletes leave no copies",
        """
        -- Append-only, written in the transaction of the change it records (vestige.changelog).
        -- seq is AUTOINCREMENT: never reused, even after the newest rows are trimmed, so a
        -- reader that remembers a seq can ask for what came after it.
        CREATE TABLE changelog (
            seq       INTEGER PRIMARY KEY AUTOINCREMENT,
            at        TEXT NOT NULL,
            kind      TEXT NOT NULL,
            memory_id TEXT,
            other_id  TEXT,
            undoes    INTEGER,
            client    TEXT,
            process   TEXT NOT NULL,
            transport TEXT NOT NULL,
            before    TEXT,
            detail    TEXT,
            origin    TEXT UNIQUE
        );
        CREATE INDEX idx_changelog_memory ON changelog(memory_id) WHERE memory_id IS NOT NULL;
        CREATE INDEX idx_changelog_other ON changelog(other_id) WHERE other_id IS NOT NULL;
        CREATE INDEX idx_changelog_undoes ON changelog(undoes) WHERE undoes IS NOT NULL;

        -- This database's identity (exported changes carry it, so importing one file twice
        -- adds its history once) and how far the changelog was trimmed.
        CREATE TABLE vestige_meta (
            key   TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );
        INSERT INTO vestige_meta(key, value) VALUES ('database_id', lower(hex(randomblob(16))));
        INSERT INTO vestige_meta(key, value) VALUES ('changelog_trimmed_through', '0');

        -- A deleted or rewritten memory leaves no words in the full-text index (a purged
        -- secret must not survive there as index terms).
        INSERT INTO knowledge_fts(knowledge_fts, rank) VALUES ('secure-delete', 1);
        """,
    ),
)

LATEST_VERSION: Final = MIGRATIONS[-1].version


def current_version(conn: apsw.Connection) -> int:
    """0 for an empty database; refuse a non-empty database that is not Vestige's."""
    tables = _tables(conn)
    if not tables:
        return 0
    if is_foreign(conn, tables):
        name = conn.db_filename("main") or "the database"
        raise MigrationError(
            f"{name} has tables but no schema_version: it is not a Vestige database",
            hint="Vestige leaves this file as it is. Move it out of the data directory, or "
            "point --data-dir at a directory of its own.",
        )
    version = conn.execute("SELECT MAX(version) FROM schema_version").fetchall()[0][0]
    if not isinstance(version, int) or version < 1:
        raise MigrationError(
            f"schema_version holds {version!r}, not a positive version",
            hint="The file is damaged; restore a backup with `vestige restore FILE`.",
        )
    return version


def _tables(conn: apsw.Connection) -> set[str]:
    return {
        as_str(row[0], "sqlite_schema.name")
        for row in conn.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    }


def is_foreign(conn: apsw.Connection, tables: set[str] | None = None) -> bool:
    """Does the database hold tables, none of them Vestige's ``schema_version``?"""
    found = _tables(conn) if tables is None else tables
    return bool(found) and "schema_version" not in found


def migrate(db: Database) -> int:
    """Bring the schema up to date; return the version reached.  Caller holds the gate."""
    version = db.transact_ungated(current_version)
    refuse_newer(version)
    for migration in MIGRATIONS:
        if migration.version > version:
            db.transact_ungated(partial(_apply, migration=migration))
    return db.transact_ungated(current_version)


def _apply(conn: apsw.Connection, *, migration: Migration) -> None:
    version = current_version(conn)
    refuse_newer(version)
    if version >= migration.version:
        return  # already applied, perhaps by another process a moment ago
    for _ in conn.execute(migration.sql):
        pass
    conn.execute(
        "INSERT INTO schema_version(version, description, applied_at) VALUES (?, ?, ?)",
        (migration.version, migration.description, datetime.now(UTC).isoformat()),
    )


def refuse_newer(version: int) -> None:
    if version > LATEST_VERSION:
        raise MigrationError(
            f"the database is at schema version {version}, newer than this Vestige knows "
            f"({LATEST_VERSION})",
            hint="Upgrade Vestige: pip install --upgrade vestige",
        )
