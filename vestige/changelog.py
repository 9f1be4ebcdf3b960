"""The changelog: every change to the memories, who made it, and enough to take it back.

Users of the original Vestige lost memories to silent merges with no trail and no undo
(issue 9).  Here every write that changes a memory appends one entry, in the same
transaction as the change and through the same write path, so an entry exists exactly when
its change was committed:

==============  =========================================  ====================================
kind            memory_id / other_id                       ``before`` (what undo puts back)
==============  =========================================  ====================================
created         the new memory                             -
reinforced      the memory told again                      its row
updated         the memory text was appended to            its row
edited          the memory edited by id                    its row
superseded      the new memory / the one it replaced       the replaced memory's row
promoted        the memory                                 its row
demoted         the memory                                 its row
deleted         the memory / one memory it brought back    the deleted row (a tombstone) and
                                                           the rows it brought back
purged          the memory / one memory it brought back    ``{"purged": true}`` for it, and the
                                                           rows it brought back
imported        the memory                                 null for it (absent before)
restored        - (the database came back from a backup)   -
decayed         - (one entry per decay pass)               -
undone          the undone entry's memories                their rows before the undo
==============  =========================================  ====================================

``before`` maps memory ids to whole rows (``Memory.to_dict()``; null where the memory did
not exist).  Undo puts those rows back, so an undo is itself an entry that can be undone.
Content never goes anywhere else in an entry: a purge removes a memory's words from every
entry that held them (``redact``), and keeps only the fact that a purge happened.

Every entry names its actor: the transport (``stdio``, ``http``, ``cli``, ``library``), the
process, and the MCP client's name from ``initialize`` where one is known (``acting_for``).

The sequence number ``seq`` only grows (AUTOINCREMENT), so a reader can ask for the changes
after the last one it saw; an index on it makes that cheap.  The newest
``config.CHANGELOG_KEEP_ROWS`` entries are kept; the decay pass trims older ones and records
how far (``changelog_trimmed_through``), so a reader asking for trimmed changes gets a
``Gap`` instead of a silently partial list.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from vestige._rows import as_int, as_opt_str, as_str, scalar
from vestige.printable import escape_controls

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    import apsw

    from vestige._rows import Row, Value
    from vestige.models import Memory


class ChangeKind(StrEnum):
    CREATED = "created"
    REINFORCED = "reinforced"
    UPDATED = "updated"
    EDITED = "edited"
    SUPERSEDED = "superseded"
    PROMOTED = "promoted"
    DEMOTED = "demoted"
    DELETED = "deleted"
    PURGED = "purged"
    IMPORTED = "imported"
    RESTORED = "restored"
    DECAYED = "decayed"
    UNDONE = "undone"


#: Entries whose ``before`` puts the memories back as they were.
UNDOABLE: Final = frozenset(
    {
        ChangeKind.REINFORCED,
        ChangeKind.UPDATED,
        ChangeKind.EDITED,
        ChangeKind.SUPERSEDED,
        ChangeKind.PROMOTED,
        ChangeKind.DEMOTED,
        ChangeKind.DELETED,
        ChangeKind.UNDONE,
    }
)
#: Kinds that bring a memory into the store, and that take one out (for replaying the log).
ADDS: Final = frozenset({ChangeKind.CREATED, ChangeKind.SUPERSEDED, ChangeKind.IMPORTED})
REMOVES: Final = frozenset({ChangeKind.DELETED, ChangeKind.PURGED})
#: Kinds that make a memory whose id never existed before (an import may bring one back).
_BORN: Final = frozenset({ChangeKind.CREATED, ChangeKind.SUPERSEDED})
#: What a purge leaves of a memory's row in an entry's ``before``.
PURGED_ROW: Final = {"purged": True}


@dataclass(frozen=True, slots=True)
class Actor:
    """Who makes the changes of a store: its face, its process, and the client it serves."""

    transport: str  # stdio | http | cli | library
    process: str  # program and pid, e.g. "vestige-mcp pid 4242"
    client: str | None = None  # the MCP client's name from initialize

    @classmethod
    def this_process(cls, transport: str, program: str | None = None) -> Actor:
        script = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
        name = program or (script if script and not script.startswith("-") else "python")
        return cls(transport=transport, process=f"{name} pid {os.getpid()}")


_client: ContextVar[str | None] = ContextVar("vestige_changelog_client", default=None)


#: A client names itself in ``initialize``: kept to this many characters, controls escaped.
MAX_CLIENT_CHARS: Final = 100


@contextmanager
def acting_for(client: str | None) -> Iterator[None]:
    """Record ``client`` as the actor of the changes made in this context (and its threads).

    The name is the client's own word, stored in every entry it causes: bounded, and with
    control characters escaped so it cannot break a terminal or a table.
    """
    if client is not None:
        client = escape_controls(client)
        if len(client) > MAX_CLIENT_CHARS:
            client = client[: MAX_CLIENT_CHARS - 1] + "\u2026"
    token = _client.set(client)
    try:
        yield
    finally:
        _client.reset(token)


def current(actor: Actor) -> Actor:
    """The store's actor, with the client of the current context."""
    client = _client.get()
    return replace(actor, client=client) if client else actor


