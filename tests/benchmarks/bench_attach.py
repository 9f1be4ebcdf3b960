"""Attach benchmark: what ``vestige-mcp --attach`` costs a window, and how fast it survives a
killed owner (issue 13).

Run from the repository root::

    python tests/benchmarks/bench_attach.py [--rounds 12] [--proxies 4] [--calls 25]

Everything is measured in one run, in interleaved rounds, so load from elsewhere falls on
every figure alike.  Each round does, in a rotating order:

1. Spawn -> ``initialize`` -> first ``search`` answered, three ways: (a) a direct
   ``vestige-mcp`` on a fresh data directory of its own, (b) ``--attach`` joining an owner
   that already serves its directory (kept alive by another proxy), (c) ``--attach`` on a
   fresh directory, where the proxy wins the election and starts the detached owner.
2. ``--calls`` round trips each of ``search`` and ``ingest`` through a proxy and directly,
   taking turns.  Both go to the same server process and store: the direct
   ``vestige-mcp`` owns the directory, and the proxy attaches to it (every exclusive owner
   accepts attached sessions), so the difference is the proxy's hop alone.
3. One failover: ``--proxies`` proxies are attached to one detached owner; the owner (its
   pid from ``vestige.owner.read_owners``) is killed with SIGKILL, and right after the kill
   each proxy is sent a call (``ingest`` and ``search`` in turn).  Timed: kill -> that
   call's answer, per proxy.  Every answer must be a result, not an error; at the end the
   store must hold each acknowledged ingest once.

Raw JSON-RPC lines over the pipes, so no client library is timed; answer times are taken
when the line arrives.  Every process is stopped by pid, the detached owners too (each one
seen is remembered with its start time, and killed at the end if it has not ended on its
own); all data lives in a temp directory.  The goals (proxy p50 <= 1.5x direct p50;
failover p99 <= direct cold start p50 + 0.5 s) are shown as PASS or MISS.  Figures, not
verdicts: the exit status is 0 unless something crashed.  Named ``bench_*`` so pytest never
collects it.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import psutil

ROOT: Final = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # for tests.benchmarks.peers when run as a script

from tests.benchmarks.peers import server_command, server_env, stop_process  # noqa: E402

sys.path.insert(0, str(ROOT))  # for vestige when run as a script from a checkout

from vestige.owner import read_owners  # noqa: E402

#: Issue 13: a call through a proxy costs at most this many times a direct call, at p50.
GOAL_PROXY_RATIO: Final = 1.5
#: Issue 13: failover p99 within the direct cold start (p50, same run) plus this.
GOAL_FAILOVER_MARGIN_S: Final = 0.5
PROTOCOL_VERSION: Final = "2025-11-25"
#: Hang guards, not bounds: a start or a call that takes this long is reported as a crash.
START_TIMEOUT_S: Final = 60.0
CALL_TIMEOUT_S: Final = 60.0
#: After the last session leaves, a detached owner ends within about 2 s by itself; past
#: this it is stopped by pid.
OWNER_EXIT_WAIT_S: Final = 15.0
#: Pause after each failover before the next kill, so each kill meets a settled owner.
SETTLE_S: Final = 1.0
#: Memories written before the round trips, so a search has something to rank.
PREFILL: Final = 200
WORDS: Final = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
]


class Peer:
    """One ``vestige-mcp`` (direct or ``--attach``) spoken to with raw JSON-RPC lines.

    A reader thread stamps every answer with the moment its line arrived, so several peers
    can be waited on one after another without the later ones' times growing.
    """

    def __init__(self, work: Path, data_dir: Path, *args: str) -> None:
        self.name = f"{data_dir.name}{''.join(args)}"
        self._stderr: IO[bytes] = (work / f"peer-{time.monotonic_ns()}.err").open("w+b")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [*server_command(), "--data-dir", str(data_dir), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=server_env(work),
            cwd=work,
        )
        self._ids = itertools.count(1)
        self._answers: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        self._seen: dict[Any, tuple[float, dict[str, Any]]] = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            arrived = time.monotonic()
            with contextlib.suppress(ValueError):
                message = json.loads(line)
                if isinstance(message, dict) and "id" in message:
                    self._answers.put((arrived, message))

    def send(self, method: str, params: dict[str, Any]) -> int:
        rid = next(self._ids)
        self._write({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        return rid

    def _write(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()

    def answer(self, rid: int, timeout: float = CALL_TIMEOUT_S) -> tuple[float, dict[str, Any]]:
        """(when the answer arrived, the answer)."""
        deadline = time.monotonic() + timeout
        while rid not in self._seen:
            try:
                arrived, message = self._answers.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(
                    f"{self.name}: no answer to request {rid} within {timeout:.0f} s "
                    f"(exit {self.proc.poll()}): {self.stderr()[-2000:]}"
                ) from None
            self._seen[message["id"]] = (arrived, message)
        return self._seen.pop(rid)

    def initialize(self) -> None:
        rid = self.send(
            "initialize",
            {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "bench-attach", "version": "0"},
            },
        )
        _, message = self.answer(rid, START_TIMEOUT_S)
        if "result" not in message:
            raise RuntimeError(f"{self.name}: initialize failed: {message}")
        self._write({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def call(self, tool: str, arguments: dict[str, Any]) -> int:
        return self.send("tools/call", {"name": tool, "arguments": arguments})

    def timed_call(self, tool: str, arguments: dict[str, Any]) -> float:
        """Seconds from writing the request to its answer's arrival; raises on an error."""
        started = time.monotonic()
        arrived, message = self.answer(self.call(tool, arguments))
        check(self.name, tool, message)
        return arrived - started

    def stderr(self) -> str:
        if self._stderr.closed:
            return "(closed)"
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def stop(self) -> None:
        """Stopped as a client would (``peers.stop_process``)."""
        stop_process(self.proc)
        self._stderr.close()


