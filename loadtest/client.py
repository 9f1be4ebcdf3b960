"""A timed MCP client over the stdio of a server process the harness owns.

The SDK's ``stdio_client`` spawns the server itself and hides its pid, but the load test must
SIGKILL a server mid-call and start it again.  So ``spawn`` starts the process, and this
module only bridges its pipes to the SDK's session streams, then times every tool call and
sorts each failure into one kind.
"""

from __future__ import annotations

import json
import re
import time
import warnings
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import anyio
import mcp_types
from mcp import Client
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp.shared.message import SessionMessage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from mcp.client._transport import TransportStreams
    from mcp.client.session import MessageHandlerFnT

    from loadtest.spawn import Child

#: Generous: a call that takes this long is a hang, reported as "timeout" (indeterminate).
CALL_TIMEOUT_S: Final = 30.0
#: Connecting includes the server's interpreter start (~0.5-1 s on a busy 2-core machine).
CONNECT_TIMEOUT_S: Final = 60.0

#: Words by which a message admits lock contention surfaced to the caller (the one error
#: class the issue says must never reach a client).
_BUSY_RE: Final = re.compile(r"\b(busy|locked)\b|write gate|no write could start", re.IGNORECASE)
_NOT_FOUND_RE: Final = re.compile(r"not found|no memory|does not exist|unknown id", re.IGNORECASE)


class ErrorKind:
    """Failure kinds, by what they mean for the ledger."""

    BUSY = "busy"  # lock contention surfaced: a failure unless in the naive baseline
    NOT_FOUND = "not_found"  # expected only when a concurrent delete explains it
    TOOL_ERROR = "tool_error"  # any other error result from the tool
    CONNECTION_LOST = "connection_lost"  # the server died mid-call: outcome unknown
    TIMEOUT = "timeout"  # no answer in CALL_TIMEOUT_S: outcome unknown
    PROTOCOL = "protocol"  # a JSON-RPC error, or a result we cannot read

    INDETERMINATE: Final = frozenset({CONNECTION_LOST, TIMEOUT})


@dataclass(frozen=True, slots=True)
class Outcome:
    """One call: when it started (run clock), how long it took, and what came back."""

    tool: str
    started: float
    latency_s: float
    data: dict[str, Any] | None
    error_kind: str | None = None
    error_text: str = ""

    @property
    def ok(self) -> bool:
        return self.error_kind is None


def classify(text: str) -> str:
    if _BUSY_RE.search(text):
        return ErrorKind.BUSY
    if _NOT_FOUND_RE.search(text):
        return ErrorKind.NOT_FOUND
    return ErrorKind.TOOL_ERROR


def result_data(result: mcp_types.CallToolResult) -> dict[str, Any] | None:
    """The structured result, or the JSON of its first text block, as a dict."""
    if isinstance(result.structured_content, dict):
        return result.structured_content
    for block in result.content:
        if isinstance(block, mcp_types.TextContent):
            with suppress(ValueError):
                value = json.loads(block.text)
                return value if isinstance(value, dict) else {"result": value}
    return None


def result_text(result: mcp_types.CallToolResult) -> str:
    return " ".join(b.text for b in result.content if isinstance(b, mcp_types.TextContent))


@asynccontextmanager
async def process_transport(child: Child) -> AsyncIterator[TransportStreams]:
    """Newline-delimited JSON-RPC over a running child's stdin/stdout.

    Stopping the process is the registry's job; leaving here only closes our ends.
    """
    process = child.process
    assert process.stdin is not None
    assert process.stdout is not None
    stdin, stdout = process.stdin, process.stdout
    read_send, read_recv = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_send, write_recv = anyio.create_memory_object_stream[SessionMessage](0)

    async def pump_out() -> None:
        buffer = b""
        async with read_send:
            with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                async for chunk in stdout:
                    *lines, buffer = (buffer + chunk).split(b"\n")
                    for line in lines:
                        if line.strip():
                            await read_send.send(_parse(line))

    async def pump_in() -> None:
        async with write_recv:
            try:
                async for message in write_recv:
                    wire = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                    await stdin.send(wire.encode() + b"\n")
            except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                await read_send.aclose()  # the server is gone: end the session, don't hang

    async with anyio.create_task_group() as tg:
        tg.start_soon(pump_out)
        tg.start_soon(pump_in)
        try:
            yield read_recv, write_send
        finally:
            with anyio.CancelScope(shield=True):
                await write_send.aclose()
                with suppress(Exception):
                    await stdin.aclose()
            tg.cancel_scope.cancel()


def _parse(line: bytes) -> SessionMessage | Exception:
    try:
        return SessionMessage(mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValueError as exc:
        return exc


class TimedClient:
    """An MCP session on one server process; ``call`` never raises for a failed tool call."""

    def __init__(
        self, child: Child, clock: Clock, *, message_handler: MessageHandlerFnT | None = None
    ) -> None:
        self.child = child
        self.clock = clock
        # The read timeout bounds the handshake too (a server that never answers); a
        # fail_after around __aenter__ would straddle the transport's task group.
        self._client = Client(
            process_transport(child),
            mode="legacy",
            cache=None,
            read_timeout_seconds=CONNECT_TIMEOUT_S,
            message_handler=message_handler,
        )
        self.tools: dict[str, dict[str, Any]] = {}

    async def __aenter__(self) -> TimedClient:
        await self._client.__aenter__()
        try:
            listed = await self._client.list_tools()
        except BaseException:
            await self.__aexit__()
            raise
        self.tools = {t.name: t.input_schema for t in listed.tools}
        return self

    async def __aexit__(self, *exc: object) -> None:
        # No shield here: a cancel scope around the exit would straddle the task groups the
        # client entered outside it (anyio then cancels the wrong task).
        with suppress(Exception):
            await self._client.__aexit__(None, None, None)

    async def subscribe(self, uri: str) -> None:
        """``resources/subscribe`` (the handshake-era way, which this client speaks); raises
        on refusal: a subscription that failed leaves nothing to measure."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)  # 2025-era API, on purpose
            await self._client.subscribe_resource(uri)

    async def call(self, tool: str, arguments: dict[str, Any]) -> Outcome:
        started = self.clock.now()
        t0 = time.perf_counter()
        kind: str | None = None
        text = ""
        data: dict[str, Any] | None = None
        try:
            result = await self._client.call_tool(
                tool, arguments, read_timeout_seconds=CALL_TIMEOUT_S
            )
        except MCPError as exc:
            text = str(exc)
            if exc.error.code == mcp_types.CONNECTION_CLOSED:
                kind = ErrorKind.CONNECTION_LOST
            elif exc.error.code == mcp_types.REQUEST_TIMEOUT:
                kind = ErrorKind.TIMEOUT
            else:
                kind = classify(text) if _BUSY_RE.search(text) else ErrorKind.PROTOCOL
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:
            kind, text = ErrorKind.CONNECTION_LOST, repr(exc)
        except TimeoutError as exc:
            kind, text = ErrorKind.TIMEOUT, repr(exc)
        else:
            if result.is_error:
                text = result_text(result)
                kind = classify(text)
            else:
                data = result_data(result)
                if data is None:
                    kind, text = ErrorKind.PROTOCOL, f"unreadable result: {result_text(result)!r}"
        return Outcome(tool, started, time.perf_counter() - t0, data, kind, text[:500])


class Clock:
    """Seconds since the run started: every sample, fault and check shares it."""

    def __init__(self) -> None:
        self.origin = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.origin
