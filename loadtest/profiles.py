"""Named load profiles: the load to apply and the bounds it must stay within.

Shaped after Litestream's ``LoadProfile`` (style.md §3): a profile says what the load is
(servers, in-flight calls, rate, mix, payload sizes, side traffic, faults) and what counts
as passing (latency bounds, fairness).  Every field can be overridden from the command line.

Rates are paced per server, not "as fast as possible": the machine this runs on has two
cores shared with other jobs, and an unpaced loop measures CPU queueing, not the store.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Any, Final

#: MCP operations the workload issues, by what they do to the ledger.
WRITE_OPS: Final = ("ingest", "smart_ingest", "delete", "promote", "demote")
READ_OPS: Final = ("search", "get")
MCP_OPS: Final = WRITE_OPS + READ_OPS

FAULT_KINDS: Final = ("kill-server", "kill-external", "exclusive-launch")


@dataclass(frozen=True, slots=True)
class Relative:
    """Write latency judged against read latency of the same run: what CI can rely on.

    Reads run on the same servers, through the same MCP sessions, at the same moments, and
    take no write lock: a busy machine slows them as much as the writes (measured on 2
    cores: write/read 1.1-1.3 at p50 and p99, quiet or beside two busy loops at load 4-7),
    while a slow write path slows only the writes (a 20 ms sleep inside each write
    transaction: 35x at p50, 24x at p99).  Each bound is
    ``times x read figure + idle_rounds x idle read p50`` (the idle baseline measured per
    server before the load), so a quiet machine, where a write's own work (commit, index)
    is a larger share of its round trip, keeps some room too.
    """

    times: float = 3.0
    #: The p99 gets a little more: a write's tail holds its wait at the gate behind the other
    #: servers' writes and the WAL checkpoints, which no read waits for (a CI run
    #: measured write/read p99 3.7 with nothing wrong; the 20 ms fault gives 24x).
    p99_times: float = 4.0
    #: Up to this many idle read round trips on top: room for a write's own work.
    idle_rounds: float = 3.0
    #: The maximum is one sample, so it gets more room than the percentiles (write/read max
    #: measured 0.96-1.35 under load, 1.85 with the 20 ms fault; a 2 s stall every 700th
    #: write gave 10.3).
    max_times: float = 5.0
    #: ... or this many times the run's own write p99, whichever is larger.  A read maximum
    #: is one sample: in runs where every read happened to be fast (20-43 ms) the slowest of
    #: ~2,400 writes (probably behind an auto-checkpoint's fsync, then inside the gate) was
    #: 5.5-9.3x it with nothing wrong, and failed 3 of 6 CI-profile runs of the same code
    #: (2026-12-03: write max / write p99 4.0-6.5 in those runs).  A stall every few hundred
    #: writes leaves the p99 where it was and puts the maximum tens of times above it (2 s
    #: over ~50 ms).
    max_tail_times: float = 15.0


@dataclass(frozen=True, slots=True)
class Goals:
    """Fixed milliseconds: the figures promised on a quiet machine, for people to check.

    Load from elsewhere on the machine breaks these without any fault in Vestige, which is
    why only the ``goals`` profile (and explicit ``--p99-write-ms`` style flags) use them.
    """

    p99_write_ms: float | None = None
    max_write_ms: float | None = None
    p99_read_ms: float | None = None
    max_read_ms: float | None = None


@dataclass(frozen=True, slots=True)
class Bounds:
    """What passing means for latency, fairness and the WAL (client-side, per MCP call)."""

    #: Judge writes against same-run reads (None: no relative bounds).
    relative: Relative | None = field(default_factory=Relative)
    goals: Goals = field(default_factory=Goals)
    #: min/max over servers of acknowledged writes per connected second.
    min_fairness: float = 0.5
    #: The WAL may pass Vestige's journal_size_limit (64 MiB) only while a reader pins it.
    max_wal_mib: float = 64.0


@dataclass(frozen=True, slots=True)
class Faults:
    """Which faults fire, and when (fractions of the run's duration)."""

    kill_server_at: tuple[float, ...] = (0.4,)
    kill_external_at: tuple[float, ...] = (0.65,)
    exclusive_launch_at: tuple[float, ...] = (0.2,)

    def enabled(self) -> list[str]:
        return [
            kind
            for kind, times in zip(
                FAULT_KINDS,
                (self.kill_server_at, self.kill_external_at, self.exclusive_launch_at),
                strict=True,
            )
            if times
        ]

    def only(self, kinds: set[str]) -> Faults:
        """Keep the schedule of the named kinds, switch the others off."""
        return Faults(
            self.kill_server_at if "kill-server" in kinds else (),
            self.kill_external_at if "kill-external" in kinds else (),
            self.exclusive_launch_at if "exclusive-launch" in kinds else (),
        )

    def schedule(self, duration_s: float) -> list[tuple[float, str]]:
        events = [
            (at * duration_s, kind)
            for kind, times in zip(
                FAULT_KINDS,
                (self.kill_server_at, self.kill_external_at, self.exclusive_launch_at),
                strict=True,
            )
            for at in times
        ]
        return sorted(events)


@dataclass(frozen=True, slots=True)
class AttachPlan:
    """The ``attach`` profiles (loadtest/attach.py): every client launches
    ``vestige-mcp --attach``, and the detached owner behind their proxies is killed -9.

    Times are fractions of the run's duration, as for ``Faults``.  Before the first kill
    and between every two, a direct ``vestige-mcp`` is cold-started on a data directory of
    its own: the same run's baseline for the failover bound, measured under the same load
    as the failovers.  ``cold_starts_before`` more, before the load, are shown for
    reference only (an idle machine is not the one the failovers see).
    """

    #: When the current owner (found with ``vestige doctor --json``) is killed -9.
    owner_kills_at: tuple[float, ...] = (0.15, 0.4, 0.65, 0.9)
    #: Two ``vestige-mcp --attach`` launched within ``duplicate_gap_ms``, both used.
    duplicate_spawn_at: tuple[float, ...] = (0.3,)
    #: Owner kills (1 = the first) right after which a duplicate spawn is launched too:
    #: two new windows opening while the proxies elect the next owner.
    duplicate_at_kills: tuple[int, ...] = (3,)
    #: One ``vestige-mcp --attach`` that answers ``initialize`` and exits at once.
    probe_at: tuple[float, ...] = (0.55,)
    duplicate_gap_ms: float = 10.0
    cold_starts_before: int = 2
    #: The goal: failover p99 <= the direct cold start p99 under the same load + this.
    failover_room_s: float = 0.5
    #: When set (the CI profile), the bound judged is the guard instead: the slowest
    #: failover <= this x the slowest cold start under the same load.  A few kills give a
    #: p99 that is one owner's start on a busy machine; the guard still fails a failover
    #: that waits out a timeout or hangs, and the goal's verdict is printed beside it.
    failover_guard_factor: float | None = None

    def schedule(self, duration_s: float) -> list[tuple[float, str]]:
        """``(seconds into the load, event)``, in order; a cold start between two kills."""
        kills = sorted(self.owner_kills_at)
        events = [(at * duration_s, "kill-owner") for at in kills]
        # The baseline, under the load: before the first kill, and between every two.
        colds = [kills[0] / 2] if kills else []
        colds += [(a + b) / 2 for a, b in itertools.pairwise(kills)]
        events += [(at * duration_s, "cold-start") for at in colds]
        events += [(at * duration_s, "duplicate-spawn") for at in self.duplicate_spawn_at]
        events += [(at * duration_s, "probe") for at in self.probe_at]
        return sorted(events)


@dataclass(frozen=True, slots=True)
class FeedPlan:
    """The ``feed`` profiles (loadtest/feed.py): a write through one server reaches a
    subscribed client of another; what that takes, and what watching costs an idle server.

    The profile's ``duration_s`` is the write phase; the idle window comes before it.
    """

    #: Both servers idle, one with a subscribed client and one without: the same window
    #: for both, so the machine's other work weighs on both alike.
    idle_window_s: float = 10.0
    #: After subscribing and before the idle window: the servers' start-up work is over.
    settle_s: float = 2.0
    #: Every this many rounds, a burst of ``burst_writes`` writes back to back instead of
    #: one timed write: coalesced into fewer notifications, each write must still be read.
    burst_every: int = 3
    burst_writes: int = 4


@dataclass(frozen=True, slots=True)
class LoadProfile:
    name: str
    description: str
    servers: int
    duration_s: float
    #: Stop early after this many MCP operations (None: run for the whole duration).
    max_ops: int | None = None
    #: Concurrent calls in flight per server (an agent issuing parallel tool calls).
    inflight: int = 2
    #: Target MCP operations per second per server; 0 means unpaced.
    rate_per_server: float = 30.0
    #: Relative weights of the MCP operations.
    mix: dict[str, int] = field(
        default_factory=lambda: {
            "ingest": 25,
            "smart_ingest": 10,
            "search": 20,
            "get": 20,
            "promote": 5,
            "demote": 5,
            "delete": 15,
        }
    )
    #: A memory is a fact, a decision, a pattern: usually well under 2 KB (soak goes to 64 KB).
    payload_min_bytes: int = 64
    payload_max_bytes: int = 2_048
    #: Side traffic through the `vestige` CLI, one command every N seconds (0 = none).
    cli_read_every_s: float = 3.0
    #: The read commands taken in turn.
    cli_reads: tuple[str, ...] = ("stats", "search", "health")
    backup_every_s: float = 12.0
    consolidate_every_s: float = 15.0
    #: The external writer: one transaction of ``external_rows`` rows held open
    #: ``external_hold_ms`` every ``external_every_ms``.
    external_writer: bool = True
    external_rows: int = 5
    external_hold_ms: float = 5.0
    external_every_ms: float = 250.0
    faults: Faults = field(default_factory=Faults)
    bounds: Bounds = field(default_factory=Bounds)
    #: Read round trips per server, one server at a time, before the load: the idle
    #: baseline that relative bounds are judged against.
    idle_probe_calls: int = 40
    seed: int = 20_240_601
    #: Set for the ``attach`` profiles: proxies to one detached owner instead of shared
    #: writers, no external writer, and the owner killed instead of the ``faults``.
    attach: AttachPlan | None = None
    #: Set for the ``feed`` profiles: two shared writers, a subscriber on one, writes on
    #: the other; none of the mixed load, side traffic or faults.
    feed: FeedPlan | None = None

    def with_overrides(self, **changes: Any) -> LoadProfile:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def _attach_profile(
    name: str, description: str, *, servers: int, duration_s: float, plan: AttachPlan
) -> LoadProfile:
    """An attach profile: --attach clients only, their owner's death the one fault."""
    return LoadProfile(
        name=name,
        description=description,
        servers=servers,
        duration_s=duration_s,
        rate_per_server=20.0,
        cli_read_every_s=0.0,
        backup_every_s=0.0,
        consolidate_every_s=0.0,
        external_writer=False,
        faults=Faults((), (), ()),
        idle_probe_calls=0,
        attach=plan,
    )


def _feed_profile(name: str, description: str, *, duration_s: float, plan: FeedPlan) -> LoadProfile:
    """A feed profile: servers A and B, writes through A, a subscriber on B."""
    return LoadProfile(
        name=name,
        description=description,
        servers=2,
        duration_s=duration_s,
        inflight=1,
        rate_per_server=0.0,
        mix={"ingest": 1},
        cli_read_every_s=0.0,
        backup_every_s=0.0,
        consolidate_every_s=0.0,
        external_writer=False,
        faults=Faults((), (), ()),
        idle_probe_calls=0,
        feed=plan,
    )


PROFILES: Final[dict[str, LoadProfile]] = {
    p.name: p
    for p in (
        LoadProfile(
            name="ci",
            description="3 servers, 45 s, every fault once: the CI gate (~1-2 min on 2 cores)",
            servers=3,
            duration_s=45.0,
        ),
        LoadProfile(
            name="goals",
            description="the ci load judged against fixed goals (write p99 <= 50 ms, max <= 1 s):"
            " for a quiet machine only",
            servers=3,
            duration_s=45.0,
            bounds=Bounds(relative=None, goals=Goals(p99_write_ms=50.0, max_write_ms=1_000.0)),
        ),
        LoadProfile(
            name="short",
            description="2 servers, 15 s, every fault once: a quick local check",
            servers=2,
            duration_s=15.0,
            rate_per_server=25.0,
            cli_read_every_s=2.0,
            backup_every_s=5.0,
            consolidate_every_s=6.0,
            faults=Faults(
                kill_server_at=(0.45,), kill_external_at=(0.7,), exclusive_launch_at=(0.2,)
            ),
        ),
        LoadProfile(
            name="burst",
            description="4 servers, unpaced, 20 s, no faults: contention; run it with --baseline",
            servers=4,
            duration_s=20.0,
            rate_per_server=0.0,
            cli_read_every_s=5.0,
            backup_every_s=10.0,
            consolidate_every_s=10.0,
            faults=Faults((), (), ()),
        ),
        LoadProfile(
            name="soak",
            description="4 servers, 30 min, larger payloads, a kill every few minutes",
            servers=4,
            duration_s=1_800.0,
            # 20, not 40: 30 minutes then write about 86,000 changelog entries, inside the
            # 100,000 the changelog keeps, so the replay check judges a whole log.
            rate_per_server=20.0,
            inflight=3,
            payload_max_bytes=65_536,
            cli_read_every_s=2.0,
            backup_every_s=60.0,
            consolidate_every_s=45.0,
            faults=Faults(
                kill_server_at=tuple(i / 10 for i in range(1, 10)),
                kill_external_at=(0.25, 0.55, 0.85),
                exclusive_launch_at=(0.05, 0.45, 0.95),
            ),
        ),
        _attach_profile(
            "attach",
            "4 `vestige-mcp --attach` clients, 150 s, the owner killed -9 12 times, duplicate"
            " spawns and probes: issue 13's proof",
            servers=4,
            duration_s=150.0,
            plan=AttachPlan(
                owner_kills_at=tuple(round(0.06 + i * 0.08, 2) for i in range(12)),
                duplicate_spawn_at=(0.1, 0.5),
                duplicate_at_kills=(4, 9),
                probe_at=(0.3, 0.7),
                cold_starts_before=3,
            ),
        ),
        _attach_profile(
            "attach-ci",
            "3 `vestige-mcp --attach` clients, 40 s, the owner killed -9 4 times, duplicate"
            " spawns and a probe: the CI gate of the attach mode",
            servers=3,
            duration_s=40.0,
            plan=AttachPlan(failover_guard_factor=3.0),
        ),
        _feed_profile(
            "feed",
            "2 shared writers, a subscriber on one, writes on the other for 60 s; the idle "
            "cost of watching over 30 s: issue 14's figures",
            duration_s=60.0,
            plan=FeedPlan(idle_window_s=30.0),
        ),
        _feed_profile(
            "feed-ci",
            "2 shared writers, a subscriber on one, writes on the other for 20 s; the idle "
            "cost of watching over 10 s: the CI gate of the change feed",
            duration_s=20.0,
            plan=FeedPlan(idle_window_s=10.0),
        ),
    )
}

DEFAULT_PROFILE: Final = "ci"


def parse_mix(text: str) -> dict[str, int]:
    """``"ingest=30,search=20"`` -> weights; unknown operations are a usage error."""
    mix: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, weight = part.partition("=")
        name = name.strip()
        if not sep or name not in MCP_OPS:
            raise ValueError(
                f"bad --mix entry {part!r}: use op=weight with op one of {', '.join(MCP_OPS)}"
            )
        try:
            mix[name] = int(weight)
        except ValueError:
            raise ValueError(f"bad --mix weight in {part!r}: must be a whole number") from None
        if mix[name] < 0:
            raise ValueError(f"bad --mix weight in {part!r}: must be >= 0")
    if not any(mix.values()):
        raise ValueError("--mix gives every operation weight 0: nothing to do")
    return mix


def parse_faults(text: str) -> set[str]:
    """``"all"``, ``"none"`` or a comma list of fault kinds."""
    text = text.strip().lower()
    if text == "all":
        return set(FAULT_KINDS)
    if text in ("none", ""):
        return set()
    kinds = {k.strip() for k in text.split(",") if k.strip()}
    unknown = kinds - set(FAULT_KINDS)
    if unknown:
        raise ValueError(
            f"unknown fault {', '.join(sorted(unknown))}: use all, none, or any of "
            f"{', '.join(FAULT_KINDS)}"
        )
    return kinds
