"""What each MCP client does, and the record of every call it made.

Each server gets ``inflight`` workers sharing one MCP session (an agent making parallel tool
calls).  A worker picks an operation by the profile's weights, paced at the profile's rate:

- ingest / smart_ingest: a payload that starts with a unique token; recorded in the ledger
  before it is sent, acknowledged when the id comes back;
- get / search / promote / demote: any acknowledged memory not being deleted; a read must
  show it (with the content sent) unless a delete explains its absence;
- delete: one of this server's own earlier writes.

All tool names, arguments and result shapes live in ``ToolCalls``: one place to adapt.
"""

from __future__ import annotations

import random
import string
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import anyio

from loadtest.client import ErrorKind, Outcome
from loadtest.ledger import Change, Ledger, WriteRecord, sha256
from loadtest.profiles import MCP_OPS

if TYPE_CHECKING:
    from loadtest.client import Clock, TimedClient
    from loadtest.profiles import LoadProfile

#: Pseudo-words: with this many, two random texts share almost no words, so smart_ingest
#: sees every payload as new (cosine similarity ~0.1 even for 64 KB texts).
VOCABULARY_SIZE: Final = 50_000
#: A worker that fell further behind its pace than this many intervals stops catching up.
MAX_LAG_INTERVALS: Final = 2
MAX_EXAMPLES: Final = 10
#: The sample kind of the idle read round trips measured before the load starts.
IDLE_READ: Final = "idle_read"


class ToolCalls:
    """The server's tool surface, as the load test uses it."""

    INGEST = "ingest"
    SMART_INGEST = "smart_ingest"
    SEARCH = "search"
    MEMORY = "memory"
    DELETE = "delete_memory"
    PROMOTE = "promote_memory"
    DEMOTE = "demote_memory"
    HEALTH = "health_check"

    REQUIRED: Final = (INGEST, SMART_INGEST, SEARCH, MEMORY, DELETE, PROMOTE, DEMOTE)

    @staticmethod
    def ingest(content: str) -> dict[str, Any]:
        return {"content": content}

    @staticmethod
    def search(query: str) -> dict[str, Any]:
        return {"query": query, "limit": 5}

    @staticmethod
    def memory(action: str, memory_id: str) -> dict[str, Any]:
        return {"action": action, "id": memory_id}

    @staticmethod
    def by_id(memory_id: str) -> dict[str, Any]:
        return {"id": memory_id}

    @staticmethod
    def new_id(data: dict[str, Any]) -> str | None:
        """The id of the memory an ingest stored (or a smart_ingest acted on)."""
        for holder in (data.get("memory"), data.get("node"), data):
            if isinstance(holder, dict) and isinstance(holder.get("id"), str):
                return str(holder["id"])
        value = data.get("node_id") or data.get("nodeId")
        return value if isinstance(value, str) else None

    @staticmethod
    def decision(data: dict[str, Any]) -> str | None:
        value = data.get("decision")
        return value.lower() if isinstance(value, str) else None

    @staticmethod
    def content(data: dict[str, Any]) -> str | None:
        for holder in (data.get("memory"), data.get("node"), data):
            if isinstance(holder, dict) and isinstance(holder.get("content"), str):
                return str(holder["content"])
        return None

    @staticmethod
    def ids_in(data: Any) -> set[str]:
        """Every id anywhere in a result (search hits nest them in various ways)."""
        found: set[str] = set()
        stack = [data]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                for key, value in item.items():
                    if key in ("id", "node_id", "nodeId") and isinstance(value, str):
                        found.add(value)
                    else:
                        stack.append(value)
            elif isinstance(item, list):
                stack.extend(item)
        return found

    @classmethod
    def missing(cls, tools: dict[str, dict[str, Any]]) -> list[str]:
        """Tools or argument names the load test needs that the server does not offer."""
        wanted = {
            cls.INGEST: cls.ingest("x"),
            cls.SMART_INGEST: cls.ingest("x"),
            cls.SEARCH: cls.search("x"),
            cls.MEMORY: cls.memory("get", "x"),
            cls.DELETE: cls.by_id("x"),
            cls.PROMOTE: cls.by_id("x"),
            cls.DEMOTE: cls.by_id("x"),
        }
        problems = []
        for tool, args in wanted.items():
            schema = tools.get(tool)
            if schema is None:
                problems.append(f"tool {tool!r} is missing")
                continue
            props = set((schema.get("properties") or {}).keys())
            problems += [f"{tool}: no argument {a!r}" for a in args if a not in props]
            required = set(schema.get("required") or ()) - set(args)
            problems += [
                f"{tool}: requires {r!r}, which the load test does not send" for r in required
            ]
        return problems


