"""The ledger of what clients were told, and the verdict of a database snapshot against it.

Jepsen's set workload, applied to memories (sqlite-multiprocess.md §5): every write carries
a unique token; a write is recorded *before* it is sent, and marked acknowledged only when
the server's answer arrives.  Against any snapshot of the database:

- acknowledged and not deleted  -> present, with exactly the content sent  (else: lost,
  corrupted);
- its delete acknowledged        -> absent  (else: resurrected);
- refused with a definite error  -> absent  (else: failed_but_present);
- answer lost (kill, timeout)    -> either; counted as recovered / absent;
- every row of this run is a token the ledger knows, once (else: unexpected, duplicate).

A snapshot read between ``read_from`` and ``read_to`` judges only what was settled before it
began; anything still in flight then may go either way.  Only content hashes are kept, so a
soak run's ledger stays small.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Final

if TYPE_CHECKING:
    from collections.abc import Iterable

PENDING: Final = "pending"
ACKED: Final = "acked"
FAILED: Final = "failed"  # a definite refusal: the change must not be there
UNKNOWN: Final = "unknown"  # the answer was lost: the change may or may not be there

#: smart_ingest decisions that store the text as a new memory of its own.
NEW_ROW_DECISIONS: Final = frozenset({"create", "supersede"})

#: How many example problems a verdict keeps (the counts are always complete).
MAX_EXAMPLES: Final = 20


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(slots=True)
class Change:
    """A follow-up change sent for an acknowledged write: its delete, a promote, a demote."""

    sent_at: float
    op: str = "delete"
    state: str = PENDING
    replied_at: float | None = None


@dataclass(slots=True)
class WriteRecord:
    token: str
    sha256: str
    length: int
    op: str
    slot: str
    sent_at: float
    state: str = PENDING
    replied_at: float | None = None
    id: str | None = None
    decision: str | None = None
    #: A later smart_ingest appended to this memory: check it as a prefix, not whole.
    extended: bool = False
    delete: Change | None = None
    #: Promotes and demotes sent for it, in order (the changelog holds one entry per ack).
    touches: list[Change] = field(default_factory=list)

    @property
    def stored_as_own_row(self) -> bool:
        return self.decision is None or self.decision in NEW_ROW_DECISIONS


@dataclass(frozen=True, slots=True)
class Row:
    seq: int
    id: str
    content: str


@dataclass
class Verdict:
    """Counts of every outcome, and a few examples of each problem."""

    name: str
    counts: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    #: Outcomes that fail the run whenever they are non-zero.
    FAILURES: ClassVar[tuple[str, ...]] = (
        "lost",
        "corrupted",
        "resurrected",
        "failed_but_present",
        "duplicate",
        "unexpected",
        "wrong_id",
        "kill_missed",
        # the changelog against the ledger (loadtest/changelog.py)
        "missing",
        "duplicated",
        "unattributed",
        "replay_impossible",
        "not_replayed",
        "replayed_not_live",
    )

    @property
    def ok(self) -> bool:
        return not any(self.counts[k] for k in self.FAILURES)

    def problem(self, kind: str, detail: str) -> None:
        self.counts[kind] += 1
        if len(self.problems) < MAX_EXAMPLES:
            self.problems.append(f"{kind}: {detail}")

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "ok": self.ok,
            "counts": dict(sorted(self.counts.items())),
            "problems": self.problems,
        }


class Ledger:
    """Every write and delete the clients sent, in the order they were sent."""

    def __init__(self, marker: str) -> None:
        #: Every token starts with it, so rows of this run are told apart from any others.
        self.marker = marker
        self.writes: dict[str, WriteRecord] = {}
        self.by_id: dict[str, WriteRecord] = {}

    def begin_write(
        self, token: str, content: str, *, op: str, slot: str, at: float
    ) -> WriteRecord:
        if not token.startswith(self.marker) or token in self.writes:
            raise ValueError(f"token {token!r} is not a fresh token of this run")
        record = WriteRecord(token, sha256(content), len(content), op, slot, at)
        self.writes[token] = record
        return record

    def acknowledge(
        self, record: WriteRecord, memory_id: str, *, at: float, decision: str | None = None
    ) -> None:
        record.state, record.replied_at, record.id = ACKED, at, memory_id
        record.decision = decision
        if record.stored_as_own_row:
            self.by_id[memory_id] = record
        elif memory_id in self.by_id:
            # Folded into another memory: that one's content now has our text appended.
            self.by_id[memory_id].extended = True

    def refuse(self, record: WriteRecord | Change, *, at: float, definite: bool) -> None:
        record.state = FAILED if definite else UNKNOWN
        record.replied_at = at

    def begin_delete(self, record: WriteRecord, *, at: float) -> Change:
        record.delete = Change(at)
        return record.delete

    def begin_touch(self, record: WriteRecord, op: str, *, at: float) -> Change:
        """A promote or demote of ``record`` is about to be sent."""
        change = Change(at, op)
        record.touches.append(change)
        return change

    def acknowledge_change(self, change: Change, *, at: float) -> None:
        change.state, change.replied_at = ACKED, at

    def counts(self) -> Counter[str]:
        c: Counter[str] = Counter()
        for r in self.writes.values():
            c[f"write_{r.state}"] += 1
            for change in (*r.touches, *([r.delete] if r.delete else [])):
                c[f"{change.op}_{change.state}"] += 1
            if r.decision is not None and not r.stored_as_own_row:
                c[f"merged_{r.decision}"] += 1
        return c


def verify(
    ledger: Ledger,
    rows: Iterable[Row],
    *,
    name: str,
    read_from: float = math.inf,
    read_to: float = math.inf,
) -> Verdict:
    """Judge a snapshot read between ``read_from`` and ``read_to`` (run clock).

    The defaults mean "after the run": nothing is in flight, so lost answers are counted too.
    """
    final = math.isinf(read_from)
    verdict = Verdict(name)
    found: dict[str, list[Row]] = {}
    for row in rows:
        token = row.content.split(None, 1)[0] if row.content else ""
        if token.startswith(ledger.marker):
            found.setdefault(token, []).append(row)
    for token, same in found.items():
        if len(same) > 1:
            verdict.problem("duplicate", f"{token} stored {len(same)} times")
        if token not in ledger.writes:
            verdict.problem("unexpected", f"row {same[0].id} holds {token}, never sent")
    for record in ledger.writes.values():
        if record.stored_as_own_row:
            _judge(
                verdict,
                record,
                found.get(record.token, []),
                read_from=read_from,
                read_to=read_to,
                final=final,
            )
        else:
            verdict.counts["merged"] += 1
    verdict.counts["rows_of_run"] = sum(len(v) for v in found.values())
    return verdict


def _settled(at: float | None, read_from: float) -> bool:
    return at is not None and at < read_from


def _judge(
    verdict: Verdict,
    record: WriteRecord,
    rows: list[Row],
    *,
    read_from: float,
    read_to: float,
    final: bool,
) -> None:
    row = rows[0] if rows else None
    if row is not None and not _content_matches(record, row.content):
        verdict.problem("corrupted", f"{record.token} (id {row.id}) content differs")
    if record.state == ACKED and _settled(record.replied_at, read_from):
        _judge_acknowledged(verdict, record, row, read_from=read_from, read_to=read_to)
    elif record.state == FAILED and _settled(record.replied_at, read_from):
        if row is not None:
            verdict.problem("failed_but_present", f"{record.token} refused, yet stored as {row.id}")
        else:
            verdict.counts["refused_absent"] += 1
    elif record.state == UNKNOWN and final:
        verdict.counts["in_doubt_" + ("recovered" if row else "absent")] += 1
    else:
        verdict.counts["unsettled_at_snapshot"] += 1


def _judge_acknowledged(
    verdict: Verdict, record: WriteRecord, row: Row | None, *, read_from: float, read_to: float
) -> None:
    verdict.counts["acked"] += 1
    if row is not None and row.id != record.id:
        verdict.problem("wrong_id", f"{record.token} acknowledged as {record.id}, is {row.id}")
    delete = record.delete
    if delete is None or delete.sent_at > read_to:
        must_be_there = True  # no delete was sent before the snapshot ended
    elif _settled(delete.replied_at, read_from) and delete.state in (ACKED, FAILED):
        must_be_there = delete.state == FAILED  # a refused delete removes nothing
    else:
        verdict.counts["delete_in_doubt_" + ("present" if row else "absent")] += 1
        return
    if must_be_there and row is None:
        verdict.problem("lost", f"{record.token} acknowledged as {record.id}, missing")
    elif must_be_there:
        verdict.counts["present"] += 1
    elif row is not None:
        verdict.problem("resurrected", f"{record.token} ({record.id}) deleted, present")
    else:
        verdict.counts["deleted"] += 1


def _content_matches(record: WriteRecord, content: str) -> bool:
    if record.extended:
        return sha256(content[: record.length]) == record.sha256
    return len(content) == record.length and sha256(content) == record.sha256


# -- the external writer's ledger --------------------------------------------------------


@dataclass
class ExternalLedger:
    """Transactions the external writer reported committed, rolled back, or killed open."""

    committed: dict[str, list[str]] = field(default_factory=dict)
    refused: dict[str, list[str]] = field(default_factory=dict)
    killed: dict[str, list[str]] = field(default_factory=dict)

    def copy(self) -> ExternalLedger:
        return ExternalLedger(dict(self.committed), dict(self.refused), dict(self.killed))


def verify_external(ledger: ExternalLedger, present: set[str], *, name: str) -> Verdict:
    """Committed rows are all there, rolled-back ones are not, a killed one is all-or-nothing."""
    verdict = Verdict(name)
    known: set[str] = set()
    for txn, tokens in ledger.refused.items():
        known.update(tokens)
        if any(t in present for t in tokens):
            verdict.problem("failed_but_present", f"external txn {txn} rolled back, yet present")
    for txn, tokens in ledger.committed.items():
        known.update(tokens)
        missing = [t for t in tokens if t not in present]
        if missing:
            verdict.problem("lost", f"external txn {txn}: {len(missing)} committed rows missing")
        else:
            verdict.counts["committed_present"] += len(tokens)
    for txn, tokens in ledger.killed.items():
        known.update(tokens)
        there = sum(t in present for t in tokens)
        if there == 0:
            verdict.counts["killed_txn_rolled_back"] += 1
        elif there == len(tokens):
            # The writer holds it open for seconds after announcing it: all there means the
            # SIGKILL landed after its COMMIT, so the fault did not test what it claims.
            verdict.problem("kill_missed", f"external txn {txn} killed open, yet committed")
        else:
            verdict.problem("corrupted", f"external txn {txn} killed open: {there}/{len(tokens)}")
    verdict.counts["unacknowledged_present"] = len(present - known)
    return verdict
