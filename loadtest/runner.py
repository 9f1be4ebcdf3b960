"""One run: start the servers on a fresh data directory, load them, inject the faults, stop
everything, check everything.

Order (reads like a spec, as Litestream's soak tests do):

1. start N ``vestige-mcp --shared-writers`` at once on an empty directory (they race to
   create the database), connect an MCP client to each, check the tools are there;
2. start the external writer; then the load, the CLI side traffic, the faults and the
   progress line, together, for the profile's duration;
3. stop the load (calls in flight finish), close every client (stdin EOF: each server must
   exit 0), stop the external writer;
4. check the closed file, every backup, the ledgers, the errors, latency and fairness.

Whatever fails, every child is stopped by pid in ``finally``.
"""

from __future__ import annotations

import math
import os
import secrets
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio

from loadtest import changelog, checks
from loadtest.checks import Check, Summary
from loadtest.cli_traffic import BackupRecord, CliTraffic
from loadtest.client import Clock, ErrorKind, TimedClient
from loadtest.external import ExternalWriter
from loadtest.faults import FaultEvent, FaultRunner, fault_checks
from loadtest.ledger import ExternalLedger, Ledger, Verdict, verify, verify_external
from loadtest.profiles import READ_OPS, WRITE_OPS
from loadtest.spawn import Registry
from loadtest.workload import IDLE_READ, Recorder, Sample, ToolCalls, Workload

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from loadtest.attach import AttachState
    from loadtest.feed import FeedState
    from loadtest.profiles import LoadProfile
    from loadtest.spawn import Child

#: The server-side switch for the baseline: busy_timeout only, no gate, no retry.
NAIVE_ENV: Final = "VESTIGE_UNSAFE_NAIVE_WRITES"
#: The server-side fault: a sleep inside every write transaction (milliseconds).
WRITE_DELAY_ENV: Final = "VESTIGE_FAULT_WRITE_DELAY_MS"
#: Environment variables that would change what the servers do; the run sets its own.
_SCRUBBED_ENV: Final = (
    "VESTIGE_DATA_DIR",
    "VESTIGE_SHARED_WRITERS",
    "VESTIGE_ATTACH",
    "VESTIGE_SQLITE_DURABILITY",
    "VESTIGE_LOG_LEVEL",
    NAIVE_ENV,
    WRITE_DELAY_ENV,
)
START_TIMEOUT_S: Final = 90.0
MAX_UNEXPECTED_RESTARTS: Final = 3
PROGRESS_EVERY_S: Final = 1.0
WAL_EVERY_S: Final = 0.25
LAG_PROBE_S: Final = 0.02
#: Latency shown live: the p99 of the last few seconds.
PROGRESS_WINDOW_S: Final = 5.0


class SetupError(RuntimeError):
    """The run could not start (no server came up, a tool is missing): nothing was tested."""


@dataclass
class ServerSlot:
    """One server position: restarted after a kill, same name, new pid."""

    name: str
    up: anyio.Event = field(default_factory=anyio.Event)
    child: Child | None = None
    generation: int = 0
    pids: list[int] = field(default_factory=list)
    connected_s: float = 0.0
    exits: list[dict[str, Any]] = field(default_factory=list)
    unexpected: int = 0
    children: list[Child] = field(default_factory=list)
    #: What each generation said about itself in health_check (pid, maintenance owner...).
    health: list[dict[str, Any]] = field(default_factory=list)
    #: The last generation's answer once the load stopped (None if it was killed).
    final_health: dict[str, Any] | None = None


@dataclass
class RunConfig:
    profile: LoadProfile
    server_argv: list[str]
    cli_argv: list[str]
    workdir: Path
    naive: bool = False
    progress: bool = True
    log_level: str = "WARNING"
    #: Injected into every server (--inject-write-delay-ms); 0 for a real run.
    write_delay_ms: float = 0.0
    #: The feed profiles' fault (--inject-no-subscribe): the subscriber never subscribes.
    no_subscribe: bool = False


