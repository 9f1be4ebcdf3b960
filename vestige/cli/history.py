"""The changelog from the shell: log, undo, and the changes worth a record (edit, delete, purge).

Users of the original Vestige lost memories with no trail and no undo (issue 9).  These
commands read and reverse the changelog the library keeps (``vestige.changelog``); the
rules (what can be undone, what a purge removes, when a page has a gap) live there and in
``Store``, so the CLI and the MCP tools answer alike.  Every change made here is recorded
as the CLI's, with the command that made it (``open_store``).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from vestige import config
from vestige.changelog import ChangeKind
from vestige.cli import _changes, _render, _stdin, fail
from vestige.cli._exit import ExitCode
from vestige.cli._options import data_dir_option, json_option, open_store
from vestige.errors import MemoryNotFound

if TYPE_CHECKING:
    from vestige.changelog import Change, ChangePage
    from vestige.models import Edited, PurgeReport

_KINDS = ", ".join(k.value for k in ChangeKind)


def _change_number(_ctx: click.Context, param: click.Parameter, value: str) -> int:
    """A change's number as `vestige log` shows it: ``12`` (or ``#12``)."""
    text = value.strip().removeprefix("#")
    if not text.isascii() or not text.isdigit():
        raise click.BadParameter(f"{value!r} is not a change number (`vestige log` lists them)")
    return int(text)


# -- vestige log --------------------------------------------------------------------------


@click.command()
@click.option("--memory", "memory_id", default=None, help="Only changes to this memory (its id).")
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    help=f"Only changes of this kind (repeatable, or comma-separated): {_KINDS}.",
)
@click.option(
    "--since",
    default=None,
    help="Only changes after this one: a change number (e.g. 120) or a time "
    "(2025-06-01, 2025-06-01T14:30; local time unless it names a zone).",
)
@click.option(
    "--before",
    "before_seq",
    type=click.IntRange(1, None),
    default=None,
    help="Only changes older than this change number (to page back, newest first).",
)
@click.option(
    "-n",
    "--limit",
    type=click.IntRange(1, config.CHANGELOG_MAX_LIMIT),
    default=config.CHANGELOG_DEFAULT_LIMIT,
    show_default=True,
    help="At most this many changes.",
)
@click.option("--oldest-first", is_flag=True, help="Oldest first (default: newest first).")
@click.option(
    "--with-before",
    is_flag=True,
    help="With --json: include each change's `before` (whole memory rows, for undo).",
)
@data_dir_option
@json_option
def log(
    *,
    memory_id: str | None,
    kinds: tuple[str, ...],
    since: str | None,
    before_seq: int | None,
    limit: int,
    oldest_first: bool,
    with_before: bool,
    as_json: bool,
) -> None:
    """The changelog: who changed which memory, when, newest first.

    Every change is listed with its number; `vestige undo NUMBER` reverses one.  The
    changelog keeps the newest entries only: when --since asks for trimmed ones, a warning
    says the list is not complete.

    \b
    Example:
      vestige log --memory 5558aac0-b14a-4cde-810e-c96509896539
      vestige log --since 120 --oldest-first --json
    """
    after_seq, since_time = _changes.parse_since(since)
    wanted = [k.strip() for v in kinds for k in v.split(",") if k.strip()]
    with open_store() as store:
        page = store.changes(
            memory_id=memory_id,
            kinds=wanted or None,
            after_seq=after_seq,
            before_seq=before_seq,
            since=since_time,
            limit=limit,
            oldest_first=oldest_first,
        )
    if page.gap is not None:
        _render.warn(page.gap.message)
    _render.emit(
        page.to_dict(with_before=with_before), as_json=as_json, text=lambda: _log_text(page)
    )
    if page.more and not as_json:
        click.echo(_next_page_hint(page, oldest_first=oldest_first), err=True)


def _log_text(page: ChangePage) -> None:
    if not page.changes:
        click.echo("No changes recorded yet." if page.newest_seq == 0 else "No changes match.")
        return
    _render.table(_changes.HEADERS, [_changes.row(c) for c in page.changes])


def _next_page_hint(page: ChangePage, *, oldest_first: bool) -> str:
    shown = len(page.changes)
    if oldest_first:
        last = page.changes[-1].seq
        return (
            f"More changes match than the {shown} shown. Next page: add --since {last} "
            "(with the same other options)."
        )
    last = page.changes[-1].seq
    return (
        f"More changes match than the {shown} shown. Next page: add --before {last} "
        "(with the same other options)."
    )


# -- vestige undo -------------------------------------------------------------------------


@click.command()
@click.argument("change_id", callback=_change_number)
@data_dir_option
@json_option
def undo(change_id: int, as_json: bool) -> None:
    """Reverse change CHANGE_ID (a number from `vestige log`), as a change of its own.

    Edits, updates, reinforcements, supersedes, promotes, demotes, deletes and undos can
    be undone.  It is refused, naming the change in the way, when a later change touched
    the same memory and was not itself undone: undo that one first.

    \b
    Example:
      vestige undo 42
    """
    with open_store() as store:
        done = store.undo(change_id)
    _render.emit(done.to_dict(with_before=False), as_json=as_json, text=lambda: _undo_text(done))


def _undo_text(done: Change) -> None:
    d = done.detail or {}
    removed = list(d.get("removed", []))
    brought_back = list(d.get("brought_back", []))
    put_back = [m for m, row in (done.before or {}).items() if row is not None and m not in removed]
    click.echo(f"Undid change #{done.undoes} ({d.get('undone_kind', '?')}) as change #{done.seq}.")
    _render.key_values(
        [
            *([("Put back as it was", _changes.ids(put_back))] if put_back else []),
            *([("Brought back", _changes.ids(brought_back))] if brought_back else []),
            *([("Removed", _changes.ids(removed))] if removed else []),
        ],
        indent=2,
    )
    click.echo(f"To reverse this undo: vestige undo {done.seq}")


