"""The ledger against the changelog, read as a user reads it: from ``vestige export``.

Every write that changes a memory appends one changelog entry in its own transaction, so an
entry exists exactly when its change was committed (vestige/changelog.py).  After the run,
the export's ``{"change": ...}`` lines are held to the ledger, by memory id and kind:

- **one entry per acknowledged write**: an acknowledged ingest has one ``created`` entry
  for the id it returned; a smart_ingest one entry of the kind its decision names
  (``created``, ``reinforced``, ``updated``, ``superseded``: the new memory's id for a
  supersede); an acknowledged delete, promote or demote one ``deleted``, ``promoted`` or
  ``demoted`` entry for its memory.  None missing, none twice.
- The ledger's other two outcomes carry over.  A write **refused with a definite error**
  has no entry, as it has no row (the ledger's ``failed_but_present``).  A write whose
  **answer was lost** (kill -9, timeout) may have none or one: it may have committed before
  its server died.  An in-doubt ingest whose row is in the export is known by its token, so
  its entry is matched by id; an in-doubt smart_ingest whose row is absent may have folded
  into another memory, so it may explain one ``reinforced`` or ``updated`` entry.
- **Decay passes** (``consolidate``, each server's maintenance) add one ``decayed`` entry
  each, with no memory.  Any other entry no write explains fails the check.
- **Replay**: the entries, oldest first, rebuild the set of live memories (created,
  superseded and imported add ``memory_id``; deleted and purged remove it; undone adds
  ``detail.brought_back`` and removes ``detail.removed``) and it must be exactly the set
  of memories in the export.
- Both need the whole log: the changelog keeps only its newest ``KEEP_ROWS`` entries.  So
  the run must stay below that many, and its entries must be seq 1..N with no hole (the
  export's ``origin`` is ``<database id>:<seq>``); otherwise the window check fails and
  says why.  A load-test run imports nothing, so every entry is this database's own.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from loadtest.checks import Check, Measure
from loadtest.ledger import ACKED, FAILED, Ledger, Verdict

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    from loadtest.ledger import Change, WriteRecord

#: vestige.config.CHANGELOG_KEEP_ROWS: the entries a changelog keeps (a test keeps them equal).
KEEP_ROWS: Final = 100_000

ENTRIES_CHECK: Final = "changelog: one entry per acknowledged write"
REPLAY_CHECK: Final = "changelog: replaying it gives the live memories"
WINDOW_CHECK: Final = "changelog: complete, and inside its retention window"

#: The entry each acknowledged operation makes.
ENTRY_OF_OP: Final = {
    "ingest": "created",
    "delete": "deleted",
    "promote": "promoted",
    "demote": "demoted",
}
ENTRY_OF_DECISION: Final = {
    "create": "created",
    "reinforce": "reinforced",
    "update": "updated",
    "supersede": "superseded",
}
#: What a smart_ingest that stored its text as a memory of its own may have written.
OWN_ROW_ENTRIES: Final = ("created", "superseded")
#: What one that folded into another memory may have written.
FOLDED_ENTRIES: Final = ("reinforced", "updated")
DECAYED: Final = "decayed"
UNDONE: Final = "undone"
ADDS: Final = frozenset({"created", "superseded", "imported"})
REMOVES: Final = frozenset({"deleted", "purged"})

#: (kind, memory id): what the entries are matched by.
Key = tuple[str, str | None]


@dataclass(frozen=True, slots=True)
class Entry:
    """One exported changelog entry (only what the checks need)."""

    kind: str
    memory_id: str | None
    origin: str
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def database(self) -> str:
        return self.origin.rpartition(":")[0]

    @property
    def seq(self) -> int:
        number = self.origin.rpartition(":")[2]
        return int(number) if number.isdigit() else -1


@dataclass
class Export:
    """What ``vestige export`` wrote: every memory (id -> content), then the changelog."""

    memories: dict[str, str] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)

    @classmethod
    def parse(cls, lines: Iterable[str]) -> Export:
        export = cls()
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                if set(item) == {"change"}:
                    change = item["change"]
                    detail = change.get("detail")
                    export.entries.append(
                        Entry(
                            str(change["kind"]),
                            change.get("memory_id"),
                            str(change["origin"]),
                            detail if isinstance(detail, dict) else {},
                        )
                    )
                else:
                    export.memories[str(item["id"])] = str(item["content"])
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ValueError(
                    f"export line {number} is not a memory or a change: {exc}"
                ) from exc
        return export

    @classmethod
    def read(cls, path: Path) -> Export:
        with path.open(encoding="utf-8") as lines:
            return cls.parse(lines)

    def own(self) -> list[Entry]:
        """The entries this database wrote (its origin prefix), oldest first."""
        if not self.entries:
            return []
        ours = self.entries[-1].database  # imported entries keep another database's prefix
        return [e for e in self.entries if e.database == ours]

    def ids_by_token(self, marker: str) -> dict[str, str]:
        """token -> memory id, for the memories of this run (their text starts with a token)."""
        found: dict[str, str] = {}
        for mid, content in self.memories.items():
            token = content.split(None, 1)[0] if content else ""
            if token.startswith(marker):
                found[token] = mid
        return found


# -- one entry per acknowledged write ------------------------------------------------------


@dataclass
class _Expected:
    """What the ledger says the changelog must, must not, and may hold."""

    acked: Counter[Key] = field(default_factory=Counter)
    refused: Counter[Key] = field(default_factory=Counter)
    #: Per in-doubt write, the keys one entry of it may have (empty: it may have none).
    in_doubt: list[tuple[Key, ...]] = field(default_factory=list)
    #: In-doubt smart_ingests with no row: each may have reinforced or updated any memory.
    folded_in_doubt: int = 0
    #: key -> the write that made it, for messages.
    label: dict[Key, str] = field(default_factory=dict)

    def add(self, state: str, keys: tuple[Key, ...], label: str) -> None:
        if state == ACKED:
            self.acked[keys[0]] += 1
        elif state == FAILED:
            self.refused[keys[0]] += 1
        else:  # UNKNOWN, or PENDING if the run ended around it: it may have committed
            self.in_doubt.append(keys)
        for key in keys:
            self.label.setdefault(key, label)


def _expected(ledger: Ledger, ids_by_token: dict[str, str]) -> _Expected:
    expected = _Expected()
    for record in ledger.writes.values():
        label = f"{record.op} {record.token}"
        if record.state in (ACKED, FAILED):
            expected.add(record.state, (_write_key(record),), label)
        elif (mid := ids_by_token.get(record.token)) is not None:
            kinds = OWN_ROW_ENTRIES if record.op == "smart_ingest" else ("created",)
            expected.add(record.state, tuple((k, mid) for k in kinds), label)
        elif record.op == "smart_ingest":
            expected.folded_in_doubt += 1
            expected.add(record.state, (), label)
        else:
            expected.add(record.state, (), label)
        changes: list[Change] = [*record.touches, *([record.delete] if record.delete else [])]
        for change in changes:
            key = (ENTRY_OF_OP[change.op], record.id)
            expected.add(change.state, (key,), f"{change.op} of {record.token}")
    return expected


def _write_key(record: WriteRecord) -> Key:
    if record.op == "smart_ingest":
        kind = ENTRY_OF_DECISION.get(record.decision or "create", f"?{record.decision}")
    else:
        kind = ENTRY_OF_OP[record.op]
    return kind, record.id


def entries_verdict(ledger: Ledger, export: Export, *, name: str = ENTRIES_CHECK) -> Verdict:
    """Each acknowledged write has exactly one entry; every other entry is explained."""
    verdict = Verdict(name)
    own = export.own()
    found: Counter[Key] = Counter()
    for entry in own:
        if entry.kind == DECAYED and entry.memory_id is None:
            verdict.counts["decay_passes"] += 1
        else:
            found[entry.kind, entry.memory_id] += 1
    expected = _expected(ledger, export.ids_by_token(ledger.marker))
    counts = verdict.counts
    counts["entries"] = len(own)
    counts["acked_writes"] = sum(expected.acked.values())
    counts["refused_writes"] = sum(expected.refused.values())
    counts["in_doubt_writes"] = len(expected.in_doubt)
    for key in sorted(expected.acked, key=_by_id):
        n, got = expected.acked[key], found[key]
        counts["entries_matched"] += min(n, got)
        if got < n:
            _problem(
                verdict,
                "missing",
                n - got,
                f"{key[0]} of {key[1]}: {n} acknowledged ({expected.label[key]}), {got} entries",
            )
    surplus = _unexplained(found, expected, counts)
    counts["in_doubt_without_entry"] = counts["in_doubt_writes"] - counts["in_doubt_with_entry"]
    for key in sorted(surplus, key=_by_id):
        n = surplus[key]
        if n <= 0:
            continue
        if expected.acked[key]:
            detail = f"{key[0]} of {key[1]}: {expected.acked[key] + n} entries for "
            _problem(verdict, "duplicated", n, detail + f"{expected.acked[key]} acknowledged")
        else:
            refused = (
                " (that write was refused with a definite error)" if expected.refused[key] else ""
            )
            detail = f"{n} {key[0]} entr{'y' if n == 1 else 'ies'} of {key[1]}, which no write"
            _problem(verdict, "unattributed", n, f"{detail} of this run explains{refused}")
    return verdict


def _unexplained(found: Counter[Key], expected: _Expected, counts: Counter[str]) -> Counter[Key]:
    """Entries beyond the acknowledged writes, less those an in-doubt write may have made."""
    surplus = Counter({k: n - expected.acked[k] for k, n in found.items() if n > expected.acked[k]})
    for keys in expected.in_doubt:
        key = next((k for k in keys if surplus[k] > 0), None)
        if key is not None:
            surplus[key] -= 1
            counts["in_doubt_with_entry"] += 1
    folded = expected.folded_in_doubt
    for key in sorted(surplus, key=_by_id):
        while folded and surplus[key] > 0 and key[0] in FOLDED_ENTRIES:
            surplus[key] -= 1
            folded -= 1
            counts["in_doubt_with_entry"] += 1
    return surplus


def _by_id(key: Key) -> tuple[str, str]:
    return str(key[1]), key[0]


def _problem(verdict: Verdict, kind: str, n: int, detail: str) -> None:
    verdict.problem(kind, detail)
    verdict.counts[kind] += n - 1


# -- the replay ----------------------------------------------------------------------------


def replay(entries: Iterable[Entry], verdict: Verdict) -> set[str]:
    """The live ids the entries leave, oldest first; anything impossible is a problem."""
    live: set[str] = set()
    for entry in entries:
        added: list[str] = []
        removed: list[str] = []
        if entry.kind in ADDS and entry.memory_id is not None:
            added.append(entry.memory_id)
        elif entry.kind in REMOVES and entry.memory_id is not None:
            removed.append(entry.memory_id)
        elif entry.kind == UNDONE:
            added += [str(m) for m in entry.detail.get("brought_back") or ()]
            removed += [str(m) for m in entry.detail.get("removed") or ()]
        elif entry.kind in ADDS | REMOVES:
            verdict.problem(
                "replay_impossible", f"{entry.kind} entry {entry.origin} names no memory"
            )
        for mid in removed:
            if mid not in live:
                detail = f"{entry.kind} entry {entry.origin} removes {mid}, which no entry added"
                verdict.problem("replay_impossible", detail)
            live.discard(mid)
        for mid in added:
            if mid in live:
                detail = f"{entry.kind} entry {entry.origin} adds {mid}, which is already there"
                verdict.problem("replay_impossible", detail)
            live.add(mid)
        verdict.counts["added"] += len(added)
        verdict.counts["removed"] += len(removed)
    return live


def replay_verdict(export: Export, *, name: str = REPLAY_CHECK) -> Verdict:
    """Replaying this database's entries gives exactly the memories the export holds."""
    verdict = Verdict(name)
    own = export.own()
    verdict.counts["entries_replayed"] = len(own)
    live = replay(own, verdict)
    held = set(export.memories)
    verdict.counts["live_in_export"] = len(held)
    verdict.counts["live_by_replay"] = len(live)
    for mid in sorted(held - live):
        token = export.memories[mid].split(None, 1)[0] if export.memories[mid] else ""
        verdict.problem("not_replayed", f"{mid} ({token}) is live, the replay does not give it")
    for mid in sorted(live - held):
        verdict.problem(
            "replayed_not_live", f"the replay gives {mid}, the export has no such memory"
        )
    return verdict


