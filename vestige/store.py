"""``Store``: the memory API that the MCP server and the CLI both call.

The store knows nothing of MCP or terminals.  It validates input before any transaction,
does slow work (similarity scoring, JSON, hashing) outside transactions, and changes the
database only through ``Database.write`` - one short ``BEGIN IMMEDIATE`` each, retried on
BUSY, serialised across processes by the write gate.

Request keys (``vestige.request_keys``): ingest, smart_ingest, delete, edit, undo, promote
and demote each write in one transaction, and that transaction returns exactly what the
method returns, so a key recorded with it keeps the method's answer.  A new write method
that may be given a key keeps both rules.

smart_ingest keeps what an agent said.  It compares the new text with the full-text
candidates of the same node type (each original text and each text an update added to it),
by the measures of ``vestige.similarity``: *same* and *extends* read words in order,
*overlap* is the cosine of content-word counts.  The first rule some candidate meets
decides; among those that meet it, the highest overlap wins (then the full-text rank):

==  =========================================================  ================================
#   a candidate ...                                            decision
==  =========================================================  ================================
1   has the same normalised text (``content_hash``, then the   reinforce it
    texts compared: a row keeps the hash it was stored with)
2   says the same: the same words in the same order (case      reinforce it
    that says nothing, punctuation, Markdown, invisible
    characters, articles, fillers and contractions aside),
    both asked or both stated; nothing left out
3   overlap >= 0.60, and either the new text has a correction  supersede it
    marker ("actually", "no longer", ...), changes its content
    words or negation, and brings at most one content word of
    its own and no more than it drops (it swaps one value, it
    does not add); or the new text is it negated and nothing
    else ("not", "nicht mehr", "ne ... plus", ...)
4   overlap >= 0.75, and it was demoted 3 times, net of        supersede it
    promotes (its adjustment is below ln 0.2)
5   is extended: its words (at least 3) recur in the new text  update: append the new text
    in order as one piece, with 2+ words added before or       under ``[Updated YYYY-MM-DD]``
    after it and no negation
-   none of the above                                          create
==  =========================================================  ================================

When in doubt the new text is kept on its own: reordered words ("Alice reports to Bob" /
"Bob reports to Alice"), a word left out ("all services except billing"), a changed value,
a case that says something ("5 mW" / "5 MW"), two words swapped under a correction marker
(another subject), a negation of a different statement ("port 5433 is not open" / "port
5432 is open") and a shared vocabulary all create.  Supersede keeps both: the new memory
is created, the old one is demoted and its ``superseded_by`` names the new one, and the
result's ``superseded_id`` names the old one.
docs/ARCHITECTURE.md lists the cases each rule is tested on, in both directions.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import operator
import os
import threading
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import IO, TYPE_CHECKING, Final, Self

from vestige import (
    _leases,
    _validate,
    changelog,
    config,
    decay,
    fsrs,
    migrations,
    request_keys,
    search,
    similarity,
    sql,
)
from vestige._database import Database
from vestige._rows import as_float, as_int, as_opt_str, as_str, one, scalar
from vestige.changelog import Actor, Change, ChangeKind, ChangePage
from vestige.config import DataDir, Durability
from vestige.errors import CorruptionError, InvalidInput, MemoryNotFound, StoreError
from vestige.models import (
    HAS_EMBEDDING_INDEX,
    MEMORY_COLUMNS,
    SELECT_MEMORY,
    TAGS_INDEX,
    DecayReport,
    Decision,
    Edited,
    Health,
    ImportReport,
    IngestResult,
    Lease,
    LeaseHeld,
    Memory,
    PurgeReport,
    SearchHit,
    Stats,
    StrengthChange,
    TimelineDay,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from pathlib import Path

    import apsw

    from vestige import transfer
    from vestige._rows import Bindings, Value

#: _TRANSFER_LAZY: vestige.transfer (export, import, backup, salvage hints) is imported by
#: the methods that use it, not with the store: it was a fifth of `vestige stats`'s start-up
#: and of every command that never moves a file (issue 12).
#: Rule 3: content-word overlap at which a correction or a negation is about that memory.
SUPERSEDE_CORRECTION_AT: Final = 0.60
#: Rule 4: content-word overlap at which new text replaces a demoted memory.
SUPERSEDE_DEMOTED_AT: Final = 0.75
#: Rule 5: the shortest memory an update extends, and the fewest words it must add.
EXTEND_MIN_WORDS: Final = 3
EXTEND_MIN_ADDED: Final = 2
#: Rule 4: the promote/demote adjustment (log-odds, see ``vestige.fsrs``) under which a memory
#: counts as demoted: three demotes (odds / 8), not two (/ 4), as retrieval < 0.3 was before.
DEMOTED_BELOW: Final = math.log(0.2)
SMART_CANDIDATES: Final = 20
#: Candidates with all the new text's common words, beyond the 20 its rare words rank: the
#: memory a text corrects may share every word with it but its rare ones.
SMART_ALL_COMMON: Final = 5
#: The most common terms that rank a smart_ingest's candidates besides its rare ones: the
#: rarest of them (``_search_rows``).
SMART_RANKING_TERMS: Final = 4
#: A term in more than this share of the newest rows weighs nothing in bm25.
MOST_ROWS: Final = 0.5
#: How many memory texts smart_ingest keeps read (``_read_section``), and the longest it
#: keeps (characters): at most ~2,048 x 2,000 characters and what was read of them, ~20 MB.
READ_CACHE_SECTIONS: Final = 2_048
READ_CACHE_MAX_CHARS: Final = 2_000
#: How far the store may grow (a fraction of its rows) before the term counts that split a
#: smart_ingest text into rare and common words are counted again (``Store._ingest_terms``).
TERM_COUNTS_STALE_FRACTION: Final = 0.01
#: How long ``check_after_unclean_stop`` waits for its quick_check before the caller goes on
#: (a server then starts serving): a failover follows every kill -9 and must stay fast.  A
#: check that takes longer (a large database) finishes in the background, and refuses
#: writes, loudly, the moment it finds damage.
UNCLEAN_STOP_CHECK_WAIT_S: Final = 0.5
TIMELINE_DEFAULT_DAYS: Final = 7

log = logging.getLogger("vestige.store")

_INSERT: Final = (
    f"INSERT INTO knowledge_nodes({SELECT_MEMORY}) VALUES ({', '.join('?' * len(MEMORY_COLUMNS))})"
)
_SELECT_BY_ID: Final = f"SELECT {SELECT_MEMORY} FROM knowledge_nodes WHERE id = ?"


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


#: memory_counts keys a review time by its first 13 characters: 'YYYY-MM-DDTHH' (migration 6).
_REVIEW_HOUR_CHARS: Final = 13


def _due_count(conn: apsw.Connection, now: str) -> int:
    """Memories whose next_review <= now, without counting them one by one.

    For any two strings, a prefix that sorts before another's prefix of the same length
    sorts the whole string before it: every hour before now's is due in full (kept in
    memory_counts), every hour after it not at all, and now's own hour is counted from
    idx_nodes_next_review (the rows from the hour's start to now).
    """
    hour = now[:_REVIEW_HOUR_CHARS]
    before = scalar(
        conn,
        "SELECT COALESCE(SUM(n), 0) FROM memory_counts WHERE figure = 'review_hour' AND key < ?",
        (hour,),
    )
    this_hour = scalar(
        conn,
        "SELECT COUNT(*) FROM knowledge_nodes WHERE next_review >= ? AND next_review <= ?",
        (hour, now),
    )
    return as_int(before, "memory_counts.n") + as_int(this_hour, "COUNT(*)")


class Store:
    """One process's handle on one Vestige database.  Thread-safe; close it when done."""

    def __init__(
        self,
        db: Database,
        data_dir: DataDir,
        schema_version: int,
        actor: Actor | None = None,
        *,
        changelog_keep: int = config.CHANGELOG_KEEP_ROWS,
    ) -> None:
        self._db = db
        #: The decay pass trims the changelog to this many newest entries.
        self.changelog_keep = changelog_keep
        self.data_dir = data_dir
        self.schema_version = schema_version
        #: Named in every changelog entry this store writes (the client comes from
        #: ``changelog.acting_for``).
        self.actor = actor or Actor.this_process("library")
        #: Searches' term counts, kept until any process commits (used under the reader lock).
        self._term_rows = _TermRows()
        #: smart_ingest's, kept until the store grew by a share of its rows (``_ingest_terms``).
        self._ingest_terms = _TermRows()
        self._ingest_counted_at = (-1, -1)  # the newest memory's seq, the newest change's

    # -- opening -------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        data_dir: str | os.PathLike[str] | DataDir | None = None,
        *,
        durability: Durability | str | None = None,
        write_gate: bool = True,
        create: bool = True,
        environ: dict[str, str] | None = None,
        actor: Actor | None = None,
    ) -> Store:
        """Open (and if needed create and migrate) the database of a data directory.

        :param data_dir: the directory; None applies ``VESTIGE_DATA_DIR`` then the OS default.
        :param durability: "balanced" (default, or ``VESTIGE_SQLITE_DURABILITY``) or "hardened".
        :param write_gate: serialise writers across processes fairly (leave on; the benchmark
            turns it off to measure what it buys).
        :param create: False refuses to create a missing database (read-only commands).
        :param actor: who the changelog names for this store's changes (default: this
            program and pid, transport "library").
        """
        resolved = (
            data_dir
            if isinstance(data_dir, DataDir)
            else config.resolve_data_dir(data_dir, environ=environ)
        )
        level = (
            config.parse_durability(durability)
            if durability is not None
            else config.durability_from_env(environ)
        )
        if create:
            config.prepare_data_dir(resolved)
        else:
            config.require_database(resolved)
        # On a read-only filesystem, or in a data directory this user may not write (chmod
        # 0500), a reading command reads without the gate (it cannot be created or locked
        # there) and without creating -wal/-shm; writes are refused.
        read_only = not create and (
            config.mounted_read_only(resolved.path)
            or not os.access(resolved.path, os.W_OK | os.X_OK)
        )
        version = 0

        def needs_init(conn: apsw.Connection) -> bool:
            nonlocal version
            version = migrations.current_version(conn)  # refuses a file that is not ours
            migrations.refuse_newer(version)
            return version < migrations.LATEST_VERSION

        def init(db: Database) -> None:
            nonlocal version
            version = migrations.migrate(db)

        naive = config.naive_writes_from_env(environ)
        if naive:
            log.warning(
                "%s=1: no write gate, no retry (load-test baseline)", config.NAIVE_WRITES_ENV
            )
        write_delay_s = config.write_delay_from_env(environ)
        keep = config.changelog_keep_from_env(environ)
        if write_delay_s:
            log.warning(
                "%s: every write sleeps %.0f ms inside its transaction (fault injection)",
                config.WRITE_DELAY_ENV,
                write_delay_s * 1000,
            )
        db = Database(
            resolved.database,
            durability=level,
            gate_path=resolved.gate if write_gate and not naive and not read_only else None,
            retry_busy=not naive,
            write_delay_s=write_delay_s,
            needs_init=needs_init,
            init=init,
            read_only=read_only,
        )
        return cls(db, resolved, version, actor, changelog_keep=keep)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def path(self) -> Path:
        return self.data_dir.database

    def data_version(self) -> int:
        """Changes when any process commits: a cache keyed on it never goes stale."""
        return self._db.data_version()

    # -- writing -------------------------------------------------------------------

    def ingest(
        self,
        content: str,
        *,
        node_type: str = "fact",
        tags: list[str] | tuple[str, ...] | None = None,
        source: str | None = None,
        valid_from: str | None = None,
        valid_until: str | None = None,
    ) -> Memory:
        """Store a new memory as given (no duplicate detection)."""
        memory = self._new_memory(
            content,
            node_type=node_type,
            tags=tags,
            source=source,
            valid_from=valid_from,
            valid_until=valid_until,
        )
        row = _row(memory)

        def tx(conn: apsw.Connection) -> Memory:
            conn.execute(_INSERT, row)
            self._record(conn, ChangeKind.CREATED, memory_id=memory.id)
            return memory  # what a request key's answer is made of (vestige.request_keys)

        return self._db.write(tx)

    def smart_ingest(
        self,
        content: str,
        *,
        node_type: str = "fact",
        tags: list[str] | tuple[str, ...] | None = None,
        source: str | None = None,
        force_create: bool = False,
    ) -> IngestResult:
        """Store new content, or fold it into the memory it repeats, updates or corrects."""
        new = self._new_memory(
            content,
            node_type=node_type,
            tags=tags,
            source=source,
            valid_from=None,
            valid_until=None,
        )
        if force_create:

            def create(conn: apsw.Connection) -> IngestResult:
                conn.execute(_INSERT, _row(new))
                self._record(conn, ChangeKind.CREATED, memory_id=new.id)
                return IngestResult(Decision.CREATE, new, 0.0, "force_create was set")

            return self._db.write(create)

        decision, target, score, reason = self._decide(new)

        def tx(conn: apsw.Connection) -> IngestResult:
            result = decide(conn)
            self._record_ingest(conn, result)
            return result

        def decide(conn: apsw.Connection) -> IngestResult:
            # The decision came from a snapshot; another process may have written since.
            current = _fetch(conn, target.id) if target is not None else None
            if current is not None and current.superseded_by is not None:
                current = None  # superseded meanwhile: no longer a candidate
            if decision is Decision.CREATE or current is None:
                old = _same_text(conn, new)
                if old is not None:  # the same text was stored meanwhile (another process?)
                    stored = _reinforce(conn, old, new)
                    return IngestResult(Decision.REINFORCE, stored, 1.0, "same content", before=old)
                conn.execute(_INSERT, _row(new))
                why = (
                    reason
                    if target is None
                    else "the similar memory was deleted or superseded meanwhile"
                )
                return IngestResult(Decision.CREATE, new, score, why)
            if decision is Decision.REINFORCE:
                stored = _reinforce(conn, current, new)
                return IngestResult(decision, stored, score, reason, before=current)
            if decision is Decision.UPDATE:
                updated = _append(conn, current, new)
                if updated is not None:
                    return IngestResult(decision, updated, score, reason, before=current)
                conn.execute(_INSERT, _row(new))
                return IngestResult(Decision.CREATE, new, score, "update would exceed size limit")
            conn.execute(_INSERT, _row(new))
            _supersede(conn, current, new.id)
            return IngestResult(
                decision, new, score, reason, superseded_id=current.id, before=current
            )

        return self._db.write(tx)

    def _record_ingest(self, conn: apsw.Connection, result: IngestResult) -> None:
        """The one changelog entry of a smart_ingest, whichever way it went."""
        detail = {"decision": result.decision.value, "similarity": round(result.similarity, 4)}
        kind = {
            Decision.CREATE: ChangeKind.CREATED,
            Decision.REINFORCE: ChangeKind.REINFORCED,
            Decision.UPDATE: ChangeKind.UPDATED,
            Decision.SUPERSEDE: ChangeKind.SUPERSEDED,
        }[result.decision]
        self._record(
            conn,
            kind,
            memory_id=result.memory.id,
            other_id=result.superseded_id,
            before=changelog.rows(result.before) if result.before else None,
            detail=detail,
        )

    def _record(
        self,
        conn: apsw.Connection,
        kind: ChangeKind,
        *,
        memory_id: str | None = None,
        other_id: str | None = None,
        before: Mapping[str, object] | None = None,
        detail: Mapping[str, object] | None = None,
        undoes: int | None = None,
    ) -> int:
        return changelog.record(
            conn,
            self.actor,
            kind,
            memory_id=memory_id,
            other_id=other_id,
            before=before,
            detail=detail,
            undoes=undoes,
        )

    def _decide(self, new: Memory) -> tuple[Decision, Memory | None, float, str]:
        """Pick the decision from a read snapshot; the write re-checks the target exists."""
        with self._db.read() as conn:
            exact = _same_text(conn, new)
            if exact is not None:
                return Decision.REINFORCE, exact, 1.0, "same content"
            text = similarity.read(new.content)
            candidates = _candidates(conn, text, new, self._fresh_term_counts(conn))
        if not candidates:
            return Decision.CREATE, None, 0.0, "nothing similar"
        return _choose(text, [_match(text, m) for m in candidates])

    def _fresh_term_counts(self, conn: apsw.Connection) -> _TermRows:
        """smart_ingest's kept term counts, counted again once more changes were written
        since they were counted (any process's: the changelog's seq) than
        ``TERM_COUNTS_STALE_FRACTION`` of the store's rows (its newest seq).  Called inside
        a read, which the reader lock serialises."""
        rows, changes = conn.execute(_NEWEST_SEQS).fetchone() or (0, 0)
        rows_at, changes_at = self._ingest_counted_at
        if abs(as_int(changes, "seq") - changes_at) > rows_at * TERM_COUNTS_STALE_FRACTION:
            self._ingest_counted_at = (as_int(rows, "seq"), as_int(changes, "seq"))
        return self._ingest_terms.on(conn, key=self._ingest_counted_at)

    def delete(self, memory_id: str) -> int:
        """Delete a memory; return the changelog entry's seq (the tombstone, for undo).

        What it superseded comes back: visible, and its demote undone.

        Otherwise a memory replaced by one that was later deleted would stay hidden from
        search for good, and telling its fact again would store a duplicate.
        """
        mid = _validate.memory_id(memory_id)

        def tx(conn: apsw.Connection) -> int:
            gone = _fetch(conn, mid)
            if gone is None:
                raise MemoryNotFound(mid)
            back = _remove(conn, gone)
            return self._record(
                conn,
                ChangeKind.DELETED,
                memory_id=mid,
                other_id=back[0].id if back else None,
                before=changelog.rows(gone, *back),
                detail={"brought_back": [m.id for m in back]} if back else None,
            )

        return self._db.write(tx)

    def purge(self, memory_id: str) -> PurgeReport:
        """Remove a memory for good: for a secret stored by mistake.

        Its row, its words in the full-text index, its content in every changelog entry and
        the answers kept for request keys that name it (``request_keys``) go, and
        (``secure_delete``) no free page keeps a copy.  A memory already deleted can be
        purged too: its tombstones in the changelog are what is left of it.  The changelog
        records only that a purge happened.  Then a TRUNCATE checkpoint copies the
        purge into vestige.db (overwriting the old pages there) and empties the WAL, unless
        another process is reading: until a later checkpoint, the old pages stay in
        vestige.db and the WAL then, and the report says so.  Backups made earlier keep
        their copies.
        """
        mid = _validate.memory_id(memory_id)

        def tx(conn: apsw.Connection) -> tuple[bool, list[str], int]:
            gone = _fetch(conn, mid)
            back = _remove(conn, gone) if gone is not None else []
            redacted = changelog.redact(conn, mid)
            request_keys.forget_answers_naming(conn, mid)
            if gone is None and not redacted:
                raise MemoryNotFound(mid)
            self._record(
                conn,
                ChangeKind.PURGED,
                memory_id=mid,
                other_id=back[0].id if back else None,
                # The memories it brought back, as they were, and of the purged one only
                # the mark that it was purged (an older undo then sees it changed).
                before={mid: changelog.PURGED_ROW, **changelog.rows(*back)},
                detail={"was_live": gone is not None, "brought_back": [m.id for m in back]},
            )
            return gone is not None, [m.id for m in back], redacted

        was_live, back, redacted = self._db.write(tx)
        try:
            self._db.checkpoint(truncate=True)
            checkpointed = self.wal_bytes() == 0
        except StoreError as exc:
            log.info("after purging %s the WAL could not be emptied: %s", mid, exc)
            checkpointed = False
        return PurgeReport(
            id=mid,
            was_live=was_live,
            brought_back=tuple(back),
            changelog_entries_redacted=redacted,
            checkpointed=checkpointed,
        )

    def edit(
        self,
        memory_id: str,
        *,
        content: str | None = None,
        tags: list[str] | tuple[str, ...] | None = None,
    ) -> Edited:
        """Replace a memory's content or tags (or both), keeping its strength and history.

        The changelog keeps the previous row (``change_seq`` names the entry), so an undo
        can put it back.  Not an access: the memory's strengths are unchanged.
        """
        mid = _validate.memory_id(memory_id)
        if content is None and tags is None:
            raise InvalidInput(
                "nothing to edit: give new content, new tags, or both",
                hint="Pass the new content, the new tags, or both, with the memory's id.",
            )
        text = _validate.content(content) if content is not None else None
        labels = tuple(_validate.tags(tags)) if tags is not None else None

        def tx(conn: apsw.Connection) -> Edited:
            current = _fetch(conn, mid)
            if current is None:
                raise MemoryNotFound(mid)
            new_text = current.content if text is None else text
            new_tags = current.tags if labels is None else labels
            conn.execute(
                "UPDATE knowledge_nodes SET content = ?, content_hash = ?, tags = ?, "
                "updated_at = ? WHERE id = ?",
                (
                    new_text,
                    similarity.content_hash(new_text),
                    json.dumps(list(new_tags), ensure_ascii=False),
                    now_iso(),
                    mid,
                ),
            )
            changed = [n for n, on in (("content", text), ("tags", labels)) if on is not None]
            seq = self._record(
                conn,
                ChangeKind.EDITED,
                memory_id=mid,
                before=changelog.rows(current),
                detail={"changed": changed},
            )
            edited = _fetch(conn, mid)
            assert edited is not None
            return Edited(edited, seq)

        return self._db.write(tx)

    # -- the changelog -------------------------------------------------------------

    def changes(
        self,
        *,
        memory_id: str | None = None,
        kinds: list[str] | tuple[str, ...] | None = None,
        after_seq: int | None = None,
        before_seq: int | None = None,
        since: str | None = None,
        limit: int = config.CHANGELOG_DEFAULT_LIMIT,
        oldest_first: bool = False,
        after_name: str = "after_seq",
    ) -> ChangePage:
        """A bounded page of the changelog, newest first (see ``vestige.changelog``).

        ``after_seq`` (a change's seq) or ``since`` (a time) ask for what came later; when
        some of that was trimmed, the page's ``gap`` says so.  ``before_seq`` pages back
        through older entries, newest first; an ``after_seq`` not below it is an error (the
        window would be empty).  ``after_name`` is what messages call ``after_seq`` (the MCP
        tool's argument is ``since_seq``).
        """
        mid = _validate.memory_id(memory_id) if memory_id is not None else None
        wanted = _validate.change_kinds(kinds)
        after = _validate.seq(after_seq, name=after_name) if after_seq is not None else None
        before = _validate.seq(before_seq, name="before_seq") if before_seq is not None else None
        if after is not None and before is not None and after >= before:
            raise InvalidInput(
                f"{after_name} {after} is not below before_seq {before}: no change is both "
                "after the one and before the other",
                hint=f"Give a {after_name} below before_seq (or leave either out).",
            )
        when = _validate.timestamp(since, name="since")
        n = _validate.limit(limit, maximum=config.CHANGELOG_MAX_LIMIT)
        with self._db.read() as conn:
            return changelog.page(
                conn,
                memory_id=mid,
                kinds=wanted,
                after_seq=after,
                before_seq=before,
                since=when,
                limit=n,
                oldest_first=oldest_first,
            )

    def change(self, seq: int) -> Change:
        """One changelog entry by its seq."""
        number = _validate.seq(seq, name="change id")
        with self._db.read() as conn:
            found = changelog.get(conn, number)
            if found is None:
                raise _no_change(conn, number, self.changelog_keep)
            return found

    def undo(self, seq: int) -> Change:
        """Reverse one change, in one transaction that records the undo as a change of its own.

        Refused, naming the blocking change, when a later change touched the same memories
        and has not itself been undone; when the change was already undone; and for kinds
        that cannot be undone (a create: delete the memory instead; a purge; a decay pass).
        """
        number = _validate.seq(seq, name="change id")

        def tx(conn: apsw.Connection) -> Change:
            target = changelog.get(conn, number)
            if target is None:
                raise _no_change(conn, number, self.changelog_keep)
            _check_undoable(conn, target)
            assert target.before is not None
            now = datetime.now(UTC)
            current: dict[str, Memory | None] = {mid: _fetch(conn, mid) for mid in target.before}
            done: dict[str, str] = {}
            unlinked: list[Memory] = []
            for mid, row in target.before.items():
                how, freed = _put_back(conn, mid, row, now)
                done[mid] = how
                unlinked += [m for m in freed if m.id not in target.before]
            # What a removal brought back (memories it had superseded) changed too: kept, so
            # that the next undo sees it.
            current.update({m.id: m for m in unlinked})
            undo_seq = self._record(
                conn,
                ChangeKind.UNDONE,
                memory_id=target.memory_id,
                other_id=target.other_id,
                before={mid: m.to_dict() if m else None for mid, m in current.items()},
                detail={
                    "undone_kind": target.kind,
                    "brought_back": [m for m, how in done.items() if how == "inserted"],
                    "removed": [m for m, how in done.items() if how == "removed"],
                    "unlinked": [m.id for m in unlinked],
                },
                undoes=target.seq,
            )
            recorded = changelog.get(conn, undo_seq)
            assert recorded is not None
            return recorded

        return self._db.write(tx)

    def promote(self, memory_id: str) -> StrengthChange:
        """The memory helped: it counts as accessed now and ranks higher, for good.

        Stability x1.5 and the odds of retention x1.8 (``fsrs.promoted``) are kept in the
        memory's state, so no decay pass takes them back.
        """
        return self._restrength(memory_id, fsrs.promoted, ChangeKind.PROMOTED)

    def demote(self, memory_id: str) -> StrengthChange:
        """The memory misled: it ranks lower and fades faster, for good.  It is not deleted.

        Stability and the odds of retention are halved (``fsrs.demoted``) in the memory's
        state, so no decay pass takes it back.  Not an access: last_accessed stays.
        """
        return self._restrength(
            memory_id, lambda state, _now: fsrs.demoted(state), ChangeKind.DEMOTED
        )

    def _restrength(
        self,
        memory_id: str,
        change: Callable[[fsrs.MemoryState, datetime], fsrs.MemoryState],
        kind: ChangeKind,
    ) -> StrengthChange:
        mid = _validate.memory_id(memory_id)

        def tx(conn: apsw.Connection) -> StrengthChange:
            current = _fetch(conn, mid)
            if current is None:
                raise MemoryNotFound(mid)
            now = datetime.now(UTC)
            w20 = decay.read_w20(conn)
            state = current.fsrs_state()
            before = fsrs.strengths(state, now, w20)
            changed = change(state, now)
            after = _save_state(conn, mid, changed, now, w20=w20)
            conn.execute(
                "UPDATE knowledge_nodes SET updated_at = ? WHERE id = ?", (now.isoformat(), mid)
            )
            self._record(conn, kind, memory_id=mid, before=changelog.rows(current))
            return StrengthChange(mid, _strengths(state, before), _strengths(changed, after))

        return self._db.write(tx)

    def decay(self) -> DecayReport:
        """Run the decay pass: every memory's strengths recomputed from the FSRS-6 curve.

        The original Vestige named this pass "consolidate" (the MCP tool and CLI command keep
        that name).  If another process holds the pass's lease, nothing changes and the report
        says who runs it.
        """
        return decay.run(self._db, actor=self.actor, changelog_keep=self.changelog_keep)

    def last_decay_at(self) -> datetime | None:
        """When the newest decay pass of any process finished (None before the first)."""
        return decay.last_run_at(self._db)

    # -- maintenance leases --------------------------------------------------------

    def claim_lease(
        self, task: str, *, lease_s: float = config.MAINTENANCE_LEASE_S
    ) -> Lease | LeaseHeld:
        """Claim ``task`` for this process, unless another process holds a live lease on it.

        The lease is taken inside a write transaction, so two processes never both win.  It
        lasts ``lease_s`` seconds unless renewed: a holder that dies frees the task by
        simply stopping.  Release it when done.
        """
        return _leases.claim(self._db, task, lease_s=lease_s)

    def renew_lease(self, lease: Lease) -> bool:
        """Extend the lease by its length from now; False if it ran out and was taken over."""
        return self._db.write(partial(_leases.renew_in, lease=lease))

    def release_lease(self, lease: Lease) -> None:
        """Hand the task back at once (a lease already taken over is left alone)."""
        _leases.release(self._db, lease)

    def optimize(self) -> None:
        """Refresh the query planner's statistics (bounded; for the maintenance owner)."""
        self._db.write(
            lambda c: c.execute(f"PRAGMA optimize = {config.OPTIMIZE_MASK:#x}").fetchall()
        )

    def checkpoint(self, *, truncate: bool = False) -> tuple[int, int]:
        return self._db.checkpoint(truncate=truncate)

    # -- reading -------------------------------------------------------------------

    def get(self, memory_id: str) -> Memory:
        mid = _validate.memory_id(memory_id)
        with self._db.read() as conn:
            memory = _fetch(conn, mid)
        if memory is None:
            raise MemoryNotFound(mid)
        return memory

    def search(
        self,
        query: str,
        *,
        limit: int = 10,
        min_retention: float = 0.0,
        node_type: str | None = None,
        tags: list[str] | None = None,
        include_superseded: bool = False,
        content_chars: int | None = None,
    ) -> list[SearchHit]:
        """Full-text search ranked by BM25 blended with retention.  Never a syntax error.

        A superseded memory (one a correction replaced) is left out unless
        ``include_superseded``; then it ranks below the memory that superseded it.

        Candidates are ranked on their scores alone; only the rows returned are read, so a
        search costs the memory of what it returns, not of three times as much.  With
        ``content_chars``, each hit's ``content`` holds at most that many characters of the
        text (0: none), for a caller that shows only the start of it.
        """
        text = _validate.query(query)
        n = _validate.limit(limit, maximum=config.MAX_LIMIT)
        floor = _validate.fraction(min_retention, name="min_retention")
        kind = _validate.node_type(node_type) if node_type is not None else None
        wanted = json.dumps(_validate.tags(tags))
        words = search.query_terms(text)
        if not words:
            return []  # only punctuation: nothing can match
        window = min(n * 3, config.MAX_LIMIT)
        with self._db.read() as conn:
            filters = (floor, kind, kind, wanted)
            terms = self._term_rows.on(conn)
            rows = _search_rows(
                conn, words, filters, window, include_superseded, terms=terms, own_bm25=True
            )
            keyword = search.keyword_scores([as_float(r[-1], "rank") for r in rows])
            ranked = [
                _Candidate(
                    as_int(seq, "seq"),
                    as_str(mid, "id"),
                    as_opt_str(successor, "superseded_by"),
                    k,
                    search.combined_score(k, as_float(retention, "retention_strength")),
                )
                for (seq, mid, retention, successor, _), k in zip(rows, keyword, strict=True)
            ]
            ranked.sort(key=lambda c: c.combined, reverse=True)
            kept = search.below_successors(ranked, lambda c: c.id, lambda c: c.successor)[:n]
            found = _memories_by_seq(conn, [c.seq for c in kept], content_chars)
        return [SearchHit(found[c.seq], c.keyword, c.combined) for c in kept]

    def timeline(
        self,
        *,
        start: str | None = None,
        end: str | None = None,
        node_type: str | None = None,
        tags: list[str] | None = None,
        limit: int = 50,
        content_chars: int | None = None,
    ) -> list[TimelineDay]:
        """Memories created between start and end (default: the last 7 days), newest first.

        With ``content_chars``, each memory's ``content`` holds at most that many characters.
        """
        until = _validate.timestamp(end, name="end", end_of_day=True) or now_iso()
        since = _validate.timestamp(start, name="start")
        if since is None:
            try:
                since = (
                    datetime.fromisoformat(until) - timedelta(days=TIMELINE_DEFAULT_DAYS)
                ).isoformat()
            except OverflowError:  # end in the first week of year 1
                raise _validate.out_of_range("end", end) from None
        if datetime.fromisoformat(since) > datetime.fromisoformat(until):
            later = f"end {_validate.shown(end)}" if end is not None else "now"
            raise InvalidInput(
                f"start {_validate.shown(start)} is after {later}: the window is empty",
                hint="Give a start before the end (or leave either out: the default window "
                "is the 7 days up to end).",
            )
        n = _validate.limit(limit, maximum=_validate.MAX_TIMELINE_LIMIT)
        kind = _validate.node_type(node_type) if node_type is not None else None
        wanted = json.dumps(_validate.tags(tags))
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT {_memory_columns(content_chars)} FROM knowledge_nodes n "
                f"WHERE created_at >= ? AND created_at <= ? AND (? IS NULL OR node_type = ?) "
                f"AND {_HAS_TAGS} "
                "ORDER BY created_at DESC LIMIT ?",
                (since, until, kind, kind, wanted, n),
            ).fetchall()
        days: dict[str, list[Memory]] = {}
        for memory in map(Memory.from_row, rows):
            days.setdefault(memory.created_at[:10], []).append(memory)
        return [TimelineDay(day, tuple(ms)) for day, ms in days.items()]

    def query(
        self,
        statement: str,
        *,
        max_rows: int = sql.MAX_ROWS,
        deadline_s: float = sql.QUERY_DEADLINE_S,
    ) -> sql.QueryResult:
        """Run one SQL statement that only reads, in one snapshot (``vestige sql``): at
        most ``max_rows`` rows, stopped after ``deadline_s``.

        :raises InvalidInput: it would do more than read, is not one statement, SQLite
            cannot run it, or it ran out of time or memory (see ``vestige.sql``).
        """
        with self._db.read() as conn:
            return sql.run(conn, statement, max_rows=max_rows, deadline_s=deadline_s)

    def stats(self) -> Stats:
        """The figures come from ``memory_totals`` and ``memory_counts``, which triggers keep
        in every write's transaction (migration 6), and from index lookups: no scan of the
        memories, so stats costs the same at 100k as at 1k."""
        now = now_iso()
        with self._db.read() as conn:
            total, ret_sum, sto_sum, rtr_sum, high, medium, low = one(
                conn,
                "SELECT memories, retention_sum, storage_sum, retrieval_sum, high, medium, low "
                "FROM memory_totals WHERE id = 1",
            )
            # Two subqueries: SQLite answers a lone MIN or MAX from idx_nodes_created.
            oldest, newest = one(
                conn,
                "SELECT (SELECT MIN(created_at) FROM knowledge_nodes), "
                "(SELECT MAX(created_at) FROM knowledge_nodes)",
            )
            due = _due_count(conn, now)
            types = {
                as_str(node_type, "node_type"): as_int(count, "memory_counts.n")
                for node_type, count in conn.execute(
                    "SELECT key, n FROM memory_counts WHERE figure = 'node_type' "
                    "ORDER BY n DESC, key"
                ).fetchall()
            }
            page_count = as_int(scalar(conn, "PRAGMA page_count"), "page_count")
            page_size = as_int(scalar(conn, "PRAGMA page_size"), "page_size")
            version = migrations.current_version(conn)
        count = as_int(total, "memory_totals.memories")

        def average(total_sum: object, name: str) -> float:
            return round(as_float(total_sum, name) / count, 4) if count else 0.0

        return Stats(
            total_memories=count,
            due_for_review=due,
            average_retention=average(ret_sum, "memory_totals.retention_sum"),
            average_storage_strength=average(sto_sum, "memory_totals.storage_sum"),
            average_retrieval_strength=average(rtr_sum, "memory_totals.retrieval_sum"),
            oldest_memory=as_opt_str(oldest, "created_at"),
            newest_memory=as_opt_str(newest, "created_at"),
            node_types=types,
            retention_bands={
                "high": as_int(high, "memory_totals.high"),
                "medium": as_int(medium, "memory_totals.medium"),
                "low": as_int(low, "memory_totals.low"),
            },
            database_bytes=page_count * page_size,
            wal_bytes=self.wal_bytes(),
            schema_version=version,
        )

    # -- after an unclean stop -------------------------------------------------------

    def check_after_unclean_stop(self, *, wait_s: float = UNCLEAN_STOP_CHECK_WAIT_S) -> str:
        """quick_check the database (on a connection of its own); if it is damaged, refuse
        every write from then on, with the way to rescue it.  Reads go on.

        For a process that takes over after one that stopped without cleaning up (a kill -9
        mid-write, a crash, a power cut): writing on into a damaged file spreads the damage
        and buries the last good state under new changes.  Waits at most ``wait_s``, then
        lets the check finish in the background.

        :returns: "ok", "damaged", or "running" (still checking in the background).
        """
        outcome: list[str] = []
        done = threading.Event()

        def check() -> None:
            try:
                found = self._db.quick_check()
            except CorruptionError as exc:  # a page so damaged that the check itself stops
                found = exc.message
            except StoreError as exc:  # busy, closed: no verdict either way
                log.warning("the check of %s after an unclean stop did not run: %s", self.path, exc)
                found = "ok"
            if found != "ok":
                self._refuse_writes_damaged(found)
            outcome.append("ok" if found == "ok" else "damaged")
            done.set()

        threading.Thread(target=check, name="vestige-unclean-stop-check", daemon=True).start()
        if done.wait(wait_s):
            return outcome[0]
        log.warning(
            "%s: the check after an unclean stop takes longer than %.1f s; it goes on in the "
            "background and refuses writes if it finds damage",
            self.path,
            wait_s,
        )
        return "running"

    def _refuse_writes_damaged(self, found: str) -> None:
        from vestige import transfer  # noqa: PLC0415 - see _TRANSFER_LAZY

        reason = CorruptionError(
            f"{self.path} is damaged (quick_check after an unclean stop: {found}); writes are "
            "refused so that nothing more is written to it, and reads go on",
            hint=transfer.rescue_hint(self.data_dir),
        )
        self._db.refuse_writes(reason)
        log.error("DAMAGED DATABASE: %s", reason)

    @property
    def write_refusal(self) -> StoreError | None:
        """Why this store refuses writes (a damaged database), or None."""
        return self._db.write_refusal

    def memory_states(self, sample: int | None = None) -> dict[str, int]:
        """How many memories are active, dormant, silent and unavailable
        (``fsrs.memory_state``), counted over the oldest ``sample`` (None: every one).

        Reads three strengths per memory, never the text: counting 500 memories of a
        megabyte each used to cost 700 MB.
        """
        counts = dict.fromkeys(("active", "dormant", "silent", "unavailable"), 0)
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT retention_strength, retrieval_strength, storage_strength "
                "FROM knowledge_nodes ORDER BY seq LIMIT ?",
                (-1 if sample is None else max(0, sample),),
            ).fetchall()
        for retention, retrieval, storage in rows:
            score = fsrs.accessibility(
                as_float(retention, "retention_strength"),
                as_float(retrieval, "retrieval_strength"),
                as_float(storage, "storage_strength"),
            )
            counts[fsrs.memory_state(score)] += 1
        return counts

    def health(self) -> Health:
        """Memory health (the original's rules) plus the database's own checks.

        Each warning names something to do.  ``due_for_review`` is reported, never warned
        about: nothing in Vestige reviews memories one by one, so a warning could not be
        cleared (issue 9).  A promote, or the same fact told again, is the review.  Nor is a
        low average retention: memories fade with time by design (a month unused: about
        0.5), and promoting half the store to silence a warning is no remedy.  The status
        keeps the original's names for how faded the memories are; only "damaged" is a fault.
        A database too damaged to count its memories is reported as damaged, with the
        counts at 0 and a warning that says so.
        """
        import apsw  # noqa: PLC0415 - only for the version string

        from vestige import transfer  # noqa: PLC0415 - see _TRANSFER_LAZY

        warnings: list[str] = []
        try:
            stats = self.stats()
        except CorruptionError as exc:
            stats = _NO_STATS
            warnings.append(f"the memories cannot be counted (0 shown): {exc.message}")
        journal = self._db.journal_mode()
        try:
            check = self._db.quick_check()
        except CorruptionError as exc:  # a page so damaged that the check itself stops
            check = exc.message
        refusal = self._db.write_refusal
        if refusal is not None:
            warnings.append(f"writes are refused: {refusal.message}. {refusal.hint}")
        if check != "ok" or refusal is not None or stats is _NO_STATS:
            status = "damaged"
            if check != "ok":
                rescue = "" if refusal is not None else f" {transfer.rescue_hint(self.data_dir)}"
                warnings.append(f"quick_check found damage: {check}.{rescue}")
        elif stats.total_memories == 0:
            status = "empty"
        elif stats.average_retention < 0.3:
            status = "critical"
        elif stats.average_retention < 0.5:
            status = "degraded"
        else:
            status = "healthy"
        if journal != "wal":
            warnings.append(f"journal mode is {journal}, not wal")
        if stats.wal_bytes > config.JOURNAL_SIZE_LIMIT_BYTES:
            warnings.append(
                f"the WAL is {stats.wal_bytes:,} bytes, over the "
                f"{config.JOURNAL_SIZE_LIMIT_BYTES:,}-byte limit: a long read may pin it"
            )
        return Health(
            status=status,
            total_memories=stats.total_memories,
            average_retention=stats.average_retention,
            due_for_review=stats.due_for_review,
            sqlite_version=apsw.sqlite_lib_version(),
            journal_mode=journal,
            quick_check=check,
            wal_bytes=self.wal_bytes(),
            schema_version=self.schema_version if stats is _NO_STATS else stats.schema_version,
            warnings=tuple(warnings),
        )

    def wal_bytes(self) -> int:
        try:
            return os.stat(f"{self.path}-wal").st_size  # stat only: never open SQLite's files
        except FileNotFoundError:
            return 0

    def iter_memories(self) -> Iterator[Memory]:
        """Every memory, oldest first, read in short snapshots (a long one pins the WAL)."""
        from vestige import transfer  # noqa: PLC0415 - see _TRANSFER_LAZY

        return transfer.iter_memories(self._db)

    # -- backup, export, import ------------------------------------------------------

    def backup(
        self, target: str | os.PathLike[str] | None = None, *, prefix: str = config.BACKUP_PREFIX
    ) -> Path:
        """A consistent online snapshot (0600), verified with quick_check; never a file copy.

        ``target`` is a new file, or a folder (default: ``backups/``) where the file is named
        ``<prefix>-<UTC time>.db``, with ``-2``, ``-3``... when that name is taken.
        """
        from vestige import transfer  # noqa: PLC0415 - see _TRANSFER_LAZY

        return transfer.backup(self._db, self.data_dir, target, prefix=prefix)

    def export_jsonl(self, out: IO[str]) -> int:
        """Write every memory as one JSON object per line; return how many."""
        from vestige import transfer  # noqa: PLC0415 - see _TRANSFER_LAZY

        return transfer.export(self._db, out)

    def export(
        self,
        out: IO[str] | str | os.PathLike[str],
        *,
        fmt: transfer.ExportFormat = "jsonl",
        progress: transfer.Progress | None = None,
        with_changelog: bool = True,
    ) -> int:
        """Every memory to a stream, or to a new private file that appears only when whole.

        The changelog follows the memories unless ``with_changelog`` is false.  Returns the
        number of memories.
        """
        from vestige import transfer  # noqa: PLC0415 - see _TRANSFER_LAZY

        if isinstance(out, str | os.PathLike):
            return transfer.export_file(
                self._db, out, fmt=fmt, progress=progress, with_changelog=with_changelog
            )
        return transfer.export(
            self._db, out, fmt=fmt, progress=progress, with_changelog=with_changelog
        )

    def import_jsonl(self, source: IO[str]) -> ImportReport:
        """Import memories; ids already present are skipped, so importing twice is harmless.

        Every line is checked before anything is written: one bad line imports nothing.
        """
        from vestige import transfer  # noqa: PLC0415 - see _TRANSFER_LAZY

        return transfer.import_jsonl(self._db, source, actor=self.actor)

    def import_checked(
        self, checked: transfer.ImportFile, *, progress: transfer.Progress | None = None
    ) -> ImportReport:
        """Import a file that ``transfer.read_import`` read and checked, in short batches."""
        from vestige import transfer  # noqa: PLC0415 - see _TRANSFER_LAZY

        return transfer.import_rows(self._db, checked, actor=self.actor, progress=progress)

    def record_restore(self, source: str, kept: str | None, *, previous_newest_seq: int) -> None:
        """Note in the changelog that the database came back from a backup (``vestige.restore``).

        The entry goes into the restored database, after the backup's own history, and is
        numbered after the newest entry of the replaced database, ``previous_newest_seq``:
        change numbers are never given twice, and asking for the replaced database's later
        changes answers with a gap.
        """
        detail = {"backup": source, "previous_kept_as": kept}

        def tx(conn: apsw.Connection) -> None:
            changelog.continue_after(conn, previous_newest_seq)
            self._record(conn, ChangeKind.RESTORED, detail=detail)
            migrations.recount_kept_stats(conn)  # a backup's own totals are only its claim

        self._db.write(tx)

    # -- helpers -------------------------------------------------------------------

    def _new_memory(
        self,
        content: str,
        *,
        node_type: str,
        tags: list[str] | tuple[str, ...] | None,
        source: str | None,
        valid_from: str | None,
        valid_until: str | None,
    ) -> Memory:
        text = _validate.content(content)
        clock = datetime.now(UTC)
        now = clock.isoformat()
        state = fsrs.new_state(clock)
        # The same function as every later write and decay pass: at no elapsed time, a
        # pass finds exactly these values (issue 9: ingest said 1.0, the first pass 0.73).
        # w20 does not matter at t = 0, nor for next_review (S days at FSRS's 0.9 target).
        fresh = fsrs.strengths(state, clock)
        return Memory(
            id=str(uuid.uuid4()),
            content=text,
            node_type=_validate.node_type(node_type),
            created_at=now,
            updated_at=now,
            last_accessed=now,
            stability=state.stability,
            difficulty=fsrs.INITIAL_DIFFICULTY,
            reps=0,
            lapses=0,
            learning_state="new",
            storage_strength=state.storage,
            retrieval_strength=fresh.retrieval,
            retention_strength=fresh.retention,
            sentiment_score=0.0,
            sentiment_magnitude=state.sentiment_magnitude,
            next_review=fresh.next_review.isoformat() if fresh.next_review else None,
            scheduled_days=0,
            source=_validate.source(source),
            tags=tuple(_validate.tags(tags)),
            has_embedding=False,
            embedding_model=None,
            valid_from=_validate.timestamp(valid_from, name="valid_from"),
            valid_until=_validate.timestamp(valid_until, name="valid_until"),
            scope="user",
            superseded_by=None,
            content_hash=similarity.content_hash(text),
            adjustment=state.adjustment,
        )


