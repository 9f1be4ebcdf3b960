"""The owner's side of ``--attach``: accept attached sessions and serve each like a stdio client.

Each connection on the endpoint (see :mod:`vestige.server.endpoint`) starts with the
handshake; the owner checks the attach protocol, the proxy's proof that it knows the token
(the owner proves it too; see :mod:`vestige.server.endpoint`) and, on Linux, the peer's user
from the kernel (``SO_PEERCRED``: another user's process is refused even if it got hold of
the token; root is let in, as it can read the token anyway).
After the handshake the connection carries the client's MCP lines, relayed by its proxy,
and is served by the same SDK server as the owner's own client, one session each.

The owner publishes the sessions it serves (proxy pid, the client's name from
``initialize``, since when) in its owner metadata, so ``vestige doctor`` and the refusal
messages can count them.

Bounds: at most :data:`MAX_SESSIONS` sessions and :data:`MAX_PENDING_HELLOS` connections
still in their handshake; past them a connection is refused with a message.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import anyio
from anyio.abc import SocketAttribute
from anyio.streams.buffered import BufferedByteReceiveStream

from vestige import __version__
from vestige.changelog import MAX_CLIENT_CHARS
from vestige.owner import AttachedSession
from vestige.printable import escape_controls
from vestige.server import endpoint
from vestige.server.stdio import READ_CHUNK_BYTES, LineSession

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    import mcp_types as types
    from anyio.abc import Listener, SocketStream
    from mcp.server.lowlevel import Server
    from mcp.server.mcpserver import MCPServer

    from vestige.owner import OwnerLock

log = logging.getLogger("vestige.server.attach")

#: Attached sessions served at once, at most.
MAX_SESSIONS: Final = 256
#: Connections in their handshake at once, at most.
MAX_PENDING_HELLOS: Final = 16
#: Seconds between two log lines about the same kind of refused connection.
REFUSAL_LOG_INTERVAL_S: Final = 10.0


@dataclass(slots=True)
class _Session:
    pid: int
    since: float
    client: str | None = None


class Attachments:
    """Listen on the endpoint and serve every attached session until stopped.

    ``on_count`` is called with the number of sessions whenever it changes: the lifecycle
    uses it to keep serving while sessions remain, and the detached owner to end after the
    last one left.
    """

    def __init__(
        self,
        mcp: MCPServer[Any],
        lock: OwnerLock,
        data_dir: Path,
        on_count: Callable[[int], None],
    ) -> None:
        self._server: Server[Any] = mcp._lowlevel_server
        self._lock = lock
        self._data_dir = data_dir
        self._on_count = on_count
        self._token = secrets.token_hex(endpoint.TOKEN_BYTES)
        self._sessions: dict[int, _Session] = {}
        self._next = 0
        self._hellos = 0
        self._logged: dict[str, float] = {}
        self._scope = anyio.CancelScope()
        self._published = False

    @property
    def count(self) -> int:
        return len(self._sessions)

    async def serve(self) -> None:
        try:
            listener, where = await self._listen()
        except OSError as exc:
            log.warning("cannot accept attached sessions: %s", exc.strerror or exc)
            return
        try:
            endpoint.publish(self._data_dir, where)
        except OSError as exc:
            log.warning("cannot publish the attach endpoint: %s", exc.strerror or exc)
            await listener.aclose()
            return
        self._published = True
        log.info("accepting attached sessions on %s", where.describe())
        with self._scope:
            async with listener:
                await listener.serve(self._handle)

    async def stop(self) -> None:
        """Stop accepting, end every session, and withdraw the endpoint."""
        if self._published:
            endpoint.withdraw(self._data_dir, os.getpid())
            self._published = False
        self._scope.cancel()

    async def _listen(self) -> tuple[Listener[SocketStream], endpoint.Endpoint]:
        path = endpoint.socket_path(self._data_dir)
        pid, protocol = os.getpid(), endpoint.PROTOCOL
        if path is not None:
            # We hold the owner lock: a socket file left there is a dead owner's.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            unix = await anyio.create_unix_listener(path, mode=0o600)
            return unix, endpoint.Endpoint(
                pid, __version__, protocol, self._token, unix=str(path), port=None
            )
        tcp = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        port = tcp.extra(SocketAttribute.local_port)  # noqa: S610 - anyio, not Django
        return tcp, endpoint.Endpoint(pid, __version__, protocol, self._token, unix=None, port=port)

    async def _handle(self, stream: SocketStream) -> None:
        """One connection; whatever goes wrong with it ends it alone, never the owner."""
        try:
            await self._connection(stream)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass  # the peer left
        except Exception:
            self._note("error", "an attached connection failed; the owner goes on", exc=True)

    async def _connection(self, stream: SocketStream) -> None:
        async with stream:
            if self._hellos >= MAX_PENDING_HELLOS or len(self._sessions) >= MAX_SESSIONS:
                why = (
                    f"{len(self._sessions)} attached sessions are served, the most there can be"
                    if len(self._sessions) >= MAX_SESSIONS
                    else f"{self._hellos} connections are in their handshake, the most at once"
                )
                self._note("full", "refused an attached session: %s", why)
                await self._refuse(stream, f"this server is full: {why}", _FULL_HINT)
                return
            self._hellos += 1
            try:
                reader = BufferedByteReceiveStream(stream)
                pid = await self._handshake(stream, reader)
            finally:
                self._hellos -= 1
            if pid is not None:
                await self._session(stream, reader, pid)

    async def _handshake(
        self, stream: SocketStream, reader: BufferedByteReceiveStream
    ) -> int | None:
        """The proxy's pid after a good handshake; None after a refused one."""
        peer_pid, peer_uid = _peer(stream)
        if peer_uid is not None and peer_uid not in (os.geteuid(), 0):
            self._note("user", "refused an attach from user %d (pid %s)", peer_uid, peer_pid)
            await self._refuse(stream, "another user's process cannot attach", "")
            return None
        hello = endpoint.parse(await self._line(reader))
        if hello is None or not endpoint.valid_nonce(hello.get("nonce")):
            self._note("hello", "refused a connection on the attach endpoint: no valid hello")
            await self._refuse(stream, "no valid attach hello", "Use vestige-mcp --attach.")
            return None
        proof = endpoint.proof(self._token, "owner", hello["nonce"])
        if hello["vestige_attach"] != endpoint.PROTOCOL:
            message = endpoint.mismatch(
                __version__, hello.get("version"), hello["vestige_attach"], "the proxy"
            )
            self._note("protocol", "refused an attach: %s", message)
            await self._refuse(stream, message, _UPGRADE_HINT, proof)
            return None
        ours = endpoint.nonce()
        await stream.send(endpoint.welcome(os.getpid(), __version__, ours, proof))
        try:
            answer = json.loads(await self._line(reader))
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or not endpoint.proves(
            self._token, "proxy", ours, answer.get("proof")
        ):
            # A proxy that read an earlier owner's file fails here too; it tries again.
            self._note("proof", "closed an attach without a valid proof (pid %s)", peer_pid)
            return None
        claimed = hello.get("pid")
        pid = peer_pid if peer_pid is not None else claimed if isinstance(claimed, int) else 0
        if hello.get("version") != __version__:
            log.info(
                "proxy pid %s runs vestige %s; this is %s", pid, hello.get("version"), __version__
            )
        return pid

    async def _line(self, reader: BufferedByteReceiveStream) -> bytes:
        """One handshake line, or b"" if none came whole in time."""
        with anyio.move_on_after(endpoint.HELLO_TIMEOUT_S):
            with contextlib.suppress(
                anyio.EndOfStream,
                anyio.IncompleteRead,
                anyio.DelimiterNotFound,
                anyio.BrokenResourceError,
                OSError,
            ):
                return await reader.receive_until(b"\n", endpoint.MAX_HELLO_BYTES)
        return b""

    def _note(self, kind: str, message: str, *args: object, exc: bool = False) -> None:
        """Log a refused or failed connection, at most once per
        :data:`REFUSAL_LOG_INTERVAL_S` per kind: anyone local can knock on a TCP endpoint,
        and must not fill the disk."""
        now = time.monotonic()
        if now - self._logged.get(kind, -REFUSAL_LOG_INTERVAL_S) >= REFUSAL_LOG_INTERVAL_S:
            self._logged[kind] = now
            log.warning(message, *args, exc_info=exc)

    async def _refuse(
        self, stream: SocketStream, error: str, hint: str, proof: str | None = None
    ) -> None:
        with contextlib.suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            with anyio.move_on_after(endpoint.HELLO_TIMEOUT_S):
                await stream.send(endpoint.refusal(error, hint, proof))

    async def _session(
        self, stream: SocketStream, reader: BufferedByteReceiveStream, pid: int
    ) -> None:
        key = self._next
        self._next += 1
        record = _Session(pid=pid, since=time.time())

        async def receive() -> bytes:
            try:
                return await reader.receive(READ_CHUNK_BYTES)
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.IncompleteRead, OSError):
                return b""

        async def send(data: bytes) -> None:
            await stream.send(data)

        def on_request(request: types.JSONRPCRequest) -> None:
            if request.method == "initialize" and isinstance(request.params, dict):
                record.client = _client_name(request.params)
                self._publish()

        self._sessions[key] = record
        self._changed()
        log.info("attached session from pid %d (%d attached)", pid, len(self._sessions))
        try:
            await LineSession(self._server, receive, send, on_request=on_request).run()
        finally:
            del self._sessions[key]
            log.info("attached session from pid %d ended (%d attached)", pid, len(self._sessions))
            self._changed()

    def _changed(self) -> None:
        self._publish()
        self._on_count(len(self._sessions))

    def _publish(self) -> None:
        self._lock.publish_sessions(
            [
                AttachedSession(pid=s.pid, client=s.client, since=s.since)
                for s in self._sessions.values()
            ]
        )


_FULL_HINT: Final = "Close some windows, or start this one without --attach."
_UPGRADE_HINT: Final = (
    "After an upgrade, restart every client that uses this data directory, so that all of "
    "them run one version of vestige."
)


def _client_name(params: dict[str, Any]) -> str | None:
    info = params.get("clientInfo")
    name = info.get("name") if isinstance(info, dict) else None
    if not isinstance(name, str):
        return None
    name = escape_controls(name)
    return name if len(name) <= MAX_CLIENT_CHARS else name[: MAX_CLIENT_CHARS - 1] + "\u2026"


def _peer(stream: SocketStream) -> tuple[int | None, int | None]:
    """The connecting process's pid and uid, from the kernel (Linux Unix sockets only)."""
    return endpoint.peer(stream.extra(SocketAttribute.raw_socket, None))  # noqa: S610 - anyio
