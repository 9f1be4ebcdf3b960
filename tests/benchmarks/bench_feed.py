"""Feed benchmark: what a subscribed client costs the writers (issue 14: "no effect beyond
noise on write throughput").

Run from the repository root::

    python tests/benchmarks/bench_feed.py [--rounds 8] [--writes 600] [--quick]

Two ``vestige-mcp --shared-writers``, A and B, on one data directory, each with one client
speaking raw JSON-RPC over its pipes (no client library is timed).  A's client ingests
``--writes`` memories back to back, one at a time, and the round's throughput is writes
per second of that loop.  Each round runs four conditions, in a rotating order, so that
load from elsewhere falls on all of them alike:

- **none**: nobody is subscribed (neither server looks at the changelog at all);
- **other**: B's client is subscribed to ``memory://changes``, and, like an agent, calls
  ``memory_changelog`` with ``since_seq`` after every notification (B polls the feed ten
  times a second and announces at most four times a second);
- **same**: the same on A, the writing server: its notifier looks at the feed after an
  own write when a notice could go out now, and its client's reads share the writer's
  server.

Subscriptions are made and dropped between conditions (``resources/subscribe`` and
``resources/unsubscribe``).  Printed: writes/s per condition (median over rounds, with
the range) and its ratio to **none** in the same round (median over rounds, with the
range).  A fourth condition, **again**, is **none** a second time in each round: its ratio
to **none** is the noise a ratio carries on this machine, which the others must be judged
against (the store grows over the run, so throughput drifts from round to round; ratios
within a round do not see that drift).  In the subscribed conditions every write
must reach the follower through the changelog it read (a sanity check, printed).
Figures, not verdicts: the exit status is 0 unless something crashed.  Named ``bench_*``
so pytest never collects it.
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
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any, Final

ROOT: Final = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # for tests.benchmarks.peers when run as a script

from tests.benchmarks.peers import server_command, server_env, stop_process  # noqa: E402

PROTOCOL_VERSION: Final = "2025-11-25"
CHANGES: Final = "memory://changes"
#: "again" is "none" a second time: its ratio to "none" in the same round is the noise a
#: ratio carries, the yardstick for the other two.
CONDITIONS: Final = ("none", "other", "same", "again")
SUBSCRIBED: Final = ("other", "same")
#: Hang guards, not bounds: a start or a call that takes this long is reported as a crash.
START_TIMEOUT_S: Final = 60.0
CALL_TIMEOUT_S: Final = 60.0
#: After a round, how long the follower may take to read the last writes (it normally
#: needs one coalescing window, 0.25 s).
DRAIN_TIMEOUT_S: Final = 10.0
#: No decay pass during the benchmark: its changes would be one more thing to announce.
NO_DECAY_HOURS: Final = "1000"


class Peer:
    """One ``vestige-mcp --shared-writers`` spoken to with raw JSON-RPC lines; a reader
    thread sorts answers (by id) from notifications (queued for the follower)."""

    def __init__(self, name: str, work: Path, data_dir: Path) -> None:
        self.name = name
        self._stderr: IO[bytes] = (work / f"{name}.err").open("w+b")
        self.proc = subprocess.Popen(
            [*server_command(), "--data-dir", str(data_dir), "--shared-writers"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=server_env(work, VESTIGE_CONSOLIDATION_INTERVAL_HOURS=NO_DECAY_HOURS),
            cwd=work,
        )
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._answers: dict[int, dict[str, Any]] = {}
        self._answered = threading.Condition(self._lock)
        self.notices: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                message = json.loads(line)
                if not isinstance(message, dict):
                    continue
                if "id" in message:
                    with self._answered:
                        self._answers[message["id"]] = message
                        self._answered.notify_all()
                elif message.get("method") == "notifications/resources/updated":
                    self.notices.put(str(message.get("params", {}).get("uri")))

    def request(
        self, method: str, params: dict[str, Any], timeout: float = CALL_TIMEOUT_S
    ) -> dict[str, Any]:
        with self._lock:
            rid = next(self._ids)
            self._write({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        deadline = time.monotonic() + timeout
        with self._answered:
            while rid not in self._answers:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.name}: no answer to {method} (exit {self.proc.poll()}): "
                        f"{self.stderr()[-2000:]}"
                    )
                self._answered.wait(min(left, 0.5))
            message = self._answers.pop(rid)
        if "result" not in message:
            raise RuntimeError(f"{self.name}: {method} failed: {json.dumps(message)[:500]}")
        result = message["result"]
        assert isinstance(result, dict)
        return result

    def _write(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()

    def initialize(self) -> None:
        self.request(
            "initialize",
            {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "bench-feed", "version": "0"},
            },
            START_TIMEOUT_S,
        )
        with self._lock:
            self._write({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        result = self.request("tools/call", {"name": name, "arguments": arguments})
        data = result.get("structuredContent")
        if result.get("isError") is not False or not isinstance(data, dict):
            raise RuntimeError(f"{self.name}: {name} failed: {json.dumps(result)[:500]}")
        return data

    def stderr(self) -> str:
        if self._stderr.closed:
            return "(closed)"
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def stop(self) -> int | None:
        """Stopped as a client would (``peers.stop_process``); its exit status."""
        code = stop_process(self.proc)
        with contextlib.suppress(OSError):
            self._stderr.close()
        return code


class Follower:
    """What a subscribed agent does: after each notification, memory_changelog since_seq."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.seen: set[str] = set()
        self.notices = 0
        self.reads = 0
        self._stop = threading.Event()
        self._last_seq = int(peer.tool("memory_changelog", {"limit": 1})["newest_seq"])
        peer.request("resources/subscribe", {"uri": CHANGES})
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                uri = self.peer.notices.get(timeout=0.05)
            except queue.Empty:
                continue
            if uri != CHANGES:
                continue
            self.notices += 1
            self.read()

    def read(self) -> None:
        while True:
            page = self.peer.tool(
                "memory_changelog",
                {"since_seq": self._last_seq, "oldest_first": True, "limit": 500},
            )
            self.reads += 1
            for change in page["changes"]:
                self._last_seq = max(self._last_seq, int(change["seq"]))
                if change.get("kind") == "created" and change.get("memory_id"):
                    self.seen.add(str(change["memory_id"]))
            if not page.get("more") or not page["changes"]:
                return

    def close(self, written: set[str]) -> int:
        """Wait (bounded) for the last writes to be read, unsubscribe; returns how many of
        ``written`` the follower never read."""
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while not written <= self.seen and time.monotonic() < deadline:
            time.sleep(0.02)
        self._stop.set()
        self._thread.join(CALL_TIMEOUT_S)
        self.peer.request("resources/unsubscribe", {"uri": CHANGES})
        with contextlib.suppress(queue.Empty):  # a notice still on its way is dropped
            while True:
                self.peer.notices.get_nowait()
        return len(written - self.seen)