#: What ``health`` shows for counts it cannot read (with a warning that says so).
_NO_STATS: Final = Stats(
    total_memories=0,
    due_for_review=0,
    average_retention=0.0,
    average_storage_strength=0.0,
    average_retrieval_strength=0.0,
    oldest_memory=None,
    newest_memory=None,
    node_types={},
    retention_bands={},
    database_bytes=0,
    wal_bytes=0,
    schema_version=0,
)

_SELECT_BY_HASH: Final = (
    f"SELECT {SELECT_MEMORY} FROM knowledge_nodes WHERE content_hash = ? AND node_type = ? "
    "AND superseded_by IS NULL LIMIT ?"
)


def _same_text(conn: apsw.Connection, new: Memory) -> Memory | None:
    """Rule 1: the current memory of the same type whose normalised text is the new one's.

    The hash finds it, the text confirms it: a row keeps the hash it was stored with, and an
    earlier normalisation folded "10⁶" into "106", so an equal hash alone is not the same text.
    """
    text = similarity.normalize(new.content)
    rows = conn.execute(_SELECT_BY_HASH, (new.content_hash, new.node_type, SMART_CANDIDATES))
    for memory in map(Memory.from_row, rows):
        if similarity.normalize(memory.content) == text:
            return memory
    return None


#: The newest memory's seq (about the store's size) and the newest change's (writes so far).
_NEWEST_SEQS: Final = (
    "SELECT (SELECT coalesce(max(seq), 0) FROM knowledge_nodes), "
    "(SELECT coalesce(max(seq), 0) FROM changelog)"
)


