"""Cold start benchmark: spawn ``vestige-mcp`` -> ``initialize`` answered -> first tool result.

Run from the repository root::

    python tests/benchmarks/bench_cold_start.py [--runs 15] [--baseline PATH] [--tool search]

What a host sees when it launches the server for a session: it spawns the process and
writes ``initialize`` at once (the pipe holds it until the server reads), then
``notifications/initialized`` and one ``tools/call`` as soon as the answer is in.  Raw
JSON-RPC lines over the pipes, so no client library is timed.  Each run is a new process
on the same small store, stopped cleanly (stdin EOF) before the next: a cold process, not a
new database.  One warm-up run per side first creates the store and writes the bytecode
caches, as any installed server has them.  Each run also reports the CPU time the server
process used from start to exit (``server_cpu``), which load from elsewhere barely moves.

``--baseline`` runs another checkout side by side, alternating runs so load from elsewhere
falls on both alike: a checkout directory (run by this interpreter with the checkout first
on ``PYTHONPATH``, so both use the same dependencies), or a virtualenv's ``bin`` directory
(its own ``vestige-mcp``).  The issue's goal, first tool result at most
:data:`GOAL_RATIO` of the baseline's (p50), is shown as PASS or MISS.  Figures, not
verdicts: the exit status is 0 unless something crashed.  Named ``bench_*`` so pytest never
collects it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

ROOT: Final = Path(__file__).resolve().parents[2]
#: The goal of issue 12: spawn -> first tool result at most this share of the baseline's.
GOAL_RATIO: Final = 0.5
PROTOCOL_VERSION: Final = "2025-11-25"
#: A hang guard per run, not a bound: a run that takes this long is killed and reported.
RUN_TIMEOUT_S: Final = 60.0
TOOL_ARGUMENTS: Final[dict[str, dict[str, Any]]] = {
    "search": {"query": "cold start memory", "limit": 5},
    "stats": {},
    "ingest": {"content": "a memory written by the cold start benchmark"},
}
STAGES: Final = ("spawn_to_initialize", "spawn_to_first_result", "server_cpu")


@dataclass
class Side:
    """One checkout under test: how to start its server, and what it measured."""

    name: str
    command: list[str]
    env: dict[str, str]
    data_dir: Path
    to_initialize: list[float] = field(default_factory=list)
    to_result: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


def side_for(name: str, where: Path, work: Path) -> Side:
    """A checkout directory or a virtualenv's bin directory, as a :class:`Side`."""
    where = where.resolve()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(work),
        "XDG_DATA_HOME": str(work / ".local" / "share"),
        "VESTIGE_LOG_LEVEL": "WARNING",
    }
    script = where / "vestige-mcp"
    if script.is_file():  # a virtualenv's bin directory
        command = [str(script)]
    elif (where / "vestige" / "server").is_dir():  # a checkout: this interpreter, its code
        command = [
            sys.executable,
            "-c",
            "import sys; from vestige.server import main; sys.exit(main())",
        ]
        env["PYTHONPATH"] = str(where)
    else:
        raise SystemExit(
            f"{where}: neither a checkout (vestige/server/) nor a bin/ with vestige-mcp"
        )
    data_dir = work / f"data-{name}"
    return Side(name, [*command, "--data-dir", str(data_dir)], env, data_dir)


def one_run(side: Side, tool: str) -> tuple[float, float, float]:
    """Spawn, initialize, call ``tool``, stop: seconds from spawn to the two answers, and the
    CPU seconds the server used in all (start to exit; load from elsewhere barely moves it)."""
    cpu_before = _children_cpu()
    started = time.monotonic()
    proc = subprocess.Popen(
        side.command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=side.env,
        cwd=side.env["HOME"],
    )
    guard = threading.Timer(RUN_TIMEOUT_S, proc.kill)
    guard.start()
    try:
        assert proc.stdin is not None
        assert proc.stdout is not None
        _send(
            proc.stdin,
            1,
            "initialize",
            {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "bench-cold-start", "version": "0"},
            },
        )
        _answer(proc.stdout, 1, proc)
        initialized = time.monotonic()
        proc.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
        _send(proc.stdin, 2, "tools/call", {"name": tool, "arguments": TOOL_ARGUMENTS[tool]})
        result = _answer(proc.stdout, 2, proc)
        answered = time.monotonic()
        if result.get("result", {}).get("isError") is not False:
            raise RuntimeError(f"{side.name}: {tool} failed: {result}")
        proc.stdin.close()
        proc.wait(RUN_TIMEOUT_S)
    finally:
        guard.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{side.name}: exit {proc.returncode}: {stderr}")
    return initialized - started, answered - started, _children_cpu() - cpu_before


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # reaped children only
    return usage.ru_utime + usage.ru_stime


