"""Store benchmark: what the Python layer costs per write, and what the write gate buys.

Run from the repository root (also ``nox -s bench``)::

    python tests/benchmarks/bench_store.py [--quick] [--json out.json]

It prints figures, not verdicts a CI could flake on: every goal is shown as PASS or MISS and
the exit status is 0 unless something crashed.  Named ``bench_*`` so pytest never collects it.

1. Single-process inserts.  The baseline is the cheapest honest write: a bare APSW connection
   on a file with Vestige's own schema (FTS5 triggers included), the same PRAGMAs and the same
   INSERT with rows built beforehand, one ``BEGIN IMMEDIATE`` ... ``COMMIT`` per row, plus the
   row's changelog entry (every write of the store appends one).  Against it,
   ``Store.ingest`` pays for validation, ids, hashing, the gate and the retry wrapper.  A
   third side inserts the memory rows alone: the difference is what a changelog entry costs.
   The two run interleaved in chunks, so load from elsewhere on the machine hits both alike;
   CPU time per row is printed too, as the figure that such load cannot skew.
2. Four writer processes looping ``Store.ingest`` for a fixed time, with and without the write
   gate.  Each call's latency includes gate and busy waits; fairness is min/max of the
   per-process counts (SQLite's polling busy handler starves writers, reference E12).  Fair
   turns cost throughput that unfair streaks do not: a connection whose database another
   process changed reloads its page cache inside the next transaction.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import apsw

from vestige import Store, StoreBusyError
from vestige.config import DURABILITY_ENV, NAIVE_WRITES_ENV
from vestige.models import MEMORY_COLUMNS
from vestige.store import _INSERT, _row

CHILD_COMMAND: Final = "_writer"

INSERT_ROWS: Final = 5_000
INSERT_ROWS_QUICK: Final = 1_000
INSERT_REPEATS: Final = 3
INSERT_CHUNK_ROWS: Final = 100
WRITERS: Final = 4
WRITE_SECONDS: Final = 5.0
WRITE_SECONDS_QUICK: Final = 2.0
#: Children get this long to open their store and report ready before the run is abandoned.
READY_TIMEOUT_S: Final = 60.0
#: A child may overrun its duration by one write, which can wait up to the 10 s deadline.
CHILD_GRACE_S: Final = 30.0
BARRIER_POLL_S: Final = 0.001
#: Generous ceiling on one writer's rate, to size its pre-built contents.
MAX_WRITES_PER_S: Final = 10_000
WRITER_ROUNDS: Final = 2
WRITER_ROUNDS_QUICK: Final = 1

GOAL_INGEST_RATIO: Final = 0.60
GOAL_GATED_MAX_WAIT_MS: Final = 250.0
GOAL_FAIRNESS: Final = 0.7
GOAL_GATED_VS_UNGATED: Final = 0.70

#: Vocabulary for the generated memories.
_VOCABULARY: Final = (
    "agent memory sqlite process writer reader commit journal index search token python "
    "vector decay review retention stability schema table column trigger query plan cache "
    "lock kernel queue gate deadline retry jitter backoff latency throughput snapshot page "
    "checkpoint durable crash power disk file directory user project meeting deadline "
    "prefers dark mode coffee morning evening weekly release branch merge review test suite "
    "library module function class method argument return value error hint message server "
    "client protocol request response stream tool prompt context window summary note fact "
    "decision pattern event concept idea plan goal task bug fix feature design doc api the "
    "a an of to in on for with by from about after before during while because although"
)
_WORDS: Final = tuple(_VOCABULARY.split())


# -- content -------------------------------------------------------------------------


def sentences(count: int, *, seed: int, prefix: str) -> list[str]:
    """Unique sentences of 100-300 characters; the prefix and counter make each one unique."""
    rng = random.Random(seed)
    out: list[str] = []
    for i in range(count):
        target = rng.randint(100, 300)
        words = [f"{prefix}{i}:"]
        length = len(words[0])
        while length < target - 1:
            word = rng.choice(_WORDS)
            words.append(word)
            length += len(word) + 1
        out.append(" ".join(words)[: target - 1].rstrip() + ".")
    return out


def tags_for(i: int) -> list[str]:
    return ["bench", f"topic-{i % 10}"]


# -- 1. single-process inserts --------------------------------------------------------


def prebuilt_rows(data_dir: Path, contents: list[str], tags: list[list[str]]) -> list[Any]:
    """Create the schema with ``Store.open`` and build the rows exactly as ingest does."""
    with Store.open(data_dir) as template:
        return [
            _row(
                template._new_memory(
                    text, node_type="fact", tags=tag, source=None, valid_from=None, valid_until=None
                )
            )
            for text, tag in zip(contents, tags, strict=True)
        ]


def raw_connection(path: Path) -> apsw.Connection:
    """A bare connection with the PRAGMAs that decide a commit's cost, as the store sets them."""
    conn = apsw.Connection(str(path))
    conn.set_busy_timeout(5_000)
    for pragma in ("journal_mode = WAL", "synchronous = NORMAL", "busy_timeout = 5000"):
        conn.execute(f"PRAGMA {pragma}").fetchall()
    return conn


