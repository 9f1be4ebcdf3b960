"""Keeping the data safe: backup, restore, export, salvage, import, consolidate.

All of them work while servers run: backups use SQLite's online backup API (never a file
copy), imports and the decay pass write in short transactions through the write gate, and
restore takes the owner lock so that no server can start while it replaces the database.
The rules (file names, what a bad row does, how a file appears) live in the library
(``vestige.transfer``, ``vestige.restore``); these commands only call it and print.
"""

from __future__ import annotations

import errno
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Literal

import click

from vestige import changelog, humanize, transfer
from vestige.cli import _render
from vestige.cli._exit import ExitCode
from vestige.cli._options import data_dir_option, json_option, open_store, resolved_data_dir
from vestige.errors import CorruptionError, StoreError
from vestige.restore import restore as restore_database


@click.command()
@click.argument("path", required=False, type=click.Path(path_type=Path))
@data_dir_option
@json_option
def backup(path: Path | None, as_json: bool) -> None:
    """Write a consistent snapshot of the database to PATH, checked with quick_check.

    Safe while servers write: it uses SQLite's online backup API, never a file copy.
    Without PATH it goes to <data-dir>/backups/vestige-<UTC time>.db; a PATH that is a
    folder gets that name inside it (-2, -3, ... when the name is taken).  The file is
    private (0600); an existing file is never overwritten.

    \b
    Example:
      vestige backup ~/vestige-before-upgrade.db
    """
    with open_store() as store, _render.Progress("Backing up", counting=False):
        written = store.backup(path)
    size = written.stat().st_size
    data = {"path": str(written), "bytes": size, "quick_check": "ok"}
    _render.emit(
        data,
        as_json=as_json,
        text=lambda: click.echo(
            f"Backup written: {written} ({humanize.human_bytes(size)}, quick_check ok)"
        ),
    )


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--move-damaged",
    is_flag=True,
    help="If the current database is too damaged to back up, move its files into the "
    "backups folder instead of refusing (nothing is deleted).",
)
@data_dir_option
@json_option
def restore(file: Path, move_damaged: bool, as_json: bool) -> None:
    """Replace the database with the backup FILE (a .db made by `vestige backup`).

    FILE is checked first (integrity_check, a Vestige schema this version knows).  The
    restore holds the owner lock for its whole run, so no server can start meanwhile, and
    refuses while any server or other process has the database open (it names them).  The
    current database is kept in <data-dir>/backups/ before it is replaced, and the new
    content is written through SQLite; -wal and -shm are never deleted by hand.

    \b
    Example:
      vestige restore ~/.local/share/vestige/core/backups/vestige-20250101-120000.db
    """
    data_dir = resolved_data_dir()
    with _render.Progress("Restoring", counting=False):
        result = restore_database(
            data_dir,
            file,
            move_damaged=move_damaged,
            actor=changelog.Actor.this_process("cli", "vestige restore"),
        )

    def text() -> None:
        click.echo(f"Restored {result.memories} memories from {result.restored_from}.")
        if result.previous is not None:
            click.echo(f"The replaced database is kept at {result.previous}.")
        if result.moved_damaged is not None:
            click.echo(f"The damaged database files were moved to {result.moved_damaged}.")

    _render.emit(result.to_dict(), as_json=as_json, text=text)


@click.command("export")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "json"]),
    default="jsonl",
    show_default=True,
    help="jsonl: one memory per line; json: one JSON array.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to this new file (0600) instead of stdout.",
)
@click.option(
    "--no-changelog",
    is_flag=True,
    help='Leave out the changelog (written after the memories, one {"change": ...} each).',
)
@data_dir_option
def export_(fmt: Literal["jsonl", "json"], output: Path | None, no_changelog: bool) -> None:
    """Write every memory, with every field, as JSON Lines (default) or a JSON array.

    The changelog follows the memories, one `{"change": {...}}` item per entry, unless
    --no-changelog.  `vestige import` reads either form back, and keeps the changelog as
    history.  The count goes to stderr, so stdout can be piped.

    \b
    Example:
      vestige export -o memories.jsonl
    """
    try:
        count = _export(fmt, output, no_changelog)
    except CorruptionError as exc:  # export stops at the first page it cannot read
        target = shlex.quote(str(output)) if output is not None else "rescue.jsonl"
        where = shlex.quote(str(resolved_data_dir().path))
        raise CorruptionError(
            exc.message,
            hint=f"Rescue what is still readable instead: vestige salvage --data-dir {where} "
            f"-o {target} (it skips damaged pages and says what was lost).",
        ) from exc
    where = f" to {output}" if output is not None else ""
    click.echo(f"Exported {count} memories{where}.", err=True)


def _export(fmt: Literal["jsonl", "json"], output: Path | None, no_changelog: bool) -> int:
    with open_store() as store, _render.Progress("Exporting") as progress:
        try:
            count = store.export(
                sys.stdout if output is None else output,
                fmt=fmt,
                progress=progress.advance,
                with_changelog=not no_changelog,
            )
            if output is None:
                sys.stdout.flush()  # a full disk shows here, not at the interpreter's exit
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            if output is None:
                # What is left in the buffer can never be written: let the final flush
                # go to /dev/null, as `main` does for a closed pipe.
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise _export_disk_full(output, store.path) from exc
    return count