# -- vestige edit, delete, purge ----------------------------------------------------------


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return _render.one_line(lines[0] if lines else "")


@click.command()
@click.argument("memory_id", metavar="ID")
@click.option("--content", default=None, help='The new content ("-" reads it from stdin).')
@click.option(
    "--tags",
    "tags",
    multiple=True,
    help='The new tags, comma-separated (repeatable); --tags "" removes every tag.',
)
@data_dir_option
@json_option
def edit(*, memory_id: str, content: str | None, tags: tuple[str, ...], as_json: bool) -> None:
    """Replace the content or the tags (or both) of memory ID.

    Its strength and history stay.  The changelog keeps the previous version, so
    `vestige undo` can put it back.

    \b
    Example:
      vestige edit 5558aac0-b14a-4cde-810e-c96509896539 --content "Deploys are on Mondays"
      vestige edit 5558aac0-b14a-4cde-810e-c96509896539 --content - --tags ops < note.txt
    """
    text = _stdin.read_text() if content == "-" else content
    labels = [t.strip() for v in tags for t in v.split(",") if t.strip()] if tags else None
    with open_store() as store:
        edited = store.edit(memory_id, content=text, tags=labels)
    _render.emit(edited.to_dict(), as_json=as_json, text=lambda: _edit_text(edited))


def _edit_text(e: Edited) -> None:
    _render.key_values(
        [
            ("Edited memory", e.memory.id),
            ("Content", _first_line(e.memory.content)),
            ("Tags", ", ".join(e.memory.tags) or None),
            ("Change", f"#{e.change_seq}"),
        ]
    )
    click.echo(f"To put the previous version back: vestige undo {e.change_seq}")


@click.command()
@click.argument("memory_id", metavar="ID")
@data_dir_option
@json_option
def delete(memory_id: str, as_json: bool) -> None:
    """Delete memory ID; the changelog keeps it, so `vestige undo` can bring it back.

    A memory it had superseded is visible again.  To remove a memory for good (a secret
    stored by mistake), use `vestige purge`.

    \b
    Example:
      vestige delete 5558aac0-b14a-4cde-810e-c96509896539
    """
    with open_store() as store:
        seq = store.delete(memory_id)
        entry = store.change(seq)
    back = list((entry.detail or {}).get("brought_back", []))
    data = {"id": memory_id, "deleted": True, "change_seq": seq, "brought_back": back}

    def text() -> None:
        click.echo(f"Deleted memory {data['id']}" + (f" (change #{seq})." if seq else "."))
        if back:
            click.echo(f"Brought back what it had superseded: {_changes.ids(back)}")
        if seq:
            click.echo(f"To bring it back: vestige undo {seq}")

    _render.emit(data, as_json=as_json, text=text)


@click.command()
@click.argument("memory_id", metavar="ID")
@click.option(
    "--yes", is_flag=True, help="Do not ask for confirmation (needed without a terminal)."
)
@data_dir_option
@json_option
def purge(memory_id: str, yes: bool, as_json: bool) -> None:
    """Remove memory ID for good: for a secret stored by mistake.  It cannot be undone.

    Its row, its words in the search index and its content in every changelog entry go,
    and SQLite's secure delete overwrites the freed pages; the changelog records only
    that a purge happened.  A deleted memory can be purged too.  Asks first unless --yes.
    Backups made earlier still hold it.

    \b
    Example:
      vestige purge 5558aac0-b14a-4cde-810e-c96509896539 --yes
    """
    if not yes:
        _confirm_purge(memory_id)
    with open_store() as store:
        report = store.purge(memory_id)
    _render.emit(report.to_dict(), as_json=as_json, text=lambda: _purge_text(report))
    if not report.checkpointed:
        _render.warn(
            "the purge is committed, but another process was reading the database, so "
            "SQLite could not yet copy it over the old pages: until the next checkpoint, "
            "vestige.db and its WAL may still hold the purged text. It happens by itself when "
            "no process reads (a vestige-mcp server checkpoints every minute and as it stops); "
            "`vestige doctor` lists who has the database open. Never delete vestige.db-wal "
            "by hand: that would undo the purge."
        )


def _confirm_purge(memory_id: str) -> None:
    """Show what would go and ask; refuse without a terminal to ask on."""
    if not sys.stdin.isatty():
        fail(
            "purge removes a memory for good and asks first, but stdin is not a terminal",
            f"Add --yes to purge without asking: vestige purge {memory_id} --yes",
            ExitCode.USAGE,
        )
    # Read, then close the store before asking: a prompt left open must not hold the database.
    with open_store() as store:
        try:
            what = f"memory {memory_id}: {_first_line(store.get(memory_id).content)!r}"
        except MemoryNotFound:
            if not store.changes(memory_id=memory_id, limit=1).changes:
                raise
            what = f"deleted memory {memory_id} (what the changelog still holds of it)"
    click.echo(f"This removes {what} for good; it cannot be undone.", err=True)
    click.confirm("Purge it?", abort=True, err=True)


def _purge_text(r: PurgeReport) -> None:
    click.echo(f"Purged memory {r.id}.")
    _render.key_values(
        [
            ("Was", "live" if r.was_live else "deleted already (only its history held it)"),
            ("Changelog entries redacted", r.changelog_entries_redacted),
            *([("Brought back", _changes.ids(r.brought_back))] if r.brought_back else []),
            ("Checkpointed", "yes" if r.checkpointed else "no (another process was reading)"),
        ],
        indent=2,
    )
    click.echo("Backups made before now still hold copies of it; delete those files if needed.")


COMMANDS = (log, undo, edit, delete, purge)