@dataclass
class RunResult:
    label: str
    config: RunConfig
    marker: str
    load_started: float = 0.0
    load_s: float = 0.0
    recorder: Recorder = field(default_factory=Recorder)
    ledger_counts: dict[str, int] = field(default_factory=dict)
    verdicts: list[Verdict] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    faults: list[FaultEvent] = field(default_factory=list)
    slots: list[ServerSlot] = field(default_factory=list)
    backups: list[BackupRecord] = field(default_factory=list)
    leftover_pids: list[int] = field(default_factory=list)
    #: The attach profiles' owners, failovers and cold starts (loadtest/attach.py).
    attach: AttachState | None = None
    #: The feed profiles' writes, notifications and idle cost (loadtest/feed.py).
    feed: FeedState | None = None

    @property
    def ok(self) -> bool:
        return bool(self.checks) and not any(c.failed for c in self.checks)

    def summaries(self) -> dict[str, Summary]:
        by_kind: dict[str, list[float]] = {}
        for s in self.recorder.samples:
            by_kind.setdefault(s.kind, []).append(s.latency_ms)
        return {k: Summary.of(v) for k, v in sorted(by_kind.items())}

    def summary_of(self, kinds: tuple[str, ...], proc: str | None = None) -> Summary:
        return Summary.of(
            [
                s.latency_ms
                for s in self.recorder.samples
                if s.kind in kinds and (proc is None or s.proc == proc)
            ]
        )

    def write_rates(self) -> dict[str, float]:
        """Successful write calls per connected second, per server."""
        done: dict[str, int] = {s.name: 0 for s in self.slots}
        for s in self.recorder.samples:
            if s.kind in WRITE_OPS and s.error is None and s.proc in done:
                done[s.proc] += 1
        return {s.name: done[s.name] / s.connected_s for s in self.slots if s.connected_s > 0}