def check(who: str, tool: str, message: dict[str, Any]) -> dict[str, Any]:
    """The result of a tools/call answer; raises if it is an error."""
    result = message.get("result")
    if not isinstance(result, dict) or result.get("isError") is not False:
        raise CallFailed(f"{who}: {tool} failed: {json.dumps(message)[:500]}")
    return result


class CallFailed(RuntimeError):
    pass


@dataclass
class Owners:
    """Every detached owner seen, by pid and start time, so each is stopped by pid."""

    seen: dict[int, float] = field(default_factory=dict)

    def current(self, data_dir: Path, timeout: float = START_TIMEOUT_S) -> int:
        """The pid of the live owner that holds ``data_dir``'s lock."""
        deadline = time.monotonic() + timeout
        while True:
            held = [o for o in read_owners(data_dir) if o.verified and o.mode == "exclusive"]
            if len(held) == 1:
                pid = held[0].pid
                with contextlib.suppress(psutil.Error):
                    self.seen.setdefault(pid, psutil.Process(pid).create_time())
                    return pid
            if time.monotonic() >= deadline:
                raise RuntimeError(f"no single owner of {data_dir}: {read_owners(data_dir)}")
            time.sleep(0.01)

    def kill(self, pid: int) -> None:
        """SIGKILL ``pid`` if it is still the process seen (never a reused pid)."""
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            if proc.create_time() == self.seen.get(pid):
                proc.send_signal(signal.SIGKILL)

    def stop_all(self, work: Path) -> list[int]:
        """Wait for every owner seen to end by itself; kill what does not.  The pids killed.

        Call it once every window's process has ended: then no proxy can start another
        owner, and any owner not seen yet is found in its directory's owner metadata."""
        for data_dir in work.iterdir():
            for found in read_owners(data_dir) if data_dir.is_dir() else []:
                if found.verified:
                    with contextlib.suppress(psutil.Error):
                        self.seen.setdefault(found.pid, psutil.Process(found.pid).create_time())
        deadline = time.monotonic() + OWNER_EXIT_WAIT_S
        left = dict(self.seen)
        while left and time.monotonic() < deadline:
            for pid, created in list(left.items()):
                try:
                    proc = psutil.Process(pid)
                    if proc.create_time() != created or proc.status() == psutil.STATUS_ZOMBIE:
                        del left[pid]
                except psutil.Error:
                    del left[pid]
            time.sleep(0.05)
        for pid in left:
            self.kill(pid)
        return sorted(left)


def spawn_to_first_result(owners: Owners, work: Path, data_dir: Path, *args: str) -> float:
    """Spawn, initialize, one ``search``, stop: seconds from spawn to the search's answer.

    With ``--attach``, the directory's owner is remembered (after the timing), to be sure it
    ends."""
    peer = Peer(work, data_dir, *args)
    try:
        peer.initialize()
        arrived, message = peer.answer(peer.call("search", {"query": "alpha memory", "limit": 5}))
        check(peer.name, "search", message)
        if "--attach" in args:
            owners.current(data_dir)
        return arrived - peer.started
    finally:
        peer.stop()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def figures(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(pct(ms, 99), 2),
        "max_ms": round(max(ms), 2),
    }


def line(name: str, f: dict[str, float]) -> str:
    return (
        f"  {name:<36} n {f['n']:4.0f}   p50 {f['p50_ms']:8.1f} ms   "
        f"p99 {f['p99_ms']:8.1f} ms   max {f['max_ms']:8.1f} ms"
    )


