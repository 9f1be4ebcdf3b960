"""The MCP tools: one small function each, calling ``Store`` off the event loop.

Arguments are typed and constrained in the signatures (the SDK validates them with pydantic
and returns the field and reason to the model).  What the store refuses arrives as a
``ToolError`` carrying the store's message and hint; an unexpected failure as a ToolError
naming the exception, with the traceback in the server log.  Never a bare "Error executing
tool".  Results are dicts, so every call returns structured content.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from vestige import config
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
        content: Content,
        node_type: NodeType = "fact",
        tags: Tags = None,
        source: Source = None,
    ) -> dict[str, Any]:
        """Store a new memory exactly as given (no duplicate check; see smart_ingest)."""
        memory = await app.run(store.ingest, content, node_type=node_type, tags=tags, source=source)
        return {"id": memory.id, "memory": memory.to_dict()}

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=False))
    @_guard
    async def smart_ingest(
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
            await app.run(store.delete, id)
            return {"action": "delete", "id": id, "deleted": True}
        found = await app.run(store.get, id)
        if action == "state":
            return {"action": "state", **results.state(found)}
        return {"action": "get", "memory": found.to_dict()}

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=False))
    @_guard
    async def promote_memory(id: MemoryId, reason: Reason = None) -> dict[str, Any]:
        """The memory helped: it ranks higher from now on (odds of retention x1.8, e.g.
        0.73 -> 0.83), counts as used now, and fades slower (stability x1.5).

        Kept by every decay pass; each promote adds to the last.
        """
        change = await app.run(store.promote, id)
        log.info("promoted %s: %s", id, reason or "no reason given")
        return {"action": "promote", "reason": reason, **change.to_dict()}

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=False))
    @_guard
    async def demote_memory(id: MemoryId, reason: Reason = None) -> dict[str, Any]:
        """The memory misled: it ranks lower from now on (odds of retention halved, e.g.
        0.73 -> 0.57) and fades faster (stability x0.5).

        Kept by every decay pass; each demote adds to the last.  It is not deleted: it stays
        searchable but ranks lower.
        """
        change = await app.run(store.demote, id)
        log.info("demoted %s: %s", id, reason or "no reason given")
        return {"action": "demote", "reason": reason, **change.to_dict()}

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
    async def consolidate() -> dict[str, Any]:
        """Run the decay pass now: recompute every memory's strengths on the forgetting curve.

        One process at a time.  Named after the original Vestige's tool.
        """
        report = await app.run(store.decay)
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