def _export_disk_full(output: Path | None, database: Path) -> StoreError:
    """The export's own disk is full: name it (a bare "No space left on device" names none)."""
    if output is None:
        return StoreError(
            "the disk receiving the export (standard output) is full; the export is "
            f"incomplete, and nothing was changed in {database}",
            hint="Free some space on that disk, or export to a file on another disk: "
            "vestige export -o PATH",
        )
    return StoreError(
        f"the disk holding {output} is full; the export was not written (no partial file "
        f"is left), and nothing was changed in {database}",
        hint="Free some space on that disk, or export to another disk: vestige export -o PATH",
    )


@click.command()
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Write the rescued memories to this new file (0600), in `vestige export`'s format.",
)
@data_dir_option
@json_option
def salvage(output: Path, as_json: bool) -> None:
    """Rescue what is still readable from a damaged database into a new export file.

    Reads every memory and changelog entry SQLite can still read, skipping damaged pages,
    and says which were lost.  The database is opened read-only: nothing is written to it,
    so it works beside running servers and before `vestige restore --move-damaged`.  Bring
    the rescued memories back with `vestige import OUTPUT`.  Exit code 0 when nothing was
    lost, 3 when something was.

    \b
    Example:
      vestige salvage -o rescue.jsonl
    """
    data_dir = resolved_data_dir()
    with _render.Progress("Salvaging", counting=False):
        report = transfer.salvage(data_dir.database, output)

    def text() -> None:
        click.echo(
            f"Salvaged {report.memories} memories and {report.changes} changelog entries "
            f"to {report.path}."
        )
        if report.lost_memories is None:
            _render.warn("The index of memory ids is damaged too: how many were lost is unknown.")
        elif report.lost_memories:
            shown = ", ".join(report.lost_ids[:10]) + (" ..." if report.lost_memories > 10 else "")
            _render.warn(f"{report.lost_memories} memories could not be read: {shown}")
        if report.lost_changes:
            _render.warn(f"{report.lost_changes} changelog entries could not be read.")
        for table, ranges in report.unreadable.items():
            if ranges:
                spans = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in ranges[:10])
                _render.warn(f"Unreadable {table} rows (seq): {spans}")

    _render.emit(report.to_dict(), as_json=as_json, text=text)
    if not report.complete:
        raise SystemExit(ExitCode.UNHEALTHY)


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--skip-invalid",
    is_flag=True,
    help="Import the valid rows and report the bad ones (default: a bad row imports nothing).",
)
@data_dir_option
@json_option
def import_(file: Path, skip_invalid: bool, as_json: bool) -> None:
    """Import memories from FILE (JSON Lines or a JSON array, as `vestige export` writes).

    Idempotent: memories whose id is already present are left alone, so importing the
    same file twice adds nothing.  Every row is checked before anything is written; one
    bad row (its line is named) imports nothing unless --skip-invalid is given.  Two rows
    with one id are a bad row when they differ (both lines are named; --skip-invalid skips
    both) and are imported once when they are equal.  FILE is UTF-8, with or without a BOM.

    FILE is read a line (or array item) at a time, so a large file takes little memory; it
    must be a regular file (not a pipe or a device).  An import that was interrupted is
    completed by running it again.

    \b
    Example:
      vestige import memories.jsonl
    """
    checked = transfer.read_import(file, skip_invalid=skip_invalid)
    total = len(checked.rows)
    with open_store(create=True) as store, _render.Progress("Importing", total) as progress:
        report = store.import_checked(checked, progress=progress.advance)
    unit = checked.unit
    for bad in checked.rejected:
        _render.warn(f"{file}, {unit} {bad.number}: {bad.error} (skipped)")
    invalid: list[dict[str, Any]] = [{unit: b.number, "error": b.error} for b in checked.rejected]
    repeated = checked.duplicates
    _render.emit(
        {**report.to_dict(), "duplicates": repeated, "invalid": invalid},
        as_json=as_json,
        text=lambda: click.echo(
            f"Read {report.read} rows: imported {report.imported}, "
            f"already present {report.skipped_existing}"
            + (f", repeated in the file {repeated} (imported once)" if repeated else "")
            + (f", invalid {len(invalid)} (skipped)" if invalid else "")
            + "."
        ),
    )


@click.command()
@data_dir_option
@json_option
def consolidate(as_json: bool) -> None:
    """Run the decay pass: recompute every memory's retention from the FSRS-6 curve.

    Safe beside a running server: the run is claimed (only one process does it at a time)
    and written in short batches.  If another process holds the run, nothing is done.

    \b
    Example:
      vestige consolidate
    """
    with open_store() as store, _render.Progress("Applying decay", counting=False):
        report = store.decay()

    def text() -> None:
        if not report.ran:
            click.echo(f"Skipped: {report.reason}")
            return
        _render.key_values(
            [
                ("Nodes processed", report.nodes_processed),
                ("Decay applied", report.decay_applied),
                ("Duration", f"{report.duration_ms} ms"),
            ]
        )

    _render.emit(report.to_dict(), as_json=as_json, text=text)


COMMANDS = (backup, restore, export_, salvage, import_, consolidate)