@dataclass(frozen=True, slots=True)
class Change:
    """One changelog entry (see the module docstring for what each field holds per kind)."""

    seq: int
    at: str
    kind: str
    memory_id: str | None
    other_id: str | None
    undoes: int | None
    client: str | None
    process: str
    transport: str
    before: dict[str, Any] | None
    detail: dict[str, Any] | None
    origin: str | None  # "<database id>:<seq>" of an entry imported from another database

    @classmethod
    def from_row(cls, row: Row) -> Change:
        (seq, at, kind, memory_id, other_id, undoes, client, process, transport) = row[:9]
        return cls(
            seq=as_int(seq, "seq"),
            at=as_str(at, "at"),
            kind=as_str(kind, "kind"),
            memory_id=as_opt_str(memory_id, "memory_id"),
            other_id=as_opt_str(other_id, "other_id"),
            undoes=None if undoes is None else as_int(undoes, "undoes"),
            client=as_opt_str(client, "client"),
            process=as_str(process, "process"),
            transport=as_str(transport, "transport"),
            before=_json_object(row[9], "before"),
            detail=_json_object(row[10], "detail"),
            origin=as_opt_str(row[11], "origin"),
        )

    def memories(self) -> frozenset[str]:
        """Every memory this entry changed."""
        ids = {i for i in (self.memory_id, self.other_id) if i is not None}
        return frozenset(ids | set(self.before or {}))

    def to_dict(self, *, with_before: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "seq": self.seq,
            "at": self.at,
            "kind": self.kind,
            "memory_id": self.memory_id,
            "other_id": self.other_id,
            "undoes": self.undoes,
            "client": self.client,
            "process": self.process,
            "transport": self.transport,
            "detail": self.detail,
            "origin": self.origin,
        }
        if with_before:
            data["before"] = self.before
        return data


@dataclass(frozen=True, slots=True)
class Gap:
    """The changes asked for start before the oldest one kept: some are gone for good."""

    trimmed_through: int  # the newest trimmed seq

    @property
    def message(self) -> str:
        return (
            f"changes up to #{self.trimmed_through} may be missing: the changelog keeps the "
            "newest entries only, and a restore leaves out the replaced database's later "
            "ones; the list is not complete before that"
        )

    def to_dict(self) -> dict[str, Any]:
        return {"trimmed_through": self.trimmed_through, "message": self.message}


@dataclass(frozen=True, slots=True)
class ChangePage:
    """A bounded page of entries, with the newest seq of the log and any gap before them."""

    changes: tuple[Change, ...]
    newest_seq: int  # 0 when nothing was ever recorded
    gap: Gap | None
    more: bool  # more entries matched than the limit let through

    def to_dict(self, *, with_before: bool = True) -> dict[str, Any]:
        return {
            "changes": [c.to_dict(with_before=with_before) for c in self.changes],
            "newest_seq": self.newest_seq,
            "gap": self.gap.to_dict() if self.gap else None,
            "more": self.more,
        }


_COLUMNS: Final = (
    "seq, at, kind, memory_id, other_id, undoes, client, process, transport, before, detail, origin"
)


def rows(*memories: Memory) -> dict[str, Any]:
    """``before`` for entries that keep whole rows."""
    return {m.id: m.to_dict() for m in memories}


def record(
    conn: apsw.Connection,
    actor: Actor,
    kind: ChangeKind,
    *,
    memory_id: str | None = None,
    other_id: str | None = None,
    before: Mapping[str, Any] | None = None,
    detail: Mapping[str, Any] | None = None,
    undoes: int | None = None,
    at: str | None = None,
) -> int:
    """Append one entry inside the caller's write transaction; return its seq."""
    who = current(actor)
    conn.execute(
        "INSERT INTO changelog(at, kind, memory_id, other_id, undoes, client, process, "
        "transport, before, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            at or datetime.now(UTC).isoformat(),
            kind.value,
            memory_id,
            other_id,
            undoes,
            who.client,
            who.process,
            who.transport,
            _dumps(before),
            _dumps(detail),
        ),
    )
    return conn.last_insert_rowid()


