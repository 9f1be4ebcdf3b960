"""The ``feed`` profiles: a write in one process reaches a subscribed client of another
server (issue 14's figures).

Two ``vestige-mcp --shared-writers`` servers, A and B, on one fresh data directory, each
with one MCP client.  B's client subscribes to ``memory://changes`` (``resources/subscribe``);
A's client writes.  The run:

1. **Idle cost.**  Both servers idle for the plan's window, side by side: B with its
   subscribed client (its notifier looks at the feed every ``FEED_POLL_S``), A with a
   connected client that subscribed to nothing (its notifier does not look at all).  The
   CPU seconds each process spent (psutil ``cpu_times``, user + system, its children
   included) over the same window, printed per minute.  Shown, not judged: the figure is
   milliseconds per minute, below what a fixed bound could tell from the machine's noise,
   and no same-run baseline would fail a server that polls too often but cheaply.
2. **Delay.**  Rounds of writes through A.  Most rounds are one write, timed: the time it
   was sent and the time A acknowledged it.  Every ``burst_every``-th round is a burst of
   ``burst_writes`` writes back to back, which the server coalesces into fewer
   notifications: not timed, but each must still be read.  The subscriber takes every
   notification of ``memory://changes`` as it arrives (stamped by the client's message
   handler), then calls ``memory_changelog`` with ``since_seq`` (the last seq it read)
   and notes every memory it learns of.  After a round, the next starts only
   ``NOTIFY_MIN_INTERVAL_S + FEED_POLL_S + PAUSE_MARGIN_S`` after the last notification,
   plus a random part of a poll interval: a notification is never held back by the
   coalescing window of the one before, a burst's trailing notification cannot be taken
   for the next write's, and the writes do not all meet B's polls at the same phase.

   A write's **delay** is measured to the first notification that arrived after it was
   sent.  The commit lies between the send and the acknowledgement, so two figures bound
   the commit-to-notice time: from the ack (the figure the issue asks for; a notification
   can overtake the ack on its way to A's client, then it counts 0) and from the send
   (an upper bound, which the check judges).

Checks:

- every acknowledged write reached the subscriber: announced by a notification after it
  was sent, and then read through ``memory_changelog since_seq``, within
  ``NOTICE_TIMEOUT_S`` (a liveness deadline; a notice normally takes a tenth of a second);
  one missed write fails the run;
- no client saw an error; no changelog page the subscriber read had a gap;
- **delay p99 (from the send) <= the same run's write p99 + NOTIFY_MIN_INTERVAL_S +
  FEED_POLL_S + the subscriber's changelog round trip p99**.  Each term is one leg of the
  way, measured or fixed by design: send to commit is at most the write's own round trip;
  a commit is seen by B's next look, at most one poll interval later; the coalescing window
  may hold it at most NOTIFY_MIN_INTERVAL_S (the pauses keep it closed; it is room, not
  expected); B's notice then travels B's event loop and pipe to its client, which a tool
  round trip on B bounds.  Every measured term is taken on the same machine at the same
  moments, so load from elsewhere raises both sides of the bound.  It fails a notifier
  that looks less often than it promises, waits for a write of its own, or holds every
  notice to a window's end;
- both servers exit 0 on stdin EOF.

Every process is stopped by pid in ``finally`` (the registry).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import secrets
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import anyio
import mcp_types
import psutil

from loadtest.checks import Check, Measure, Summary
from loadtest.client import Clock, Outcome, TimedClient
from loadtest.runner import RunResult, ServerSlot, SetupError, child_env
from loadtest.spawn import Registry
from loadtest.workload import Sample
from vestige.feed import FEED_POLL_S
from vestige.server.notify import CHANGES_URI, NOTIFY_MIN_INTERVAL_S

if TYPE_CHECKING:
    from collections.abc import Callable

    from loadtest.profiles import FeedPlan
    from loadtest.runner import RunConfig
    from loadtest.spawn import Child

#: How long a write may wait for its notification and its read before it counts as missed:
#: a liveness deadline for a loaded machine, not a speed target (the delay check is that).
NOTICE_TIMEOUT_S: Final = 10.0
#: Past the coalescing window and one poll: room for the notifier's own look to finish.
PAUSE_MARGIN_S: Final = 0.05
#: Changes read per memory_changelog call (a burst is a few; more pages are read on).
CHANGELOG_PAGE: Final = 500
#: Too few timed writes make a p99 of nothing; below this the delay check cannot pass.
MIN_TIMED_WRITES: Final = 5
#: How the server names a new memory's changelog entry.
CREATED: Final = "created"
#: The VESTIGE_CONSOLIDATION_INTERVAL_HOURS of both servers: no decay pass during the run.
#: A pass is a change by nobody's write: it would cost CPU in the idle window and be one
#: more notice to tell apart.
NO_DECAY_HOURS: Final = "1000"
WRITER: Final = "A"
SUBSCRIBER: Final = "B"
DELAY_CHECK: Final = (
    "notification delay p99 (from the send) within the same run's write p99 + coalescing "
    "window + poll interval + changelog round trip p99"
)
MISSED_CHECK: Final = (
    "every acknowledged write reached the subscriber (a notification, then memory_changelog "
    "since_seq)"
)


@dataclass
class FeedWrite:
    """One write through A, and when B's subscriber learnt of it (run-clock seconds)."""

    n: int
    token: str
    sent: float
    #: Alone in its round: its notification times it.
    timed: bool
    acked: float | None = None
    memory_id: str | None = None
    #: Arrival of the first notification of memory://changes after it was sent.
    noticed: float | None = None
    #: When a memory_changelog read made after a notification returned it.
    seen: float | None = None
    missed: bool = False

    @property
    def reached(self) -> bool:
        return self.noticed is not None and self.seen is not None


