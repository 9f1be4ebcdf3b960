"""The MCP tools: one small function each, calling ``Store`` off the event loop.

Arguments are typed and constrained in the signatures; ``strict_tools`` makes every tool
refuse unknown keys and answer a bad value with one line naming the argument and what to
send.  What the store refuses arrives as a ``ToolError`` carrying the store's message and
hint; an unexpected failure as a ToolError naming the exception, with the traceback in the
server log.  Never "Error executing tool".  Each tool returns a model of
``result_models``, which the SDK publishes as its ``outputSchema``.

Annotations are honest: reads say ``readOnlyHint``; ``destructiveHint`` is true only for a
call that can remove a memory or replace what it says (delete_memory, edit_memory,
memory_undo), false for one that adds memories or text or only adjusts strengths; no tool
reaches beyond the local store (``openWorldHint: false``).

Every tool that writes takes the SDK's injected ``Context`` (never part of the input schema)
to name its MCP client to the changelog (``client_of``) and to read the call's request key
from ``params._meta`` (``request_key_of``; a proxy's retry after its owner died carries
one): a write sent again with its key changes nothing and gets its first answer, exactly,
recorded in the write's own transaction (``vestige.request_keys``).  consolidate ignores
the key: its decay pass runs in many transactions, and running it again is harmless.

Edits are offered, purge is not: an agent can change and delete, which the changelog can
take back, but only a person at the CLI can destroy a memory for good.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Final, Generic, Literal, TypeVar

from mcp.server.mcpserver import Context  # noqa: TC002 (the SDK finds it at run time)
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import AfterValidator, BaseModel, Field

from vestige import config, request_keys
from vestige.changelog import ChangeKind
from vestige.errors import VestigeError
from vestige.server import results
from vestige.server.argument_errors import ID_PATTERN, NODE_TYPE_PATTERN
from vestige.server.options import REQUEST_KEY_META
from vestige.server.result_models import (  # the SDK reads return annotations at run time
    ChangelogPage,
    ConsolidateResult,
    DeleteResult,
    EditResult,
    HealthResult,
    IngestResult,
    MemoryAnswer,
    SearchResult,
    SmartIngestResult,
    StatsResult,
    StrengthResult,
    TimelineResult,
    UndoResult,
)
from vestige.server.strict_tools import StrictTool, strict_tool

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from vestige.models import StrengthChange
    from vestige.server.app import ServerApp

    Adder = Callable[[ToolAnnotations], Callable[[Callable[..., Awaitable[Any]]], None]]

log = logging.getLogger("vestige.server.tools")
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

MAX_SEARCH_LIMIT: Final = 100
DEFAULT_SEARCH_LIMIT: Final = 10
MAX_TIMELINE_LIMIT: Final = 200
DEFAULT_TIMELINE_LIMIT: Final = 50

#: No maxLength: the limit is in UTF-8 bytes, which JSON Schema cannot state, and a length
#: in characters would promise what the store refuses (it counts the bytes, one place).
Content = Annotated[
    str,
    Field(
        min_length=1,
        description="The text to remember: one fact, decision or pattern "
        f"(at most {config.MAX_CONTENT_BYTES:,} bytes of UTF-8; the server counts bytes).",
    ),
]
NodeType = Annotated[
    str,
    Field(
        pattern=NODE_TYPE_PATTERN,
        description="Kind of memory: fact, concept, decision, pattern, event, note, ...",
    ),
]
Tag = Annotated[str, Field(min_length=1, max_length=config.MAX_TAG_CHARS)]
Tags = Annotated[
    list[Tag] | None,
    Field(
        max_length=config.MAX_TAGS,
        description=f"Labels to filter by later (at most {config.MAX_TAGS}).",
    ),
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
        pattern=ID_PATTERN,
        description="A memory id, as returned by ingest, smart_ingest or search.",
    ),
]
Detail = Annotated[
    Literal["brief", "summary", "full"],
    Field(
        description="brief: ids and scores; summary: plus the text, cut to its first "
        f"{results.SUMMARY_CONTENT_CHARS} characters; full: every field, the whole text."
    ),
]
Reason = Annotated[str | None, Field(max_length=1000, description="Why (kept in the server log).")]
#: A changelog entry kind.  The store checks the value (one place for the rule); the schema
#: lists the choices for the model.
KindName = Annotated[str, Field(json_schema_extra={"enum": [k.value for k in ChangeKind]})]
#: The largest seq SQLite can hold: a larger number is refused by its argument's name.
MAX_SEQ: Final = 2**63 - 1
ChangeSeq = Annotated[
    int, Field(ge=1, le=MAX_SEQ, description="A change's seq, as listed by memory_changelog.")
]
#: Longer than any ISO 8601 date or time; a longer value is refused unread, not quoted back.
MAX_TIME_CHARS: Final = 64


def _distinct(values: list[str]) -> list[str]:
    if len(set(values)) < len(values):
        raise ValueError("a kind appears twice")
    return values


Kinds = Annotated[
    Annotated[
        list[KindName],
        Field(max_length=len(ChangeKind), json_schema_extra={"uniqueItems": True}),
        AfterValidator(_distinct),
    ]
    | None,
    Field(description="Only changes of these kinds (each at most once)."),
]

When = Annotated[str | None, Field(max_length=MAX_TIME_CHARS)]


def client_of(ctx: Context[Any, Any]) -> str | None:
    """The MCP client's name, from initialize (or a 2026-style request's envelope); else None."""
    params = ctx.request_context.session.client_params
    return params.client_info.name if params is not None else None


def request_key_of(ctx: Context[Any, Any]) -> str | None:
    """The call's request key from ``params._meta[REQUEST_KEY_META]``, checked; else None.

    The SDK parses ``_meta`` into ``request_context.meta``, keeping keys it does not know
    (a ``_meta`` it cannot parse fails the whole request before any tool runs).
    """
    meta: Mapping[str, Any] | None = ctx.request_context.meta  # an open map (extra_items)
    if meta is None or REQUEST_KEY_META not in meta:
        return None
    return request_keys.check_key(meta[REQUEST_KEY_META])


@dataclass(frozen=True, slots=True)
class _Call(Generic[T, M]):
    """A write tool's call: its name and arguments, and how a store result becomes its answer."""

    name: str
    arguments: dict[str, Any]
    answer: Callable[[T], M]
    model: type[M]