@dataclass
class Clock:
    """Wall and CPU seconds spent by one side of the comparison."""

    wall: float = 0.0
    cpu: float = 0.0


def insert_round(
    root: Path, r: int, contents: list[str], tags: list[list[str]]
) -> tuple[Clock, Clock]:
    """One round: raw and store write the same rows to their own fresh files, interleaved.

    The two sides take turns every ``INSERT_CHUNK_ROWS`` rows (who goes first alternates), so
    other load on the machine, which comes and goes over seconds, falls on both alike.
    """
    raw_dir, bare_dir = root / f"insert-raw-{r}", root / f"insert-bare-{r}"
    store_dir = root / f"insert-store-{r}"
    rows = prebuilt_rows(raw_dir, contents, tags)
    prebuilt_rows(bare_dir, contents[:1], tags[:1])  # the schema only
    raw, bare, store_clock = Clock(), Clock(), Clock()
    conn, bare_conn = (
        raw_connection(raw_dir / "vestige.db"),
        raw_connection(bare_dir / "vestige.db"),
    )
    store = Store.open(store_dir)
    process = f"bench pid {os.getpid()}"
    try:
        execute, bare_execute, ingest = conn.execute, bare_conn.execute, store.ingest
        sides = ["raw", "bare", "store"]
        for k, first in enumerate(range(0, len(rows), INSERT_CHUNK_ROWS)):
            last = min(len(rows), first + INSERT_CHUNK_ROWS)
            turn = (k + r) % len(sides)
            for side in sides[turn:] + sides[:turn]:
                wall0, cpu0 = time.perf_counter(), time.process_time()
                if side == "raw":
                    for row in rows[first:last]:
                        execute("BEGIN IMMEDIATE")
                        execute(_INSERT, row)
                        execute(_LOG, (row[_CREATED], row[0], process))
                        execute("COMMIT")
                    clock = raw
                elif side == "bare":
                    for row in rows[first:last]:
                        bare_execute("BEGIN IMMEDIATE")
                        bare_execute(_INSERT, row)
                        bare_execute("COMMIT")
                    clock = bare
                else:
                    for i in range(first, last):
                        ingest(contents[i], tags=tags[i])
                    clock = store_clock
                clock.wall += time.perf_counter() - wall0
                clock.cpu += time.process_time() - cpu0
        raw_count = conn.execute("SELECT count(*) FROM changelog").fetchall()[0][0]
        assert raw_count == store.stats().total_memories == len(rows)
    finally:
        conn.close()
        bare_conn.close()
        store.close()
    return raw, bare, store_clock


#: The changelog entry ``Store.ingest`` appends, as plain SQL.
_LOG: Final = (
    "INSERT INTO changelog(at, kind, memory_id, process, transport) "
    "VALUES (?, 'created', ?, ?, 'library')"
)
_CREATED: Final = MEMORY_COLUMNS.index("created_at")


@dataclass
class InsertResult:
    rows: int
    raw_rows_per_s: list[float] = field(default_factory=list)
    store_rows_per_s: list[float] = field(default_factory=list)
    raw_cpu_us_per_row: list[float] = field(default_factory=list)
    store_cpu_us_per_row: list[float] = field(default_factory=list)
    bare_rows_per_s: list[float] = field(default_factory=list)
    bare_cpu_us_per_row: list[float] = field(default_factory=list)

    @property
    def changelog_cpu_us(self) -> float:
        """What a changelog entry adds to a raw insert, in CPU time per row (median)."""
        return statistics.median(
            r - b for r, b in zip(self.raw_cpu_us_per_row, self.bare_cpu_us_per_row, strict=True)
        )

    @property
    def bare_median(self) -> float:
        return statistics.median(self.bare_rows_per_s)

    @property
    def raw_median(self) -> float:
        return statistics.median(self.raw_rows_per_s)

    @property
    def store_median(self) -> float:
        return statistics.median(self.store_rows_per_s)

    @property
    def ratio(self) -> float:
        """Median of the per-round ratios (each round's two sides ran interleaved)."""
        return statistics.median(
            s / r for s, r in zip(self.store_rows_per_s, self.raw_rows_per_s, strict=True)
        )

    @property
    def cpu_ratio(self) -> float:
        """The same ratio in CPU time per row: what other load on the machine cannot skew."""
        return statistics.median(
            r / s for s, r in zip(self.store_cpu_us_per_row, self.raw_cpu_us_per_row, strict=True)
        )