def _send(stdin: IO[bytes], rid: int, method: str, params: dict[str, Any]) -> None:
    stdin.write(
        json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}).encode()
        + b"\n"
    )
    stdin.flush()


def _answer(stdout: IO[bytes], rid: int, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    for line in stdout:
        message = json.loads(line)
        if message.get("id") == rid:
            return message  # type: ignore[no-any-return]
    raise RuntimeError(
        f"the server closed stdout before answering request {rid} (exit {proc.wait()})"
    )


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def figures(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 1),
        "p99_ms": round(pct(ms, 99), 1),
        "min_ms": round(min(ms), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="runs per side (default 15)")
    parser.add_argument("--baseline", type=Path, help="another checkout, or a virtualenv's bin/")
    parser.add_argument("--tool", choices=sorted(TOOL_ARGUMENTS), default="search")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vestige-bench-cold-"))
    try:
        sides = [side_for("this", ROOT, work)]
        if args.baseline is not None:
            sides.append(side_for("baseline", args.baseline, work))
        load_before = os.getloadavg()
        for side in sides:  # warm-up: creates the store, writes the bytecode caches
            one_run(side, "ingest")
        for i in range(args.runs):
            for side in sides if i % 2 == 0 else sides[::-1]:
                to_initialize, to_result, cpu = one_run(side, args.tool)
                side.to_initialize.append(to_initialize)
                side.to_result.append(to_result)
                side.cpu.append(cpu)
        load_after = os.getloadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    report: dict[str, Any] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in load_after],
        "tool": args.tool,
        "sides": {
            s.name: {
                "command": " ".join(
                    s.command[:1]
                    + (["(checkout " + s.env["PYTHONPATH"] + ")"] if "PYTHONPATH" in s.env else [])
                ),
                "spawn_to_initialize": figures(s.to_initialize),
                "spawn_to_first_result": figures(s.to_result),
                "server_cpu": figures(s.cpu),
            }
            for s in sides
        },
    }
    print(f"cold start, {args.runs} alternating runs per side, tool {args.tool}")
    print(f"python {report['python']}, {report['cpus']} CPUs")
    print(f"load average {report['load_avg_before']} -> {report['load_avg_after']}")
    for name, found in report["sides"].items():
        print(f"\n{name}: {found['command']}")
        for what in STAGES:
            f = found[what]
            print(
                f"  {what:<24} p50 {f['p50_ms']:7.1f} ms   p99 {f['p99_ms']:7.1f} ms"
                f"   min {f['min_ms']:7.1f} ms"
            )
    if len(sides) == 2:
        this, base = (report["sides"][n] for n in ("this", "baseline"))
        ratios = {what: round(this[what]["p50_ms"] / base[what]["p50_ms"], 3) for what in STAGES}
        report["ratio_p50"] = ratios
        verdict = "PASS" if ratios["spawn_to_first_result"] <= GOAL_RATIO else "MISS"
        report["goal"] = {"first_result_ratio_at_most": GOAL_RATIO, "verdict": verdict}
        print(
            f"\nthis / baseline, p50: initialize {ratios['spawn_to_initialize']:.2f}, "
            f"first result {ratios['spawn_to_first_result']:.2f}, "
            f"server CPU {ratios['server_cpu']:.2f}"
        )
        print(f"goal: first result <= {GOAL_RATIO} x baseline: {verdict}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