def _candidates(
    conn: apsw.Connection,
    text: similarity.Text,
    new: Memory,
    terms: _TermRows | None = None,
) -> list[Memory]:
    """Candidates for rules 2 to 5: the current memories of the new text's type that rank
    best on its content words, the way a search for them would rank (``_search_rows``).

    A repeat, an extension or a correction shares most of its content words with the
    memory it is about.  Ranked on all of them, that memory comes first; ranked on a few
    rare ones only, rows that share just those crowd it out of the top 20, and the new text
    would hide the wrong memory or be stored beside the right one (issue 12's first try).
    Function words never select (an OR of every word, "the" included, ranked nearly every
    row); a text without content words matches on all its words, as before.
    """
    words = search.query_terms(" ".join(text.content)) or search.query_terms(new.content)
    if not words:
        return []
    filters = (0.0, new.node_type, new.node_type, "[]")
    found = _search_rows(
        conn,
        words,
        filters,
        SMART_CANDIDATES,
        False,
        common_rows=search.CANDIDATE_ROWS,
        with_all_common=SMART_ALL_COMMON,
        terms=terms,
        ranking_terms=SMART_RANKING_TERMS,
    )
    seqs = [as_int(row[0], "seq") for row in found]
    by_seq = _memories_by_seq(conn, seqs, None)
    return [by_seq[seq] for seq in seqs if seq in by_seq]


