"""Server benchmark: start-up, refusal, shutdown and ingest round trips of the real vestige-mcp.

Run from the repository root::

    python tests/benchmarks/bench_server.py [--quick] [--json out.json]

Figures, not verdicts: the issue's bounds are shown as PASS or MISS, the exit status is 0
unless something crashed.  Named ``bench_*`` so pytest never collects it.

1. Cold start: spawn the console script on a fresh data directory -> ``initialize`` answered
   -> first ``ingest`` answered (raw JSON-RPC over the pipes, so no client library is timed).
2. Refused launch: with an owner running, spawn a second one on the same directory -> exit.
3. Ingest round trips over stdio, sequential: through the MCP SDK's ``Client`` (what a host
   sees) and through raw JSON lines (the server's own share).
4. Shutdown: SIGTERM -> exit, with the WAL checkpointed and the lock released.
"""

from __future__ import annotations

import argparse
import json
import platform
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # for tests.server_helpers when run as a script

import anyio  # noqa: E402
from mcp.client import Client  # noqa: E402

from tests.server_helpers import (  # noqa: E402
    ServerProcess,
    launch,
    owner_of,
    stdio_params,
    wait_for,
)
from vestige import __version__  # noqa: E402
from vestige.owner import YOUNG_HOLDER_WINDOW_S, LockState, lock_state  # noqa: E402

GOAL_REFUSAL_S: Final = 1.0
GOAL_SHUTDOWN_S: Final = 2.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(pct(ms, 99), 2),
        "min_ms": round(min(ms), 2),
        "max_ms": round(max(ms), 2),
    }


def cold_start(work: Path, repeats: int) -> dict[str, Any]:
    to_init, to_first, total = [], [], []
    for i in range(repeats):
        data = work / f"cold-{i}"
        with ServerProcess(data, home=work) as server:
            server.initialize()
            initialized = time.monotonic()
            result = server.call_tool("ingest", {"content": "first memory of a cold server"})
            done = time.monotonic()
            assert result["isError"] is False, result
            to_init.append(initialized - server.started)
            to_first.append(done - initialized)
            total.append(done - server.started)
    return {
        "spawn_to_initialized": summary(to_init),
        "initialized_to_first_result": summary(to_first),
        "spawn_to_first_result": summary(total),
    }


def refusal(work: Path, repeats: int) -> dict[str, Any]:
    data = work / "refusal"
    times = []
    with ServerProcess(data, home=work) as owner:
        owner.initialize()

        # An owner younger than the window may be a probe, and a launch waits for it: time
        # the refusal of an owner that has served for longer.
        def old() -> bool:
            return owner_of(data, owner.pid).held_for_s >= YOUNG_HOLDER_WINDOW_S

        assert wait_for(old, YOUNG_HOLDER_WINDOW_S + 30, interval=0.1)
        for _ in range(repeats):
            done, elapsed = launch(data, home=work)
            assert done.returncode == 3, done.stderr
            times.append(elapsed)
    return summary(times)


def shutdown(work: Path, repeats: int) -> dict[str, Any]:
    times = []
    for i in range(repeats):
        data = work / f"stop-{i}"
        with ServerProcess(data, home=work) as server:
            server.initialize()
            for n in range(50):
                server.call_tool("ingest", {"content": f"note {n} before stopping"})
            started = time.monotonic()
            server.signal(signal.SIGTERM)
            assert server.wait(10) == 0
            times.append(time.monotonic() - started)
        wal = data / "vestige.db-wal"
        assert not wal.exists() or wal.stat().st_size == 0
        assert lock_state(data) is LockState.FREE
    return summary(times)


def ingest_raw(work: Path, calls: int) -> dict[str, Any]:
    times = []
    with ServerProcess(work / "raw", home=work) as server:
        server.initialize()
        for i in range(calls):
            started = time.monotonic()
            result = server.call_tool("ingest", {"content": f"raw round trip number {i}"})
            times.append(time.monotonic() - started)
            assert result["isError"] is False
    return summary(times)


def ingest_client(work: Path, calls: int, mode: str) -> dict[str, Any]:
    times: list[float] = []

    async def run() -> None:
        params = stdio_params(work / f"client-{mode}", home=work, VESTIGE_LOG_LEVEL="WARNING")
        async with Client(params, mode=mode) as client:
            for i in range(calls):
                started = time.monotonic()
                result = await client.call_tool("ingest", {"content": f"sdk round trip {i}"})
                times.append(time.monotonic() - started)
                assert not result.is_error

    anyio.run(run)
    return summary(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and calls")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    repeats, calls = (3, 100) if args.quick else (7, 500)
    results: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "vestige": __version__,
    }
    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp:
        work = Path(tmp)
        results["cold_start"] = cold_start(work, repeats)
        results["refused_launch"] = refusal(work, repeats * 2)
        results["shutdown_sigterm"] = shutdown(work, repeats)
        results["ingest_sdk_client_legacy"] = ingest_client(work, calls, "legacy")
        results["ingest_sdk_client_auto"] = ingest_client(work, calls, "auto")
        results["ingest_raw_jsonrpc"] = ingest_raw(work, calls)
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def report(r: dict[str, Any]) -> None:
    print(f"vestige-mcp {r['vestige']} on Python {r['python']}, {r['platform']}")
    cold = r["cold_start"]
    rows = [
        ("cold start: spawn -> initialized", cold["spawn_to_initialized"], None),
        ("cold start: initialized -> 1st result", cold["initialized_to_first_result"], None),
        ("cold start: spawn -> 1st tool result", cold["spawn_to_first_result"], None),
        ("refused launch: spawn -> exit 3", r["refused_launch"], GOAL_REFUSAL_S),
        ("SIGTERM -> exit (WAL checkpointed)", r["shutdown_sigterm"], GOAL_SHUTDOWN_S),
        ("ingest round trip, SDK Client legacy", r["ingest_sdk_client_legacy"], None),
        ("ingest round trip, SDK Client auto", r["ingest_sdk_client_auto"], None),
        ("ingest round trip, raw JSON-RPC", r["ingest_raw_jsonrpc"], None),
    ]
    print(f"{'measure':40} {'n':>4} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}  goal")
    for name, s, goal in rows:
        verdict = ""
        if goal is not None:
            verdict = f"{'PASS' if s['max_ms'] <= goal * 1000 else 'MISS'} (max <= {goal} s)"
        print(
            f"{name:40} {s['n']:>4} {s['p50_ms']:>9.1f} {s['p99_ms']:>9.1f} {s['max_ms']:>9.1f}"
            f"  {verdict}"
        )


if __name__ == "__main__":
    sys.exit(main())
