"""Keeping the data safe: backup, restore, export, import, consolidate.

All of them work while servers run: backups use SQLite's online backup API (never a file
copy), imports and the decay pass write in short transactions through the write gate, and
restore takes the owner lock so that no server can start while it replaces the database.
"""

from __future__ import annotations

import io
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

from vestige import _humanize, config, transfer
from vestige.cli import _render
from vestige.cli._exit import CommandError, ExitCode
from vestige.cli._options import data_dir_option, json_option, open_store, resolved_data_dir
from vestige.errors import ImportFileError
from vestige.restore import restore as restore_database

if TYPE_CHECKING:
    from vestige.store import Store

#: Rows per import transaction: the progress counter moves once per batch.
IMPORT_BATCH_ROWS = transfer.IMPORT_BATCH_ROWS


@click.command()
@click.argument("path", required=False, type=click.Path(path_type=Path))
@data_dir_option
@json_option
def backup(path: Path | None, as_json: bool) -> None:
    """Write a consistent snapshot of the database to PATH, checked with quick_check.

    Safe while servers write: it uses SQLite's online backup API, never a file copy.
    Without PATH it goes to <data-dir>/backups/vestige-<UTC time>.db; a PATH that is a
    folder gets that name inside it.  The file is private (0600); an existing file is
    never overwritten.

    \b
    Example:
      vestige backup ~/vestige-before-upgrade.db
    """
    if path is not None and path.is_dir():
        path = path / f"vestige-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}.db"
    with open_store() as store, _render.Progress("Backing up", counting=False):
        written = store.backup(path)
    size = written.stat().st_size
    data = {"path": str(written), "bytes": size, "quick_check": "ok"}
    _render.emit(
        data,
        as_json=as_json,
        text=lambda: click.echo(
            f"Backup written: {written} ({_humanize.human_bytes(size)}, quick_check ok)"
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
        result = restore_database(data_dir, file, move_damaged=move_damaged)

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
@data_dir_option
def export_(fmt: str, output: Path | None) -> None:
    """Write every memory, with every field, as JSON Lines (default) or a JSON array.

    `vestige import` reads either form back.  The count goes to stderr, so stdout can be
    piped.

    \b
    Example:
      vestige export -o memories.jsonl
    """
    with open_store() as store:
        if output is None:
            count = _write_export(store, sys.stdout, fmt)
        else:
            count = _export_to_file(store, output, fmt)
    where = f" to {output}" if output is not None else ""
    click.echo(f"Exported {count} memories{where}.", err=True)


def _export_to_file(store: Store, output: Path, fmt: str) -> int:
    target = Path(os.path.abspath(output))
    if target.exists():
        raise CommandError(
            f"the export target {target} already exists",
            code=ExitCode.BAD_INPUT,
            hint="Choose a new file name, or move the old file away first.",
        )
    if not target.parent.is_dir():
        raise CommandError(
            f"the folder {target.parent} does not exist",
            code=ExitCode.BAD_INPUT,
            hint="Create it, or choose another path for -o.",
        )
    tmp = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, config.FILE_MODE)
        with open(fd, "w", encoding="utf-8") as out:
            count = _write_export(store, out, fmt)
            out.flush()
            os.fsync(out.fileno())
        if target.exists():
            raise CommandError(
                f"the export target {target} appeared meanwhile", code=ExitCode.BAD_INPUT
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return count


def _write_export(store: Store, out: IO[str], fmt: str) -> int:
    count = 0
    with _render.Progress("Exporting") as progress:
        if fmt == "json":
            out.write("[")
        for memory in store.iter_memories():
            line = json.dumps(memory.to_dict(), ensure_ascii=False)
            if fmt == "json":
                out.write(("\n  " if count == 0 else ",\n  ") + line)
            else:
                out.write(line + "\n")
            count += 1
            progress.advance()
        if fmt == "json":
            out.write("\n]\n" if count else "]\n")
    return count


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
    bad row (its line is named) imports nothing unless --skip-invalid is given.

    \b
    Example:
      vestige import memories.jsonl
    """
    unit, lines = _read_rows(file)
    good: list[str] = []
    invalid: list[dict[str, Any]] = []
    for number, line in lines:
        try:
            transfer.parse_line(number, line)
        except ImportFileError as exc:
            problem = exc.message.removeprefix(f"line {number}: ")
            if not skip_invalid:
                raise ImportFileError(
                    f"{file}, {unit} {number}: {problem}",
                    hint="Fix or remove that row, or pass --skip-invalid to import the rest. "
                    "Nothing was imported.",
                ) from None
            invalid.append({unit: number, "error": problem})
            continue
        good.append(line)
    imported = skipped = 0
    with open_store(create=True) as store, _render.Progress("Importing", len(good)) as progress:
        for start in range(0, len(good), IMPORT_BATCH_ROWS):
            batch = good[start : start + IMPORT_BATCH_ROWS]
            report = store.import_jsonl(io.StringIO("\n".join(batch)))
            imported += report.imported
            skipped += report.skipped_existing
            progress.advance(len(batch))
    data = {
        "read": len(lines),
        "imported": imported,
        "skipped_existing": skipped,
        "invalid": invalid,
    }
    for bad in invalid:
        _render.warn(f"{file}, {unit} {bad[unit]}: {bad['error']} (skipped)")
    _render.emit(
        data,
        as_json=as_json,
        text=lambda: click.echo(
            f"Read {len(lines)} rows: imported {imported}, already present {skipped}"
            + (f", invalid {len(invalid)} (skipped)" if invalid else "")
            + "."
        ),
    )


def _read_rows(file: Path) -> tuple[str, list[tuple[int, str]]]:
    """("line", rows) for JSON Lines or ("item", rows) for a JSON array.

    Each row is (its line or item number, one memory as JSON text), so an error can point
    at the exact place in the file.
    """
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ImportFileError(
            f"{file} is not UTF-8 text (byte {exc.start})",
            hint="Export again with `vestige export`, or convert the file to UTF-8.",
        ) from None
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ImportFileError(
                f"{file} starts like a JSON array but is not valid JSON ({exc.msg})",
                line=exc.lineno,
            ) from None
        if not isinstance(items, list):
            raise ImportFileError(f"{file} is JSON but not an array of memories")
        return "item", [(n, json.dumps(m, ensure_ascii=False)) for n, m in enumerate(items, 1)]
    # Only "\n" ends a line: export leaves U+2028, U+2029 and U+0085 raw inside strings
    # (ensure_ascii=False), and str.splitlines() would split a memory there.
    lines = (line.removesuffix("\r") for line in text.split("\n"))
    rows = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    return "line", rows


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


COMMANDS = (backup, restore, export_, import_, consolidate)