def insert_imported(conn: apsw.Connection, change: Change, origin: str) -> bool:
    """Keep an entry of another database as history: a new seq, its own time and actor."""
    conn.execute(
        "INSERT INTO changelog(at, kind, memory_id, other_id, undoes, client, process, "
        "transport, before, detail, origin) VALUES (?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(origin) DO NOTHING",
        (
            change.at,
            change.kind,
            change.memory_id,
            change.other_id,
            change.client,
            change.process,
            change.transport,
            _dumps(change.before),
            _dumps(change.detail),
            origin,
        ),
    )
    return conn.changes() > 0


def database_id(conn: apsw.Connection) -> str:
    return as_str(
        scalar(conn, "SELECT value FROM vestige_meta WHERE key = 'database_id'"), "database_id"
    )


def trimmed_through(conn: apsw.Connection) -> int:
    value = scalar(conn, "SELECT value FROM vestige_meta WHERE key = 'changelog_trimmed_through'")
    return int(as_str(value, "changelog_trimmed_through"))


def newest_seq(conn: apsw.Connection) -> int:
    """The last seq ever given out (trimmed or not); 0 before the first entry."""
    value = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changelog'").fetchall()
    return as_int(value[0][0], "sqlite_sequence.seq") if value else 0


def get(conn: apsw.Connection, seq: int) -> Change | None:
    found = conn.execute(f"SELECT {_COLUMNS} FROM changelog WHERE seq = ?", (seq,)).fetchall()
    return Change.from_row(found[0]) if found else None


def page(
    conn: apsw.Connection,
    *,
    memory_id: str | None = None,
    kinds: frozenset[str] | None = None,
    after_seq: int | None = None,
    before_seq: int | None = None,
    since: str | None = None,
    limit: int,
    oldest_first: bool = False,
) -> ChangePage:
    """Entries matching every filter given, newest first (or oldest first), at most ``limit``.

    ``after_seq`` and ``since`` (an ISO time) ask for what came later; if entries they ask
    for were trimmed, the page carries a ``Gap``.  ``before_seq`` pages back, newest first.
    """
    where = ["1"]
    args: list[Any] = []
    if memory_id is not None:
        where.append("(memory_id = ? OR other_id = ?)")
        args += [memory_id, memory_id]
    if kinds:
        where.append(f"kind IN ({', '.join('?' * len(kinds))})")
        args += sorted(kinds)
    if after_seq is not None:
        where.append("seq > ?")
        args.append(after_seq)
    if before_seq is not None:
        where.append("seq < ?")
        args.append(before_seq)
    if since is not None:
        where.append("at > ?")
        args.append(since)
    order = "ASC" if oldest_first else "DESC"
    found = conn.execute(
        f"SELECT {_COLUMNS} FROM changelog WHERE {' AND '.join(where)} "
        f"ORDER BY seq {order} LIMIT ?",
        (*args, limit + 1),
    ).fetchall()
    changes = tuple(Change.from_row(r) for r in found[:limit])
    more = len(found) > limit
    trimmed = trimmed_through(conn)
    if since is not None:
        # By time: some trimmed entry is newer than ``since`` (entries imported as history
        # keep older times, so the oldest time kept says nothing).
        missing = since < _meta(conn, "changelog_trimmed_newest_at", "")
    elif after_seq is not None:
        missing = after_seq < trimmed
    else:
        # From the start: a page that reaches down to the oldest kept entry (oldest first
        # it always does; newest first when nothing older matched) lacks the trimmed ones.
        missing = oldest_first or not more
    born = memory_id is not None and any(
        c.memory_id == memory_id and c.kind in _BORN and c.origin is None for c in changes
    )  # nothing of a memory comes before the entry that made it (an id can be imported again)
    gap = Gap(trimmed) if trimmed and missing and not born else None
    return ChangePage(changes=changes, newest_seq=newest_seq(conn), gap=gap, more=more)


def later_changes(conn: apsw.Connection, seq: int, memory_ids: frozenset[str]) -> list[Change]:
    """Entries after ``seq`` that changed any of ``memory_ids``, oldest first."""
    if not memory_ids:
        return []
    marks = ", ".join("?" * len(memory_ids))
    ids = sorted(memory_ids)
    found = conn.execute(
        f"SELECT {_COLUMNS} FROM changelog WHERE seq > ? AND (memory_id IN ({marks}) "
        f"OR other_id IN ({marks}) OR EXISTS (SELECT 1 FROM json_each(changelog.before) "
        f"WHERE key IN ({marks}))) ORDER BY seq",
        (seq, *ids, *ids, *ids),
    ).fetchall()
    return [Change.from_row(r) for r in found]


