"""The MCP tools: one small function each, calling ``Store`` off the event loop.

Arguments are typed and constrained in the signatures (the SDK validates them with pydantic
and returns the field and reason to the model).  What the store refuses arrives as a
``ToolError`` carrying the store's message and hint; an unexpected failure as a ToolError
naming the exception, with the traceback in the server log.  Never a bare "Error executing
tool".  Results are dicts, so every call returns structured content.

Every tool that writes takes the SDK's injected ``Context`` (never part of the input schema)
only to name its MCP client to the changelog (``client_of``).  Edits are offered, purge is
not: an agent can change and delete, which the changelog can take back, but only a person at
the CLI can destroy a memory for good.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

from mcp.server.mcpserver import Context  # noqa: TC002 (the SDK finds it at run time)
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from vestige import config
from vestige.changelog import ChangeKind
from vestige.errors import VestigeError
from vestige.server import results

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from mcp.server.mcpserver import MCPServer

    from vestige.server.app import ServerApp

log = logging.getLogger("vestige.server.tools")

MAX_SEARCH_LIMIT: Final = 100
MAX_TIMELINE_LIMIT: Final = 200

Content = Annotated[
    str,
    Field(
        min_length=1,
        max_length=config.MAX_CONTENT_BYTES,
        description="The text to remember: one fact, decision or pattern "
        f"(at most {config.MAX_CONTENT_BYTES:,} UTF-8 bytes).",
    ),
]
NodeType = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,49}$",
        description="Kind of memory: fact, concept, decision, pattern, event, note, ...",
    ),
]
Tag = Annotated[str, Field(min_length=1, max_length=config.MAX_TAG_CHARS)]
Tags = Annotated[
    list[Tag] | None,
    Field(description=f"Labels to filter by later (at most {config.MAX_TAGS})."),
]
Source = Annotated[
    str | None,
    Field(max_length=config.MAX_SOURCE_CHARS, description="Where it came from (file, URL)."),
]
MemoryId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="A memory id, as returned by ingest, smart_ingest or search.",
    ),
]
Detail = Annotated[
    Literal["brief", "summary", "full"],
    Field(description="brief: ids and scores; summary: plus content; full: every field."),
]
Reason = Annotated[str | None, Field(max_length=1000, description="Why (kept in the server log).")]
#: A changelog entry kind.  The store checks the value (one place for the rule); the schema
#: lists the choices for the model.
KindName = Annotated[str, Field(json_schema_extra={"enum": [k.value for k in ChangeKind]})]
ChangeSeq = Annotated[
    int, Field(ge=1, description="A change's seq, as listed by memory_changelog.")
]


def client_of(ctx: Context[Any, Any]) -> str | None:
    """The MCP client's name, from initialize (or a 2026-style request's envelope); else None."""
    params = ctx.request_context.session.client_params
    return params.client_info.name if params is not None else None


def _guard(fn: Callable[..., Awaitable[dict[str, Any]]]) -> Callable[..., Any]:
    """Turn every failure into a ToolError the model can read and act on."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return await fn(*args, **kwargs)
        except ToolError:
            raise
        except VestigeError as err:
            raise ToolError(str(err)) from err
        except Exception as err:
            log.exception("tool %s failed unexpectedly", fn.__name__)
            raise ToolError(
                f"internal error ({type(err).__name__}: {err}); nothing was changed by this "
                "call unless it reported success. The server log has the details."
            ) from err

    return wrapper


