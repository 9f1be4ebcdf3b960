"""The stdio transport, with its own framing: every request line gets an answer.

The SDK's stdio reader drops a line it cannot validate without answering it (python-sdk
#2751): a line that is not JSON, and a request whose strings hold an escaped lone UTF-16
surrogate (``"hello \\ud83d"``, what a JavaScript client sends when it cuts a string inside
an emoji; the SDK's JSON parser refuses it).  The client then waits out its own timeout
(60 s in the TypeScript SDK) and blames vestige-mcp.  So this module reads stdin itself and
answers what :func:`vestige.server.framing.frame` refuses: a request gets an error with its
own id (``id: null`` for a line that is not JSON), a notification or a response gets none,
as JSON-RPC says, and each refusal is logged at WARNING.

Everything else goes to the SDK's server loop unchanged.  Lines are split and refused as
they stream in, on the event loop; only the blocking writes (and reads on a platform that
cannot poll the descriptor) run in a thread.

The transport also owns the standard descriptors, as the SDK's does: it keeps private
copies for the wire and points fd 0 at the null device and fd 1 at stderr, so a stray
``print`` cannot corrupt a frame.  It watches its copy of stdout, so a client that closes
the server's stdout while keeping stdin open is noticed within :data:`STDOUT_POLL_S`, and
the server shuts down cleanly with exit 0.

End of input is not the end of the work: ``printf '...' | vestige-mcp`` closes stdin right
after its requests.  The reader then waits, up to :data:`EOF_ANSWER_WAIT_S`, until every
request it passed on has been answered, and only then lets the server loop end (which
cancels what is still running).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, Any, Final

import anyio
import mcp_types as types
from mcp.shared.message import SessionMessage

from vestige.server import EXIT_ERROR, terminal
from vestige.server._fds import claim_standard_fds
from vestige.server.framing import Refusal, dump, frame
from vestige.server.options import MAX_MESSAGE_BYTES

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
    from mcp.server.lowlevel import Server
    from mcp.server.mcpserver import MCPServer

log = logging.getLogger("vestige.server.stdio")

#: Bytes asked of stdin per read.
READ_CHUNK_BYTES: Final = 64 * 1024
#: A line longer than this is dropped unread and answered with a parse error.
MAX_LINE_BYTES: Final = MAX_MESSAGE_BYTES
#: How often the transport checks that the client still reads its stdout.
STDOUT_POLL_S: Final = 0.25

STDOUT_CLOSED: Final = "the client closed stdout"
#: After stdin ends, how long the requests already read may take to be answered.
EOF_ANSWER_WAIT_S: Final = 10.0


class LineSplitter:
    """Cut a byte stream into lines as it arrives; a line over :data:`MAX_LINE_BYTES` is
    dropped as it streams in and comes out as None, so it can still be answered."""

    def __init__(self) -> None:
        self._partial = bytearray()
        self._discarding = False

    def feed(self, chunk: bytes) -> Iterator[bytes | None]:
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            if self._discarding:
                self._discarding = False
                yield None
            else:
                self._partial += chunk[start:end]
                line = bytes(self._partial)
                self._partial.clear()
                yield line if len(line) <= MAX_LINE_BYTES else None
            start = end + 1
        if not self._discarding:
            self._partial += chunk[start:]
            if len(self._partial) > MAX_LINE_BYTES:
                self._partial.clear()
                self._discarding = True

    def end(self) -> Iterator[bytes | None]:
        """What is left at end of input: a last message sent without its newline."""
        if self._discarding:
            yield None
        elif self._partial.strip():
            yield bytes(self._partial)


_TOO_LONG: Final = Refusal(
    "not-json",
    types.PARSE_ERROR,
    f"Parse error: the line is longer than {MAX_LINE_BYTES // (1024 * 1024)} MiB: "
    "send smaller messages",
    None,
    answer=True,
)


class LineSession:
    """One client's JSON-RPC lines served by the SDK's server loop; every request gets an answer.

    ``receive`` returns the next chunk of input (``b""`` at its end) and ``send`` writes bytes
    to the client; the stdio transport and each attached session (a socket) bring their own.
    ``on_request`` sees each request as it is passed on (the owner reads the client's name
    from ``initialize``).  :attr:`output_closed` tells why :meth:`run` returned: the client
    stopped reading, rather than its input ending.
    """

    def __init__(
        self,
        server: Server[Any],
        receive: Callable[[], Awaitable[bytes]],
        send: Callable[[bytes], Awaitable[None]],
        *,
        on_request: Callable[[types.JSONRPCRequest], None] | None = None,
        on_refused: Callable[[Refusal], None] | None = None,
    ) -> None:
        self._server = server
        self._receive = receive
        self._send = send
        self._on_request = on_request
        self._on_refused = on_refused
        #: Ids of the requests passed to the server and not yet answered.
        self._unanswered: set[str | int] = set()
        self.output_closed = False

    async def run(self) -> None:
        to_server, server_reads = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        server_writes, to_client = anyio.create_memory_object_stream[SessionMessage](0)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._write, to_client, tg.cancel_scope)
            tg.start_soon(self._read, to_server, server_writes.clone())
            await self._server.run(
                server_reads, server_writes, self._server.create_initialization_options()
            )

    async def _read(
        self,
        to_server: MemoryObjectSendStream[SessionMessage | Exception],
        to_client: MemoryObjectSendStream[SessionMessage],
    ) -> None:
        lines = LineSplitter()
        async with to_server, to_client:
            while chunk := await self._receive():
                for line in lines.feed(chunk):
                    await self._pass_on(line, to_server, to_client)
            for line in lines.end():
                await self._pass_on(line, to_server, to_client)
            with anyio.move_on_after(EOF_ANSWER_WAIT_S):
                while self._unanswered:
                    await anyio.sleep(0.01)
            if self._unanswered:
                log.warning(
                    "input ended; %d request(s) still unanswered after %.0f s are cancelled",
                    len(self._unanswered),
                    EOF_ANSWER_WAIT_S,
                )

    async def _pass_on(
        self,
        line: bytes | None,
        to_server: MemoryObjectSendStream[SessionMessage | Exception],
        to_client: MemoryObjectSendStream[SessionMessage],
    ) -> None:
        framed = _TOO_LONG if line is None else frame(line)
        if isinstance(framed, SessionMessage):
            if isinstance(framed.message, types.JSONRPCRequest):
                self._unanswered.add(framed.message.id)
                if self._on_request is not None:
                    self._on_request(framed.message)
            await to_server.send(framed)
        elif framed is not None:
            log.warning("refused %s from the client: %s", framed.what, framed.message)
            if framed.answer:
                await to_client.send(framed.reply())
            if self._on_refused is not None:
                self._on_refused(framed)

    async def _write(
        self, to_client: MemoryObjectReceiveStream[SessionMessage], scope: anyio.CancelScope
    ) -> None:
        async with to_client:
            async for message in to_client:
                try:
                    await self._send(_encode(message))
                except (
                    BrokenPipeError,
                    ConnectionResetError,
                    anyio.BrokenResourceError,
                    anyio.ClosedResourceError,
                ):
                    log.info("the client stopped reading")
                    self.output_closed = True
                    scope.cancel()
                    return
                if isinstance(message.message, types.JSONRPCResponse | types.JSONRPCError):
                    self._unanswered.discard(message.message.id)  # answered, and written


class StdioTransport:
    """Serve one client over stdin/stdout until stdin ends, stdout closes, or stop()."""

    def __init__(self, mcp: MCPServer[Any], on_end: Callable[..., None]) -> None:
        # The SDK runs a server over given streams only through its low-level server;
        # MCPServer's own stdio runner always uses the SDK's reader.
        self._server: Server[Any] = mcp._lowlevel_server
        self._on_end = on_end
        self._scope = anyio.CancelScope()
        self._writes = anyio.CapacityLimiter(1)
        self._pollable = sys.platform != "win32"

    async def serve(self) -> None:
        stdin, stdout = claim_standard_fds()

        async def receive() -> bytes:
            return await self._read_chunk(stdin)

        async def send(data: bytes) -> None:
            await anyio.to_thread.run_sync(
                _write_all, stdout, data, abandon_on_cancel=True, limiter=self._writes
            )

        # A person typing at the server on a terminal gets a hint besides the parse error.
        on_refused = _hint_to_a_person if os.isatty(stdin) else None
        session = LineSession(self._server, receive, send, on_refused=on_refused)
        try:
            with self._scope:
                async with anyio.create_task_group() as tg:
                    if self._pollable:
                        tg.start_soon(self._watch_stdout, stdout)
                    await session.run()
                    self._on_end(STDOUT_CLOSED if session.output_closed else "stdin closed")
        except Exception as err:  # a bug in the transport: still shut down in order
            log.exception("the stdio transport failed")
            self._on_end(f"the stdio transport failed: {err!r}", EXIT_ERROR)

    async def stop(self, timeout: float) -> None:
        # Cancels every handler; a write stuck in its thread is abandoned (the process
        # leaves through os._exit).
        self._scope.cancel()

    async def _read_chunk(self, fd: int) -> bytes:
        if self._pollable:
            try:
                await anyio.wait_readable(fd)
            except OSError:  # a regular file or /dev/null: epoll refuses those
                self._pollable = False
            else:
                return os.read(fd, READ_CHUNK_BYTES)
        return await anyio.to_thread.run_sync(os.read, fd, READ_CHUNK_BYTES, abandon_on_cancel=True)

    async def _watch_stdout(self, fd: int) -> None:
        """Notice a closed stdout now, not when the next answer fails to go out."""
        import select  # noqa: PLC0415 - POSIX only

        poller = select.poll()
        poller.register(fd, 0)  # POLLERR and POLLHUP are always reported
        while not poller.poll(0):
            await anyio.sleep(STDOUT_POLL_S)
        self._on_end(STDOUT_CLOSED)


def _hint_to_a_person(refusal: Refusal) -> None:
    """After the answer to a line that is no JSON-RPC message (``hello``), say in words what
    this server is and what to do; a client's malformed message (bad text) gets no hint."""
    if refusal.reason in ("not-json", "not-jsonrpc"):
        terminal.show(terminal.NOT_JSON_RPC_HINT)


def _encode(message: SessionMessage) -> bytes:
    return dump(message.message) + b"\n"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
