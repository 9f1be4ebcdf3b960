"""`vestige dashboard`: one local page that shows a data directory live.

It shows what several processes sharing one memory do to it, as it happens: the changelog
followed across processes (:mod:`vestige.feed`, fanned out to pages by
:mod:`vestige.dashboard.hub`), who holds the data directory and whether it is healthy (the
checks of `vestige doctor`), the counts, and the latest load-test report
(:mod:`vestige.dashboard.panels`).  It reads only, takes no lock, and never imports the MCP
SDK: it is a face over the library, like the CLI that starts it.

It listens on loopback only, behind the same token and Host/Origin rules as the HTTP MCP
server (:mod:`vestige.local_access`); :mod:`vestige.dashboard.app` says how a browser
carries the token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from typing import TYPE_CHECKING, Final
from urllib.parse import quote

import anyio
import uvicorn

from vestige.dashboard.app import Dashboard
from vestige.errors import ConfigError
from vestige.http_connections import ConnectionGuard, connection_cap
from vestige.local_access import host_names, load_token

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import FrameType

    from vestige.config import DataDir
    from vestige.dashboard.panels import ReportSource
    from vestige.store import Store

__all__ = ["DEFAULT_PORT", "HOST", "bind", "serve"]

#: The original Vestige's dashboard port.
DEFAULT_PORT: Final = 3927
#: Loopback only: the page shows every change to the memory.
HOST: Final = "127.0.0.1"
#: Open event streams are ended at once when the dashboard stops; a request still running
#: after this is cut.
SHUTDOWN_S: Final = 1.0
#: How often the dashboard looks whether it was asked to stop (uvicorn looks every 0.1 s).
STOP_POLL_S: Final = 0.05
#: Open connections at most (each open page holds one event stream and makes a request
#: every few seconds); past it the oldest idle connection is closed, so a flood of idle
#: connections cannot take the descriptors a page needs (http_connections).
DASHBOARD_MAX_CONNECTIONS: Final = 128
MIN_CONNECTIONS: Final = 8
#: Descriptors kept for the database, the log and the process's own files.
FD_RESERVE: Final = 64
BACKLOG: Final = 32
#: A request must arrive whole within this, from the connect.
REQUEST_TIMEOUT_S: Final = 10.0
KEEP_ALIVE_S: Final = 5
MAX_HEAD_BYTES: Final = 16 * 1024
#: Each kind of refused or dropped connection is logged at most this often, with a count.
LOG_INTERVAL_S: Final = 10.0

log = logging.getLogger("vestige.dashboard")


def bind(port: int) -> socket.socket:
    """The listening socket, bound before anything is served, so a taken port is one clear
    error at start (port 0: any free port; the address printed names it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {HOST}:{port}: {exc.strerror or exc}",
            hint="Another program (another dashboard?) uses that port: pick another with "
            "--port N, or --port 0 for any free one.",
        ) from exc
    sock.listen(128)
    return sock


class _Server(uvicorn.Server):
    """uvicorn, with Ctrl-C and SIGTERM asking it to stop and nothing more: its own
    handlers re-raise the signal after serving, which would end the process with a
    traceback or a signal status instead of exit 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        def stop(signum: int, frame: FrameType | None) -> None:
            if self.should_exit:
                self.force_exit = True
            self.should_exit = True

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class _QuietStop(logging.Filter):
    """Once asked to stop, uvicorn cuts a stream whose page stopped reading after
    SHUTDOWN_S and logs an error with a traceback for each: that is the stop working."""

    def __init__(self, server: uvicorn.Server) -> None:
        super().__init__()
        self._server = server

    def filter(self, record: logging.LogRecord) -> bool:
        return not self._server.should_exit


def serve(
    store: Store,
    data_dir: DataDir,
    report: ReportSource,
    sock: socket.socket,
    on_ready: Callable[[str], None],
) -> None:
    """Serve the dashboard on ``sock`` until Ctrl-C or SIGTERM; ``on_ready`` gets the
    address to open (with the token) once the page can be loaded."""
    token = load_token(data_dir.path)
    port = sock.getsockname()[1]
    dashboard = Dashboard(store, data_dir, report)
    gate = dashboard.app(token, host_names(HOST))
    cap = connection_cap(
        DASHBOARD_MAX_CONNECTIONS, reserve=FD_RESERVE, backlog=BACKLOG, least=MIN_CONNECTIONS
    )
    guard = ConnectionGuard(cap, REQUEST_TIMEOUT_S, LOG_INTERVAL_S, log, gate.admits)
    config = uvicorn.Config(
        gate,
        http=guard.protocol(),
        log_level="warning",
        access_log=False,
        lifespan="off",
        backlog=BACKLOG,
        timeout_keep_alive=KEEP_ALIVE_S,
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        timeout_graceful_shutdown=SHUTDOWN_S,  # type: ignore[arg-type] # a float works
    )
    server = _Server(config)
    logging.getLogger("uvicorn.error").addFilter(_QuietStop(server))

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(guard.loop_exception)
        await dashboard.hub.start()
        async with anyio.create_task_group() as tg:
            tg.start_soon(dashboard.hub.run)

            async def announce() -> None:
                while not server.started and not server.should_exit:
                    await anyio.sleep(STOP_POLL_S)
                if server.started:
                    on_ready(f"http://{HOST}:{port}/#token={quote(token, safe='')}")

            async def end_streams() -> None:
                while not server.should_exit:
                    await anyio.sleep(STOP_POLL_S)
                dashboard.hub.close()

            tg.start_soon(announce)
            tg.start_soon(end_streams)
            await server.serve(sockets=[sock])
            tg.cancel_scope.cancel()

    anyio.run(main)