@dataclass(frozen=True, slots=True)
class IdleCost:
    """CPU seconds of two idle servers over one window: one watched, one not."""

    window_s: float
    watching_cpu_s: float
    unwatched_cpu_s: float

    @property
    def watching_per_min(self) -> float:
        return self.watching_cpu_s / self.window_s * 60.0

    @property
    def unwatched_per_min(self) -> float:
        return self.unwatched_cpu_s / self.window_s * 60.0


@dataclass
class FeedState:
    writes: list[FeedWrite] = field(default_factory=list)
    #: Arrival of every notification of memory://changes the subscriber got.
    notices: list[float] = field(default_factory=list)
    #: Notifications of other URIs (none is subscribed: each would be a server's mistake).
    other_notices: int = 0
    #: Notifications after which memory_changelog had nothing new (a coalesced trailer).
    empty_reads: int = 0
    #: Gaps the changelog pages reported (changes trimmed before the subscriber read them).
    gaps: int = 0
    idle: IdleCost | None = None
    subscribed: bool = False
    write_phase_s: float = 0.0

    def acked(self) -> list[FeedWrite]:
        return [w for w in self.writes if w.memory_id is not None]

    def missed(self) -> list[FeedWrite]:
        return [w for w in self.acked() if w.missed or not w.reached]

    def delays_from_ack(self) -> list[float]:
        """Seconds from the ack to the notice (0 when the notice overtook the ack)."""
        return [
            max(0.0, w.noticed - w.acked)
            for w in self.acked()
            if w.timed and w.noticed is not None and w.acked is not None and not w.missed
        ]

    def delays_from_send(self) -> list[float]:
        return [
            w.noticed - w.sent
            for w in self.acked()
            if w.timed and w.noticed is not None and not w.missed
        ]


