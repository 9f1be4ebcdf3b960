"""What the server offers besides tools: three JSON resources, and no prompts.

A client that lists resources finds ``memory://stats`` (what the stats tool returns),
``memory://recent`` (the newest memories, their text cut as at summary detail) and
``memory://changes`` (the newest changelog entries), each read fresh on every read.  A
client may subscribe to any of them and is told when a change by any process made it stale
(:mod:`vestige.server.notify`).  The SDK advertises prompts whether or not any exist; a server that
advertises what it never serves sends clients looking for nothing, so ``withdraw_prompts``
takes the prompt methods away (a client asking gets "method not found").
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

import pydantic_core
from mcp.server.mcpserver.resources import FunctionResource, Resource

from vestige import config
from vestige.server import results
from vestige.server.notify import CHANGES_URI, RECENT_URI, STATS_URI

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

    from vestige.server.app import ServerApp

log = logging.getLogger("vestige.server")

#: Memories listed by memory://recent, newest first.
RECENT_MEMORIES: Final = 20
#: Changelog entries listed by memory://changes, newest first.
RECENT_CHANGES: Final = config.CHANGELOG_DEFAULT_LIMIT
JSON: Final = "application/json"
#: The beginning of time for "newest, whatever their age".
_EPOCH: Final = "0001-01-01"


def build(app: ServerApp) -> list[Resource]:
    async def stats() -> str:
        found = await app.run(results.fresh_wal, app, "stats", lambda: results.stats(app))
        return _json(found)

    async def recent() -> str:
        days = await app.run(app.store.timeline, start=_EPOCH, limit=RECENT_MEMORIES)
        shown = results.timeline(days, "summary")
        memories = [m for day in shown.days for m in day.memories]
        return _json(
            {
                "count": len(memories),
                "memories": memories,
                "truncated": shown.truncated,
                "hint": shown.hint,
            }
        )

    async def changes() -> str:
        page = await app.run(app.store.changes, limit=RECENT_CHANGES)
        shown = results.changelog(page, with_before=False).model_dump(mode="json")
        shown["hint"] = shown["hint"] or (
            "for exactly what came after a change you saw, call memory_changelog with "
            "since_seq set to its seq"
        )
        return _json(shown)

    return [
        FunctionResource.from_function(
            stats,
            uri=STATS_URI,
            name="stats",
            title="Memory statistics",
            description="Counts, average strengths, retention bands and memory states "
            "(the stats tool's result), read fresh.",
            mime_type=JSON,
        ),
        FunctionResource.from_function(
            recent,
            uri=RECENT_URI,
            name="recent",
            title="Recent memories",
            description=f"The {RECENT_MEMORIES} newest memories, newest first, each with its "
            f"id, node_type, tags, created_at and the first {results.SUMMARY_CONTENT_CHARS} "
            "characters of its text (content_truncated says when cut).",
            mime_type=JSON,
        ),
        FunctionResource.from_function(
            changes,
            uri=CHANGES_URI,
            name="changes",
            title="Recent changes",
            description=f"The {RECENT_CHANGES} newest changelog entries, newest first (seq, "
            "time, kind, memory ids, who), and newest_seq.  Subscribe to be told when any "
            "process changes the memory; then memory_changelog with since_seq gives exactly "
            "what came after the last seq you saw (gap says when some of it is gone).",
            mime_type=JSON,
        ),
    ]


def _json(value: Any) -> str:
    return pydantic_core.to_json(value).decode()


def withdraw_prompts(mcp: MCPServer[Any]) -> None:
    """Stop advertising prompts: the SDK registers their handlers unconditionally.

    The advertised capabilities are derived from the registered handlers, so removing the
    two handlers is what takes ``prompts`` out of ``initialize`` and ``server/discover``.
    """
    handlers = getattr(mcp._lowlevel_server, "_request_handlers", None)
    if not isinstance(handlers, dict):
        log.warning("cannot withdraw the prompts capability from this MCP SDK")
        return
    for method in ("prompts/list", "prompts/get"):
        handlers.pop(method, None)