def bench_inserts(root: Path, rows: int, repeats: int) -> InsertResult:
    contents = sentences(rows, seed=1, prefix="memory-")
    tags = [tags_for(i) for i in range(rows)]
    result = InsertResult(rows)
    for r in range(repeats):
        raw, bare, store = insert_round(root, r, contents, tags)
        result.bare_rows_per_s.append(rows / bare.wall)
        result.bare_cpu_us_per_row.append(bare.cpu / rows * 1e6)
        result.raw_rows_per_s.append(rows / raw.wall)
        result.store_rows_per_s.append(rows / store.wall)
        result.raw_cpu_us_per_row.append(raw.cpu / rows * 1e6)
        result.store_cpu_us_per_row.append(store.cpu / rows * 1e6)
        print(
            f"  round {r + 1}/{repeats}: bare {rows / bare.wall:6.0f} rows/s "
            f"({bare.cpu / rows * 1e6:.0f} us CPU/row)   raw {rows / raw.wall:6.0f} rows/s "
            f"({raw.cpu / rows * 1e6:.0f} us CPU/row)   store {rows / store.wall:6.0f} rows/s "
            f"({store.cpu / rows * 1e6:.0f} us CPU/row)   store/raw {raw.wall / store.wall:.3f}",
            flush=True,
        )
    return result


# -- 2. concurrent writer processes ---------------------------------------------------


def child_main(argv: list[str]) -> int:
    """One writer process: open, report ready, wait for the start file, ingest until time."""
    parser = argparse.ArgumentParser(prog=f"bench_store.py {CHILD_COMMAND}")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--gate", choices=("on", "off"), required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    # Built before the clock starts; more than a writer can use (reused if one ever does).
    count = int(args.duration * MAX_WRITES_PER_S) + 1
    contents = sentences(count, seed=100 + args.index, prefix=f"writer-{args.index}-")
    tags = [tags_for(i) for i in range(count)]
    latencies: list[float] = []
    busy = 0
    with Store.open(args.data_dir, write_gate=args.gate == "on") as store:
        ready = args.out.with_suffix(".ready")
        ready.write_text("ready")
        start_file = args.data_dir.parent / "start"
        while not start_file.exists():
            time.sleep(BARRIER_POLL_S)
        ingest = store.ingest
        clock = time.perf_counter
        started = time.monotonic()
        end = clock() + args.duration
        i = 0
        while True:
            t0 = clock()
            if t0 >= end:
                break
            try:
                ingest(contents[i % count], tags=tags[i % count])
            except StoreBusyError:
                busy += 1
            latencies.append(clock() - t0)
            i += 1
        finished = time.monotonic()
    args.out.write_text(
        json.dumps(
            {
                "index": args.index,
                "ok": len(latencies) - busy,
                "busy": busy,
                "latencies": latencies,
                "started": started,
                "finished": finished,
            }
        )
    )
    return 0


@dataclass
class WritersResult:
    """One mode over all its rounds; fairness and max latency are the worst round's."""

    gate: bool
    writers: int
    duration_s: float
    counts: list[list[int]]  # per round, per process
    fairness_per_round: list[float]
    busy_errors: int
    window_s: float
    writes_per_s: float
    fairness: float
    p50_ms: float
    p99_ms: float
    max_ms: float


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-q * len(sorted_values) // 100))
    return sorted_values[min(int(rank), len(sorted_values)) - 1]