def delay_check(
    delays_from_send_s: list[float], write_ms: Summary, read_ms: Summary, *, timed: int
) -> Check:
    """The delay bound (see the module docstring): every term but the two design constants
    measured in the same run."""
    delay = Summary.of([d * 1000 for d in delays_from_send_s])
    room_ms = (NOTIFY_MIN_INTERVAL_S + FEED_POLL_S) * 1000
    bound = write_ms.p99 + room_ms + read_ms.p99
    enough = delay.count >= MIN_TIMED_WRITES and delay.count >= timed
    ok = enough and delay.p99 <= bound
    basis = (
        f"write p99 {write_ms.p99:.1f} ms + {NOTIFY_MIN_INTERVAL_S * 1000:.0f} ms coalescing + "
        f"{FEED_POLL_S * 1000:.0f} ms poll + changelog p99 {read_ms.p99:.1f} ms"
    )
    detail = f"p99 {delay.p99:.1f} ms <= {bound:.1f} ms ({basis})"
    if not enough:
        detail = f"{delay.count} timed writes of {timed} noticed (need >= {MIN_TIMED_WRITES})"
    # No bound without its baseline (no changelog read, say): nothing to draw.
    measure = None if math.isnan(bound) else Measure(delay.p99, bound, "ms", basis)
    return Check(DELAY_CHECK, ok, detail, measure=measure)