#: Every tag of the bound JSON array is among the row's tags.
_HAS_TAGS: Final = (
    "NOT EXISTS (SELECT 1 FROM json_each(?) w "
    "WHERE w.value NOT IN (SELECT value FROM json_each(n.tags)))"
)
#: What ranks a candidate; its row is read only if it is returned (_memories_by_seq).
_SEARCH_FROM: Final = (
    "SELECT n.seq, n.id, n.retention_strength, n.superseded_by, f.rank "
    "FROM knowledge_fts f JOIN knowledge_nodes n "
    "ON n.seq = f.rowid WHERE knowledge_fts MATCH ? AND n.retention_strength >= ? "
    f"AND (? IS NULL OR n.node_type = ?) AND {_HAS_TAGS} "
)
_SEARCH: Final = f"{_SEARCH_FROM} AND n.superseded_by IS NULL ORDER BY f.rank LIMIT ?"
#: Live memories first, so superseded ones never crowd their successors out of the window.
#: A sort of its own: FTS5 can no longer hand the rows over in rank order.
_SEARCH_WITH_SUPERSEDED: Final = (
    f"{_SEARCH_FROM} ORDER BY n.superseded_by IS NOT NULL, f.rank LIMIT ?"
)
#: The newest matches, in the order FTS5 reads them (no sort): only their bm25 is computed.
_SEARCH_NEWEST: Final = f"{_SEARCH_FROM} ORDER BY f.rowid DESC LIMIT ?"
_SEARCH_NEWEST_LIVE: Final = (
    f"{_SEARCH_FROM} AND n.superseded_by IS NULL ORDER BY f.rowid DESC LIMIT ?"
)
#: The newest matches without their bm25, their length in its place: a plain walk of the
#: doclists.
_NEWEST_BY_LENGTH: Final = (
    _SEARCH_FROM.replace("f.rank", "length(n.content)") + "ORDER BY f.rowid DESC LIMIT ?"
)
_NEWEST_BY_LENGTH_LIVE: Final = (
    _SEARCH_FROM.replace("f.rank", "length(n.content)")
    + "AND n.superseded_by IS NULL ORDER BY f.rowid DESC LIMIT ?"
)
#: As ``_SEARCH`` and ``_SEARCH_WITH_SUPERSEDED``, ranked by ``_bm25`` (``_BM25_FUNCTION``) on
#: the rows' phrase counts given in the query (one ``?`` per phrase, in its order).
_SCORED: Final = (
    "SELECT n.seq, n.id, n.retention_strength, n.superseded_by, "
    "{function}(knowledge_fts, {counts}) AS score "
    "FROM knowledge_fts f JOIN knowledge_nodes n "
    "ON n.seq = f.rowid WHERE knowledge_fts MATCH ? AND n.retention_strength >= ? "
    f"AND (? IS NULL OR n.node_type = ?) AND {_HAS_TAGS} "
)
_SCORED_LIVE: Final = f"{_SCORED} AND n.superseded_by IS NULL ORDER BY score LIMIT ?"
_SCORED_WITH_SUPERSEDED: Final = f"{_SCORED} ORDER BY n.superseded_by IS NOT NULL, score LIMIT ?"
#: As ``_SEARCH_NEWEST`` and ``_SEARCH_NEWEST_LIVE``: only the rows returned are scored.
_SCORED_NEWEST: Final = f"{_SCORED} ORDER BY f.rowid DESC LIMIT ?"
_SCORED_NEWEST_LIVE: Final = f"{_SCORED} AND n.superseded_by IS NULL ORDER BY f.rowid DESC LIMIT ?"
#: The seq before the newest rows: a sample of the store that costs the same in any size.
_SAMPLE_FROM: Final = (
    "SELECT coalesce(min(seq), 0) - 1 FROM "
    "(SELECT seq FROM knowledge_nodes ORDER BY seq DESC LIMIT ?)"
)
_ROWS_SINCE: Final = "SELECT count(*) FROM knowledge_nodes WHERE seq > ?"
_ROWS_WITH_SINCE: Final = (
    "SELECT count(*) FROM knowledge_fts WHERE knowledge_fts MATCH ? AND rowid > ?"
)
#: How many rows have a term, counted up to a bound: it stops there, whatever the store.
_ROWS_WITH: Final = (
    "SELECT count(*) FROM (SELECT 1 FROM knowledge_fts WHERE knowledge_fts MATCH ? LIMIT ?)"
)
_ALL_ROWS_WITH: Final = "SELECT count(*) FROM knowledge_fts WHERE knowledge_fts MATCH ?"
#: FTS5's bm25 constants (fts5_aux.c), which ``_bm25`` repeats.
_BM25_K1: Final = 1.2
_BM25_B: Final = 0.75
#: The name ``_bm25`` is registered under, on the reader.
_BM25_FUNCTION: Final = "vestige_bm25"


