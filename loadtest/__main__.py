"""``python -m loadtest`` / ``vestige-loadtest``: run a load profile, print and save the verdict.

Exit codes: 0 every check passed; 1 a check failed (the summary says which); 2 bad command
line; 3 the run could not start (nothing was tested); 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

import anyio

from loadtest import attach, feed, report, spawn
from loadtest.profiles import (
    DEFAULT_PROFILE,
    PROFILES,
    Goals,
    Relative,
    parse_faults,
    parse_mix,
)
from loadtest.runner import RunConfig, RunResult, SetupError, execute

if TYPE_CHECKING:
    from collections.abc import Callable

EXIT_PASS: Final = 0
EXIT_FAIL: Final = 1
EXIT_USAGE: Final = 2
EXIT_SETUP: Final = 3
EXIT_INTERRUPTED: Final = 130


def build_parser() -> argparse.ArgumentParser:
    profiles = "; ".join(f"{p.name}: {p.description}" for p in PROFILES.values())
    parser = argparse.ArgumentParser(
        prog="python -m loadtest",
        description="Several vestige-mcp --shared-writers servers hammer one data directory "
        "through real MCP clients, beside the vestige CLI and an external SQLite writer, "
        "with faults; then every acknowledged write, the file's integrity, the errors and "
        "the latency are checked.",
        epilog=f"profiles: {profiles}. Exit codes: 0 pass, 1 a check failed, 2 bad command "
        "line, 3 could not start.",
        allow_abbrev=False,
    )
    add = parser.add_argument
    add("--profile", choices=sorted(PROFILES), default=DEFAULT_PROFILE)
    add("--servers", type=_positive(int), help="server processes")
    add("--duration", type=_positive(float), metavar="S", help="seconds of load")
    add("--ops", type=_positive(int), metavar="N", help="stop after N MCP operations")
    add("--inflight", type=_positive(int), metavar="N", help="concurrent calls per server")
    add("--rate", type=_non_negative, metavar="OPS", help="target ops/s per server (0: unpaced)")
    add("--mix", type=parse_mix, metavar="OP=W,...", help="operation weights, e.g. ingest=3,get=1")
    add("--payload-min", type=_positive(int), metavar="BYTES")
    add("--payload-max", type=_positive(int), metavar="BYTES")
    add("--seed", type=int)
    add(
        "--faults",
        type=parse_faults,
        metavar="LIST",
        help="all (profile default), none, or any of kill-server,kill-external,exclusive-launch",
    )
    add("--no-external", action="store_true", help="no external SQLite writer (nor its kill)")
    add(
        "--cli-every",
        type=_non_negative,
        metavar="S",
        help="a vestige stats/search/health every S s (0: none)",
    )
    add(
        "--cli-commands",
        type=_cli_reads,
        metavar="LIST",
        help="read commands run in turn (default stats,search,health)",
    )
    add(
        "--backup-every",
        type=_non_negative,
        metavar="S",
        help="a vestige backup every S s (0: none)",
    )
    add(
        "--consolidate-every",
        type=_non_negative,
        metavar="S",
        help="a vestige consolidate every S s (0: none)",
    )
    add(
        "--write-vs-read",
        type=_positive(float),
        metavar="X",
        help="relative bound: write p50/p99 <= X x the same run's read p50/p99 + 3 idle round "
        "trips (default 3)",
    )
    goal = "a fixed goal in ms, judged besides the relative bounds (quiet machines only)"
    add("--p99-write-ms", type=_positive(float), help=goal)
    add("--max-write-ms", type=_positive(float), help=goal)
    add("--p99-read-ms", type=_positive(float), help=goal)
    add("--max-read-ms", type=_positive(float), help=goal)
    add("--min-fairness", type=_non_negative)
    add(
        "--failover-room",
        type=_non_negative,
        metavar="S",
        help="attach profiles: failover p99 <= the same run's cold start p99 + S seconds "
        "(default 0.5)",
    )
    add(
        "--inject-write-delay-ms",
        type=_non_negative,
        metavar="MS",
        help="fault: every server sleeps MS inside each write transaction (shows that the "
        "latency bounds catch a slow write path)",
    )
    add(
        "--idle-window",
        type=_positive(float),
        metavar="S",
        help="feed profiles: seconds both servers idle, one watched, one not (CPU per minute)",
    )
    add(
        "--inject-no-subscribe",
        action="store_true",
        help="fault, feed profiles: the subscriber never subscribes (every write must then "
        "be reported missed: shows that the check can fail)",
    )
    add(
        "--baseline",
        action="store_true",
        help="also run the same load against the naive configuration (busy_timeout only) "
        "and print both side by side",
    )
    add("--out", type=Path, help="report folder (default ./loadtest-out/<timestamp>)")
    add("--tmp", type=Path, help="where the temporary data directories go")
    add("--keep", action="store_true", help="keep the data directories, logs and backups")
    add("--quiet", action="store_true", help="no live progress line")
    add(
        "--server-log-level",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        default="WARNING",
        help="VESTIGE_LOG_LEVEL of every vestige process (logs stay in the data folder)",
    )
    add("--server-cmd", help="vestige-mcp executable (default: the installed console script)")
    add("--cli-cmd", help="vestige executable (default: the installed console script)")
    return parser


def _positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    def convert(text: str) -> int | float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} must be > 0")
        return value

    return convert


def _cli_reads(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = set(names) - {"stats", "search", "health"}
    if unknown or not names:
        raise argparse.ArgumentTypeError("use a comma list of stats, search, health")
    return names


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be >= 0")
    return value


def configure(args: argparse.Namespace) -> RunConfig:
    base = PROFILES[args.profile]
    b = base.bounds
    relative = b.relative
    if args.write_vs_read is not None:
        relative = dataclasses.replace(relative or Relative(), times=args.write_vs_read)
    goals = Goals(
        p99_write_ms=args.p99_write_ms or b.goals.p99_write_ms,
        max_write_ms=args.max_write_ms or b.goals.max_write_ms,
        p99_read_ms=args.p99_read_ms or b.goals.p99_read_ms,
        max_read_ms=args.max_read_ms or b.goals.max_read_ms,
    )
    bounds = dataclasses.replace(
        b,
        relative=relative,
        goals=goals,
        min_fairness=b.min_fairness if args.min_fairness is None else args.min_fairness,
    )
    faults = base.faults if args.faults is None else base.faults.only(args.faults)
    if args.no_external:
        faults = faults.only(set(faults.enabled()) - {"kill-external"})
    profile = base.with_overrides(
        servers=args.servers,
        duration_s=args.duration,
        max_ops=args.ops,
        inflight=args.inflight,
        rate_per_server=args.rate,
        mix=args.mix,
        payload_min_bytes=args.payload_min,
        payload_max_bytes=args.payload_max,
        seed=args.seed,
        external_writer=False if args.no_external else None,
        cli_read_every_s=args.cli_every,
        cli_reads=args.cli_commands,
        backup_every_s=args.backup_every,
        consolidate_every_s=args.consolidate_every,
        faults=faults,
        bounds=bounds,
    )
    if args.failover_room is not None:
        if profile.attach is None:
            raise ValueError("--failover-room applies to the attach profiles only")
        plan = dataclasses.replace(profile.attach, failover_room_s=args.failover_room)
        profile = profile.with_overrides(attach=plan)
    if args.idle_window is not None or args.inject_no_subscribe:
        if profile.feed is None:
            raise ValueError("--idle-window and --inject-no-subscribe apply to the feed profiles")
        if args.idle_window is not None:
            feed_plan = dataclasses.replace(profile.feed, idle_window_s=args.idle_window)
            profile = profile.with_overrides(feed=feed_plan)
    if profile.payload_min_bytes > profile.payload_max_bytes:
        raise ValueError("--payload-min is larger than --payload-max")
    server = args.server_cmd or spawn.find_command("vestige-mcp")
    cli = args.cli_cmd or spawn.find_command("vestige")
    return RunConfig(
        profile,
        [server],
        [cli],
        workdir=Path(),
        progress=not args.quiet,
        log_level=args.server_log_level,
        write_delay_ms=args.inject_write_delay_ms or 0.0,
        no_subscribe=args.inject_no_subscribe,
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        base = configure(args)
    except (ValueError, spawn.MissingCommand) as exc:
        parser.print_usage(sys.stderr)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    out = args.out or Path("loadtest-out") / time.strftime("%Y%m%d-%H%M%S")
    results: list[RunResult] = []
    try:
        for naive in (False, True) if args.baseline else (False,):
            label = (
                "naive"
                if naive
                else "attach"
                if base.profile.attach
                else "feed"
                if base.profile.feed
                else "shared"
            )
            if args.tmp is not None:
                args.tmp.mkdir(parents=True, exist_ok=True)
            workdir = Path(tempfile.mkdtemp(prefix=f"vestige-loadtest-{label}-", dir=args.tmp))
            config = dataclasses.replace(base, workdir=workdir, naive=naive)
            p = config.profile
            print(
                f"loadtest: {label} run, profile {p.name}: {p.servers} servers, "
                f"{p.duration_s:g} s, faults {', '.join(p.faults.enabled()) or 'none'}"
                + (
                    f", {len(p.attach.owner_kills_at)} owner kills (--attach clients)"
                    if p.attach is not None
                    else ""
                )
                + (
                    f", injected write delay {config.write_delay_ms:g} ms"
                    if config.write_delay_ms
                    else ""
                )
                + f"; data in {workdir}",
                file=sys.stderr,
            )
            try:
                run = (
                    attach.execute
                    if p.attach is not None
                    else feed.execute
                    if p.feed is not None
                    else execute
                )
                result = anyio.run(run, config)
            except SetupError as exc:
                print(f"loadtest: could not start: {exc}", file=sys.stderr)
                print(f"loadtest: logs kept in {workdir}", file=sys.stderr)
                return EXIT_SETUP
            results.append(result)
            if args.keep or not result.ok:
                print(f"loadtest: data, logs and backups kept in {workdir}", file=sys.stderr)
            else:
                shutil.rmtree(workdir, ignore_errors=True)
    except KeyboardInterrupt:
        print("\nloadtest: interrupted; every child process was stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        spawn.reap_everything()
    summary = report.text_summary(results)
    print(summary)
    write_reports(out, results, argv if argv is not None else sys.argv[1:])
    print(f"report: {out / 'report.json'}  page: {out / 'report.html'}")
    return EXIT_PASS if all(r.ok for r in results) else EXIT_FAIL


def write_reports(out: Path, results: list[RunResult], argv: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    data = {
        "ok": all(r.ok for r in results),
        "argv": argv,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "runs": [report.run_to_dict(r) for r in results],
    }
    (out / "report.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    (out / "summary.txt").write_text(report.text_summary(results) + "\n")
    with (out / "samples.csv").open("w") as f:
        f.write(report.samples_csv(results))
    title = (
        f"Vestige load test: {results[0].config.profile.name}" if results else "Vestige load test"
    )
    (out / "report.html").write_text(report.html_page(results, title))


if __name__ == "__main__":
    sys.exit(main())
