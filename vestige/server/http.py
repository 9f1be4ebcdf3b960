"""Streamable HTTP: one server, many clients, behind a bearer token and DNS-rebinding checks.

The token and the Host and Origin rules are :mod:`vestige.local_access`'s, shared with
`vestige dashboard`: a request without the token gets 401, and Host and Origin headers must
name a loopback address or the --host given, so a web page cannot reach the server through
DNS rebinding.  Connections are capped and timed (:mod:`vestige.http_connections`).

uvicorn runs inside our event loop with its own signal handling turned off: the lifecycle
handles SIGINT/SIGTERM the same way for both transports and asks uvicorn to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, Final

import anyio
import uvicorn
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import AnyHttpUrl

from vestige import http_connections
from vestige.http_connections import ConnectionGuard, DisconnectFilter
from vestige.local_access import host_names, is_loopback, load_token, token_matches
from vestige.server import EXIT_ERROR
from vestige.server.http_gate import RequestGate
from vestige.server.options import (
    HTTP_BACKLOG,
    HTTP_FD_RESERVE,
    HTTP_KEEP_ALIVE_TIMEOUT_S,
    HTTP_LOG_INTERVAL_S,
    HTTP_MAX_CONNECTIONS,
    HTTP_MAX_HEAD_BYTES,
    HTTP_PATH,
)

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable, Iterator

    from mcp.server.mcpserver import MCPServer

    from vestige.server.options import Options

log = logging.getLogger("vestige.server.http")

#: The connection cap never goes below this, however low the descriptor limit.
MIN_CONNECTIONS: Final = 8
SCOPE: Final = "vestige"
#: Open streams (a client's GET event stream) are cut after this at shutdown.
GRACEFUL_SHUTDOWN_S: Final = 0.5
#: Live MCP sessions at most (each holds a server task and its streams, about 40 KB): a
#: client that opens one more is answered 503 until one ends or expires.  4,000 initialize
#: requests used to keep 170 MB until the process ended.
HTTP_MAX_SESSIONS: Final = 256
#: A session with no request in flight and no open stream for this long is closed; its
#: client gets 404 and, as MCP says, initializes again.
HTTP_SESSION_IDLE_S: Final = 600.0
#: The SDK's logger for streamable HTTP requests.
SDK_HTTP_LOGGER: Final = "mcp.server.streamable_http"


class StaticToken:
    """The SDK's TokenVerifier protocol, for one shared secret (compared in constant time)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def matches(self, token: bytes) -> bool:
        return token_matches(token, self._token)

    async def verify_token(self, token: str) -> AccessToken | None:
        # The gate (http_gate) has checked the token on the request's head already; the
        # SDK's own check is the same comparison.
        if self.matches(token.encode()):
            return AccessToken(token=token, client_id="vestige-local", scopes=[SCOPE])
        return None


def auth_kwargs(opts: Options) -> dict[str, Any]:
    """MCPServer arguments that require the bearer token on every HTTP request."""
    token = load_token(opts.data_dir.path)
    return {
        "token_verifier": StaticToken(token),
        "auth": AuthSettings(
            issuer_url=AnyHttpUrl(opts.endpoint or "http://127.0.0.1/"),
            resource_server_url=None,
            required_scopes=[SCOPE],
        ),
    }


def security() -> TransportSecuritySettings:
    """The SDK's DNS-rebinding check is off: it matches Host and Origin by prefix
    (``localhost:3928.evil.com`` passed) and case (``LOCALHOST`` failed), and runs only after
    the body is read.  :class:`vestige.server.http_gate.RequestGate` checks them instead."""
    return TransportSecuritySettings(enable_dns_rebinding_protection=False)


def connection_cap() -> int:
    """HTTP_MAX_CONNECTIONS, lowered to fit under this process's descriptor limit."""
    return http_connections.connection_cap(
        HTTP_MAX_CONNECTIONS, reserve=HTTP_FD_RESERVE, backlog=HTTP_BACKLOG, least=MIN_CONNECTIONS
    )


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn would install its own handlers and re-raise the signal after serving,
        # killing the process before our cleanup; the lifecycle owns signals instead.
        yield


class HttpTransport:
    def __init__(
        self, mcp: MCPServer[Any], opts: Options, sock: socket.socket, on_end: Callable[..., None]
    ) -> None:
        app = mcp.streamable_http_app(
            streamable_http_path=HTTP_PATH,
            transport_security=security(),
            host=opts.host,
            session_idle_timeout=HTTP_SESSION_IDLE_S,
            max_sessions=HTTP_MAX_SESSIONS,
        )
        token = StaticToken(load_token(opts.data_dir.path))
        gate = RequestGate(app, token, host_names(opts.host))
        self._guard = ConnectionGuard(
            connection_cap(), opts.http_request_timeout_s, HTTP_LOG_INTERVAL_S, log, gate.admits
        )
        config = uvicorn.Config(
            gate,
            http=self._guard.protocol(),
            log_level="warning",
            access_log=False,
            lifespan="on",
            backlog=HTTP_BACKLOG,
            timeout_keep_alive=HTTP_KEEP_ALIVE_TIMEOUT_S,
            h11_max_incomplete_event_size=HTTP_MAX_HEAD_BYTES,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,  # type: ignore[arg-type] # float works
        )
        self._server = _Uvicorn(config)
        self._sock = sock
        self._on_end = on_end
        self._done = anyio.Event()
        self._endpoint = opts.endpoint
        self._host = opts.host

    async def serve(self) -> None:
        asyncio.get_running_loop().set_exception_handler(self._guard.loop_exception)
        logging.getLogger(SDK_HTTP_LOGGER).addFilter(DisconnectFilter(self._guard.log))
        if not is_loopback(self._host):
            log.warning(
                "--allow-remote-host: listening on %s, which other machines can reach; the "
                "bearer token crosses the network in cleartext unless a TLS proxy is in front",
                self._host,
            )
        log.info(
            "listening on %s (at most %d connections, %g s to send a request)",
            self._endpoint,
            self._guard.max_connections,
            self._guard.request_timeout_s,
        )
        try:
            await self._server.serve(sockets=[self._sock])
        except (Exception, SystemExit) as err:  # uvicorn exits on a failed start-up
            log.exception("the HTTP server failed")
            self._on_end(f"the HTTP server failed: {err!r}", EXIT_ERROR)
        finally:
            self._done.set()
        self._on_end("the HTTP server stopped")

    async def stop(self, timeout: float) -> None:
        self._server.should_exit = True
        with anyio.move_on_after(timeout):
            await self._done.wait()