def _bm25(api: apsw.FTS5ExtensionApi, *rows_with: Value) -> float:
    """FTS5's bm25 of this row, but for each phrase's rows counted by the caller.

    FTS5's own bm25 counts every row of every phrase of its query to weigh it: a common
    word's ten or fifty thousand rows at 100k, in every search that scores it (5-12 ms for
    "are of" or "of search with" beside a rare word found in 40 rows), and ten times that
    at 1M.  The counts come from ``_TermRows``, kept until a commit; the formula and the
    order of its operations are FTS5's (column weights 1), so these scores rank with its
    own.  What is the same for every row of the query is worked out on its first row and
    kept with the query (FTS5 drops it when the query ends): ~2.5 us a row, not ~7.
    """
    kept = api.aux_data
    if kept is None:
        n_rows = api.row_count
        idf = tuple(
            max(math.log((n_rows - found + 0.5) / (found + 0.5)), 1e-6)
            for found in (as_float(hits, "rows_with") for hits in rows_with)
        )
        kept = api.aux_data = (idf, api.column_total_size(-1) / n_rows)
    idf, average = kept
    length = float(api.column_size(-1))
    score = 0.0
    for phrase, weight in enumerate(idf):
        freq = float(sum(map(len, api.phrase_locations(phrase))))
        if freq:  # FTS5 adds 0.0 for a phrase the row lacks
            score += weight * (
                (freq * (_BM25_K1 + 1.0))
                / (freq + _BM25_K1 * (1 - _BM25_B + _BM25_B * length / average))
            )
    return -1.0 * score


