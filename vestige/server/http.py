"""Streamable HTTP: one server, many clients, behind a bearer token and DNS-rebinding checks.

The token is ``VESTIGE_AUTH_TOKEN`` if set, else the contents of ``<data-dir>/auth_token``,
created (0600, 32 random bytes) on first use.  A request without it gets 401.  Host and
Origin headers must name a loopback address (or the --host given), so a web page cannot
reach the server through DNS rebinding.

uvicorn runs inside our event loop with its own signal handling turned off: the lifecycle
handles SIGINT/SIGTERM the same way for both transports and asks uvicorn to stop.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import secrets
from typing import TYPE_CHECKING, Any, Final

import anyio
import uvicorn
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import AnyHttpUrl

from vestige.config import FILE_MODE, secure_file
from vestige.server import EXIT_ERROR
from vestige.server.options import HTTP_PATH

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from mcp.server.mcpserver import MCPServer

    from vestige.server.options import Options

log = logging.getLogger("vestige.server.http")

AUTH_TOKEN_ENV: Final = "VESTIGE_AUTH_TOKEN"  # noqa: S105 - a variable name, not a secret
TOKEN_FILE: Final = "auth_token"  # noqa: S105 - a file name
MIN_TOKEN_CHARS: Final = 32
SCOPE: Final = "vestige"
#: Open streams (a client's GET event stream) are cut after this at shutdown.
GRACEFUL_SHUTDOWN_S: Final = 0.5
_LOOPBACK: Final = ("127.0.0.1", "localhost", "[::1]")


class StaticToken:
    """The SDK's TokenVerifier protocol, for one shared secret (compared in constant time)."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def verify_token(self, token: str) -> AccessToken | None:
        if hmac.compare_digest(token.encode(), self._token.encode()):
            return AccessToken(token=token, client_id="vestige-local", scopes=[SCOPE])
        return None


def load_token(data_dir: Path, environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    token = env.get(AUTH_TOKEN_ENV, "").strip()
    if token:
        if len(token) < MIN_TOKEN_CHARS:
            log.warning("%s is shorter than %d characters", AUTH_TOKEN_ENV, MIN_TOKEN_CHARS)
        return token
    path = data_dir / TOKEN_FILE
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
        log.info("created the HTTP bearer token in %s", path)
    secure_file(path)
    return path.read_text(encoding="ascii").strip()


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


def security(opts: Options) -> TransportSecuritySettings:
    host = f"[{opts.host}]" if ":" in opts.host else opts.host
    hosts = dict.fromkeys((*_LOOPBACK, host))
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{h}:*" for h in hosts],
        allowed_origins=[f"http://{h}:*" for h in hosts],
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
            streamable_http_path=HTTP_PATH, transport_security=security(opts), host=opts.host
        )
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,  # type: ignore[arg-type] # float works
        )
        self._server = _Uvicorn(config)
        self._sock = sock
        self._on_end = on_end
        self._done = anyio.Event()
        self._endpoint = opts.endpoint

    async def serve(self) -> None:
        log.info("listening on %s", self._endpoint)
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
