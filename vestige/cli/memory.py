"""Reading and adding memories: stats, search, health, ingest.

Read commands open the store with ``create=False`` (they never create a database) and
answer from one read snapshot, so a server writing at the same time cannot tear a result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from vestige import humanize
from vestige.cli import _render, _stdin
from vestige.cli._exit import ExitCode
from vestige.cli._options import data_dir_option, json_option, open_store

if TYPE_CHECKING:
    from vestige.models import Health, IngestResult, SearchHit, Stats


@click.command()
@data_dir_option
@json_option
def stats(as_json: bool) -> None:
    """How many memories there are, how strong, and how big the database is.

    \b
    Example:
      vestige stats --json
    """
    with open_store() as store:
        result = store.stats()
    _render.emit(result.to_dict(), as_json=as_json, text=lambda: _stats_text(result))


def _stats_text(s: Stats) -> None:
    total = s.total_memories
    _render.key_values(
        [
            ("Total memories", total),
            ("Due for review", s.due_for_review),
            ("Average retention", _render.percent(s.average_retention)),
            ("Average storage strength", f"{s.average_storage_strength:.2f}"),
            ("Average retrieval strength", f"{s.average_retrieval_strength:.2f}"),
            ("Oldest memory", s.oldest_memory),
            ("Newest memory", s.newest_memory),
            ("Node types", ", ".join(f"{k} {v}" for k, v in s.node_types.items()) or None),
            (
                "Retention bands",
                ", ".join(
                    f"{band} {n} ({_render.percent(n / total) if total else '0.0%'})"
                    for band, n in s.retention_bands.items()
                ),
            ),
            ("Database size", humanize.human_bytes(s.database_bytes)),
            ("WAL size", humanize.human_bytes(s.wal_bytes)),
            ("Schema version", s.schema_version),
        ]
    )


@click.command()
@click.argument("query")
@click.option("-n", "--limit", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option(
    "--min-retention",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    show_default=True,
    help="Only memories at least this strong (0-1).",
)
@click.option("--node-type", default=None, help="Only this kind of memory (fact, note, ...).")
@click.option("--tag", "tags", multiple=True, help="Only memories with this tag (repeatable).")
@data_dir_option
@json_option
def search(
    *,
    query: str,
    limit: int,
    min_retention: float,
    node_type: str | None,
    tags: tuple[str, ...],
    as_json: bool,
) -> None:
    """Full-text search over the memories, best match first.

    \b
    Example:
      vestige search "deploy friday" --tag ops -n 5
    """
    with open_store() as store:
        hits = store.search(
            query,
            limit=limit,
            min_retention=min_retention,
            node_type=node_type,
            tags=list(tags) or None,
        )
    data = {"query": query, "total": len(hits), "results": [h.to_dict() for h in hits]}
    _render.emit(data, as_json=as_json, text=lambda: _search_text(hits))


def _search_text(hits: list[SearchHit]) -> None:
    if not hits:
        click.echo("No memories match.")
        return
    _render.table(
        ("SCORE", "ID", "TYPE", "RETENTION", "CONTENT"),
        [
            (
                f"{h.combined_score:.3f}",
                h.memory.id,
                h.memory.node_type,
                _render.percent(h.memory.retention_strength),
                _render.one_line(h.memory.content),
            )
            for h in hits
        ],
    )


@click.command()
@data_dir_option
@json_option
def health(as_json: bool) -> None:
    """Memory health (retention) and the database's own checks.

    Exits 3 when the database is damaged.  For processes and locks, run `vestige doctor`.

    \b
    Example:
      vestige health --json
    """
    with open_store() as store:
        result = store.health()
    _render.emit(result.to_dict(), as_json=as_json, text=lambda: _health_text(result))
    if result.status == "damaged":
        raise click.exceptions.Exit(int(ExitCode.UNHEALTHY))


def _health_text(h: Health) -> None:
    _render.key_values(
        [
            ("Status", h.status.upper()),
            ("Total memories", h.total_memories),
            ("Average retention", _render.percent(h.average_retention)),
            ("Due for review", h.due_for_review),
            ("SQLite", h.sqlite_version),
            ("Journal mode", h.journal_mode),
            ("quick_check", h.quick_check),
            ("WAL size", humanize.human_bytes(h.wal_bytes)),
            ("Schema version", h.schema_version),
        ]
    )
    for w in h.warnings:
        click.echo(f"  ! {w}")


def _split_tags(values: tuple[str, ...]) -> list[str]:
    return [t.strip() for v in values for t in v.split(",") if t.strip()]


@click.command()
@click.argument("text")
@click.option(
    "--tags", "tags", multiple=True, help="Comma-separated tags; the option can be repeated."
)
@click.option("--node-type", default="fact", show_default=True, help="The kind of memory.")
@click.option("--source", default=None, help="Where it came from (a URL, a file, a person).")
@click.option(
    "--force-create", is_flag=True, help="Always store a new memory; skip duplicate detection."
)
@data_dir_option
@json_option
def ingest(
    *,
    text: str,
    tags: tuple[str, ...],
    node_type: str,
    source: str | None,
    force_create: bool,
    as_json: bool,
) -> None:
    """Remember TEXT ("-" reads it from stdin), folding it into a memory it repeats.

    Creates the database if the data directory has none yet.

    \b
    Example:
      vestige ingest "The staging DB is read-only on Fridays" --tags ops,db
    """
    content = _stdin.read_text() if text == "-" else text
    with open_store(create=True) as store:
        result = store.smart_ingest(
            content,
            node_type=node_type,
            tags=_split_tags(tags),
            source=source,
            force_create=force_create,
        )
    _render.emit(result.to_dict(), as_json=as_json, text=lambda: _ingest_text(result))


def _ingest_text(r: IngestResult) -> None:
    _render.key_values(
        [
            ("Decision", r.decision.value),
            ("Memory id", r.memory.id),
            ("Similarity", f"{r.similarity:.2f}"),
            ("Reason", r.reason),
            *([("Superseded", r.superseded_id)] if r.superseded_id else []),
        ]
    )


COMMANDS = (stats, search, health, ingest)