def register(mcp: MCPServer[Any], app: ServerApp) -> None:
    store = app.store
    read_only = ToolAnnotations(read_only_hint=True)

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=False, idempotent_hint=False))
    @_guard
    async def ingest(
        ctx: Context[Any, Any],
        content: Content,
        node_type: NodeType = "fact",
        tags: Tags = None,
        source: Source = None,
    ) -> dict[str, Any]:
        """Store a new memory exactly as given (no duplicate check; see smart_ingest)."""
        memory = await app.run(
            store.ingest,
            content,
            node_type=node_type,
            tags=tags,
            source=source,
            client=client_of(ctx),
        )
        return {"id": memory.id, "memory": memory.to_dict()}

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=False))
    @_guard
    async def smart_ingest(
        *,
        ctx: Context[Any, Any],
        content: Content,
        node_type: NodeType = "fact",
        tags: Tags = None,
        source: Source = None,
        force_create: Annotated[
            bool, Field(description="Always create a new memory, skipping the similarity check.")
        ] = False,
    ) -> dict[str, Any]:
        """Remember something, folding it into a memory it repeats, updates or corrects.

        decision is create, reinforce (same fact again), update (text appended) or supersede
        (a correction: the old memory is demoted and superseded_id names it).
        """
        result = await app.run(
            store.smart_ingest,
            content,
            node_type=node_type,
            tags=tags,
            source=source,
            force_create=force_create,
            client=client_of(ctx),
        )
        return {"id": result.memory.id, **result.to_dict()}

    @mcp.tool(annotations=read_only)
    @_guard
    async def search(
        *,
        query: Annotated[
            str,
            Field(
                min_length=1,
                max_length=config.MAX_QUERY_CHARS,
                description="Words to look for. Any text is safe: operators are ignored.",
            ),
        ],
        limit: Annotated[int, Field(ge=1, le=MAX_SEARCH_LIMIT)] = 10,
        min_retention: Annotated[
            float, Field(ge=0.0, le=1.0, description="Skip memories weaker than this.")
        ] = 0.0,
        node_type: NodeType | None = None,
        tags: Annotated[
            list[Tag] | None, Field(description="Only memories carrying all of these tags.")
        ] = None,
        include_superseded: Annotated[
            bool,
            Field(
                description="Also return memories a correction superseded (each ranked "
                "below the memory that superseded it; superseded_by names it)."
            ),
        ] = False,
        detail_level: Detail = "summary",
    ) -> dict[str, Any]:
        """Find memories by keywords, ranked by relevance blended with memory strength.

        Memories that a correction superseded are left out unless include_superseded.
        """
        hits = await app.run(
            store.search,
            query,
            limit=limit,
            min_retention=min_retention,
            node_type=node_type,
            tags=tags,
            include_superseded=include_superseded,
        )
        return {
            "query": query,
            "detail_level": detail_level,
            "total": len(hits),
            "results": [results.hit(h, detail_level) for h in hits],
        }

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True))
    @_guard
    async def memory(
        ctx: Context[Any, Any],
        action: Annotated[
            Literal["get", "delete", "state"],
            Field(
                description="get: the whole memory; delete: remove it for good; state: how "
                "accessible it is (active, dormant, silent or unavailable)."
            ),
        ],
        id: MemoryId,  # the original tool's parameter name
    ) -> dict[str, Any]:
        """Read, delete, or check the accessibility state of one memory by id."""
        if action == "delete":
            await app.run(store.delete, id, client=client_of(ctx))
            return {"action": "delete", "id": id, "deleted": True}
        found = await app.run(store.get, id)
        if action == "state":
            return {"action": "state", **results.state(found)}
        return {"action": "get", "memory": found.to_dict()}

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=False))
    @_guard
    async def promote_memory(
        ctx: Context[Any, Any], id: MemoryId, reason: Reason = None
    ) -> dict[str, Any]:
        """The memory helped: it ranks higher from now on (odds of retention x1.8, e.g.
        0.73 -> 0.83), counts as used now, and fades slower (stability x1.5).

        Kept by every decay pass; each promote adds to the last.
        """
        change = await app.run(store.promote, id, client=client_of(ctx))
        log.info("promoted %s: %s", id, reason or "no reason given")
        return {"action": "promote", "reason": reason, **change.to_dict()}

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=False))
    @_guard
    async def demote_memory(
        ctx: Context[Any, Any], id: MemoryId, reason: Reason = None
    ) -> dict[str, Any]:
        """The memory misled: it ranks lower from now on (odds of retention halved, e.g.
        0.73 -> 0.57) and fades faster (stability x0.5).

        Kept by every decay pass; each demote adds to the last.  It is not deleted: it stays
        searchable but ranks lower.
        """
        change = await app.run(store.demote, id, client=client_of(ctx))
        log.info("demoted %s: %s", id, reason or "no reason given")
        return {"action": "demote", "reason": reason, **change.to_dict()}

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=False))
    @_guard
    async def edit_memory(
        ctx: Context[Any, Any],
        id: MemoryId,
        content: Annotated[
            str | None,
            Field(
                min_length=1,
                max_length=config.MAX_CONTENT_BYTES,
                description="The new text, replacing the old (omit to keep it).",
            ),
        ] = None,
        tags: Annotated[
            list[Tag] | None,
            Field(
                description=f"The new tags, replacing the old (omit to keep them; at most "
                f"{config.MAX_TAGS})."
            ),
        ] = None,
    ) -> dict[str, Any]:
        """Correct a memory in place: replace its content or tags (or both) by id.

        Its strength is unchanged.  The previous value is kept in the changelog
        (memory_changelog with include_before shows it; memory_undo with change_seq puts
        it back).  To record that a fact changed over time, smart_ingest the new one instead.
        """
        edited = await app.run(store.edit, id, content=content, tags=tags, client=client_of(ctx))
        return {"id": edited.memory.id, **edited.to_dict()}

    @mcp.tool(annotations=read_only)
    @_guard
    async def memory_changelog(
        *,
        memory_id: Annotated[
            str | None,
            Field(
                min_length=1,
                max_length=128,
                pattern=r"^[A-Za-z0-9_.:-]+$",
                description="Only changes of this memory (deleted and purged ones too).",
            ),
        ] = None,
        kinds: Annotated[
            list[KindName] | None, Field(description="Only changes of these kinds.")
        ] = None,
        since_seq: Annotated[
            int | None,
            Field(
                ge=0,
                description="Only changes after this seq (e.g. newest_seq of an earlier call).",
            ),
        ] = None,
        since: Annotated[
            str | None, Field(description="Only changes after this ISO 8601 date or time.")
        ] = None,
        before_seq: Annotated[
            int | None,
            Field(
                ge=1,
                description="Only changes before this seq: to page back, pass the last seq "
                "of the previous page.",
            ),
        ] = None,
        limit: Annotated[
            int, Field(ge=1, le=config.CHANGELOG_MAX_LIMIT)
        ] = config.CHANGELOG_DEFAULT_LIMIT,
        oldest_first: bool = False,
        include_before: Annotated[
            bool,
            Field(
                description="Also return before: the whole rows a change replaced or removed "
                "(content included), which memory_undo puts back."
            ),
        ] = False,
    ) -> dict[str, Any]:
        """What changed in the memory, who changed it (client, process, transport) and when.

        Newest first, at most limit entries; more says whether others matched.  newest_seq
        is the latest seq of the whole log: pass it as since_seq next time to get only what
        is new.  Old entries are trimmed; if some you asked for are gone, gap says so.
        """
        page = await app.run(
            store.changes,
            memory_id=memory_id,
            kinds=kinds,
            after_seq=since_seq,
            before_seq=before_seq,
            since=since,
            limit=limit,
            oldest_first=oldest_first,
        )
        return page.to_dict(with_before=include_before)

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=False))
    @_guard
    async def memory_undo(ctx: Context[Any, Any], change_seq: ChangeSeq) -> dict[str, Any]:
        """Reverse one change listed by memory_changelog: a reinforce, update, edit,
        supersede, promote, demote, delete, or an earlier undo.

        Recorded as a change of its own (which can be undone in turn).  Refused when a later
        change touched the same memory and was not itself undone: undo that one first.
        """
        change = await app.run(store.undo, change_seq, client=client_of(ctx))
        return {"undone_seq": change_seq, "change": change.to_dict(with_before=False)}

    @mcp.tool(annotations=read_only)
    @_guard
    async def memory_timeline(
        *,
        start: Annotated[
            str | None, Field(description="ISO 8601 date or time; default: 7 days before end.")
        ] = None,
        end: Annotated[
            str | None, Field(description="ISO 8601 date or time; default: now.")
        ] = None,
        node_type: NodeType | None = None,
        tags: Annotated[
            list[Tag] | None, Field(description="Only memories with all of these.")
        ] = None,
        limit: Annotated[int, Field(ge=1, le=MAX_TIMELINE_LIMIT)] = 50,
        detail_level: Detail = "summary",
    ) -> dict[str, Any]:
        """Memories created in a time window, newest first, grouped by day (UTC)."""
        days = await app.run(
            store.timeline, start=start, end=end, node_type=node_type, tags=tags, limit=limit
        )
        return {
            "total": sum(len(d.memories) for d in days),
            "days": [
                {
                    "date": d.date,
                    "count": len(d.memories),
                    "memories": [results.timeline_item(m, detail_level) for m in d.memories],
                }
                for d in days
            ],
        }

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=False, idempotent_hint=True))
    @_guard
    async def consolidate(ctx: Context[Any, Any]) -> dict[str, Any]:
        """Run the decay pass now: recompute every memory's strengths on the forgetting curve.

        One process at a time.  Named after the original Vestige's tool.
        """
        report = await app.run(store.decay, client=client_of(ctx))
        return report.to_dict()

    @mcp.tool(annotations=read_only)
    @_guard
    async def stats() -> dict[str, Any]:
        """Counts, average strengths, retention bands and memory states of the whole store."""
        return await app.run(results.fresh_wal, app, "stats", lambda: results.stats(app))

    @mcp.tool(annotations=read_only)
    @_guard
    async def health_check() -> dict[str, Any]:
        """Memory health (empty, healthy, degraded, critical or damaged), warnings, and server."""
        health = await app.run(results.fresh_wal, app, "health", lambda: store.health().to_dict())
        return {**health, "server": app.describe()}