def _window_order(row: tuple[object, ...], include_superseded: bool) -> tuple[bool, float]:
    """Live memories first when superseded ones are in (as ``_SEARCH_WITH_SUPERSEDED``)."""
    return include_superseded and row[3] is not None, as_float(row[-1], "rank")


#: Terms whose counts a ``_TermRows`` keeps; past this it starts again (a few hundred KB).
TERM_ROWS_KEPT: Final = 4_096


class _TermRows:
    """How many rows each term is in, counted up to a bound, and its share of the newest
    rows, kept while the caller's freshness key stays the same.

    Counting a common word up to ``COMMON_ROWS`` reads that many index entries (0.2-0.3 ms
    at 100k rows) and the sample takes three statements: a query of four common words paid
    about a millisecond for figures that change only with a commit, and counting was a
    third of a smart_ingest at 100k (two dozen FTS5 queries a text).  Search keys them on
    the reader's ``PRAGMA data_version``, which moves with every commit of any process:
    never stale, as its own bm25 needs (``Store._term_rows``).  smart_ingest keys them on
    how far the store has grown since they were counted (``Store._ingest_terms``): a term's
    count moves by at most one row a write, so they split a text into rare and common words
    as a fresh count would, give or take a term at the border.
    """

    def __init__(self) -> None:
        self._conn: apsw.Connection | None = None
        self._key: object = None
        self._counts: dict[tuple[str, int], int] = {}
        self._shares: dict[str, float] = {}
        self._sample: tuple[int, int] | None = None  # (seq before the sample, its rows)

    def on(self, conn: apsw.Connection, key: object = None) -> _TermRows:
        """This cache, emptied unless it was filled on ``conn`` under the same ``key``
        (default: the connection's data_version, which any commit elsewhere moves)."""
        if key is None:
            key = as_int(scalar(conn, "PRAGMA data_version"), "data_version")
        if conn is not self._conn or key != self._key:
            if conn is not self._conn:
                conn.register_fts5_function(_BM25_FUNCTION, _bm25)
            self._conn, self._key = conn, key
            self._forget()
        if len(self._counts) + len(self._shares) > TERM_ROWS_KEPT:
            self._forget()
        return self

    def _forget(self) -> None:
        self._counts.clear()
        self._shares.clear()
        self._sample = None

    def rows_with(self, conn: apsw.Connection, up_to: int) -> Callable[[str], int]:
        """How many rows have a word, counted up to ``up_to``: it stops there."""

        def count(word: str) -> int:
            key = (word, up_to)
            found = self._counts.get(key)
            if found is None:
                found = as_int(scalar(conn, _ROWS_WITH, (search.quoted([word]), up_to)), "count")
                self._counts[key] = found
            return found

        return count

    def all_rows_with(self, conn: apsw.Connection, word: str) -> int:
        """How many rows have a word, all of them counted (as FTS5's bm25 counts them)."""
        key = (word, 0)  # 0: no bound
        found = self._counts.get(key)
        if found is None:
            found = as_int(scalar(conn, _ALL_ROWS_WITH, (search.quoted([word]),)), "count")
            self._counts[key] = found
        return found

    def share_of_newest(self, conn: apsw.Connection) -> Callable[[str], float]:
        """The share of the newest ``SAMPLE_ROWS`` rows that have a word (an estimate of how
        common it is); the sample's bounds are read once, and only if a word needs them."""

        def share(word: str) -> float:
            found = self._shares.get(word)
            if found is None:
                if self._sample is None:
                    since = as_int(scalar(conn, _SAMPLE_FROM, (search.SAMPLE_ROWS,)), "seq")
                    self._sample = since, as_int(scalar(conn, _ROWS_SINCE, (since,)), "count")
                since, rows = self._sample
                match = search.quoted([word])
                with_it = as_int(scalar(conn, _ROWS_WITH_SINCE, (match, since)), "count")
                found = self._shares[word] = with_it / rows if rows else 0.0
            return found

        return share


def _scored_here(
    conn: apsw.Connection,
    counts: _TermRows,
    terms: tuple[list[str], list[str], int],
    match: str,
    *,
    filters: tuple[float, str | None, str | None, str],
    window: int,
    include_superseded: bool,
) -> list[tuple[object, ...]]:
    """The best ``window`` rows of ``match`` by the store's bm25 on the kept counts of its
    phrases, ``terms`` = (rare, common, the bound the rare ones were counted up to): FTS5's
    bm25 would count every row of each common term first."""
    rare, common, budget = terms
    phrases = [*rare, *common]
    scored = (_SCORED_WITH_SUPERSEDED if include_superseded else _SCORED_LIVE).format(
        function=_BM25_FUNCTION, counts=", ".join("?" * len(phrases))
    )
    # A rare word's count is whole (under the bound); a common one's is not.
    rows_of = counts.rows_with(conn, budget)
    kept = [rows_of(w) for w in rare] + [counts.all_rows_with(conn, w) for w in common]
    return conn.execute(scored, (*kept, match, *filters, window)).fetchall()