def ingest_round(writer: Peer, writes: int, tag: str) -> tuple[float, set[str]]:
    """Writes/s of ``writes`` ingests back to back, and the ids they made."""
    ids: set[str] = set()
    started = time.perf_counter()
    for n in range(writes):
        made = writer.tool("ingest", {"content": f"{tag} note {n}: the feed benchmark wrote it"})
        ids.add(str(made["id"]))
    return writes / (time.perf_counter() - started), ids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, help="rounds of the four conditions (8; quick 4)")
    parser.add_argument(
        "--writes", type=int, help="ingests per condition and round (600; quick 200)"
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds and writes")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    args = parser.parse_args()
    rounds = args.rounds or (4 if args.quick else 8)
    writes = args.writes or (200 if args.quick else 600)

    work = Path(tempfile.mkdtemp(prefix="vestige-bench-feed-"))
    data_dir = work / "data"
    data_dir.mkdir()
    peers: list[Peer] = []
    rates: dict[str, list[float]] = {c: [] for c in CONDITIONS}
    unread: dict[str, int] = dict.fromkeys(SUBSCRIBED, 0)
    notices: dict[str, int] = dict.fromkeys(unread, 0)
    reads: dict[str, int] = dict.fromkeys(unread, 0)
    exits: list[int | None] = []
    try:
        a = Peer("A", work, data_dir)
        peers.append(a)
        a.initialize()  # A first: it creates the database, B then opens it
        b = Peer("B", work, data_dir)
        peers.append(b)
        b.initialize()
        ingest_round(a, 20, "warm-up")  # first calls pay imports and caches: not timed
        load_before = os.getloadavg()
        for r in range(rounds):
            k = r % len(CONDITIONS)
            for condition in CONDITIONS[k:] + CONDITIONS[:k]:
                follower = None
                if condition in SUBSCRIBED:
                    follower = Follower(b if condition == "other" else a)
                rate, ids = ingest_round(a, writes, f"r{r}{condition}")
                rates[condition].append(rate)
                if follower is not None:
                    unread[condition] += follower.close(ids)
                    notices[condition] += follower.notices
                    reads[condition] += follower.reads
        load_after = os.getloadavg()
    finally:
        exits = [p.stop() for p in peers]
        shutil.rmtree(work, ignore_errors=True)

    none = statistics.median(rates["none"])
    paired = {c: [x / n for x, n in zip(v, rates["none"], strict=True)] for c, v in rates.items()}
    report: dict[str, Any] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in load_after],
        "rounds": rounds,
        "writes_per_round": writes,
        "writes_per_s": {
            c: {
                "median": round(statistics.median(v), 1),
                "min": round(min(v), 1),
                "max": round(max(v), 1),
                "ratio_to_none_same_round": round(statistics.median(paired[c]), 3),
                "ratio_min": round(min(paired[c]), 3),
                "ratio_max": round(max(paired[c]), 3),
            }
            for c, v in rates.items()
        },
        # How far one round of "none" is from another (the store grows: a drift).
        "none_spread": round((max(rates["none"]) - min(rates["none"])) / none, 3),
        "notifications": notices,
        "changelog_reads": reads,
        "writes_never_read_by_the_follower": unread,
        "server_exits": exits,
    }
    show(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def show(report: dict[str, Any]) -> None:
    print(f"\n== feed benchmark: {report['rounds']} rounds x {report['writes_per_round']} ingests")
    print(f"python {report['python']}, {report['cpus']} CPUs")
    print(f"load average {report['load_avg_before']} -> {report['load_avg_after']}")
    print(
        "\ningest through A, one at a time: writes/s median [min - max]; "
        "ratio to no subscriber in the same round, median [min - max]"
    )
    labels = {
        "none": "no subscriber",
        "other": "subscriber on B (another server)",
        "same": "subscriber on A (the writer's own server)",
        "again": "no subscriber again (the noise)",
    }
    for c, f in report["writes_per_s"].items():
        print(
            f"  {labels[c]:<42}{f['median']:>7.1f} [{f['min']:.1f} - {f['max']:.1f}]"
            f"  x{f['ratio_to_none_same_round']:.3f} [{f['ratio_min']:.3f} - "
            f"{f['ratio_max']:.3f}]"
        )
    print(
        f"  drift: the no-subscriber rounds spread over {report['none_spread'] * 100:.1f}% "
        "of their median (the store grows over the run)"
    )
    for c in SUBSCRIBED:
        print(
            f"  {labels[c]}: {report['notifications'][c]} notifications, "
            f"{report['changelog_reads'][c]} changelog reads, "
            f"{report['writes_never_read_by_the_follower'][c]} writes never read"
        )
    print(f"server exit codes: {report['server_exits']}")


if __name__ == "__main__":
    sys.exit(main())
