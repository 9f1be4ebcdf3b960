"""HTTP connections that a local process cannot use to starve the server.

uvicorn on its own keeps every accepted connection until the client closes it, and gives a
connection no deadline to send its first request.  300 idle connections on a machine with
256 descriptors per process (macOS's default) left no descriptor to accept a real client,
and asyncio logged a traceback for every failed ``accept()``, thousands a second.  So:

- a request must arrive whole (head and body) within the request timeout, counted from the
  connect or from the first byte of a later request on the same connection; a connection
  that is too slow gets 408 (when nothing is in service yet) and is closed;
- open connections are capped below the descriptor limit.  A new connection past the cap
  closes the oldest connection with no request in service, so a flood of idle connections
  cannot lock out a client that actually sends a request; only when every connection is
  busy is the new one refused with 503.  A request is in service only once its head has
  passed the token, Host and Origin checks (``head_ok``, asked as soon as the head is in):
  a connection with no token that dribbles a body stays one the cap may close;
- each kind of drop, asyncio's "out of system resource" accept error, and the SDK's
  traceback for a client gone before its body arrived, is logged at most once per interval
  with a count, never as a traceback per event.

uvicorn's own settings do the rest: ``timeout_keep_alive`` closes idle keep-alive
connections, ``h11_max_incomplete_event_size`` bounds a request head, ``backlog`` the
kernel's queue.  This is uvicorn's h11 protocol with those checks added around it, used by
both local web faces: ``vestige-mcp --transport http`` and `vestige dashboard`.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Any, ClassVar, Final

from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.h11_impl import H11Protocol

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Mapping


def _response(status: str, body: str, *headers: str) -> bytes:
    """A whole HTTP/1.1 response that closes the connection, for a client no app will see."""
    data = body.encode()
    head = [
        f"HTTP/1.1 {status}",
        "content-type: text/plain; charset=utf-8",
        "connection: close",
        f"content-length: {len(data)}",
        *headers,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


_REQUEST_TIMEOUT: Final = _response(
    "408 Request Timeout", "the request did not arrive whole in time: send it at once\n"
)
_BUSY: Final = _response(
    "503 Service Unavailable",
    "every connection is busy with a request: try again in a moment\n",
    "retry-after: 1",
)


def plain_response(status: int, body: str, *extra: tuple[bytes, bytes]) -> list[Any]:
    """A refusal as ASGI messages: a short text that says what to do, and a closed connection."""
    data = body.encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"%d" % len(data)),
        (b"connection", b"close"),
        *extra,
    ]
    return [
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": data, "more_body": False},
    ]


def connection_cap(most: int, *, reserve: int, backlog: int, least: int) -> int:
    """``most`` open connections, lowered to fit under this process's descriptor limit with
    ``reserve`` descriptors and the ``backlog`` to spare, but never below ``least``."""
    if sys.platform == "win32":
        return most
    import resource  # noqa: PLC0415 - POSIX only

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return most
    return max(least, min(most, soft - reserve - backlog))


class ThrottledLog:
    """A warning per kind of event at most once per interval, saying how many happened."""

    def __init__(
        self,
        interval_s: float,
        log: logging.Logger,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._interval = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def event(self, kind: str, message: str) -> None:
        count = self._counts.get(kind, 0) + 1
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._counts[kind] = count
            return
        self._last[kind] = now
        self._counts[kind] = 0
        if last is None:
            self._log.warning("%s (repeats are summed up every %g s)", message, self._interval)
        else:
            self._log.warning("%s (%d times since the last such line)", message, count)


class ConnectionGuard:
    """What every connection of one server shares: the open connections, oldest first."""

    def __init__(
        self,
        max_connections: int,
        request_timeout_s: float,
        log_interval_s: float,
        log: logging.Logger,
        head_ok: Callable[[Mapping[str, Any]], bool] = lambda scope: True,
    ) -> None:
        self.max_connections = max_connections
        self.head_ok = head_ok
        self.request_timeout_s = request_timeout_s
        self.log = ThrottledLog(log_interval_s, log)
        self.open: dict[GuardedH11, None] = {}  # insertion order: oldest first

    def protocol(self) -> type[GuardedH11]:
        """uvicorn's ``http`` setting: the protocol class, bound to this guard."""
        return type("GuardedH11", (GuardedH11,), {"guard": self})

    def admit(self, new: GuardedH11) -> bool:
        """Make room for ``new``; False if every other connection is busy."""
        self.open[new] = None
        if len(self.open) <= self.max_connections:
            return True
        victim = next((c for c in self.open if c is not new and c.evictable()), None)
        if victim is None:
            del self.open[new]
            self.log.event(
                "busy",
                f"refused a connection with 503: all {self.max_connections} connections "
                "are busy with requests",
            )
            return False
        self.log.event(
            "evicted",
            f"closed the oldest idle connection to make room: the cap is "
            f"{self.max_connections} open connections",
        )
        victim.drop()
        return True

    def loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """asyncio's exception handler: one throttled line for a failed ``accept()``."""
        message = str(context.get("message", ""))
        if message.startswith("socket.accept() out of system resource"):
            self.log.event("accept", f"could not accept a connection: {context.get('exception')}")
            return
        loop.default_exception_handler(context)


class DisconnectFilter(logging.Filter):
    """The SDK logs a full traceback (at ERROR) for every client that disconnects before its
    request body arrived, which a slow or abandoned upload, and the request deadline itself,
    produce at will.  Such records become one throttled warning."""

    def __init__(self, throttled: ThrottledLog) -> None:
        super().__init__()
        self._log = throttled

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ClientDisconnect):
            self._log.event("disconnect", "a client went away before its request arrived whole")
            return False
        return True


class GuardedH11(H11Protocol):
    guard: ClassVar[ConnectionGuard]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._serving = False
        if not self.guard.admit(self):
            self.connections.discard(self)
            transport.write(_BUSY)
            transport.close()
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.guard.open.pop(self, None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and self._awaiting_request():
            self._arm()
        super().data_received(data)
        if not self._serving and not self.idle():  # a new head is in: judge it now
            self._serving = self.guard.head_ok(self.cycle.scope)
        if not self._awaiting_request():
            self._disarm()

    def idle(self) -> bool:
        """No request in progress: nothing yet, or the last response is complete."""
        return self.cycle is None or self.cycle.response_complete

    def evictable(self) -> bool:
        """No request in service: idle, or one whose head has not passed the checks."""
        return self.idle() or not self._serving

    def on_response_complete(self) -> None:
        self._serving = False
        super().on_response_complete()

    def drop(self) -> None:
        """Close this connection to make room, and stop counting it at once.

        The transport closes on the loop's next turn; until then a connection still counted
        would be picked as the victim again by every connection accepted in the same burst,
        so one close made room for many and the cap held nothing (300 idle connections left
        152 open under a cap of 100, and the process ran out of descriptors under load).
        """
        self.guard.open.pop(self, None)
        self._disarm()
        self.transport.close()

    def _awaiting_request(self) -> bool:
        return self.idle() or self.cycle.more_body

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.guard.request_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        self.guard.log.event(
            "slow",
            f"closed a connection that did not send a whole request within "
            f"{self.guard.request_timeout_s:g} s",
        )
        if self.idle():
            self.transport.write(_REQUEST_TIMEOUT)
        self.transport.close()