def _search_rows(
    conn: apsw.Connection,
    words: list[str],
    filters: tuple[float, str | None, str | None, str],
    window: int,
    include_superseded: bool,
    *,
    common_rows: int | None = None,
    with_all_common: int = 0,
    terms: _TermRows | None = None,
    ranking_terms: int | None = None,
    own_bm25: bool = False,
) -> list[tuple[object, ...]]:
    """The best ``window`` matches by bm25, as (seq, id, retention, successor, rank).

    The rare terms find and rank exhaustively; FTS5 reads only their rows.  Common terms
    find rows only when the rare ones found fewer than the window: then the newest
    ``COMMON_WINDOW`` rows with all of them (failing that, any), beyond those already
    found, ranked by their bm25 under that query and placed after the rare-term rows.  A
    filter runs inside each query, before its LIMIT, so a filter never leaves out a match
    that the window had room for.

    ``with_all_common``: when the rare terms fill the window, up to this many rows with
    all the common terms are still added after it (smart_ingest: the memory a correction is
    about may share none of its rare words, "... because of solarized"): the shortest of
    the newest ``COMMON_WINDOW``, unranked.

    ``terms``: the counts kept for ``conn`` (``Store._term_rows``, ``Store._ingest_terms``);
    by default, counted now.  ``ranking_terms``: how many of the weighty common terms (the
    rarest) rank besides the rare ones; all of them if None (search).  ``own_bm25``: score
    with the store's bm25 on the kept counts where FTS5's would count every row of each
    common term first (search; the counts must be exact, as ``Store._term_rows``'s are).
    """
    budget = search.COMMON_ROWS if common_rows is None else common_rows
    counts = terms or _TermRows()
    rare, common = search.split_common(words, counts.rows_with(conn, budget), common=budget)
    # A term in most rows weighs nothing in bm25 (its idf is floored at 1e-6), but FTS5
    # would still count all its rows to find that out: it only finds, and only if needed.
    share = counts.share_of_newest(conn)
    weighty = [w for w in common if share(w) <= MOST_ROWS]
    # The rarest weighty terms rank: the others, in most of a third of the rows or more,
    # weigh little in bm25, and FTS5 counts every row of each to weigh it.
    ranking = weighty if ranking_terms is None else sorted(weighty, key=share)[:ranking_terms]
    rows: list[tuple[object, ...]] = []
    if rare:
        sql = _SEARCH_WITH_SUPERSEDED if include_superseded else _SEARCH
        only = search.quoted(rare)
        rows = conn.execute(sql, (only, *filters, window)).fetchall()
        if ranking:
            # FTS5 scores only the phrases of its query, and a query with the common
            # terms as alternatives would read all their rows.  Rows with a rare AND a
            # common term get their full score here; rows with rare terms only have it
            # already.  Together: the exact top of every row with a rare term.
            both = f"({only}) AND ({search.quoted(ranking)})"
            if (
                own_bm25
                and sum(map(counts.rows_with(conn, budget), rare)) <= search.SCORED_HERE_ROWS
            ):
                matched = _scored_here(
                    conn,
                    counts,
                    (rare, ranking, budget),
                    both,
                    filters=filters,
                    window=window,
                    include_superseded=include_superseded,
                )
            else:
                matched = conn.execute(sql, (both, *filters, window)).fetchall()
            full = {r[0]: r for r in matched}
            rows = [full.pop(r[0], r) for r in rows] + list(full.values())
            rows.sort(key=lambda r: _window_order(r, include_superseded))
            rows = rows[:window]
    if not common or (len(rows) >= window and not with_all_common):
        return rows
    every = weighty or common
    every_match = search.quoted(every, joiner="AND")
    # Rows with all the weighty common terms first; failing enough, rows with any term.
    tries = {every_match: every}
    if len(rows) < window:
        tries.setdefault(search.quoted(common) or "", common)  # one word: the same query
    room = max(window - len(rows), with_all_common)
    seen = {row[0] for row in rows}
    more: list[tuple[object, ...]] = []
    if len(rows) >= window:
        # Only the rows beyond a full window: the shortest of the newest with all the
        # common terms.  Among rows that have every term, bm25 prefers the shorter (the
        # terms are more of them); computing it would weigh each common term by counting
        # all its rows, a tenth of a smart_ingest at 100k.
        sql = _NEWEST_BY_LENGTH if include_superseded else _NEWEST_BY_LENGTH_LIVE
        bound = max(search.COMMON_WINDOW, window) + len(seen)
        newest = [r for r in conn.execute(sql, (every_match, *filters, bound)) if r[0] not in seen]
        newest.sort(key=lambda r: (include_superseded and r[3] is not None, as_int(r[-1], "n")))
        return rows + newest[:room]
    for match, phrases in tries.items():
        bound = max(search.COMMON_WINDOW, window) + len(seen)
        if not own_bm25:
            sql = _SEARCH_NEWEST if include_superseded else _SEARCH_NEWEST_LIVE
            found = conn.execute(sql, (match, *filters, bound))
        else:
            # Only the newest rows are scored, but FTS5's bm25 would count all the rows of
            # each word first ("the": 93,000 at 100k, ~4 ms): the kept counts instead.
            sql = (_SCORED_NEWEST if include_superseded else _SCORED_NEWEST_LIVE).format(
                function=_BM25_FUNCTION, counts=", ".join("?" * len(phrases))
            )
            kept = [counts.all_rows_with(conn, w) for w in phrases]
            found = conn.execute(sql, (*kept, match, *filters, bound))
        tier = [row for row in found.fetchall() if row[0] not in seen]
        # Each try's rows after the last's: the rows with all the terms stay first, even
        # when there are too few of them (they were once replaced by the any-term rows, and
        # the one memory with every word of a correction was lost among the newest).
        tier.sort(key=lambda r: _window_order(r, include_superseded))
        more += tier
        seen.update(row[0] for row in tier)
        if len(more) >= room:
            break
    return rows + more[:room]


@dataclass(frozen=True, slots=True)
class _Candidate:
    """A search match before its row is read: what ranks it."""

    seq: int
    id: str
    successor: str | None
    keyword: float
    combined: float


_CONTENT_INDEX: Final = MEMORY_COLUMNS.index("content")


def _memories_by_seq(
    conn: apsw.Connection, seqs: list[int], content_chars: int | None
) -> dict[int, Memory]:
    """The memories with these rowids; ``content_chars`` cuts each text to its start."""
    if not seqs:
        return {}
    marks = ", ".join("?" * len(seqs))
    rows = conn.execute(
        f"SELECT n.seq, {_memory_columns(content_chars)} FROM knowledge_nodes n "
        f"WHERE n.seq IN ({marks})",
        seqs,
    ).fetchall()
    return {as_int(row[0], "seq"): Memory.from_row(row[1:]) for row in rows}


def _memory_columns(content_chars: int | None) -> str:
    """The columns of a Memory row of ``knowledge_nodes n``, the text cut to
    ``content_chars`` characters if given (SQLite reads no further than it returns)."""
    columns = [f"n.{c}" for c in MEMORY_COLUMNS]
    if content_chars is not None:
        columns[_CONTENT_INDEX] = f"substr(n.content, 1, {max(0, int(content_chars))})"
    return ", ".join(columns)


_COLUMN_VALUES: Final = operator.attrgetter(*MEMORY_COLUMNS)


def _row(memory: Memory) -> Bindings:
    """The memory as SQL parameters, in column order (tags as JSON text)."""
    values = list(_COLUMN_VALUES(memory))
    values[TAGS_INDEX] = json.dumps(list(memory.tags), ensure_ascii=False)
    values[HAS_EMBEDDING_INDEX] = int(memory.has_embedding)
    return tuple(values)


def _fetch(conn: apsw.Connection, memory_id: str) -> Memory | None:
    rows = conn.execute(_SELECT_BY_ID, (memory_id,)).fetchall()
    return Memory.from_row(rows[0]) if rows else None


def _strengths(state: fsrs.MemoryState, now: fsrs.Strengths) -> dict[str, float]:
    return {
        "retrieval": now.retrieval,
        "retention": now.retention,
        "stability": state.stability,
        "adjustment": state.adjustment,
    }


def _save_state(
    conn: apsw.Connection,
    memory_id: str,
    state: fsrs.MemoryState,
    now: datetime,
    *,
    w20: float | None = None,
) -> fsrs.Strengths:
    """Write a memory's FSRS state and the strengths it has at ``now`` (the one way to)."""
    derived = fsrs.strengths(state, now, decay.read_w20(conn) if w20 is None else w20)
    conn.execute(
        "UPDATE knowledge_nodes SET stability = ?, storage_strength = ?, adjustment = ?, "
        "last_accessed = ?, retrieval_strength = ?, retention_strength = ?, next_review = ? "
        "WHERE id = ?",
        (
            state.stability,
            state.storage,
            state.adjustment,
            state.last_accessed.isoformat(),
            derived.retrieval,
            derived.retention,
            derived.next_review.isoformat() if derived.next_review else None,
            memory_id,
        ),
    )
    return derived