@dataclass(frozen=True, slots=True)
class Sample:
    """One timed operation: run-clock start, kind, who, latency, and whether it failed."""

    t: float
    kind: str
    proc: str
    latency_ms: float
    error: str | None = None


@dataclass
class Recorder:
    """Every sample, every error by kind, and every read-check violation."""

    samples: list[Sample] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    error_examples: dict[str, list[str]] = field(default_factory=dict)
    #: Reads that contradict the ledger (a stale or wrong answer): each one fails the run.
    violations: Counter[str] = field(default_factory=Counter)
    violation_examples: list[str] = field(default_factory=list)
    #: Outcomes that are expected and counted, not failures.
    notes: Counter[str] = field(default_factory=Counter)
    #: (run clock, bytes) of vestige.db-wal, sampled by stat() only.
    wal_sizes: list[tuple[float, int]] = field(default_factory=list)
    #: (run clock, 1-minute load average): how busy the machine was besides us.
    load_averages: list[tuple[float, float]] = field(default_factory=list)

    def add(self, sample: Sample) -> None:
        self.samples.append(sample)

    def error(self, kind: str, where: str, text: str) -> None:
        self.errors[kind] += 1
        examples = self.error_examples.setdefault(kind, [])
        if len(examples) < MAX_EXAMPLES:
            examples.append(f"{where}: {text}")

    def violation(self, kind: str, detail: str) -> None:
        self.violations[kind] += 1
        if len(self.violation_examples) < MAX_EXAMPLES * 2:
            self.violation_examples.append(f"{kind}: {detail}")

    @property
    def ops(self) -> int:
        return sum(1 for s in self.samples if s.kind in MCP_OPS)


class Pool:
    """Records to pick from at random, with O(1) removal."""

    def __init__(self) -> None:
        self._items: list[WriteRecord] = []
        self._index: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def add(self, record: WriteRecord) -> None:
        if record.token not in self._index:
            self._index[record.token] = len(self._items)
            self._items.append(record)

    def discard(self, record: WriteRecord) -> None:
        i = self._index.pop(record.token, None)
        if i is None:
            return
        last = self._items.pop()
        if i < len(self._items):
            self._items[i] = last
            self._index[last.token] = i

    def pick(self, rng: random.Random) -> WriteRecord | None:
        return self._items[rng.randrange(len(self._items))] if self._items else None


def vocabulary(seed: int, size: int = VOCABULARY_SIZE) -> list[str]:
    rng = random.Random(seed)
    letters = string.ascii_lowercase
    words = {"".join(rng.choice(letters) for _ in range(rng.randint(4, 9))) for _ in range(size)}
    return sorted(words)


def payload(rng: random.Random, words: list[str], token: str, low: int, high: int) -> str:
    """``token`` then random words, to a size drawn log-uniformly from [low, high] bytes."""
    target = round(low * (high / low) ** rng.random()) if high > low else low
    parts = [token]
    size = len(token)
    while size < target:
        word = words[rng.randrange(len(words))]
        parts.append(word)
        size += len(word) + 1
    return " ".join(parts)