def missed_check(state: FeedState) -> Check:
    acked, missed = state.acked(), state.missed()
    first = ", ".join(
        f"#{w.n} {w.memory_id} ("
        + ("no notification" if w.noticed is None else "notified, never read")
        + ")"
        for w in missed[:3]
    )
    return Check(
        MISSED_CHECK,
        bool(acked) and not missed,
        f"{len(acked)} acknowledged, {len(missed)} missed" + (f": {first}" if first else ""),
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its children so far (0 once gone)."""
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for each in procs:
        with contextlib.suppress(psutil.Error):
            t = each.cpu_times()
            total += t.user + t.system
    return total


async def execute(config: RunConfig) -> RunResult:
    """One run of a feed profile; every process it started is stopped, by pid, at the end."""
    result = RunResult("feed", config, marker=f"lt{secrets.token_hex(3)}")
    registry = Registry(config.workdir / "logs")
    registry.workdir.mkdir(parents=True, exist_ok=True)
    try:
        await FeedRun(config, result, registry).drive()
    finally:
        with anyio.CancelScope(shield=True):
            await registry.stop_all()
        result.leftover_pids += registry.reap_all()
    return result


class FeedRun:
    """One run of a ``feed`` profile; ``drive`` fills the RunResult."""

    def __init__(self, config: RunConfig, result: RunResult, registry: Registry) -> None:
        p = config.profile
        assert p.feed is not None
        self.plan: FeedPlan = p.feed
        self.config, self.result, self.registry, self.profile = config, result, registry, p
        self.data_dir = config.workdir / "data"
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.env = child_env(self.data_dir, naive=False, log_level=config.log_level)
        self.env["VESTIGE_CONSOLIDATION_INTERVAL_HOURS"] = NO_DECAY_HOURS
        self.clock = Clock()
        self.recorder = result.recorder
        self.state = FeedState()
        result.feed = self.state
        self.slots = [ServerSlot(WRITER), ServerSlot(SUBSCRIBER)]
        result.slots = self.slots
        self.argv = [*config.server_argv, "--data-dir", str(self.data_dir), "--shared-writers"]
        self._arrived = anyio.Event()
        self._handled = 0  # notices taken so far
        self._last_seq = 0
        self._writes_done = anyio.Event()
        self.rng = random.Random(p.seed)

    # -- the subscriber's side ---------------------------------------------------------

    async def on_message(self, message: Any) -> None:
        """The client's message handler: stamp each notification the moment it arrives."""
        if isinstance(message, mcp_types.ResourceUpdatedNotification):
            if str(message.params.uri) == CHANGES_URI:
                self.state.notices.append(self.clock.now())
                self._arrived.set()
            else:
                self.state.other_notices += 1

    async def follow(
        self, b: TimedClient, deadline: float, done: Callable[[], bool] = lambda: False
    ) -> None:
        """Take notifications as they come, each followed by a changelog read, until
        ``done()`` or the deadline (run clock)."""
        while not done():
            while self._handled >= len(self.state.notices):
                left = deadline - self.clock.now()
                if left <= 0:
                    return
                self._arrived = anyio.Event()
                with anyio.move_on_after(left):
                    await self._arrived.wait()
            at = self.state.notices[self._handled]
            self._handled += 1
            for w in self.state.writes:
                if w.noticed is None and w.sent < at:
                    w.noticed = at
            await self.read_changes(b)

    async def read_changes(self, b: TimedClient) -> None:
        """``memory_changelog since_seq``: what a subscriber does after a notification."""
        by_id = {w.memory_id: w for w in self.state.writes if w.memory_id and w.seen is None}
        new = 0
        while True:
            args = {"since_seq": self._last_seq, "oldest_first": True, "limit": CHANGELOG_PAGE}
            out = await self.call(b, SUBSCRIBER, "memory_changelog", args)
            data = out.data
            if data is None:
                return
            if data.get("gap"):
                self.state.gaps += 1
            changes = data.get("changes") or []
            for change in changes:
                self._last_seq = max(self._last_seq, int(change["seq"]))
                new += 1
                w = by_id.get(change.get("memory_id"))
                if w is not None and change.get("kind") == CREATED:
                    w.seen = self.clock.now()
            if not data.get("more") or not changes:
                break
        if not new:
            self.state.empty_reads += 1

    # -- the writer's side -------------------------------------------------------------

    async def call(
        self, client: TimedClient, proc: str, kind: str, args: dict[str, Any]
    ) -> Outcome:
        """A timed tool call, recorded as a sample of ``kind`` (the tool's name, or
        ``changelog_start`` for memory_changelog's first call)."""
        tool = "memory_changelog" if kind == "changelog_start" else kind
        out = await client.call(tool, args)
        self.recorder.add(Sample(out.started, kind, proc, out.latency_s * 1000, out.error_kind))
        if not out.ok:
            self.recorder.error(out.error_kind or "error", f"{proc} {tool}", out.error_text)
        return out

    async def write(self, a: TimedClient, *, timed: bool) -> FeedWrite:
        n = len(self.state.writes) + 1
        token = f"{self.result.marker}feed{n:06d}"
        w = FeedWrite(n, token, self.clock.now(), timed)
        self.state.writes.append(w)
        text = f"{token} a change for the subscriber of another server, number {n}"
        out = await self.call(a, WRITER, "ingest", {"content": text})
        if out.ok and out.data is not None and isinstance(out.data.get("id"), str):
            w.acked = out.started + out.latency_s
            w.memory_id = out.data["id"]
        return w

    async def round(self, a: TimedClient, b: TimedClient, writes: int) -> None:
        batch = [await self.write(a, timed=writes == 1) for _ in range(writes)]
        acked = [w for w in batch if w.acked is not None]
        if acked:
            deadline = max(w.acked or 0.0 for w in acked) + NOTICE_TIMEOUT_S
            await self.follow(b, deadline, lambda: all(w.reached for w in acked))
        for w in acked:
            w.missed = not w.reached
        # The next write waits out the coalescing window of the last notification, then a
        # random part of a poll interval: paced from a notice, every write would otherwise
        # land at the same phase of the subscriber server's polls and time the same case.
        last = self.state.notices[-1] if self.state.notices else self.clock.now()
        pause_until = last + NOTIFY_MIN_INTERVAL_S + FEED_POLL_S + PAUSE_MARGIN_S
        pause_until += self.rng.uniform(0.0, FEED_POLL_S)
        await self.follow(b, max(pause_until, self.clock.now()))

    # -- the run -----------------------------------------------------------------------

    async def drive(self) -> None:
        children: list[Child] = []
        for slot in self.slots:
            child = await self.registry.spawn(f"server-{slot.name}", self.argv, self.env)
            slot.child = child
            slot.pids.append(child.pid)
            children.append(child)
        # The clients' read timeout bounds each handshake (a cancel scope around entering
        # them would straddle the transport's task group; see loadtest/client.py).
        try:
            async with contextlib.AsyncExitStack() as stack:
                try:
                    a = await stack.enter_async_context(TimedClient(children[0], self.clock))
                    b = await stack.enter_async_context(
                        TimedClient(children[1], self.clock, message_handler=self.on_message)
                    )
                except Exception as exc:
                    raise SetupError(
                        f"the servers did not start: {exc!r}: {self._tails()}"
                    ) from exc
                await self._run(a, b)
        finally:
            with anyio.CancelScope(shield=True):
                for slot, child in zip(self.slots, children, strict=True):
                    code = await self.registry.stop(child)
                    slot.exits.append({"pid": child.pid, "code": code, "final": True})
        self.final_checks()

    async def _run(self, a: TimedClient, b: TimedClient) -> None:
        # Not a "memory_changelog" sample: the first call of a fresh server is not the
        # round trip the delay bound is about.
        start = await self.call(b, SUBSCRIBER, "changelog_start", {"limit": 1})
        if start.data is None:
            raise SetupError(f"memory_changelog failed on B: {start.error_text}")
        self._last_seq = int(start.data.get("newest_seq") or 0)
        if not self.config.no_subscribe:
            await b.subscribe(CHANGES_URI)
            self.state.subscribed = True
        await self.follow(b, self.clock.now() + self.plan.settle_s)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.progress)
            try:
                await self._measure_idle(a, b)
                await self._write_phase(a, b)
            finally:
                self._writes_done.set()

    async def _measure_idle(self, a: TimedClient, b: TimedClient) -> None:
        """Nobody calls anything: what B's watching costs beside A's not watching."""
        window = self.plan.idle_window_s
        pids = (a.child.pid, b.child.pid)
        before = [cpu_seconds(p) for p in pids]
        t0 = self.clock.now()
        await anyio.sleep(window)
        after = [cpu_seconds(p) for p in pids]
        took = self.clock.now() - t0
        self.state.idle = IdleCost(took, after[1] - before[1], after[0] - before[0])
        await self.follow(b, self.clock.now())  # anything announced meanwhile (nothing is)

    async def _write_phase(self, a: TimedClient, b: TimedClient) -> None:
        p = self.profile
        self.result.load_started = start = self.clock.now()
        rounds = 0
        while self.clock.now() - start < p.duration_s:
            if p.max_ops is not None and len(self.state.writes) >= p.max_ops:
                break
            rounds += 1
            burst = self.plan.burst_every > 0 and rounds % self.plan.burst_every == 0
            await self.round(a, b, self.plan.burst_writes if burst else 1)
        self.result.load_s = self.state.write_phase_s = self.clock.now() - start
        for slot in self.slots:
            slot.connected_s = self.result.load_s

    async def progress(self) -> None:
        """The load average every second (shown: other work slows writes and notices alike)
        and a live line every 5 s."""
        ticks = 0
        while not self._writes_done.is_set():
            with anyio.move_on_after(1.0):
                await self._writes_done.wait()
            if hasattr(os, "getloadavg"):
                self.recorder.load_averages.append((self.clock.now(), os.getloadavg()[0]))
            ticks += 1
            if self.config.progress and not ticks % 5:
                s = self.state
                missed = sum(w.missed for w in s.writes)
                errors = sum(self.recorder.errors.values())
                print(
                    f"[{ticks:4d} s] writes {len(s.writes)}  notices {len(s.notices)}  missed "
                    f"{missed}  errors {errors}",
                    file=sys.stderr,
                    flush=True,
                )

    # -- checks ------------------------------------------------------------------------

    def final_checks(self) -> None:
        r, s = self.result, self.state
        if self.config.no_subscribe:
            r.checks.append(
                Check(
                    "fault: B's client never subscribed (--inject-no-subscribe)",
                    not s.subscribed,
                    "every write should be missed",
                )
            )
        r.checks.append(missed_check(s))
        errors = self.recorder.errors
        r.checks.append(
            Check(
                "no client saw an error",
                not errors,
                ", ".join(f"{k} {v}" for k, v in sorted(errors.items())) or "none",
            )
        )
        r.checks.append(
            Check(
                "no gap in the changelog the subscriber read",
                s.gaps == 0,
                f"{s.gaps} pages said changes were gone" if s.gaps else "none",
            )
        )
        r.checks.append(
            delay_check(
                s.delays_from_send(),
                r.summary_of(("ingest",), WRITER),
                r.summary_of(("memory_changelog",), SUBSCRIBER),
                timed=sum(w.timed for w in s.acked()),
            )
        )
        exits = [e for slot in self.slots for e in slot.exits]
        bad = [f"{e['pid']} exit {e['code']}" for e in exits if e["code"] != 0]
        r.checks.append(
            Check(
                "both servers exited 0 on stdin EOF",
                len(exits) == len(self.slots) and not bad,
                ", ".join(bad) or f"{len(exits)} servers",
            )
        )

    def _tails(self) -> str:
        return " | ".join(
            f"{c.label} pid {c.pid}: {c.stderr_tail(300).strip()}"
            for c in self.registry.children
            if c.stderr_tail(300).strip()
        )