def _merged_tags(old: tuple[str, ...], new: tuple[str, ...]) -> str:
    return json.dumps(list(dict.fromkeys(old + new))[: config.MAX_TAGS], ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class _Match:
    """How new text stands to one candidate memory (to its best section for each measure)."""

    memory: Memory
    same: bool
    extends: bool
    #: Of the section it overlaps most: the new text has a correction marker, changes
    #: something and brings no more content words than it drops ...
    corrects: bool
    negates: bool  # ... or it is that section negated and nothing else
    overlap: float
    similarity: float


def _read_section(section: str) -> similarity.Text:
    """``similarity.read``, kept for the short texts read lately (``_read_kept``)."""
    if len(section) > READ_CACHE_MAX_CHARS:
        return similarity.read(section)
    return _read_kept(section)


@functools.lru_cache(maxsize=READ_CACHE_SECTIONS)
def _read_kept(section: str) -> similarity.Text:
    """The memories a smart_ingest compares with are often the ones the last few compared
    with (an agent goes on about one subject), and reading one is most of comparing with
    it.  ``read`` is pure and its ``Text`` is never changed, so a kept one is the one it
    would make."""
    return similarity.read(section)


def _match(new: similarity.Text, memory: Memory) -> _Match:
    """Judge each section of the memory on its own.

    The text an update added is repeated, extended or corrected like a memory of its own,
    and its words never mix with the original's.
    """
    same = extends = False
    near: list[float] = []
    about: list[tuple[float, bool, bool]] = []
    for section in similarity.sections(memory.content):
        old = _read_section(section)
        same = same or similarity.same(new, old)
        extends = extends or similarity.extends(
            new, old, min_words=EXTEND_MIN_WORDS, min_added=EXTEND_MIN_ADDED
        )
        near.append(similarity.similarity(new, old))
        corrects = (
            new.marker is not None
            and similarity.changes(new, old)
            and similarity.replaces_only(new, old)
        )
        about.append((similarity.overlap(new, old), corrects, similarity.negates(new, old)))
    overlap, corrects, negates = max(about, key=operator.itemgetter(0))
    return _Match(memory, same, extends, corrects, negates, overlap, max(near))


def _choose(
    new: similarity.Text, matches: list[_Match]
) -> tuple[Decision, Memory | None, float, str]:
    """Rules 2 to 5 of the module docstring's table, in order; otherwise create."""
    ranked = sorted(matches, key=lambda m: m.overlap, reverse=True)  # stable: FTS rank next
    for m in ranked:
        if m.same:
            return Decision.REINFORCE, m.memory, m.similarity, "says the same, word for word"
    for m in ranked:
        if m.overlap >= SUPERSEDE_CORRECTION_AT and (m.corrects or m.negates):
            why = f'reads as a correction ("{new.marker}")' if m.corrects else "negates it"
            return (
                Decision.SUPERSEDE,
                m.memory,
                m.similarity,
                f"{why}; word overlap {m.overlap:.2f} >= {SUPERSEDE_CORRECTION_AT}",
            )
    for m in ranked:
        if m.overlap >= SUPERSEDE_DEMOTED_AT and _demoted(m.memory):
            return (
                Decision.SUPERSEDE,
                m.memory,
                m.similarity,
                f"replaces a demoted memory; word overlap {m.overlap:.2f} >= "
                f"{SUPERSEDE_DEMOTED_AT}",
            )
    for m in ranked:
        if m.extends:
            return Decision.UPDATE, m.memory, m.similarity, "repeats the memory and adds to it"
    closest = max(m.similarity for m in matches)
    return (
        Decision.CREATE,
        None,
        closest,
        f"no memory says the same or is extended by it (closest word similarity {closest:.2f})",
    )


def _demoted(memory: Memory) -> bool:
    """Rule 4's test: the memory was demoted enough that new text on its subject replaces it."""
    return memory.adjustment < DEMOTED_BELOW


def _reinforce(conn: apsw.Connection, current: Memory, new: Memory) -> Memory:
    now = datetime.fromisoformat(new.created_at)
    _save_state(conn, current.id, fsrs.reinforced(current.fsrs_state(), now), now)
    conn.execute(
        "UPDATE knowledge_nodes SET reps = reps + 1, updated_at = ?, tags = ? WHERE id = ?",
        (new.created_at, _merged_tags(current.tags, new.tags), current.id),
    )
    updated = _fetch(conn, current.id)
    assert updated is not None
    return updated


def _append(conn: apsw.Connection, current: Memory, new: Memory) -> Memory | None:
    content = similarity.appended(current.content, new.content, new.created_at[:10])
    if len(content.encode("utf-8", "surrogatepass")) > config.MAX_CONTENT_BYTES:
        return None
    now = datetime.fromisoformat(new.created_at)
    _save_state(conn, current.id, fsrs.accessed(current.fsrs_state(), now), now)
    conn.execute(
        "UPDATE knowledge_nodes SET content = ?, content_hash = ?, tags = ?, updated_at = ?, "
        "reps = reps + 1 WHERE id = ?",
        (
            content,
            similarity.content_hash(content),
            _merged_tags(current.tags, new.tags),
            new.created_at,
            current.id,
        ),
    )
    return _fetch(conn, current.id)


def _supersede(conn: apsw.Connection, old: Memory, new_id: str) -> None:
    now = datetime.now(UTC)
    _save_state(conn, old.id, fsrs.demoted(old.fsrs_state()), now)
    conn.execute(
        "UPDATE knowledge_nodes SET superseded_by = ?, updated_at = ? WHERE id = ?",
        (new_id, now.isoformat(), old.id),
    )


def _remove(conn: apsw.Connection, gone: Memory) -> list[Memory]:
    """Delete a memory's row; what it superseded comes back.  Returns those, as they were."""
    conn.execute("DELETE FROM knowledge_nodes WHERE id = ?", (gone.id,))
    now = datetime.now(UTC)
    replaced = conn.execute(
        f"SELECT {SELECT_MEMORY} FROM knowledge_nodes n WHERE superseded_by = ?", (gone.id,)
    ).fetchall()
    back = list(map(Memory.from_row, replaced))
    for old in back:
        _save_state(conn, old.id, fsrs.undemoted(old.fsrs_state()), now)
        conn.execute(
            "UPDATE knowledge_nodes SET superseded_by = NULL, updated_at = ? WHERE id = ?",
            (now.isoformat(), old.id),
        )
    return back


_UPSERT: Final = f"{_INSERT} ON CONFLICT(id) DO UPDATE SET " + ", ".join(
    f"{c} = excluded.{c}" for c in MEMORY_COLUMNS if c != "id"
)


def _put_back(
    conn: apsw.Connection, memory_id: str, row: object, now: datetime
) -> tuple[str, list[Memory]]:
    """Make a memory what a changelog entry kept of it; say what that took, and which other
    memories a removal brought back (as they were).

    Strengths are derived again at ``now`` from the kept state: the time since is not undone.
    A removal is a delete's: what the memory superseded comes back.
    """
    if row is None:
        gone = _fetch(conn, memory_id)
        if gone is None:
            return "unchanged", []
        return "removed", _remove(conn, gone)
    assert isinstance(row, dict)
    kept = Memory(**{**row, "tags": tuple(row["tags"])})
    state = kept.fsrs_state()
    if kept.superseded_by is not None and _fetch(conn, kept.superseded_by) is None:
        # Its successor is gone (deleted or purged since): linked to it, the memory would be
        # hidden for good.  Unlinked, as deleting the successor would have left it.
        kept = replace(kept, superseded_by=None)
        state = fsrs.undemoted(state)
    existed = _fetch(conn, memory_id) is not None
    conn.execute(_UPSERT, _row(kept))
    _save_state(conn, memory_id, state, now)
    return ("updated" if existed else "inserted"), []


def _check_undoable(conn: apsw.Connection, target: Change) -> None:
    """Refuse an undo that would not give back exactly what the change took.

    The rule: every memory the change kept a row of must be now exactly as the change left
    it (``_as_left``).  Later changes that were undone, or redone and undone again, then
    net out by themselves, whatever their order, and anything else that changed the memory
    since (another change, a purge that brought it back, imported history) refuses it.
    """
    ref = f"change #{target.seq} ({target.kind})"
    if target.origin is not None:
        raise InvalidInput(
            f"{ref} was imported from another database: it is history here, not a change "
            "that can be undone",
            hint="Change the memory itself instead (vestige edit, or the edit_memory tool).",
        )
    if target.kind not in changelog.UNDOABLE:
        hints = {
            ChangeKind.CREATED: "To take a memory back, delete it.",
            ChangeKind.IMPORTED: "To take an imported memory back, delete it.",
        }
        raise InvalidInput(
            f"{ref} cannot be undone: only reinforce, update, edit, supersede, promote, "
            "demote, delete and undo entries can",
            hint=hints.get(ChangeKind(target.kind), "Nothing else can reverse it."),
        )
    before = target.before or {}
    if not before or any(row == changelog.PURGED_ROW for row in before.values()):
        raise InvalidInput(
            f"{ref} cannot be undone: a purge removed what it would put back",
            hint="Purged memories are gone for good, by design.",
        )
    later = changelog.later_changes(conn, target.seq, target.memories())
    if all(_as_left(conn, target, mid, later) for mid in before):
        return
    chain = _undo_chain(conn, target, later)
    blocking = _standing(target, later)
    # Each entry of the chain undid the one before it: an odd count leaves the change undone.
    if len(chain) % 2 == 1 and not blocking:
        last = chain[-1]
        raise InvalidInput(
            f"{ref} was already undone by change #{last.seq}",
            hint=f"To redo it, undo change #{last.seq}.",
        )
    listed = ", ".join(f"#{c.seq} ({c.kind})" for c in blocking[:5])
    more = f" and {len(blocking) - 5} more" if len(blocking) > 5 else ""
    if not blocking:
        raise InvalidInput(
            f"{ref} cannot be undone: the memory changed since, with no changelog entry "
            "(an older Vestige, or a hand edit)",
            hint="Change the memory itself instead (vestige edit, or the edit_memory tool).",
        )
    final = [c for c in blocking if c.kind not in changelog.UNDOABLE or c.origin is not None]
    hint = (
        f"{', '.join(f'#{c.seq} ({c.kind})' for c in final[:3])} cannot be undone: change "
        "the memory itself instead (vestige edit, or the edit_memory tool)."
        if final
        else f"Undo those first, newest first (change #{blocking[-1].seq} first), or change "
        "the memory itself instead (vestige edit, or the edit_memory tool)."
    )
    raise InvalidInput(
        f"{ref} cannot be undone: later changes touched the same memory: {listed}{more}",
        hint=hint,
    )


#: Columns a decay pass rewrites from the state: they say nothing about who changed what.
_DERIVED: Final = frozenset({"retrieval_strength", "retention_strength", "next_review"})


def _as_left(conn: apsw.Connection, target: Change, memory_id: str, later: list[Change]) -> bool:
    """Is the memory as ``target`` left it?  The next entry that kept a row of it says how
    that was (every change to a memory keeps its row); with none, nothing changed it since."""
    for change in later:
        if change.before is not None and memory_id in change.before:
            return _is_row(conn, memory_id, change.before[memory_id])
    return True


def _is_row(conn: apsw.Connection, memory_id: str, row: object) -> bool:
    """Is the memory now this kept row (None: absent), strengths derived by decay aside?"""
    current = _fetch(conn, memory_id)
    if row is None or current is None:
        return row is None and current is None
    if not isinstance(row, dict) or row == changelog.PURGED_ROW:
        return False
    now = current.to_dict()
    for name, kept in row.items():
        if name in _DERIVED:
            continue
        # Decay clamps stability to the model's maximum.
        value = min(float(kept), fsrs.MAX_STABILITY_DAYS) if name == "stability" else kept
        if now.get(name) != value:
            return False
    return True


def _standing(target: Change, later: list[Change]) -> list[Change]:
    """The later changes whose effect still stands, for the refusal's message.

    Entries group by the change they (through undos of undos) go back to; each undo toggles
    it.  A later change undone an odd number of times nets out; undos of a change older than
    ``target`` changed the memory after it when there is an odd number of them.
    """
    by_seq = {c.seq: c for c in later}
    groups: dict[int, list[Change]] = {}
    for change in later:
        root = change
        while root.undoes is not None and root.undoes in by_seq:
            root = by_seq[root.undoes]
        key = root.undoes if root.undoes is not None else root.seq
        groups.setdefault(key, []).append(change)
    standing = []
    for key, group in groups.items():
        if key == target.seq:
            continue  # the change's own undos
        undos = [c for c in group if c.kind == ChangeKind.UNDONE and c.seq != key]
        if key in by_seq and len(undos) % 2 == 0:
            standing.append(by_seq[key])  # a later change, standing
        elif key not in by_seq and len(undos) % 2 == 1:
            standing.append(undos[-1])  # an older change toggled after this one
    return sorted(standing, key=lambda c: c.seq)


def _undo_chain(conn: apsw.Connection, target: Change, later: list[Change]) -> list[Change]:
    """The undo entries rooted at ``target`` (its undos, the undos of those, ...), in order."""
    by_seq = {c.seq: c for c in later}

    def root(change: Change) -> int | None:
        while change.undoes is not None and change.undoes in by_seq:
            change = by_seq[change.undoes]
        return change.undoes

    return [c for c in later if c.kind == ChangeKind.UNDONE and root(c) == target.seq]


def _no_change(conn: apsw.Connection, seq: int, keep: int) -> InvalidInput:
    if seq < 1:
        return InvalidInput(
            f"there is no change #{seq}: change numbers start at 1",
            hint="The changelog (vestige log, or the memory_changelog tool) lists the changes "
            "with their numbers.",
        )
    if seq <= changelog.trimmed_through(conn):
        return InvalidInput(
            f"change #{seq} was trimmed from the changelog (it keeps the newest {keep:,} "
            "entries; a restore also starts numbering after the replaced database's)",
            hint="The changelog (vestige log, or the memory_changelog tool) lists the changes "
            "still kept.",
        )
    return InvalidInput(
        f"there is no change #{seq} (the newest is #{changelog.newest_seq(conn)})",
        hint="The changelog (vestige log, or the memory_changelog tool) lists the changes "
        "with their numbers.",
    )