async def _write(
    app: ServerApp, ctx: Context[Any, Any], call: _Call[T, M], fn: Callable[..., T], **kwargs: Any
) -> M:
    """Run the store write ``fn(**kwargs)`` for tool call ``call``: its answer.

    With a request key, the answer (``call.answer(result)`` as JSON) is recorded in the
    write's transaction, and a repeat of the key is answered with it, validated as
    ``call.model``: the same structured content and text as the first time.  A bad key is
    refused before anything runs.
    """
    key = request_key_of(ctx)
    client = client_of(ctx)
    if key is None:
        answer = call.answer(await app.run(fn, client=client, **kwargs))
        app.wrote()
        return answer
    guard = request_keys.RequestKey(
        key,
        request_keys.fingerprint(call.name, call.arguments),
        lambda result: call.answer(result).model_dump_json(),
    )
    try:
        result = await app.run(fn, client=client, request_key=guard, **kwargs)
        app.wrote()
    except request_keys.RequestRepeated as repeat:
        log.info("%s: request key %s seen before; answered as the first time", call.name, key)
        return call.model.model_validate_json(repeat.answer)
    return call.answer(result)


def _guard(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    """Turn every failure into a ToolError the model can read and act on."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
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


READ: Final = ToolAnnotations(read_only_hint=True, open_world_hint=False)


def _writes(*, destructive: bool, idempotent: bool) -> ToolAnnotations:
    return ToolAnnotations(
        read_only_hint=False,
        destructive_hint=destructive,
        idempotent_hint=idempotent,
        open_world_hint=False,
    )


def build(app: ServerApp) -> list[StrictTool]:
    """Every tool of the server, bound to ``app``: the writes, then the reads."""
    tools: list[StrictTool] = []

    def tool(annotations: ToolAnnotations) -> Callable[[Callable[..., Awaitable[Any]]], None]:
        def add(fn: Callable[..., Awaitable[Any]]) -> None:
            tools.append(strict_tool(_guard(fn), annotations))

        return add

    _writes_of(app, tool)
    _reads_of(app, tool)
    return tools


def _writes_of(app: ServerApp, tool: Adder) -> None:
    store = app.store

    @tool(_writes(destructive=False, idempotent=False))
    async def ingest(
        ctx: Context[Any, Any],
        content: Content,
        node_type: NodeType = "fact",
        tags: Tags = None,
        source: Source = None,
    ) -> IngestResult:
        """Store a new memory exactly as given (no duplicate check; see smart_ingest)."""
        args = {"content": content, "node_type": node_type, "tags": tags, "source": source}
        return await _write(
            app,
            ctx,
            _Call(
                "ingest",
                args,
                lambda memory: IngestResult(id=memory.id, memory=results.record(memory)),
                IngestResult,
            ),
            store.ingest,
            **args,
        )

    @tool(_writes(destructive=False, idempotent=False))
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
    ) -> SmartIngestResult:
        """Remember something, folding it into a memory it repeats, updates or corrects.

        decision is create, reinforce (same fact again), update (text appended) or supersede
        (a correction: the old memory is demoted and superseded_id names it).  Nothing is
        removed or overwritten.
        """
        args = {
            "content": content,
            "node_type": node_type,
            "tags": tags,
            "source": source,
            "force_create": force_create,
        }
        return await _write(
            app,
            ctx,
            _Call(
                "smart_ingest",
                args,
                lambda result: SmartIngestResult.model_validate(
                    {"id": result.memory.id, **result.to_dict()}
                ),
                SmartIngestResult,
            ),
            store.smart_ingest,
            **args,
        )

    @tool(_writes(destructive=True, idempotent=True))
    async def delete_memory(ctx: Context[Any, Any], id: MemoryId) -> DeleteResult:
        """Delete one memory by id.

        The deleted row is kept in the changelog: memory_undo with the returned change_seq
        puts it back.  (The original Vestige's memory tool did this as action delete.)
        """
        return await _write(
            app,
            ctx,
            _Call(
                "delete_memory",
                {"id": id},
                lambda seq: DeleteResult(id=id, deleted=True, change_seq=seq),
                DeleteResult,
            ),
            store.delete,
            memory_id=id,
        )

    @tool(_writes(destructive=False, idempotent=False))
    async def promote_memory(
        ctx: Context[Any, Any], id: MemoryId, reason: Reason = None
    ) -> StrengthResult:
        """The memory helped: it ranks higher from now on (odds of retention x1.8, e.g.
        0.73 -> 0.83), counts as used now, and fades slower (stability x1.5).

        Kept by every decay pass; each promote adds to the last.
        """
        answer = await _write(
            app,
            ctx,
            _Call(
                "promote_memory",
                {"id": id, "reason": reason},
                functools.partial(_strength_result, "promote", reason),
                StrengthResult,
            ),
            store.promote,
            memory_id=id,
        )
        log.info("promoted %s: %s", id, reason or "no reason given")
        return answer

    @tool(_writes(destructive=False, idempotent=False))
    async def demote_memory(
        ctx: Context[Any, Any], id: MemoryId, reason: Reason = None
    ) -> StrengthResult:
        """The memory misled: it ranks lower from now on (odds of retention halved, e.g.
        0.73 -> 0.57) and fades faster (stability x0.5).

        Kept by every decay pass; each demote adds to the last.  It is not deleted: it stays
        searchable but ranks lower.
        """
        answer = await _write(
            app,
            ctx,
            _Call(
                "demote_memory",
                {"id": id, "reason": reason},
                functools.partial(_strength_result, "demote", reason),
                StrengthResult,
            ),
            store.demote,
            memory_id=id,
        )
        log.info("demoted %s: %s", id, reason or "no reason given")
        return answer

    @tool(_writes(destructive=True, idempotent=False))
    async def edit_memory(
        ctx: Context[Any, Any],
        id: MemoryId,
        content: Annotated[
            str | None,
            Field(
                min_length=1,
                description="The new text, replacing the old (omit to keep it; at most "
                f"{config.MAX_CONTENT_BYTES:,} bytes of UTF-8).",
            ),
        ] = None,
        tags: Annotated[
            list[Tag] | None,
            Field(
                max_length=config.MAX_TAGS,
                description=f"The new tags, replacing the old (omit to keep them; at most "
                f"{config.MAX_TAGS}).",
            ),
        ] = None,
    ) -> EditResult:
        """Correct a memory in place: replace its content or tags (or both) by id.

        Its strength is unchanged.  The previous value is kept in the changelog
        (memory_changelog with include_before shows it; memory_undo with change_seq puts
        it back).  To record that a fact changed over time, smart_ingest the new one instead.
        """
        return await _write(
            app,
            ctx,
            _Call(
                "edit_memory",
                {"id": id, "content": content, "tags": tags},
                lambda edited: EditResult(
                    id=edited.memory.id,
                    memory=results.record(edited.memory),
                    change_seq=edited.change_seq,
                ),
                EditResult,
            ),
            store.edit,
            memory_id=id,
            content=content,
            tags=tags,
        )

    @tool(_writes(destructive=True, idempotent=False))
    async def memory_undo(ctx: Context[Any, Any], change_seq: ChangeSeq) -> UndoResult:
        """Reverse one change listed by memory_changelog: a reinforce, update, edit,
        supersede, promote, demote, delete, or an earlier undo.

        Recorded as a change of its own (which can be undone in turn).  Refused when a later
        change touched the same memory and was not itself undone: undo that one first.
        """
        return await _write(
            app,
            ctx,
            _Call(
                "memory_undo",
                {"change_seq": change_seq},
                lambda change: UndoResult(
                    undone_seq=change_seq, change=results.change(change, with_before=False)
                ),
                UndoResult,
            ),
            store.undo,
            seq=change_seq,
        )

    @tool(_writes(destructive=False, idempotent=True))
    async def consolidate(ctx: Context[Any, Any]) -> ConsolidateResult:
        """Run the decay pass now: recompute every memory's strengths on the forgetting curve.

        One process at a time.  Named after the original Vestige's tool.
        """
        # A request key is ignored (see the module docstring): the pass is many transactions
        # under a lease, and a second pass moments after the first changes next to nothing.
        report = await app.run(store.decay, client=client_of(ctx))
        app.wrote()
        return ConsolidateResult.model_validate(report.to_dict())


def _strength_result(action: str, reason: str | None, change: StrengthChange) -> StrengthResult:
    return StrengthResult.model_validate(
        {
            "action": action,
            "id": change.memory_id,
            "reason": reason,
            "before": change.before,
            "after": change.after,
        }
    )


def _reads_of(app: ServerApp, tool: Adder) -> None:
    store = app.store

    @tool(READ)
    async def search(
        *,
        query: Annotated[
            str,
            Field(
                min_length=1,
                max_length=config.MAX_QUERY_CHARS,
                description="Words to look for; a memory matches if it has any of them. Any "
                "text is safe: search syntax has no special meaning here (quotes, *, -, "
                "parentheses and other punctuation are dropped; AND, OR, NOT and NEAR are "
                "looked for as plain words).",
            ),
        ],
        limit: Annotated[
            int,
            Field(
                ge=1,
                le=MAX_SEARCH_LIMIT,
                description=f"Most results to return (default {DEFAULT_SEARCH_LIMIT}, at "
                f"most {MAX_SEARCH_LIMIT}).",
            ),
        ] = DEFAULT_SEARCH_LIMIT,
        min_retention: Annotated[
            float, Field(ge=0.0, le=1.0, description="Skip memories weaker than this.")
        ] = 0.0,
        node_type: NodeType | None = None,
        tags: Annotated[
            list[Tag] | None,
            Field(
                max_length=config.MAX_TAGS,
                description="Only memories carrying all of these tags.",
            ),
        ] = None,
        include_superseded: Annotated[
            bool,
            Field(
                description="Also return memories a correction superseded (each ranked "
                "below the memory that superseded it; superseded_by names it)."
            ),
        ] = False,
        detail_level: Detail = "summary",
    ) -> SearchResult:
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
            content_chars=results.content_read(detail_level),
        )
        return results.search(query, hits, detail_level)

    @tool(READ)
    async def memory(
        action: Annotated[
            Literal["get", "state"],
            Field(
                description="get: the whole memory; state: how accessible it is (active, "
                "dormant, silent or unavailable). To delete, call delete_memory."
            ),
        ],
        id: MemoryId,  # the original tool's parameter name
    ) -> MemoryAnswer:
        """Read one memory by id, or check its accessibility state."""
        found = await app.run(store.get, id)
        if action == "state":
            return results.state(found)
        return MemoryAnswer(
            action="get",
            id=found.id,
            memory=results.record(found),
            state=None,
            accessibility=None,
            components=None,
            thresholds=None,
        )

    @tool(READ)
    async def memory_changelog(
        *,
        memory_id: Annotated[
            str | None,
            Field(
                min_length=1,
                max_length=128,
                pattern=ID_PATTERN,
                description="Only changes of this memory (deleted and purged ones too).",
            ),
        ] = None,
        kinds: Kinds = None,
        since_seq: Annotated[
            int | None,
            Field(
                ge=0,
                le=MAX_SEQ,
                description="Only changes after this seq (e.g. newest_seq of an earlier call).",
            ),
        ] = None,
        since: Annotated[
            When, Field(description="Only changes after this ISO 8601 date or time.")
        ] = None,
        before_seq: Annotated[
            int | None,
            Field(
                ge=1,
                le=MAX_SEQ,
                description="Only changes before this seq: to page back, pass the last seq "
                "of the previous page.",
            ),
        ] = None,
        limit: Annotated[
            int,
            Field(
                ge=1,
                le=config.CHANGELOG_MAX_LIMIT,
                description=f"Most changes to return (default "
                f"{config.CHANGELOG_DEFAULT_LIMIT}, at most {config.CHANGELOG_MAX_LIMIT:,}).",
            ),
        ] = config.CHANGELOG_DEFAULT_LIMIT,
        oldest_first: bool = False,
        include_before: Annotated[
            bool,
            Field(
                description="Also return before: the whole rows a change replaced or removed "
                "(content included), which memory_undo puts back."
            ),
        ] = False,
    ) -> ChangelogPage:
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
            after_name="since_seq",
        )
        return results.changelog(page, with_before=include_before)

    @tool(READ)
    async def memory_timeline(
        *,
        start: Annotated[
            When, Field(description="ISO 8601 date or time; default: 7 days before end.")
        ] = None,
        end: Annotated[
            When, Field(description="ISO 8601 date or time, not before start; default: now.")
        ] = None,
        node_type: NodeType | None = None,
        tags: Annotated[
            list[Tag] | None,
            Field(max_length=config.MAX_TAGS, description="Only memories with all of these."),
        ] = None,
        limit: Annotated[
            int,
            Field(
                ge=1,
                le=MAX_TIMELINE_LIMIT,
                description=f"Most memories to return (default {DEFAULT_TIMELINE_LIMIT}, at "
                f"most {MAX_TIMELINE_LIMIT}).",
            ),
        ] = DEFAULT_TIMELINE_LIMIT,
        detail_level: Detail = "summary",
    ) -> TimelineResult:
        """Memories created in a time window, newest first, grouped by day (UTC)."""
        days = await app.run(
            store.timeline,
            start=start,
            end=end,
            node_type=node_type,
            tags=tags,
            limit=limit,
            content_chars=results.content_read(detail_level),
        )
        return results.timeline(days, detail_level)

    @tool(READ)
    async def stats() -> StatsResult:
        """Counts, average strengths, retention bands and memory states of the whole store."""
        found = await app.run(results.fresh_wal, app, "stats", lambda: results.stats(app))
        return StatsResult.model_validate(found)

    @tool(READ)
    async def health_check() -> HealthResult:
        """Memory health (empty, healthy, degraded, critical or damaged), warnings, and server."""
        health = await app.run(results.fresh_wal, app, "health", lambda: store.health().to_dict())
        return HealthResult.model_validate({**health, "server": app.describe()})