# -- the window ----------------------------------------------------------------------------


def window_check(export: Export, *, keep_rows: int = KEEP_ROWS) -> Check:
    """The run's entries are all there: fewer than the changelog keeps, seq 1..N, all own."""
    own = export.own()
    problems: list[str] = []
    if len(own) >= keep_rows:
        problems.append(
            f"the run wrote {len(own):,} entries, not below the {keep_rows:,} the changelog "
            "keeps: older ones may be trimmed, so the changelog checks cannot be trusted - "
            "run a shorter or slower profile"
        )
    seqs = [e.seq for e in own]
    if seqs != list(range(1, len(seqs) + 1)):
        holes = (max(seqs) if seqs else 0) - len(seqs)
        problems.append(
            f"the entries are not seq 1..{len(seqs)}: the first is {seqs[0] if seqs else '-'}, "
            f"{holes} are missing (trimmed or lost)"
        )
    foreign = len(export.entries) - len(own)
    if foreign:
        problems.append(f"{foreign} entries of another database in a run that imported nothing")
    detail = "; ".join(problems) or (
        f"{len(own):,} entries, seq 1..{len(own)}, below the {keep_rows:,} kept"
    )
    counted = len(problems) == (1 if len(own) >= keep_rows else 0)  # only the count, if any
    basis = "below config.CHANGELOG_KEEP_ROWS"
    measure = Measure(len(own), keep_rows - 1, "entries", basis) if counted else None
    return Check(WINDOW_CHECK, not problems, detail, measure=measure)


# -- as checks of the run ------------------------------------------------------------------


def as_check(verdict: Verdict) -> Check:
    """A check line that always shows the counts, then the first problems if any."""
    c = verdict.counts
    if verdict.name == ENTRIES_CHECK:
        figures = (
            f"{c['acked_writes']} acknowledged writes, {c['entries_matched']} entries matched, "
            f"missing {c['missing']}, duplicated {c['duplicated']}, with no write "
            f"{c['unattributed']}; in doubt {c['in_doubt_writes']} ({c['in_doubt_with_entry']} "
            f"with an entry); refused {c['refused_writes']}; decay passes {c['decay_passes']}; "
            f"{c['entries']} entries"
        )
    else:
        figures = (
            f"{c['entries_replayed']} entries replayed (+{c['added']} -{c['removed']}): "
            f"{c['live_by_replay']} live by the replay, {c['live_in_export']} in the export; "
            f"not replayed {c['not_replayed']}, replayed but not live {c['replayed_not_live']}, "
            f"impossible steps {c['replay_impossible']}"
        )
    problems = "; ".join(verdict.problems[:3])
    return Check(verdict.name, verdict.ok, figures + (f" - {problems}" if problems else ""))