def writers_run(run_dir: Path, *, gate: bool, writers: int, duration: float) -> list[Any]:
    """Start the writer processes, release them together, return their reports."""
    data_dir = run_dir / "data"
    run_dir.mkdir()
    # Create and migrate once, so the children only open an existing database.
    Store.open(data_dir).close()
    script = str(Path(__file__).resolve())
    procs: list[subprocess.Popen[bytes]] = []
    outs = [run_dir / f"writer-{i}.json" for i in range(writers)]
    try:
        for i, out in enumerate(outs):
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        script,
                        CHILD_COMMAND,
                        "--data-dir",
                        str(data_dir),
                        "--index",
                        str(i),
                        "--duration",
                        str(duration),
                        "--gate",
                        "on" if gate else "off",
                        "--out",
                        str(out),
                    ],
                    stderr=subprocess.PIPE,
                )
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not all(out.with_suffix(".ready").exists() for out in outs):
            if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                raise RuntimeError("a writer process did not get ready")
            time.sleep(0.01)
        (run_dir / "start").write_text("go")
        for p in procs:
            _, stderr = p.communicate(timeout=duration + CHILD_GRACE_S)
            if p.returncode != 0:
                raise RuntimeError(
                    f"writer pid {p.pid} exited {p.returncode}:\n{stderr.decode(errors='replace')}"
                )
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
    return [json.loads(out.read_text()) for out in outs]


def run_figures(reports: list[Any]) -> tuple[list[int], float, float, float]:
    """Per-process counts, the run's window (first start to last finish), fairness, max."""
    counts = [r["ok"] for r in reports]
    window = max(r["finished"] for r in reports) - min(r["started"] for r in reports)
    fairness = min(counts) / max(counts) if max(counts) else 0.0
    worst = max((max(r["latencies"], default=0.0) for r in reports), default=0.0)
    return counts, window, fairness, worst


def summarize(gate: bool, writers: int, duration: float, runs: list[list[Any]]) -> WritersResult:
    figures = [run_figures(reports) for reports in runs]
    latencies = sorted(x for reports in runs for r in reports for x in r["latencies"])
    total_ok = sum(sum(counts) for counts, *_ in figures)
    window = sum(w for _, w, _, _ in figures)
    return WritersResult(
        gate=gate,
        writers=writers,
        duration_s=duration,
        counts=[counts for counts, *_ in figures],
        fairness_per_round=[round(f, 3) for _, _, f, _ in figures],
        busy_errors=sum(r["busy"] for reports in runs for r in reports),
        window_s=window,
        writes_per_s=total_ok / window,
        fairness=min(f for _, _, f, _ in figures),
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        max_ms=latencies[-1] * 1000 if latencies else float("nan"),
    )


def mode_name(gate: bool) -> str:
    return "gated" if gate else "ungated"


def print_run(gate: bool, n: int, reports: list[Any]) -> None:
    counts, window, fairness, worst = run_figures(reports)
    print(
        f"  {mode_name(gate):8s} round {n}: counts {counts}  "
        f"{sum(counts) / window:5.0f} writes/s over {window:.2f} s  fairness {fairness:.3f}  "
        f"max latency {worst * 1000:.1f} ms",
        flush=True,
    )


def print_writers(r: WritersResult) -> None:
    print(
        f"  {mode_name(r.gate):8s} all rounds: {r.writes_per_s:5.0f} writes/s  "
        f"fairness (worst round) {r.fairness:.3f}  latency p50 {r.p50_ms:.2f} ms  "
        f"p99 {r.p99_ms:.2f} ms  max {r.max_ms:.1f} ms  busy errors {r.busy_errors}",
        flush=True,
    )


# -- report ---------------------------------------------------------------------------


@dataclass
class Goal:
    name: str
    target: str
    measured: str
    passed: bool


def goals(ins: InsertResult, gated: WritersResult, ungated: WritersResult) -> list[Goal]:
    share = gated.writes_per_s / ungated.writes_per_s if ungated.writes_per_s else float("inf")
    return [
        Goal(
            "store/raw insert throughput",
            f">= {GOAL_INGEST_RATIO:.2f}",
            f"{ins.ratio:.3f}",
            ins.ratio >= GOAL_INGEST_RATIO,
        ),
        Goal(
            "gated max write latency",
            f"<= {GOAL_GATED_MAX_WAIT_MS:.0f} ms",
            f"{gated.max_ms:.1f} ms",
            gated.max_ms <= GOAL_GATED_MAX_WAIT_MS,
        ),
        Goal(
            "gated fairness (min/max count)",
            f">= {GOAL_FAIRNESS:.2f}",
            f"{gated.fairness:.3f}",
            gated.fairness >= GOAL_FAIRNESS,
        ),
        Goal(
            "gated/ungated aggregate writes/s",
            f">= {GOAL_GATED_VS_UNGATED:.2f}",
            f"{share:.3f}",
            share >= GOAL_GATED_VS_UNGATED,
        ),
    ]