def child_env(
    data_dir: Path, *, naive: bool, log_level: str = "WARNING", write_delay_ms: float = 0.0
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    env["VESTIGE_DATA_DIR"] = str(data_dir)  # belt and braces: every command also gets --data-dir
    env["VESTIGE_LOG_LEVEL"] = log_level  # WARNING: per-call INFO lines would only cost I/O
    env["PYTHONUNBUFFERED"] = "1"
    if naive:
        env[NAIVE_ENV] = "1"
    if write_delay_ms:
        env[WRITE_DELAY_ENV] = f"{write_delay_ms:g}"
    return env


async def execute(config: RunConfig) -> RunResult:
    label = "naive baseline" if config.naive else "shared writers"
    result = RunResult(label, config, marker=f"lt{secrets.token_hex(3)}")
    registry = Registry(config.workdir / "logs")
    registry.workdir.mkdir(parents=True, exist_ok=True)
    try:
        await _Run(config, result, registry).drive()
    finally:
        with anyio.CancelScope(shield=True):
            await registry.stop_all()
        result.leftover_pids = registry.reap_all()
    return result


class _Run:
    def __init__(self, config: RunConfig, result: RunResult, registry: Registry) -> None:
        p = config.profile
        self.config, self.result, self.registry, self.profile = config, result, registry, p
        self.data_dir = config.workdir / "data"
        self.db = self.data_dir / "vestige.db"
        self.env = child_env(
            self.data_dir,
            naive=config.naive,
            log_level=config.log_level,
            write_delay_ms=config.write_delay_ms,
        )
        self.clock = Clock()
        self.recorder = result.recorder
        self.ledger = Ledger(result.marker)
        self.external_ledger = ExternalLedger()
        self.workload = Workload(p, self.ledger, self.recorder, self.clock)
        self.go = anyio.Event()
        #: The idle baseline: once every server is up, each in turn measures read round
        #: trips while the others wait (``probed`` is set when the last one is done).
        self.all_up = anyio.Event()
        self.probe_turn = anyio.Lock()
        self.probed = anyio.Event()
        self.probes_left = p.servers
        self.slots = [ServerSlot(f"s{i}") for i in range(p.servers)]
        result.slots = self.slots
        self.setup_problem: str | None = None
        backups = config.workdir / "backups"
        backups.mkdir(parents=True, exist_ok=True)
        self.cli = CliTraffic(
            registry=registry,
            argv=config.cli_argv,
            data_dir=self.data_dir,
            env=self.env,
            clock=self.clock,
            recorder=self.recorder,
            workload=self.workload,
            backups_dir=backups,
            seed=p.seed,
        )
        self.external = (
            ExternalWriter(
                registry=registry,
                db=self.db,
                marker=f"ext{result.marker[2:]}",
                profile=p,
                clock=self.clock,
                recorder=self.recorder,
                ledger=self.external_ledger,
                env=self.env,
            )
            if p.external_writer
            else None
        )
        self.faults = FaultRunner(
            p.faults.schedule(p.duration_s),
            clock=self.clock,
            slots=self.slots,
            external=self.external,
            registry=registry,
            exclusive_argv=[*config.server_argv, "--data-dir", str(self.data_dir)],
            env=self.env,
            after_kill=self.check_live,
            stop=self.workload.stop,
            writes_in_flight=lambda name: self.workload.writes_in_flight[name],
            seed=p.seed,
        )
        self.load_started = math.inf

    # -- the run -------------------------------------------------------------------

    async def drive(self) -> None:
        async with anyio.create_task_group() as tg:
            if await self._start(tg):
                await self._load(tg)
            self.workload.stop.set()
            if self.external is not None:
                await self.external.stop()
            if self.setup_problem:
                tg.cancel_scope.cancel()
        if self.setup_problem:
            raise SetupError(self.setup_problem)
        if self.config.progress:
            print(file=sys.stderr)  # end the live progress line
        self.result.faults = self.faults.events
        self.result.backups = self.cli.backups
        await self.final_checks()

    async def _start(self, tg: TaskGroup) -> bool:
        """Servers (all at once, on an empty directory), then the external writer."""
        for slot in self.slots:
            tg.start_soon(self.serve_slot, slot)
        with anyio.move_on_after(START_TIMEOUT_S):
            for slot in self.slots:
                await slot.up.wait()
        if self.setup_problem or not all(s.up.is_set() for s in self.slots):
            self.setup_problem = self.setup_problem or self._start_failure()
            return False
        self.all_up.set()
        with anyio.move_on_after(START_TIMEOUT_S):
            await self.probed.wait()
        if not self.probed.is_set():
            self.setup_problem = "the idle baseline did not finish: " + self._tails()
            return False
        if self.external is not None:
            tg.start_soon(self.external.run)
            with anyio.move_on_after(START_TIMEOUT_S):
                await self.external.ready.wait()
            if not self.external.ready.is_set():
                self.setup_problem = "the external writer did not start: " + self._tails()
                return False
        return True

    async def _load(self, tg: TaskGroup) -> None:
        p = self.profile
        self.load_started = self.result.load_started = self.clock.now()
        self.go.set()
        if p.cli_read_every_s > 0:
            tg.start_soon(self.cli.readers, p.cli_read_every_s, p.cli_reads)
        if p.backup_every_s > 0:
            tg.start_soon(self.cli.backups_loop, p.backup_every_s)
        if p.consolidate_every_s > 0:
            tg.start_soon(self.cli.consolidate_loop, p.consolidate_every_s)
        tg.start_soon(self.faults.run, self.load_started)
        tg.start_soon(self.watch_wal)
        tg.start_soon(self.watch_loop_lag)
        if self.config.progress:
            tg.start_soon(self.show_progress)
        while not self.workload.done():
            if self.clock.now() - self.load_started >= p.duration_s:
                break
            await anyio.sleep(0.1)
        self.result.load_s = self.clock.now() - self.load_started

    async def serve_slot(self, slot: ServerSlot) -> None:
        argv = [*self.config.server_argv, "--data-dir", str(self.data_dir), "--shared-writers"]
        while not self.workload.stop.is_set() and slot.unexpected < MAX_UNEXPECTED_RESTARTS:
            child = await self.registry.spawn(slot.name, argv, self.env)
            slot.child, slot.generation = child, slot.generation + 1
            slot.children.append(child)
            slot.pids.append(child.pid)
            started = self.clock.now()
            try:
                async with TimedClient(child, self.clock) as client:
                    self.recorder.add(
                        Sample(
                            started, "server_start", slot.name, (self.clock.now() - started) * 1000
                        )
                    )
                    missing = ToolCalls.missing(client.tools)
                    if missing:
                        self.setup_problem = "the server's tools do not fit: " + "; ".join(missing)
                        return
                    await self.workload.warm_up(client, slot.name)
                    health = await client.call(ToolCalls.HEALTH, {})
                    server = (health.data or {}).get("server")
                    slot.health.append(server if isinstance(server, dict) else {})
                    slot.up.set()
                    if slot.generation == 1:
                        await self._probe_idle(client, slot)
                    since = self.clock.now()
                    await self.go.wait()
                    since = max(since, self.clock.now())
                    async with anyio.create_task_group() as workers:
                        for i in range(self.profile.inflight):
                            workers.start_soon(self.workload.worker, client, slot.name, i)
                    if not child.killed:  # who ran maintenance, as the server saw it
                        health = await client.call(ToolCalls.HEALTH, {})
                        server = (health.data or {}).get("server")
                        slot.final_health = server if isinstance(server, dict) else {}
                        slot.health.append(slot.final_health)
                    slot.connected_s += self.clock.now() - since
                    slot.up = anyio.Event()
            except Exception as exc:  # a start that failed: counted, then retried
                slot.up = anyio.Event()
                if not child.killed:
                    self.recorder.error(
                        "server_start", slot.name, f"{exc!r}: {child.stderr_tail(500)}"
                    )
            final = self.workload.stop.is_set() and not child.killed
            code = await self.registry.stop(child)
            slot.exits.append(
                {"pid": child.pid, "code": code, "killed": child.killed, "final": final}
            )
            if not child.killed and not final:
                slot.unexpected += 1
                self.recorder.error(
                    "server_exit",
                    slot.name,
                    f"pid {child.pid} exit {code}: {child.stderr_tail(500)}",
                )

    async def _probe_idle(self, client: TimedClient, slot: ServerSlot) -> None:
        """This server's share of the idle baseline, one server at a time."""
        await self.all_up.wait()
        try:
            async with self.probe_turn:
                await self.workload.idle_probe(client, slot.name, self.profile.idle_probe_calls)
        finally:
            self.probes_left -= 1
            if self.probes_left == 0:
                self.probed.set()

    def _start_failure(self) -> str:
        down = [s.name for s in self.slots if not s.up.is_set()]
        return f"servers {', '.join(down)} did not start within {START_TIMEOUT_S:.0f} s: " + (
            self._tails()
        )

    def _tails(self) -> str:
        return " | ".join(
            f"{c.label} pid {c.pid}: {c.stderr_tail(300).strip()}"
            for c in self.registry.children
            if c.stderr_tail(300).strip()
        )

    async def watch_wal(self) -> None:
        """The WAL's size over time (stat only: never open SQLite's files), the machine's
        load average, and this harness's own event-loop lag: a call's latency is measured
        here, so a stalled harness inflates it."""
        wal = Path(f"{self.db}-wal")
        ticks = 0
        while not self.workload.stop.is_set():
            try:
                size = wal.stat().st_size
            except FileNotFoundError:
                size = 0
            now = self.clock.now()
            self.recorder.wal_sizes.append((now, size))
            if ticks % 4 == 0 and hasattr(os, "getloadavg"):
                self.recorder.load_averages.append((now, os.getloadavg()[0]))
            ticks += 1
            with anyio.move_on_after(WAL_EVERY_S):
                await self.workload.stop.wait()

    async def watch_loop_lag(self) -> None:
        while not self.workload.stop.is_set():
            before = self.clock.now()
            await anyio.sleep(LAG_PROBE_S)
            lag_ms = (self.clock.now() - before - LAG_PROBE_S) * 1000
            self.recorder.add(Sample(before, "harness_loop_lag", "harness", max(0.0, lag_ms)))

    async def show_progress(self) -> None:
        tty = sys.stderr.isatty()
        every = PROGRESS_EVERY_S if tty else 5.0
        while not self.workload.stop.is_set():
            with anyio.move_on_after(every):
                await self.workload.stop.wait()
            now = self.clock.now()
            recent = [s for s in self.recorder.samples[-5000:] if s.t >= now - PROGRESS_WINDOW_S]
            write = Summary.of([s.latency_ms for s in recent if s.kind in WRITE_OPS])
            read = Summary.of([s.latency_ms for s in recent if s.kind in READ_OPS])
            errors = sum(self.recorder.errors.values())
            line = (
                f"[{now - self.load_started:5.1f}/{self.profile.duration_s:.0f} s] "
                f"ops {self.recorder.ops}  errors {errors} (busy {self.recorder.errors['busy']})"
                f"  p99 write {_ms(write.p99)} read {_ms(read.p99)}"
                f"  servers up {sum(s.up.is_set() for s in self.slots)}/{len(self.slots)}"
                f"  faults {len(self.faults.events)}/{len(self.faults.schedule)}"
            )
            print(
                ("\r" if tty else "") + line, end="" if tty else "\n", file=sys.stderr, flush=True
            )

    # -- checks --------------------------------------------------------------------

    async def check_live(self, name: str) -> None:
        """Right after a kill: the live file against everything settled before this read."""
        read_from = self.clock.now()
        external = self.external_ledger.copy()
        try:
            snap = await anyio.to_thread.run_sync(checks.read_snapshot, self.db)
        except Exception as exc:
            self.result.checks.append(Check(f"live file {name}", False, f"unreadable: {exc}"))
            return
        read_to = self.clock.now()
        verdict = verify(
            self.ledger, snap.rows, name=f"ledger {name}", read_from=read_from, read_to=read_to
        )
        self.result.verdicts.append(verdict)
        self.result.checks += [
            Check(f"integrity_check {name}", snap.integrity_ok, "; ".join(snap.integrity[:3])),
            _verdict_check(verdict),
            *self._external_checks(external, snap.external, name),
        ]

    async def final_checks(self) -> None:
        r, p, naive = self.result, self.profile, self.config.naive
        snap = await anyio.to_thread.run_sync(checks.read_snapshot, self.db)
        fts = await anyio.to_thread.run_sync(checks.fts_problems, self.db, r.marker)
        final = verify(self.ledger, snap.rows, name="ledger after the run")
        r.verdicts.append(final)
        r.ledger_counts = dict(self.ledger.counts())
        r.checks += [
            Check(
                "integrity_check after the run", snap.integrity_ok, "; ".join(snap.integrity[:3])
            ),
            Check(
                "FTS index matches the table",
                not fts,
                "; ".join(fts[:3]) or f"{len(snap.rows)} rows",
            ),
            _verdict_check(final),
            *self._external_checks(self.external_ledger, snap.external, "after the run"),
        ]
        for backup in r.backups:
            r.checks += await anyio.to_thread.run_sync(partial(self._check_backup, backup))
        r.checks += await self._check_stats(len(snap.rows))
        r.checks += await self._check_changelog()
        r.checks += self._error_checks(naive)
        r.checks += self._fault_checks()
        r.checks.append(self._exit_check())
        r.checks.append(self._mode_check(naive))
        if self.config.write_delay_ms:
            r.checks.append(self._delay_check())
        r.checks.append(self._owner_check())
        write, read = r.summary_of(WRITE_OPS), r.summary_of(READ_OPS)
        idle = r.summary_of((IDLE_READ,))
        fair = checks.fairness(r.write_rates())
        r.checks += checks.latency_checks(write, read, idle, fair, p.bounds, excused=naive)
        r.checks.append(checks.wal_check(r.recorder.wal_sizes, p.bounds.max_wal_mib))
        if r.recorder.ops == 0:
            r.checks.append(Check("the load ran", False, "no MCP operation completed"))

    def _check_backup(self, backup: BackupRecord) -> list[Check]:
        t0, t1 = backup.started - self.load_started, backup.ended - self.load_started
        name = f"backup {backup.path.name} (taken at {t0:.1f}-{t1:.1f} s)"
        if not backup.ok:
            return [Check(name, False, f"the backup command failed: {backup.detail}")]
        snap = checks.read_snapshot(backup.path)
        fts = checks.fts_problems(backup.path, self.result.marker)
        verdict = verify(
            self.ledger,
            snap.rows,
            name=f"ledger in {name}",
            read_from=backup.started,
            read_to=backup.ended,
        )
        self.result.verdicts.append(verdict)
        return [
            Check(f"integrity_check {name}", snap.integrity_ok, "; ".join(snap.integrity[:3])),
            Check(f"FTS index {name}", not fts, "; ".join(fts[:3]) or f"{len(snap.rows)} rows"),
            _verdict_check(verdict),
        ]

    def _external_checks(self, ledger: ExternalLedger, present: set[str], name: str) -> list[Check]:
        """The external writer's ledger, judged only if that writer ran: an empty ledger
        against an empty table would pass without having tested anything."""
        if self.external is None or self.external.generation == 0:
            return [
                Check(
                    f"external ledger {name}",
                    False,
                    "not run: no external writer in this run (--no-external)",
                    excused=True,
                )
            ]
        verdict = verify_external(ledger, present, name=f"external ledger {name}")
        self.result.verdicts.append(verdict)
        return [_verdict_check(verdict)]

    async def _check_stats(self, rows: int) -> list[Check]:
        """What `vestige stats --json` says (a public face) against what the file holds."""
        result = await self.cli.command("stats", "stats")
        total = (result.data or {}).get("total_memories")
        return [
            Check(
                "`vestige stats` agrees with the file",
                result.ok and total == rows,
                f"stats total_memories {total}, rows in file {rows}",
            )
        ]

    async def _check_changelog(self) -> list[Check]:
        """The changelog against the ledger, as `vestige export` shows it (a public face)."""
        path = self.config.workdir / "export-after-the-run.jsonl"
        result = await self.cli.command("export", "export", "-o", str(path), json_out=False)
        try:
            if not result.ok:
                raise ValueError(f"`vestige export` failed: {result.stderr.strip()[-300:]}")
            export = await anyio.to_thread.run_sync(changelog.Export.read, path)
        except (OSError, ValueError) as exc:
            return [Check(changelog.ENTRIES_CHECK, False, f"no changelog to check: {exc}")]
        entries = changelog.entries_verdict(self.ledger, export)
        replayed = changelog.replay_verdict(export)
        self.result.verdicts += [entries, replayed]
        return [
            changelog.window_check(export),
            changelog.as_check(entries),
            changelog.as_check(replayed),
        ]

    def _error_checks(self, naive: bool) -> list[Check]:
        errors = self.recorder.errors
        busy = errors[ErrorKind.BUSY]
        starved = errors["external_busy"]
        others = {k: v for k, v in errors.items() if k not in (ErrorKind.BUSY, "external_busy")}
        violations = self.recorder.violations
        out = [
            Check("no busy/locked error reached a client", busy == 0, f"{busy} busy errors", naive),
            Check(
                "no other error reached a client",
                not others,
                ", ".join(f"{k} {v}" for k, v in sorted(others.items())) or "none",
            ),
            Check(
                "reads agree with the ledger (read-your-writes across servers)",
                not violations,
                ", ".join(f"{k} {v}" for k, v in sorted(violations.items())) or "none",
            ),
        ]
        if self.external is not None and self.external.generation > 0:
            out.append(
                Check(
                    "the external writer never waited out its 5 s busy_timeout",
                    starved == 0,
                    f"{starved} busy errors",
                    naive,
                )
            )
        return out

    def _fault_checks(self) -> list[Check]:
        return fault_checks(
            self.faults.events,
            self.faults.not_reached,
            len(self.faults.schedule),
            load_started=self.load_started,
            load_s=self.result.load_s,
        )

    def _mode_check(self, naive: bool) -> Check:
        """The baseline means nothing unless the switch took effect, and must never leak."""
        servers = [c for s in self.slots for c in s.children]
        said = sum(_said_naive(c) for c in servers)
        if naive:
            return Check(
                f"every server ran naive ({NAIVE_ENV}=1 acknowledged in its log)",
                said == len(servers),
                f"{said} of {len(servers)} servers",
            )
        return Check("no server ran in naive mode", said == 0, f"{said} of {len(servers)}")

    def _delay_check(self) -> Check:
        """An injected write delay is a fault of the run: it must have reached every server."""
        servers = [c for s in self.slots for c in s.children]
        said = sum(f"{WRITE_DELAY_ENV}:" in c.stderr_tail(100_000) for c in servers)
        return Check(
            f"every server slept {self.config.write_delay_ms:g} ms in each write (injected fault)",
            said == len(servers),
            f"{said} of {len(servers)} servers said so in their log",
        )

    def _owner_check(self) -> Check:
        """At most one server runs maintenance at a time (asked of each at the end)."""
        finals = {s.name: s.final_health for s in self.slots if s.final_health is not None}
        owners = sorted(name for name, h in finals.items() if h.get("maintenance_owner"))
        return Check(
            "at most one maintenance owner (health_check of every server at the end)",
            len(owners) <= 1,
            f"owners: {', '.join(owners) or 'none'} of {len(finals)} servers asked",
        )

    def _exit_check(self) -> Check:
        finals = [e for s in self.slots for e in s.exits if e["final"]]
        bad = [f"pid {e['pid']} exit {e['code']}" for e in finals if e["code"] != 0]
        return Check(
            "every server exited 0 on stdin EOF",
            bool(finals) and not bad,
            ", ".join(bad) or f"{len(finals)} servers",
        )


def _said_naive(child: Child) -> bool:
    # The store logs this warning when the switch is on (vestige.store, level WARNING).
    return f"{NAIVE_ENV}=1" in child.stderr_tail(100_000)


def _verdict_check(verdict: Verdict) -> Check:
    counts = ", ".join(f"{k} {v}" for k, v in sorted(verdict.counts.items()) if v)
    detail = "; ".join(verdict.problems[:3]) if not verdict.ok else counts
    return Check(verdict.name, verdict.ok, detail)


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f} ms"


def now_stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")
