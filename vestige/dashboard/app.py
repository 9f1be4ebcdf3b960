"""The dashboard's web face: one page, a server-sent event stream, two JSON panels.

Every request is judged on its head first, by the same rules as ``vestige-mcp --transport
http`` (:mod:`vestige.local_access`): a Host that does not name this machine's loopback gets
421, an Origin from elsewhere 403.  The page and its script and style hold no data and are
served to anyone who passes those checks; everything with data (the feed, the panels, the
load-test report) needs the token, as ``Authorization: Bearer`` or, where a browser cannot
send a header (an ``EventSource``, a link), as ``?token=``.

The address the command prints carries the token in its fragment (``/#token=…``), which a
browser never sends to any server.  The page keeps it in ``sessionStorage`` (one tab, this
origin and port only) and drops it from the address.  No cookie: a browser sends a cookie
for 127.0.0.1 to every port of it, so any local web server the user opened would receive
the token, and another program's unparsable cookie could hide ours.

The page is static files with no build step; every text it shows is set as text, never as
markup, and a Content-Security-Policy allows scripts from this origin only, so a memory or a
client name that looks like HTML stays text.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs

import anyio
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from vestige.changelog import Gap
from vestige.dashboard.hub import Hub, Problem
from vestige.dashboard.panels import status
from vestige.errors import VestigeError
from vestige.http_connections import plain_response
from vestige.local_access import HostRules, token_matches

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping

    from starlette.requests import Request
    from starlette.types import ASGIApp, Receive, Scope, Send

    from vestige.changelog import Change
    from vestige.config import DataDir
    from vestige.dashboard.hub import Item
    from vestige.dashboard.panels import ReportSource
    from vestige.store import Store

log = logging.getLogger("vestige.dashboard")

#: A page opened fresh is shown this many of the newest changes before the live ones.
RECENT_CHANGES: Final = 50
#: An event stream with nothing to say sends a comment this often, so that proxies and
#: the browser keep it open and a dead page is noticed by the failed write.
HEARTBEAT_S: Final = 15.0
#: How long a browser waits before it reconnects a dropped stream (the SSE ``retry:``).
RECONNECT_MS: Final = 2000
#: Status (a doctor run and the counts) is computed at most this often, however many
#: pages ask: each asks every few seconds.
STATUS_FRESH_S: Final = 2.0
_STATIC: Final = {
    "/": ("page.html", "text/html; charset=utf-8"),
    "/page.js": ("page.js", "text/javascript; charset=utf-8"),
    "/page.css": ("page.css", "text/css; charset=utf-8"),
}
_SECURITY_HEADERS: Final = (
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        b"img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
)
#: The load test's own page: its charts are inline images and styles, and it has no script.
#: It comes from a folder on disk, which may be a cloned repository's: it runs sandboxed, may
#: not submit forms anywhere nor load anything from elsewhere.
_REPORT_CSP: Final = (
    "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
    "form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def _plain(status_code: int, body: str, *extra: tuple[bytes, bytes]) -> list[dict[str, Any]]:
    return plain_response(status_code, body, *_SECURITY_HEADERS, *extra)


class Gate:
    """ASGI middleware: the Host and Origin rules for every request, the token for data."""

    def __init__(self, app: ASGIApp, token: str, hosts: list[str]) -> None:
        self._app = app
        self._token = token
        self._rules = HostRules(hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        refusal = self.judge(scope)
        if refusal is not None:
            for message in refusal:
                await send(message)
            return
        await self._app(scope, receive, _secured(send))

    def admits(self, scope: Mapping[str, Any]) -> bool:
        """For the connection guard: a request that passed counts as in service."""
        return self.judge(scope) is None

    def judge(self, scope: Mapping[str, Any]) -> list[dict[str, Any]] | None:
        match self._rules.refusal(scope["headers"]):
            case "host":
                return _plain(421, "the Host header does not name this dashboard (loopback)\n")
            case "origin":
                return _plain(403, "the Origin header does not name this dashboard (loopback)\n")
        if scope["path"] in _STATIC or self._has_token(scope):
            return None
        return _plain(
            401,
            "this request carries no valid token: open the address `vestige dashboard` "
            "printed (it carries the token), or send Authorization: Bearer <token> "
            "(VESTIGE_AUTH_TOKEN, else <data-dir>/auth_token)\n",
            (b"www-authenticate", b'Bearer realm="vestige"'),
        )

    def _has_token(self, scope: Mapping[str, Any]) -> bool:
        for name, value in scope["headers"]:
            if name.lower() == b"authorization":
                scheme, _, bearer = value.strip().partition(b" ")
                if scheme.lower() == b"bearer" and token_matches(bearer.strip(), self._token):
                    return True
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        given = query.get("token", [])
        return len(given) == 1 and token_matches(given[0].encode(), self._token)


def _secured(send: Send) -> Send:
    async def sending(message: Any) -> None:
        if message["type"] == "http.response.start":
            names = {name.lower() for name, _ in message.get("headers", [])}
            extra = [(n, v) for n, v in _SECURITY_HEADERS if n not in names]
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return sending


class Dashboard:
    """The routes, over one store, one hub and one worker thread for database calls."""

    def __init__(self, store: Store, data_dir: DataDir, report: ReportSource) -> None:
        self._store = store
        self._data_dir = data_dir
        self._report = report
        self._limiter = anyio.CapacityLimiter(1)
        self.hub = Hub(store, self.call)
        self._status: dict[str, Any] | None = None
        self._status_at = float("-inf")
        self._status_lock = anyio.Lock()

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        def bound() -> Any:
            return fn(*args, **kwargs)

        return await anyio.to_thread.run_sync(bound, limiter=self._limiter)

    def app(self, token: str, hosts: list[str]) -> Gate:
        routes = [
            *(Route(path, self._static) for path in _STATIC),
            Route("/events", self._events),
            Route("/api/status", self._status_json),
            Route("/api/report", self._report_json),
            Route("/report", self._report_page),
        ]
        return Gate(Starlette(routes=routes), token, hosts)

    async def _static(self, request: Request) -> Response:
        name, media = _STATIC[request.url.path]
        body = resources.files("vestige.dashboard").joinpath(name).read_bytes()
        return Response(body, media_type=media)

    async def _status_json(self, request: Request) -> Response:
        async with self._status_lock:
            now = anyio.current_time()
            if self._status is None or now - self._status_at >= STATUS_FRESH_S:
                try:
                    self._status = await self.call(status, self._store, self._data_dir)
                except VestigeError as exc:
                    return JSONResponse({"error": exc.message, "hint": exc.hint}, 503)
                self._status_at = now
        return JSONResponse(self._status)

    async def _report_json(self, request: Request) -> Response:
        return JSONResponse(await anyio.to_thread.run_sync(self._report.read))

    async def _report_page(self, request: Request) -> Response:
        page = await anyio.to_thread.run_sync(self._report.page)
        if page is None:
            return Response("no load-test report page to show\n", 404, media_type="text/plain")
        return HTMLResponse(page, headers={"content-security-policy": _REPORT_CSP})

    async def _events(self, request: Request) -> Response:
        resume = _resume_point(request)
        return StreamingResponse(
            self._stream(resume),
            media_type="text/event-stream",
            headers={"x-accel-buffering": "no"},
        )

    async def _stream(self, resume: int | None) -> AsyncIterator[str]:
        """Recent (or missed) changes from the changelog, then live ones from the hub.

        What a page missed is sent as it is read, a page of the changelog at a time, so a
        page far behind costs one page of memory, not its whole backlog.  If the changelog
        cannot be read, the page is told why and the stream ends: the browser reconnects on
        its own, from the last change it saw.
        """
        listener, upto = self.hub.join()
        try:
            yield f"retry: {RECONNECT_MS}\n\n"
            sent = resume
            while True:
                caught = _CaughtUp(sent)
                try:
                    async for event in self._catch_up(caught, upto):
                        yield event
                except VestigeError as exc:
                    yield _event("problem", {"message": exc.message, "hint": exc.hint})
                    return
                seen = upto if caught.seq is None else caught.seq  # set by the catch-up
                yield _event("live", {"seq": seen})
                while not listener.overflowed:
                    items = await listener.next(HEARTBEAT_S)
                    if listener.closed:
                        return
                    if not items:
                        yield ": still here\n\n"
                    for item in items:
                        text, seen = _render(item, seen)
                        if text:
                            yield text
                sent = seen
                # The page stopped reading for a while: read on from the changelog.
                self.hub.leave(listener)
                listener, upto = self.hub.join()
        finally:
            self.hub.leave(listener)

    async def _catch_up(self, caught: _CaughtUp, upto: int) -> AsyncIterator[str]:
        """The events a page is owed up to ``upto``: the newest few on a fresh page, every
        change after the last one it saw on a reconnect (with a gap first if some were
        trimmed).  ``caught.seq`` is then the last change the page has seen."""
        if caught.seq is not None and caught.seq > upto:
            # The page saw changes this log never had: the database was replaced (another
            # data directory behind the same address, a new database).  Say so, start over.
            yield _event(
                "gap",
                {
                    "message": f"this page had seen changes up to #{caught.seq}, but the "
                    f"changelog ends at #{upto}: the database was replaced; showing its "
                    "changes from now on"
                },
            )
            caught.seq = None
        if caught.seq is None:
            page = await self.call(self._store.changes, limit=RECENT_CHANGES)
            for change in reversed(page.changes):
                if change.seq <= upto:
                    yield _change_event(change)
            caught.seq = upto
            return
        last = upto if caught.seq is None else caught.seq
        async for found in self.hub.replay(last, upto):
            text, last = _render(found, last)
            caught.seq = last
            if text:
                yield text
        caught.seq = max(last, upto)


@dataclass(slots=True)
class _CaughtUp:
    """How far a stream's catching up has got (the last change seq sent, None: fresh)."""

    seq: int | None


def _resume_point(request: Request) -> int | None:
    """The last change a reconnecting page saw (``Last-Event-ID``, or ``?after=`` for a
    page that starts a new stream itself); None for a fresh page."""
    text = request.headers.get("last-event-id") or request.query_params.get("after") or ""
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) < 19 else None


def _render(item: Item | Change | Gap, sent: int) -> tuple[str, int]:
    """One queued item as an SSE event, and the last change seq the page has now seen."""
    if item is None:
        return _event("problem", None), sent
    if isinstance(item, Problem):
        return _event("problem", {"message": item.message, "hint": item.hint}), sent
    if isinstance(item, Gap):
        return _event("gap", {"message": item.message}), sent
    if isinstance(item, tuple):
        parts = []
        for change in item:
            if change.seq > sent:
                parts.append(_change_event(change))
                sent = change.seq
        return "".join(parts), sent
    if item.seq > sent:
        return _change_event(item), item.seq
    return "", sent


def _change_event(change: Change) -> str:
    data = json.dumps(change.to_dict(with_before=False), separators=(",", ":"))
    return f"id: {change.seq}\nevent: change\ndata: {data}\n\n"


def _event(name: str, data: Any) -> str:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
