"""The dashboard's web face: one page, a server-sent event stream, two JSON panels.

Every request is judged on its head first, by the same rules as ``vestige-mcp --transport
http`` (:mod:`vestige.local_access`): a Host that does not name this machine's loopback gets
421, an Origin from elsewhere 403, and a request without the token 401.  A browser cannot
send a bearer header with a page load or an ``EventSource``, so the address the command
prints carries the token once (``/?token=…``); the page trades it for a cookie that
scripts cannot read (HttpOnly) and other sites cannot send (SameSite=Strict), and redirects
to itself without it, so the token leaves the address bar and the history.

The page and its script are static files with no build step; every text the page shows
is set as text, never as markup, and a Content-Security-Policy allows scripts from this
origin only, so a memory or a client name that looks like HTML stays text.
"""

from __future__ import annotations

import json
import logging
from http.cookies import SimpleCookie
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
from vestige.local_access import HostRules, token_matches

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

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
#: The session cookie lasts as long as the browser session, no longer.
COOKIE_PREFIX: Final = "vestige_dashboard_"
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
_REPORT_CSP: Final = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'none'"
)


def _plain(status_code: int, body: str, *extra: tuple[bytes, bytes]) -> list[dict[str, Any]]:
    data = body.encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"%d" % len(data)),
        (b"connection", b"close"),
        *_SECURITY_HEADERS,
        *extra,
    ]
    return [
        {"type": "http.response.start", "status": status_code, "headers": headers},
        {"type": "http.response.body", "body": data, "more_body": False},
    ]


class Gate:
    """ASGI middleware: the Host, Origin and token rules, and the token-for-cookie trade."""

    def __init__(self, app: ASGIApp, token: str, hosts: list[str], port: int) -> None:
        self._app = app
        self._token = token
        self._rules = HostRules(hosts)
        self._cookie = f"{COOKIE_PREFIX}{port}"  # two dashboards on two ports keep both

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        found: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            found.setdefault(name.lower(), value)
        refusal = self._judge(scope, found)
        if refusal is not None:
            for message in refusal:
                await send(message)
            return
        await self._app(scope, receive, _secured(send))

    def _judge(self, scope: Scope, found: dict[bytes, bytes]) -> list[dict[str, Any]] | None:
        if not self._rules.host_ok(found.get(b"host")):
            return _plain(421, "the Host header does not name this dashboard (loopback)\n")
        if not self._rules.origin_ok(found.get(b"origin")):
            return _plain(403, "the Origin header does not name this dashboard (loopback)\n")
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        given = query.get("token", [""])[-1]
        if given:
            if scope["path"] == "/" and token_matches(given.encode(), self._token):
                return self._trade()
            return self._refuse("the token in the address is not this dashboard's")
        if self._has_token(found):
            return None
        return self._refuse("this request carries no token")

    def _has_token(self, found: dict[bytes, bytes]) -> bool:
        scheme, _, bearer = found.get(b"authorization", b"").strip().partition(b" ")
        if scheme.lower() == b"bearer" and token_matches(bearer.strip(), self._token):
            return True
        cookies: SimpleCookie = SimpleCookie()
        try:
            cookies.load(found.get(b"cookie", b"").decode("latin-1"))
        except ValueError:  # http.cookies raises CookieError, a ValueError
            return False
        morsel = cookies.get(self._cookie)
        return morsel is not None and token_matches(morsel.value.encode(), self._token)

    def _trade(self) -> list[dict[str, Any]]:
        """The token in the address becomes a cookie, and the address loses it."""
        cookie = f"{self._cookie}={self._token}; Path=/; HttpOnly; SameSite=Strict"
        return _plain(303, "", (b"location", b"/"), (b"set-cookie", cookie.encode()))

    def _refuse(self, why: str) -> list[dict[str, Any]]:
        return _plain(
            401,
            f"{why}: open the address `vestige dashboard` printed (it carries the token), or "
            "send Authorization: Bearer <token> (VESTIGE_AUTH_TOKEN, else <data-dir>/auth_token)\n",
            (b"www-authenticate", b'Bearer realm="vestige"'),
        )


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

    def app(self, token: str, hosts: list[str], port: int) -> ASGIApp:
        routes = [
            *(Route(path, self._static) for path in _STATIC),
            Route("/events", self._events),
            Route("/api/status", self._status_json),
            Route("/api/report", self._report_json),
            Route("/report", self._report_page),
        ]
        return Gate(Starlette(routes=routes), token, hosts, port)

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

        If the changelog cannot be read, the page is told why and the stream ends: the
        browser reconnects on its own, from the last change it saw.
        """
        listener, upto = self.hub.join()
        try:
            yield f"retry: {RECONNECT_MS}\n\n"
            sent = resume
            while True:
                try:
                    events, sent = await self._catch_up(sent, upto)
                except VestigeError as exc:
                    yield _event("problem", {"message": exc.message, "hint": exc.hint})
                    return
                for event in events:
                    yield event
                yield _event("live", {"seq": sent})
                while not listener.overflowed:
                    items = await listener.next(HEARTBEAT_S)
                    if listener.closed:
                        return
                    if not items:
                        yield ": still here\n\n"
                    for item in items:
                        text, sent = _render(item, sent)
                        if text:
                            yield text
                # The page stopped reading for a while: read on from the changelog.
                self.hub.leave(listener)
                listener, upto = self.hub.join()
        finally:
            self.hub.leave(listener)

    async def _catch_up(self, sent: int | None, upto: int) -> tuple[list[str], int]:
        """The events a page is owed up to ``upto``, and the last change it has then seen:
        the newest few on a fresh page, every change after the last one it saw on a
        reconnect (with a gap first if some were trimmed)."""
        if sent is None:
            page = await self.call(self._store.changes, limit=RECENT_CHANGES)
            owed = [c for c in reversed(page.changes) if c.seq <= upto]
            return [_change_event(c) for c in owed], upto
        events: list[str] = []
        async for found in self.hub.replay(sent, upto):
            text, sent = _render(found, sent)
            events.append(text)
        return events, max(sent, upto)


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
