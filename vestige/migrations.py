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


#: How migration 6 fills the kept stats from the rows; ``recount_kept_stats`` refills them.
_FILL_TOTALS: Final = """
        INSERT INTO memory_totals
        SELECT 1, COUNT(*), COALESCE(SUM(retention_strength), 0.0),
               COALESCE(SUM(storage_strength), 0.0), COALESCE(SUM(retrieval_strength), 0.0),
               COALESCE(SUM(retention_strength >= 0.7), 0),
               COALESCE(SUM(retention_strength >= 0.4 AND retention_strength < 0.7), 0),
               COALESCE(SUM(retention_strength < 0.4), 0)
        FROM knowledge_nodes;
"""
_FILL_COUNTS: Final = """
        INSERT INTO memory_counts(figure, key, n)
        SELECT 'node_type', node_type, COUNT(*) FROM knowledge_nodes GROUP BY node_type;
        INSERT INTO memory_counts(figure, key, n)
        SELECT 'review_hour', substr(next_review, 1, 13), COUNT(*) FROM knowledge_nodes
        WHERE next_review IS NOT NULL GROUP BY substr(next_review, 1, 13);
"""


def recount_kept_stats(conn: apsw.Connection) -> None:
    """Refill the kept stats (migration 6) from the rows, in the caller's write transaction.

    Triggers keep them exact on every write, but the strength sums are REAL: a huge value
    added and later subtracted takes the small ones with it, and a restored backup brings
    whatever its own tables say.  The decay pass, which reads every row anyway, and a
    restore call this, so no error outlives the next pass.
    """
    sql = "DELETE FROM memory_totals; DELETE FROM memory_counts;" + _FILL_TOTALS + _FILL_COUNTS
    for _ in conn.execute(sql):  # every statement runs as the cursor is read through
        pass


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
    Migration(
        6,
        "stats kept by triggers, not counted by scanning every memory",
        """
        -- What `vestige stats` reports, kept up to date by triggers in the transaction of
        -- every change to knowledge_nodes (so no write path can forget it: ingest, edit,
        -- decay, import, undo, purge, delete), and filled here from the rows already there.
        -- Stats then costs the same at 100k memories as at 1k (issue 12).  The strength sums
        -- are REAL: each change adds (NEW - OLD), which drifts by about one rounding error
        -- per change, some 1e-12 of an average after a million decay updates.
        CREATE TABLE memory_totals (
            id            INTEGER PRIMARY KEY CHECK (id = 1),
            memories      INTEGER NOT NULL,
            retention_sum REAL NOT NULL,
            storage_sum   REAL NOT NULL,
            retrieval_sum REAL NOT NULL,
            high          INTEGER NOT NULL,  -- retention_strength >= 0.7
            medium        INTEGER NOT NULL,  -- 0.4 <= retention_strength < 0.7
            low           INTEGER NOT NULL   -- retention_strength < 0.4
        );
        """
        + _FILL_TOTALS
        + """

        -- Memories per node_type, and per hour of next_review (its first 13 characters,
        -- 'YYYY-MM-DDTHH'): the due count is the hours before this one from here plus the
        -- rows of this hour from idx_nodes_next_review.  A count that reaches 0 is deleted.
        CREATE TABLE memory_counts (
            figure TEXT NOT NULL,  -- 'node_type' or 'review_hour'
            key    TEXT NOT NULL,
            n      INTEGER NOT NULL,
            PRIMARY KEY (figure, key)
        ) WITHOUT ROWID;
        """
        + _FILL_COUNTS
        + """

        CREATE TRIGGER memory_totals_ai AFTER INSERT ON knowledge_nodes BEGIN
            UPDATE memory_totals SET
                memories = memories + 1,
                retention_sum = retention_sum + NEW.retention_strength,
                storage_sum = storage_sum + NEW.storage_strength,
                retrieval_sum = retrieval_sum + NEW.retrieval_strength,
                high = high + (NEW.retention_strength >= 0.7),
                medium = medium
                    + (NEW.retention_strength >= 0.4 AND NEW.retention_strength < 0.7),
                low = low + (NEW.retention_strength < 0.4)
            WHERE id = 1;
            INSERT INTO memory_counts(figure, key, n) VALUES ('node_type', NEW.node_type, 1)
            ON CONFLICT(figure, key) DO UPDATE SET n = n + 1;
            INSERT INTO memory_counts(figure, key, n)
            SELECT 'review_hour', substr(NEW.next_review, 1, 13), 1
            WHERE NEW.next_review IS NOT NULL
            ON CONFLICT(figure, key) DO UPDATE SET n = n + 1;
        END;
        CREATE TRIGGER memory_totals_ad AFTER DELETE ON knowledge_nodes BEGIN
            UPDATE memory_totals SET
                memories = memories - 1,
                retention_sum = retention_sum - OLD.retention_strength,
                storage_sum = storage_sum - OLD.storage_strength,
                retrieval_sum = retrieval_sum - OLD.retrieval_strength,
                high = high - (OLD.retention_strength >= 0.7),
                medium = medium
                    - (OLD.retention_strength >= 0.4 AND OLD.retention_strength < 0.7),
                low = low - (OLD.retention_strength < 0.4)
            WHERE id = 1;
            UPDATE memory_counts SET n = n - 1
            WHERE figure = 'node_type' AND key = OLD.node_type;
            UPDATE memory_counts SET n = n - 1
            WHERE figure = 'review_hour' AND key = substr(OLD.next_review, 1, 13);
            DELETE FROM memory_counts WHERE figure = 'node_type' AND key = OLD.node_type AND n = 0;
            DELETE FROM memory_counts
            WHERE figure = 'review_hour' AND key = substr(OLD.next_review, 1, 13) AND n = 0;
        END;
        -- A decay pass updates every row: these fire only for the columns they count.
        CREATE TRIGGER memory_totals_au_strengths
        AFTER UPDATE OF retention_strength, storage_strength, retrieval_strength
        ON knowledge_nodes BEGIN
            UPDATE memory_totals SET
                retention_sum = retention_sum + (NEW.retention_strength - OLD.retention_strength),
                storage_sum = storage_sum + (NEW.storage_strength - OLD.storage_strength),
                retrieval_sum = retrieval_sum
                    + (NEW.retrieval_strength - OLD.retrieval_strength),
                high = high + (NEW.retention_strength >= 0.7) - (OLD.retention_strength >= 0.7),
                medium = medium
                    + (NEW.retention_strength >= 0.4 AND NEW.retention_strength < 0.7)
                    - (OLD.retention_strength >= 0.4 AND OLD.retention_strength < 0.7),
                low = low + (NEW.retention_strength < 0.4) - (OLD.retention_strength < 0.4)
            WHERE id = 1;
        END;
        CREATE TRIGGER memory_totals_au_type AFTER UPDATE OF node_type ON knowledge_nodes
        WHEN OLD.node_type IS NOT NEW.node_type BEGIN
            UPDATE memory_counts SET n = n - 1
            WHERE figure = 'node_type' AND key = OLD.node_type;
            DELETE FROM memory_counts WHERE figure = 'node_type' AND key = OLD.node_type AND n = 0;
            INSERT INTO memory_counts(figure, key, n) VALUES ('node_type', NEW.node_type, 1)
            ON CONFLICT(figure, key) DO UPDATE SET n = n + 1;
        END;
        CREATE TRIGGER memory_totals_au_review AFTER UPDATE OF next_review ON knowledge_nodes
        WHEN substr(OLD.next_review, 1, 13) IS NOT substr(NEW.next_review, 1, 13) BEGIN
            UPDATE memory_counts SET n = n - 1
            WHERE figure = 'review_hour' AND key = substr(OLD.next_review, 1, 13);
            DELETE FROM memory_counts
            WHERE figure = 'review_hour' AND key = substr(OLD.next_review, 1, 13) AND n = 0;
            INSERT INTO memory_counts(figure, key, n)
            SELECT 'review_hour', substr(NEW.next_review, 1, 13), 1
            WHERE NEW.next_review IS NOT NULL
            ON CONFLICT(figure, key) DO UPDATE SET n = n + 1;
        END;
        """,
    ),
    Migration(
        7,
        "request keys: a write sent again with its key gets the first answer",
        """
        -- Written in the transaction of the write it guards (vestige.request_keys): a key
        -- exists exactly when its write committed.  fingerprint hashes the call and its
        -- arguments (the same key for another call is refused); answer is the JSON the
        -- first call answered; recorded_at is Unix seconds, and keys older than
        -- config.REQUEST_KEY_TTL_S are deleted by the next keyed write, found by the index.
        CREATE TABLE request_keys (
            key         TEXT PRIMARY KEY,
            fingerprint TEXT NOT NULL,
            answer      TEXT NOT NULL,
            recorded_at REAL NOT NULL
        );
        CREATE INDEX idx_request_keys_recorded_at ON request_keys(recorded_at);
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