def undone_by(conn: apsw.Connection, seq: int) -> int | None:
    found = conn.execute(
        "SELECT seq FROM changelog WHERE undoes = ? ORDER BY seq LIMIT 1", (seq,)
    ).fetchall()
    return as_int(found[0][0], "seq") if found else None


def redact(conn: apsw.Connection, memory_id: str) -> int:
    """Remove a memory's rows from every entry's ``before``; return how many entries changed.

    The entries stay (their seq, kind and time are history), but none can put the memory
    back, and with ``secure_delete`` no free page keeps the old text.
    """
    found = conn.execute(
        # A row sits in ``before`` under memory_id or other_id, except the further rows a
        # delete or purge brought back (and an undo): only those entries are parsed.
        "SELECT seq, before FROM changelog WHERE before IS NOT NULL AND (memory_id = ? "
        "OR other_id = ? OR (kind IN ('deleted', 'undone', 'purged') AND EXISTS "
        "(SELECT 1 FROM json_each(changelog.before) WHERE key = ?)))",
        (memory_id, memory_id, memory_id),
    ).fetchall()
    changed = 0
    for seq, text in found:
        before = _json_object(text, "before") or {}
        if before.get(memory_id) in (None, PURGED_ROW):
            continue
        before[memory_id] = PURGED_ROW
        conn.execute("UPDATE changelog SET before = ? WHERE seq = ?", (_dumps(before), seq))
        changed += 1
    # Entries imported from another database may carry anything in their detail.
    conn.execute(
        "UPDATE changelog SET detail = NULL WHERE origin IS NOT NULL AND detail IS NOT NULL "
        "AND (memory_id = ? OR other_id = ?)",
        (memory_id, memory_id),
    )
    return changed + conn.changes()


def continue_after(conn: apsw.Connection, seq: int) -> None:
    """Number the next entries after ``seq``, and answer a gap for every seq up to it.

    For a restore: the backup's log ends earlier than the replaced database's, whose later
    entries are gone; a reader that saw them must neither get their numbers again for other
    changes nor a silently short list.
    """
    if seq <= newest_seq(conn):
        return
    conn.execute(
        "INSERT INTO sqlite_sequence(name, seq) SELECT 'changelog', 0 "
        "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'changelog')"
    )
    conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'changelog'", (seq,))
    conn.execute(
        "UPDATE vestige_meta SET value = ? WHERE key = 'changelog_trimmed_through'", (str(seq),)
    )
    conn.execute(
        "INSERT INTO vestige_meta(key, value) VALUES ('changelog_trimmed_newest_at', ?) "
        "ON CONFLICT(key) DO UPDATE SET value = MAX(value, excluded.value)",
        (datetime.now(UTC).isoformat(),),
    )


def trim(conn: apsw.Connection, *, keep_rows: int, batch_rows: int) -> int:
    """Delete up to ``batch_rows`` of the oldest entries beyond the newest ``keep_rows``."""
    newest = newest_seq(conn)
    cutoff = newest - keep_rows
    if cutoff <= 0:
        return 0
    last = scalar(
        conn,
        "SELECT MAX(seq) FROM (SELECT seq FROM changelog WHERE seq <= ? ORDER BY seq LIMIT ?)",
        (cutoff, batch_rows),
    )
    if last is None:
        return 0
    through = as_int(last, "seq")
    newest_at = as_opt_str(
        scalar(conn, "SELECT MAX(at) FROM changelog WHERE seq <= ?", (through,)), "at"
    )
    conn.execute("DELETE FROM changelog WHERE seq <= ?", (through,))
    deleted = conn.changes()
    if newest_at is not None:
        conn.execute(
            "INSERT INTO vestige_meta(key, value) VALUES ('changelog_trimmed_newest_at', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = MAX(value, excluded.value)",
            (newest_at,),
        )
    conn.execute(
        "UPDATE vestige_meta SET value = ? WHERE key = 'changelog_trimmed_through' "
        "AND CAST(value AS INTEGER) < ?",
        (str(through), through),
    )
    return deleted


def _meta(conn: apsw.Connection, key: str, default: str) -> str:
    found = conn.execute("SELECT value FROM vestige_meta WHERE key = ?", (key,)).fetchall()
    return as_str(found[0][0], key) if found else default


def _dumps(value: Mapping[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def _json_object(value: Value, column: str) -> dict[str, Any] | None:
    text = as_opt_str(value, column)
    if text is None:
        return None
    data = json.loads(text)
    return data if isinstance(data, dict) else None