@dataclass
class Run:
    """The windows kept alive for the whole run, and what each round measured."""

    work: Path
    owners: Owners = field(default_factory=Owners)
    peers: list[Peer] = field(default_factory=list)
    spawn: dict[str, list[float]] = field(
        default_factory=lambda: {"direct": [], "attach_join": [], "attach_start": []}
    )
    trips: dict[str, list[float]] = field(
        default_factory=lambda: {
            f"{tool}_{way}": [] for tool in ("search", "ingest") for way in ("direct", "proxy")
        }
    )
    failover: list[float] = field(default_factory=list)
    #: Per kill: the slowest proxy's answer minus the fastest one's.
    spread: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    acknowledged: int = 0

    def peer(self, data_dir: Path, *args: str) -> Peer:
        peer = Peer(self.work, data_dir, *args)
        self.peers.append(peer)
        peer.initialize()
        return peer

    def setup(self, proxies: int) -> None:
        # Warm-up: writes the bytecode caches, as any installed server has them.
        spawn_to_first_result(self.owners, self.work, self.work / "warm-direct")
        spawn_to_first_result(self.owners, self.work, self.work / "warm-attach", "--attach")
        self.joined = self.work / "joined"
        self.peer(self.joined, "--attach")  # keeps the owner that (b) joins
        self.owners.current(self.joined)
        shared = self.work / "round-trip"
        self.direct = self.peer(shared)  # owns the directory; the proxy attaches to it
        self.proxy = self.peer(shared, "--attach")
        for i in range(PREFILL):
            words = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(6))
            self.direct.timed_call("ingest", {"content": f"prefill {i}: {words}"})
        self.failing = self.work / "failover"
        self.group = [self.peer(self.failing, "--attach") for _ in range(proxies)]

    def spawns(self, r: int) -> None:
        kinds: list[tuple[str, Path, tuple[str, ...]]] = [
            ("direct", self.work / f"direct-{r}", ()),
            ("attach_join", self.joined, ("--attach",)),
            ("attach_start", self.work / f"start-{r}", ("--attach",)),
        ]
        for kind, data_dir, extra in kinds[r % 3 :] + kinds[: r % 3]:
            self.spawn[kind].append(spawn_to_first_result(self.owners, self.work, data_dir, *extra))

    def round_trips(self, r: int, calls: int) -> None:
        for i in range(calls):
            for peer in [self.direct, self.proxy] if i % 2 == 0 else [self.proxy, self.direct]:
                way = "direct" if peer is self.direct else "proxy"
                words = " ".join(WORDS[(i + r + k) % len(WORDS)] for k in range(2))
                self.trips[f"search_{way}"].append(
                    peer.timed_call("search", {"query": words, "limit": 10})
                )
                self.trips[f"ingest_{way}"].append(
                    peer.timed_call("ingest", {"content": f"round {r} call {i} {way}"})
                )

    def kill_owner(self, r: int) -> None:
        victim = self.owners.current(self.failing)
        killed = time.monotonic()
        self.owners.kill(victim)
        sent = []
        for n, peer in enumerate(self.group):
            if n % 2 == 0:
                sent.append((peer, "ingest", peer.call("ingest", {"content": f"failover {r}-{n}"})))
            else:
                sent.append((peer, "search", peer.call("search", {"query": "failover"})))
        times = []
        for peer, tool, rid in sent:
            arrived, message = peer.answer(rid)
            times.append(arrived - killed)
            try:
                check(peer.name, tool, message)
                self.acknowledged += tool == "ingest"
            except CallFailed as err:
                self.errors.append(str(err))
        self.failover.extend(times)
        self.spread.append(max(times) - min(times))
        if self.owners.current(self.failing) == victim:
            raise RuntimeError(f"owner pid {victim} survived SIGKILL")
        time.sleep(SETTLE_S)

    def stored(self) -> int:
        _, message = self.group[0].answer(self.group[0].call("stats", {}))
        return int(check("failover", "stats", message)["structuredContent"]["total_memories"])

    def stop(self) -> list[int]:
        # Windows last in, first out: the direct server keeps serving its attached proxy,
        # so the proxy leaves first (else stopping it would make the proxy start an owner).
        for peer in reversed(self.peers):
            peer.stop()
        return self.owners.stop_all(self.work)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, help="rounds, one kill each (12; quick 5)")
    parser.add_argument("--proxies", type=int, default=4, help="proxies in the failover (4)")
    parser.add_argument("--calls", type=int, help="round trips per kind and round (25; quick 10)")
    parser.add_argument("--quick", action="store_true", help="fewer rounds and calls")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    args = parser.parse_args()
    args.rounds = args.rounds or (5 if args.quick else 12)
    args.calls = args.calls or (10 if args.quick else 25)

    run = Run(Path(tempfile.mkdtemp(prefix="vestige-bench-attach-")))
    try:
        run.setup(args.proxies)
        load_before = os.getloadavg()
        for r in range(args.rounds):
            run.spawns(r)
            run.round_trips(r, args.calls)
            run.kill_owner(r)
        load_after = os.getloadavg()
        stored = run.stored()
    finally:
        leftover = run.stop()
        shutil.rmtree(run.work, ignore_errors=True)

    report: dict[str, Any] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in load_after],
        "rounds": args.rounds,
        "proxies": args.proxies,
        "spawn_to_first_result": {k: figures(v) for k, v in run.spawn.items()},
        "round_trip": {k: figures(v) for k, v in run.trips.items()},
        "failover": figures(run.failover),
        "failover_spread": figures(run.spread),
        "failover_errors": run.errors,
        "failover_writes": {"acknowledged": run.acknowledged, "stored": stored},
        "owners_killed_at_exit": leftover,
    }
    judge(report)
    show(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def judge(report: dict[str, Any]) -> None:
    trips = report["round_trip"]
    ratios = {
        tool: round(trips[f"{tool}_proxy"]["p50_ms"] / trips[f"{tool}_direct"]["p50_ms"], 3)
        for tool in ("search", "ingest")
    }
    cold = report["spawn_to_first_result"]["direct"]
    margin_ms = GOAL_FAILOVER_MARGIN_S * 1000
    writes = report["failover_writes"]
    report["ratio_p50"] = ratios
    report["goals"] = {
        "proxy_p50_ratio": "PASS" if max(ratios.values()) <= GOAL_PROXY_RATIO else "MISS",
        "failover_p99": (
            "PASS" if report["failover"]["p99_ms"] <= cold["p50_ms"] + margin_ms else "MISS"
        ),
        "no_errors": "PASS" if not report["failover_errors"] else "MISS",
        "writes_once": "PASS" if writes["stored"] == writes["acknowledged"] else "MISS",
    }


def show(report: dict[str, Any]) -> None:
    goals, ratios = report["goals"], report["ratio_p50"]
    cold, failover = report["spawn_to_first_result"]["direct"], report["failover"]
    print(
        f"attach, {report['rounds']} interleaved rounds, {report['proxies']} proxies failing over"
    )
    print(f"python {report['python']}, {report['cpus']} CPUs")
    print(f"load average {report['load_avg_before']} -> {report['load_avg_after']}")
    print("\nspawn -> initialize -> first search answered")
    labels = {
        "direct": "(a) direct, fresh directory",
        "attach_join": "(b) --attach, joins a running owner",
        "attach_start": "(c) --attach, starts the owner",
    }
    for kind, label in labels.items():
        print(line(label, report["spawn_to_first_result"][kind]))
    print("\ntool call round trip, same server process and store")
    for kind, found in report["round_trip"].items():
        print(line(kind, found))
    print(f"  proxy / direct, p50: search {ratios['search']:.2f}, ingest {ratios['ingest']:.2f}")
    print("\nfailover: SIGKILL of the owner -> first answer through each proxy")
    print(line(f"{report['rounds']} kills x {report['proxies']} proxies", failover))
    print(line("per kill: slowest - fastest proxy", report["failover_spread"]))
    errors = report["failover_errors"]
    print(f"  errors: {len(errors)}" + "".join(f"\n    {e}" for e in errors))
    writes = report["failover_writes"]
    print(f"  ingests acknowledged {writes['acknowledged']}, stored {writes['stored']}")
    print(f"\ngoal: proxy p50 <= {GOAL_PROXY_RATIO} x direct: {goals['proxy_p50_ratio']}")
    margin_ms = GOAL_FAILOVER_MARGIN_S * 1000
    print(
        f"goal: failover p99 {failover['p99_ms']:.0f} ms <= direct cold start p50 "
        f"{cold['p50_ms']:.0f} ms + {margin_ms:.0f} ms: {goals['failover_p99']}"
        f"  (against the cold start's p99 {cold['p99_ms']:.0f} ms + {margin_ms:.0f} ms: "
        f"{'PASS' if failover['p99_ms'] <= cold['p99_ms'] + margin_ms else 'MISS'})"
    )
    print(f"goal: no call through a proxy answered with an error: {goals['no_errors']}")
    print(f"goal: each acknowledged failover ingest stored once: {goals['writes_once']}")
    if report["owners_killed_at_exit"]:
        print(f"note: owners still running at the end, killed: {report['owners_killed_at_exit']}")


if __name__ == "__main__":
    sys.exit(main())