def print_goals(table: list[Goal]) -> None:
    width = max(len(g.name) for g in table)
    print(f"\n{'goal':{width}s}  {'target':>10s}  {'measured':>10s}  result")
    print(f"{'-' * width}  {'-' * 10}  {'-' * 10}  ------")
    for g in table:
        verdict = "PASS" if g.passed else "MISS"
        print(f"{g.name:{width}s}  {g.target:>10s}  {g.measured:>10s}  {verdict}")


def load_average() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def environment() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "sqlite": apsw.sqlite_lib_version(),
        "apsw": apsw.apsw_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        # Other work on the machine skews every figure: the load is printed with them.
        "load_average_1m": load_average(),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [CHILD_COMMAND]:
        return child_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer rows, shorter runs")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    parser.add_argument("--rows", type=int, help="rows per insert run (default 5000; quick 1000)")
    parser.add_argument("--seconds", type=float, help="writer run length (default 5; quick 2)")
    parser.add_argument("--writers", type=int, default=WRITERS, help="writer processes")
    parser.add_argument("--rounds", type=int, help="writer rounds per mode (default 2; quick 1)")
    args = parser.parse_args(argv)
    rows = args.rows or (INSERT_ROWS_QUICK if args.quick else INSERT_ROWS)
    seconds = args.seconds or (WRITE_SECONDS_QUICK if args.quick else WRITE_SECONDS)
    rounds = args.rounds or (WRITER_ROUNDS_QUICK if args.quick else WRITER_ROUNDS)

    # The baseline is synchronous=NORMAL with one transaction per row: the store must run the
    # same way, so settings that change how it writes are dropped (children inherit this).
    for name in (DURABILITY_ENV, NAIVE_WRITES_ENV):
        if os.environ.pop(name, None) is not None:
            print(f"note: ignoring {name} for this benchmark")
    env = environment()
    print(
        f"Vestige store benchmark: Python {env['python']}, SQLite {env['sqlite']} "
        f"(apsw {env['apsw']}), {env['cpus']} CPUs, {env['platform']}, "
        f"load average {env['load_average_1m']}"
    )
    with tempfile.TemporaryDirectory(prefix="vestige-bench-") as tmp:
        root = Path(tmp)
        print(
            f"\n1. single-process inserts: {rows} rows, {INSERT_REPEATS} rounds, raw (with the "
            f"changelog entry), bare (without) and store interleaved every {INSERT_CHUNK_ROWS} rows"
        )
        ins = bench_inserts(root, rows, INSERT_REPEATS)
        print(
            f"  median: raw {ins.raw_median:.0f} rows/s, store {ins.store_median:.0f} rows/s, "
            f"store/raw {ins.ratio:.3f} (in CPU time per row: {ins.cpu_ratio:.3f})"
        )
        print(
            f"  a changelog entry: bare (memory row only) {ins.bare_median:.0f} rows/s; the "
            f"entry adds {ins.changelog_cpu_us:.0f} us CPU per insert"
        )
        print(
            f"\n2. {args.writers} writer processes x {seconds:g} s, {rounds} round(s) per mode, "
            "order ungated-gated-gated-ungated..."
        )
        runs: dict[bool, list[list[Any]]] = {False: [], True: []}
        for r in range(rounds):
            for gate in (False, True) if r % 2 == 0 else (True, False):
                run_dir = root / f"writers-{mode_name(gate)}-{r}"
                reports = writers_run(run_dir, gate=gate, writers=args.writers, duration=seconds)
                runs[gate].append(reports)
                print_run(gate, r + 1, reports)
        ungated = summarize(False, args.writers, seconds, runs[False])
        gated = summarize(True, args.writers, seconds, runs[True])
        print_writers(ungated)
        print_writers(gated)
        share = gated.writes_per_s / ungated.writes_per_s if ungated.writes_per_s else 0.0
        print(f"  gated/ungated aggregate writes/s: {share:.3f}")

    table = goals(ins, gated, ungated)
    print_goals(table)
    env["load_average_1m_at_end"] = load_average()
    print(f"load average at the end: {env['load_average_1m_at_end']}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "environment": env,
                    "inserts": asdict(ins)
                    | {
                        "raw_median": ins.raw_median,
                        "store_median": ins.store_median,
                        "ratio": ins.ratio,
                        "cpu_ratio": ins.cpu_ratio,
                    },
                    "writers": {"ungated": asdict(ungated), "gated": asdict(gated)},
                    "goals": [asdict(g) for g in table],
                },
                indent=2,
            )
            + "\n"
        )
        print(f"\nfigures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
