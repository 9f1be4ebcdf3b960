"""How long `vestige doctor` takes: the issue asks for under 0.5 s on an ordinary machine.

Run from the repository root::

    python tests/benchmarks/bench_doctor.py [--runs 15] [--memories 5000]

Prints figures (wall time of the whole command, interpreter start-up included, and the
checks' own time as doctor reports it), idle and beside a running `vestige-mcp`.  Exit
status is 0 unless something crashed; a miss is shown, not failed on.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.cli_helpers import Server  # noqa: E402 - needs the root on sys.path first
from vestige import Store  # noqa: E402

GOAL_S: Final = 0.5


def run_doctor(data_dir: Path, runs: int) -> tuple[list[float], list[float]]:
    walls, inner = [], []
    for _ in range(runs):
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "vestige", "doctor", "--json", "--data-dir", str(data_dir)],
            capture_output=True,
            text=True,
            check=False,
        )
        walls.append(time.perf_counter() - started)
        inner.append(json.loads(result.stdout)["elapsed_ms"] / 1000)
    return walls, inner


def show(label: str, walls: list[float], inner: list[float]) -> None:
    p50, worst = statistics.median(walls), max(walls)
    verdict = "PASS" if p50 < GOAL_S else "MISS"
    print(
        f"{label:<28} wall p50 {p50 * 1000:6.0f} ms  max {worst * 1000:6.0f} ms  "
        f"checks p50 {statistics.median(inner) * 1000:5.0f} ms  [{verdict} < {GOAL_S} s]"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--memories", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        rows = "".join(
            json.dumps({"id": f"m{i}", "content": f"benchmark memory number {i} " + "x" * 200})
            + "\n"
            for i in range(args.memories)
        )
        with Store.open(data_dir) as store:
            store.import_jsonl(io.StringIO(rows))
        print(f"{args.memories} memories, {args.runs} runs each, python {sys.version.split()[0]}")
        show("idle", *run_doctor(data_dir, args.runs))
        server = Server(data_dir, Path(tmp) / "server.log").start()
        try:
            show("beside a running server", *run_doctor(data_dir, args.runs))
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
