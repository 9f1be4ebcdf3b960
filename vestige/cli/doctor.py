"""`vestige doctor`: renders the checks of ``vestige.doctor``; decides nothing itself."""

from __future__ import annotations

from typing import Any

import click

from vestige import doctor as checks
from vestige import humanize
from vestige.cli import _render
from vestige.cli._exit import ExitCode
from vestige.cli._options import data_dir_option, json_option, resolved_data_dir
from vestige.printable import command_line, escape_controls

_STYLE = {
    checks.Status.OK: ("ok", "green"),
    checks.Status.WARN: ("WARN", "yellow"),
    checks.Status.FAIL: ("FAIL", "red"),
    checks.Status.SKIPPED: ("skip", "cyan"),
}


@click.command()
@click.option(
    "--deep",
    is_flag=True,
    help="Also read the whole database file (integrity_check): slower, grows with the store.",
)
@click.option(
    "--remove-stale",
    is_flag=True,
    help="Delete holder metadata whose process is provably gone (nothing else).",
)
@data_dir_option
@json_option
def doctor(deep: bool, remove_stale: bool, as_json: bool) -> None:
    """Find who holds the database and check that it is healthy.

    Shows which data directory is used and why, the owner lock and its holders (checked
    against the live process table), every process that has vestige.db, -wal, -shm or the
    lock files open (a cross-platform lsof), and the database's health.  Each problem
    comes with the exact next step.  Changes nothing unless --remove-stale is given.

    Without --deep, doctor does not read the file's pages (it stays as fast at 100k
    memories as at 1k) and says so; --deep runs SQLite's integrity_check on all of it.

    Exits 0 when no check fails (warnings, such as the file a server killed with kill -9
    leaves behind, block nothing), 3 when one does.

    \b
    Example:
      vestige doctor --json
    """
    report = checks.run(resolved_data_dir(), deep=deep, remove_stale=remove_stale)
    _render.emit(report.to_dict(), as_json=as_json, text=lambda: _text(report))
    if not report.healthy:
        raise click.exceptions.Exit(int(ExitCode.UNHEALTHY))


_SHORT_NAMES = {
    "vestige.db": "db",
    "vestige.db-wal": "wal",
    "vestige.db-shm": "shm",
    "vestige.owner.lock": "owner-lock",
    "vestige.gate.lock": "gate-lock",
}


def _short(path: str, data_dir: str) -> str:
    name = path.removeprefix(data_dir).lstrip("/\\")
    return _SHORT_NAMES.get(name, name)


def _text(report: checks.Report) -> None:
    width = max(len(c.name) for c in report.checks)
    for c in report.checks:
        label, color = _STYLE[c.status]
        click.echo(
            f"{click.style(f'{label:<4}', fg=color, bold=True)}  {c.name:<{width}}  {c.detail}"
        )
        if c.hint:
            click.echo(f"      {'':<{width}}  -> {c.hint}")
    holders: list[dict[str, Any]] = report.facts.get("processes", {}).get("holders", [])
    if holders:
        click.echo("")
        click.echo("Processes with the database or lock files open:")
        data_dir = str(report.data_dir.path)
        _render.table(
            ("PID", "USER", "NAME", "RUNNING", "FILES", "COMMAND"),
            [
                (
                    h["pid"],
                    h["user"],
                    escape_controls(h["name"]),
                    humanize.human_duration(h["running_s"]),
                    ",".join(_short(f, data_dir) for f in h["files"]),
                    _render.one_line(command_line(h["cmdline"]), 60),
                )
                for h in holders
            ],
        )
    click.echo("")
    problems = sum(c.status is checks.Status.FAIL for c in report.checks)
    warnings = sum(c.status is checks.Status.WARN for c in report.checks)
    skipped = any(c.status is checks.Status.SKIPPED for c in report.checks)
    if problems:
        summary = click.style(f"{problems} problem(s) found", fg="red", bold=True)
    elif skipped:
        # Not "Healthy": a damaged page the routine run never reads would still be there,
        # while `stats` or `health` had just said "damaged" (a hostile test did exactly that).
        summary = click.style("No problem found in what was checked", fg="green", bold=True)
    else:
        summary = click.style("Healthy", fg="green", bold=True)
    if warnings:
        summary += f", {warnings} warning(s)"
    click.echo(f"{summary} ({report.elapsed_ms:.0f} ms).")
    if skipped:
        # Name what was left out, and how to check it.
        click.echo("Not checked: " + "; ".join(report.facts.get("not_checked", [])) + ".")
        click.echo("Run `vestige doctor --deep` to check the whole file.")


COMMANDS = (doctor,)