# -- report ----------------------------------------------------------------------------------


def summary_lines(state: FeedState) -> list[str]:
    """The feed figures of the printed summary."""
    ack = Summary.of([d * 1000 for d in state.delays_from_ack()])
    send = Summary.of([d * 1000 for d in state.delays_from_send()])
    acked = state.acked()
    rate = len(acked) / state.write_phase_s if state.write_phase_s else 0.0
    lines = [
        f"feed: {len(acked)} writes acknowledged through {WRITER} ({rate:.1f}/s, "
        f"{sum(w.timed for w in acked)} timed), {len(state.notices)} notifications of "
        f"{CHANGES_URI} on {SUBSCRIBER}'s subscriber, {state.empty_reads} with nothing new; "
        f"missed {len(state.missed())}",
        f"notification delay after the ack: p50 {ack.p50:.1f} / p99 {ack.p99:.1f} / max "
        f"{ack.max:.1f} ms; after the send: p50 {send.p50:.1f} / p99 {send.p99:.1f} / max "
        f"{send.max:.1f} ms",
    ]
    if state.idle is not None:
        i = state.idle
        watched = "a subscribed client" if state.subscribed else "a client never subscribed (fault)"
        lines.append(
            f"idle cost over {i.window_s:.1f} s: server with {watched} "
            f"{i.watching_per_min:.3f} CPU-s/min, server with no subscriber "
            f"{i.unwatched_per_min:.3f} CPU-s/min (difference "
            f"{i.watching_per_min - i.unwatched_per_min:.3f} CPU-s/min)"
        )
    return lines


def state_dict(state: FeedState) -> dict[str, Any]:
    idle = state.idle
    return {
        "subscribed": state.subscribed,
        "writes_acknowledged": len(state.acked()),
        "writes_timed": sum(w.timed for w in state.acked()),
        "writes_per_s": round(len(state.acked()) / state.write_phase_s, 2)
        if state.write_phase_s
        else None,
        "missed": len(state.missed()),
        "missed_writes": [
            {"n": w.n, "id": w.memory_id, "noticed": w.noticed is not None} for w in state.missed()
        ][:20],
        "notifications": len(state.notices),
        "notifications_with_nothing_new": state.empty_reads,
        "other_notifications": state.other_notices,
        "gaps": state.gaps,
        "delay_after_ack": Summary.of([d * 1000 for d in state.delays_from_ack()]).to_dict(),
        "delay_after_send": Summary.of([d * 1000 for d in state.delays_from_send()]).to_dict(),
        "idle": None
        if idle is None
        else {
            "window_s": round(idle.window_s, 2),
            "watching_cpu_s_per_min": round(idle.watching_per_min, 4),
            "unwatched_cpu_s_per_min": round(idle.unwatched_per_min, 4),
        },
    }