class Workload:
    """Shared state of all MCP workers of one run: the ledger, pools and the recorder."""

    def __init__(
        self, profile: LoadProfile, ledger: Ledger, recorder: Recorder, clock: Clock
    ) -> None:
        self.profile = profile
        self.ledger = ledger
        self.recorder = recorder
        self.clock = clock
        self.words = vocabulary(profile.seed)
        self.live = Pool()  # acknowledged, no delete sent: anyone may read or touch it
        self.own: dict[str, Pool] = {}  # per server: its own live writes, for deletes
        self.stop = anyio.Event()
        #: Writes sent and not yet answered, per server: the kill fault aims at these.
        self.writes_in_flight: Counter[str] = Counter()
        self._serial: Counter[str] = Counter()
        ops, weights = zip(*profile.mix.items(), strict=True)
        self._ops: list[str] = list(ops)
        self._weights: list[int] = list(weights)

    def done(self) -> bool:
        budget = self.profile.max_ops
        return self.stop.is_set() or (budget is not None and self.recorder.ops >= budget)

    async def worker(self, client: TimedClient, slot: str, index: int) -> None:
        """Issue operations until the run stops or this server's connection is lost."""
        rng = random.Random(f"{self.profile.seed}/{slot}/{index}/{self.clock.now()}")
        rate = self.profile.rate_per_server
        interval = self.profile.inflight / rate if rate > 0 else 0.0
        # Spread the workers' first calls over one interval so they do not march in step.
        next_at = self.clock.now() + rng.random() * interval
        own = self.own.setdefault(slot, Pool())
        while not self.done():
            if interval:
                await anyio.sleep(max(0.0, next_at - self.clock.now()))
                next_at = max(next_at + interval, self.clock.now() - MAX_LAG_INTERVALS * interval)
            if self.done():
                return
            op = rng.choices(self._ops, self._weights)[0]
            outcome = await self._run(op, client, slot, own, rng)
            if outcome is not None and outcome.error_kind == ErrorKind.CONNECTION_LOST:
                return

    async def warm_up(self, client: TimedClient, slot: str) -> None:
        """One write and one read before the clock starts: a server's first calls pay for
        lazy set-up (statement caches, imports) that is start-up cost, not load latency."""
        own = self.own.setdefault(slot, Pool())
        rng = random.Random(f"{self.profile.seed}/{slot}/warm-up")
        outcome = await self._write("ingest", client, slot, own, rng, kind="warm_up")
        if outcome.ok:
            await client.call(ToolCalls.SEARCH, ToolCalls.search(self.ledger.marker))

    async def exercise(self, client: TimedClient, slot: str, ops: int) -> bool:
        """A short life: one write, then ``ops`` operations of the mix (a duplicate launch
        of the attach profile); True when every call was answered without an error."""
        own = self.own.setdefault(slot, Pool())
        rng = random.Random(f"{self.profile.seed}/{slot}/exercise")
        first = await self._write("ingest", client, slot, own, rng)
        ok = first.ok
        for _ in range(ops):
            op = rng.choices(self._ops, self._weights)[0]
            outcome = await self._run(op, client, slot, own, rng)
            ok = ok and outcome is not None and outcome.ok
        return ok

    async def idle_probe(self, client: TimedClient, slot: str, calls: int) -> None:
        """Read round trips while nothing else runs: the run's own measure of this machine.

        The CI profile judges write latency against this, not against fixed milliseconds, so
        a busy machine (which slows the probe too) does not fail the run, while a slow write
        path (which the probe never enters: reads take no write lock) still does.  Searches
        and gets alternate, as in the load's read mix.
        """
        own = self.own.setdefault(slot, Pool())
        rng = random.Random(f"{self.profile.seed}/{slot}/idle")
        for i in range(calls):
            record = own.pick(rng)
            if i % 2 and record is not None and record.id is not None:
                outcome = await client.call(ToolCalls.MEMORY, ToolCalls.memory("get", record.id))
            else:
                query = f"{self.ledger.marker}idle{i}"
                outcome = await client.call(ToolCalls.SEARCH, ToolCalls.search(query))
            if outcome.ok:
                self.recorder.add(
                    Sample(outcome.started, IDLE_READ, slot, outcome.latency_s * 1000)
                )
            else:
                self.recorder.error(
                    outcome.error_kind or "idle", f"{slot} idle probe", outcome.error_text
                )

    async def _run(
        self, op: str, client: TimedClient, slot: str, own: Pool, rng: random.Random
    ) -> Outcome | None:
        if op in ("ingest", "smart_ingest"):
            return await self._write(op, client, slot, own, rng)
        if op == "delete":
            record = own.pick(rng)
            if record is None:
                return await self._write("ingest", client, slot, own, rng)
            return await self._delete(record, client, slot, own)
        record = self.live.pick(rng)
        if record is None:
            return await self._write("ingest", client, slot, own, rng)
        return await self._touch(op, record, client, slot)

    def _sample(self, op: str, slot: str, outcome: Outcome, client: TimedClient) -> None:
        if outcome.error_kind == ErrorKind.CONNECTION_LOST and client.child.killed:
            self.recorder.notes["calls_cut_by_kill"] += 1  # the fault, not an error
            return
        if outcome.error_kind != ErrorKind.CONNECTION_LOST:
            self.recorder.add(
                Sample(outcome.started, op, slot, outcome.latency_s * 1000, outcome.error_kind)
            )
        if outcome.error_kind is not None:
            self.recorder.error(outcome.error_kind, f"{slot} {op}", outcome.error_text)

    def _token(self, slot: str) -> str:
        self._serial[slot] += 1
        return f"{self.ledger.marker}{slot}n{self._serial[slot]:07d}"

    async def _write(
        self,
        op: str,
        client: TimedClient,
        slot: str,
        own: Pool,
        rng: random.Random,
        *,
        kind: str | None = None,
    ) -> Outcome:
        p = self.profile
        token = self._token(slot)
        content = payload(rng, self.words, token, p.payload_min_bytes, p.payload_max_bytes)
        record = self.ledger.begin_write(token, content, op=op, slot=slot, at=self.clock.now())
        tool = ToolCalls.INGEST if op == "ingest" else ToolCalls.SMART_INGEST
        self.writes_in_flight[slot] += 1
        try:
            outcome = await client.call(tool, ToolCalls.ingest(content))
        finally:
            self.writes_in_flight[slot] -= 1
        self._sample(kind or op, slot, outcome, client)
        now = self.clock.now()
        memory_id = ToolCalls.new_id(outcome.data) if outcome.data is not None else None
        if outcome.ok and memory_id is not None:
            decision = ToolCalls.decision(outcome.data or {}) if op == "smart_ingest" else None
            self.ledger.acknowledge(record, memory_id, at=now, decision=decision)
            if record.stored_as_own_row:
                self.live.add(record)
                own.add(record)
            else:
                self.recorder.notes[f"smart_ingest_{decision}"] += 1
        elif outcome.ok:
            self.recorder.error(ErrorKind.PROTOCOL, f"{slot} {op}", "no id in the result")
            self.ledger.refuse(record, at=now, definite=False)
        else:
            definite = outcome.error_kind not in ErrorKind.INDETERMINATE | {ErrorKind.PROTOCOL}
            self.ledger.refuse(record, at=now, definite=definite)
        return outcome

    async def _delete(
        self, record: WriteRecord, client: TimedClient, slot: str, own: Pool
    ) -> Outcome:
        assert record.id is not None
        self.live.discard(record)
        own.discard(record)
        change = self.ledger.begin_delete(record, at=self.clock.now())
        outcome = await client.call(ToolCalls.DELETE, ToolCalls.by_id(record.id))
        self._sample("delete", slot, outcome, client)
        now = self.clock.now()
        self._settle(change, outcome, at=now)
        if outcome.error_kind == ErrorKind.NOT_FOUND:
            self.recorder.violation("delete_not_found", f"{record.token} ({record.id})")
        return outcome

    async def _touch(self, op: str, record: WriteRecord, client: TimedClient, slot: str) -> Outcome:
        assert record.id is not None
        if op == "get":
            outcome = await client.call(ToolCalls.MEMORY, ToolCalls.memory("get", record.id))
        elif op == "search":
            outcome = await client.call(ToolCalls.SEARCH, ToolCalls.search(record.token))
        else:
            tool = ToolCalls.PROMOTE if op == "promote" else ToolCalls.DEMOTE
            change = self.ledger.begin_touch(record, op, at=self.clock.now())
            outcome = await client.call(tool, ToolCalls.by_id(record.id))
            self._settle(change, outcome, at=self.clock.now())
        explained = record.delete is not None  # a delete was sent before this answer came
        if outcome.error_kind == ErrorKind.NOT_FOUND and explained:
            self.recorder.notes[f"{op}_after_delete"] += 1
            outcome = Outcome(outcome.tool, outcome.started, outcome.latency_s, None)
            self._sample(op, slot, outcome, client)
            return outcome
        self._sample(op, slot, outcome, client)
        if outcome.error_kind == ErrorKind.NOT_FOUND:
            self.recorder.violation(f"{op}_missing", f"{record.token} ({record.id}) via {slot}")
        elif outcome.ok and outcome.data is not None:
            self._check_read(op, record, outcome.data, slot)
        return outcome

    def _settle(self, change: Change, outcome: Outcome, *, at: float) -> None:
        """Acknowledged, refused (the change must not be there), or in doubt (it may be)."""
        if outcome.ok:
            self.ledger.acknowledge_change(change, at=at)
        else:
            definite = outcome.error_kind not in ErrorKind.INDETERMINATE | {ErrorKind.PROTOCOL}
            self.ledger.refuse(change, at=at, definite=definite)

    def _check_read(self, op: str, record: WriteRecord, data: dict[str, Any], slot: str) -> None:
        """A read answered after the write's acknowledgement must show it, as sent."""
        if op == "get":
            content = ToolCalls.content(data)
            if content is None:
                self.recorder.violation("get_without_content", f"{record.id} via {slot}")
            elif not _matches(record, content):
                self.recorder.violation("get_wrong_content", f"{record.token} via {slot}")
        elif op == "search" and record.delete is None and record.id not in ToolCalls.ids_in(data):
            self.recorder.violation("search_missing", f"{record.token} ({record.id}) via {slot}")


def _matches(record: WriteRecord, content: str) -> bool:
    if record.extended:
        return sha256(content[: record.length]) == record.sha256
    return sha256(content) == record.sha256
