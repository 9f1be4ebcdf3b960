"""Tell subscribed clients when the memory changed, whoever changed it.

Several processes write one database: this server's own clients, other ``--shared-writers``
servers, attached windows, the CLI.  A client that subscribed to ``memory://changes`` (or
``memory://recent``, ``memory://stats``) is told of every one of those changes by the
server it talks to, with no message passing between the processes: the changelog is the
channel (:mod:`vestige.feed`).

- **Noticing.**  While at least one client is subscribed, :class:`ChangeNotifier` looks at
  the feed every :data:`vestige.feed.FEED_POLL_S`, and at once after a write of its own.
  With nobody subscribed it does not look at all: an idle server pays nothing.
- **Subscribing.**  The SDK's ``MCPServer`` does not serve ``resources/subscribe`` (a
  handshake-era client would get "method not found"), so :func:`install` registers the
  subscribe and unsubscribe handlers on its low-level server, which then advertises
  ``resources.subscribe``.  A 2026-style client opens a ``subscriptions/listen`` stream
  instead; its events go through the SDK's subscription bus (:class:`CountingBus` tells the
  notifier whether any stream is open).  A connection's subscriptions end with it.
- **Bounding the rate.**  A burst of writes (an import, a consolidation) must not become a
  burst of notifications, each sending every client to read the resource again.  Each URI
  is announced at most once every :data:`NOTIFY_MIN_INTERVAL_S`; changes inside that window
  are announced together when it ends (the last announcement is never dropped).

A notification says only *that* a resource changed (MCP's design): the client reads
``memory://changes``, or calls ``memory_changelog`` with ``since_seq`` for exactly what it
missed, which also says when some of it is gone (a gap).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import anyio
import mcp_types as types
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourceUpdated
from mcp.shared.exceptions import MCPError

from vestige.changelog import ChangeKind
from vestige.feed import FEED_POLL_S, ChangeFeed

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from anyio.abc import TaskGroup
    from mcp.server.context import ServerRequestContext
    from mcp.server.mcpserver import MCPServer
    from mcp.server.subscriptions import ServerEvent

    from vestige.feed import FeedBatch
    from vestige.server.app import ServerApp

log = logging.getLogger("vestige.server")

CHANGES_URI: Final = "memory://changes"
RECENT_URI: Final = "memory://recent"
STATS_URI: Final = "memory://stats"
#: The resources a client may subscribe to.
SUBSCRIBABLE: Final = (CHANGES_URI, RECENT_URI, STATS_URI)
#: Each URI is announced at most this often; what changes in between is announced at the
#: end of the window.  Four a second keeps a client's view fresh without making a bulk
#: import into thousands of reads.
NOTIFY_MIN_INTERVAL_S: Final = 0.25
#: When a first client subscribes, the feed starts with the changes made this long before:
#: a change committed just after the subscription was answered carries a time a little
#: before its commit.  Announcing one old change too many is harmless; missing one is not.
WATCH_MARGIN_S: Final = 2.0
#: A failing look at the feed (a damaged or vanished database) is logged at most this often.
FEED_ERROR_LOG_S: Final = 60.0

#: Changes that leave memory://recent as it was (it lists ids, types, tags, times, text).
_NOT_RECENT: Final = frozenset({ChangeKind.PROMOTED, ChangeKind.DEMOTED, ChangeKind.DECAYED})


def changed_uris(batch: FeedBatch) -> set[str]:
    """The resources a batch of changes made stale."""
    if not batch.changes and batch.gap is None:
        return set()
    uris = {CHANGES_URI, STATS_URI}
    if batch.gap is not None or any(c.kind not in _NOT_RECENT for c in batch.changes):
        uris.add(RECENT_URI)
    return uris


class CountingBus(InMemorySubscriptionBus):
    """The SDK's in-process bus for ``subscriptions/listen`` streams, which also says
    whether any stream is open (the notifier looks at the feed only while one is)."""

    def __init__(self) -> None:
        super().__init__()
        self.listeners = 0
        self.on_change: Callable[[], None] = lambda: None

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        unsubscribe = super().subscribe(listener)
        self.listeners += 1
        self.on_change()
        done = False

        def once() -> None:
            nonlocal done
            if not done:
                done = True
                self.listeners -= 1
                unsubscribe()

        return once


Send = Callable[[str], "Awaitable[None]"]


class ChangeNotifier:
    """The subscriptions of one server's clients, and the loop that serves them."""

    def __init__(self, app: ServerApp, bus: CountingBus) -> None:
        self._app = app
        self._bus = bus
        bus.on_change = self._woken
        #: URI -> {connection key: how to send to that connection}.
        self._subscribers: dict[str, dict[object, Send]] = {uri: {} for uri in SUBSCRIBABLE}
        self._feed: ChangeFeed | None = None
        self._watch_from: float | None = None  # the time the first subscriber came
        self._due: set[str] = set()
        self._last_sent: dict[str, float] = {}
        self._wake = anyio.Event()
        self._error_logged_at = -FEED_ERROR_LOG_S
        self._owed: dict[object, dict[str, Send]] = {}  # per connection: URIs not yet sent
        self._delivering: set[object] = set()  # connections with a delivery task running
        self._deliveries: TaskGroup | None = None
        self.notices = 0  # notifications written

    # -- who listens ----------------------------------------------------------------

    @property
    def watching(self) -> bool:
        return self._bus.listeners > 0 or any(self._subscribers.values())

    def subscribe(self, key: object, uri: str, send: Send) -> None:
        """Announce ``uri`` to this connection from now on."""
        self._subscribers[uri][key] = send
        self._woken()

    def unsubscribe(self, key: object, uri: str | None = None) -> None:
        """Stop announcing ``uri`` (every URI when None) to this connection."""
        for each in SUBSCRIBABLE if uri is None else (uri,):
            self._subscribers[each].pop(key, None)

    def wrote(self) -> None:
        """This server committed a write: look at the feed now rather than at the next tick,
        unless no notice could go out now anyway (every resource anyone listens to was
        announced within NOTIFY_MIN_INTERVAL_S).  Then the next tick finds the write, and a
        burst of writes costs a look per tick instead of one per write: looking after each
        one took a fifth of an unpaced writer's throughput (docs/BENCHMARKS.md)."""
        if self.watching and self._may_announce(time.monotonic()):
            self._woken()

    def _may_announce(self, now: float) -> bool:
        listened = SUBSCRIBABLE if self._bus.listeners else self._subscribed()
        return any(
            now - self._last_sent.get(uri, -NOTIFY_MIN_INTERVAL_S) >= NOTIFY_MIN_INTERVAL_S
            for uri in listened
        )

    def _subscribed(self) -> tuple[str, ...]:
        return tuple(uri for uri, subscribers in self._subscribers.items() if subscribers)

    def _woken(self) -> None:
        """Called on the event loop, before a subscription is answered: when nobody was
        watching, the time noted here is where the feed starts (see WATCH_MARGIN_S)."""
        if self._feed is None and self._watch_from is None:
            self._watch_from = time.time() - WATCH_MARGIN_S
        self._wake.set()

    # -- the loop ---------------------------------------------------------------------

    async def run(self) -> None:
        async with anyio.create_task_group() as deliveries:
            self._deliveries = deliveries
            await self._follow()
            deliveries.cancel_scope.cancel()

    async def _follow(self) -> None:
        while True:
            if not self.watching:
                if self._feed is not None:
                    log.info("no client is subscribed any more: stopped following the changelog")
                self._feed = None  # nobody listens: no look at all until someone does
                self._watch_from = None
                self._due.clear()
                await self._wake.wait()
                self._wake = anyio.Event()
                continue
            with anyio.move_on_after(FEED_POLL_S):
                await self._wake.wait()
            self._wake = anyio.Event()
            if self._app.closing:
                return
            await self._look()
            await self._announce()

    async def _look(self) -> None:
        try:
            if self._feed is None:
                since = datetime.fromtimestamp(self._watch_from or time.time(), UTC).isoformat()
                self._feed = await self._app.run(ChangeFeed, self._app.store, since=since)
                log.info("a client subscribed: following the changelog for changes by any process")
            batch = await self._app.run(self._feed.poll)
        except Exception as err:  # the server goes on; its tools report the same fault
            now = time.monotonic()
            if now - self._error_logged_at >= FEED_ERROR_LOG_S:
                self._error_logged_at = now
                log.warning("cannot read the changelog for subscribed clients: %s", err)
            return
        if batch is None:
            return
        self._due |= changed_uris(batch)
        if batch.behind:
            self._woken()  # read on at once

    async def _announce(self) -> None:
        now = time.monotonic()
        for uri in sorted(self._due):
            if now - self._last_sent.get(uri, -NOTIFY_MIN_INTERVAL_S) < NOTIFY_MIN_INTERVAL_S:
                continue  # announced a moment ago: this one goes out when the window ends
            self._due.discard(uri)
            self._last_sent[uri] = now
            await self._send(uri, self._subscribers[uri])

    async def _send(self, uri: str, subscribers: dict[object, Send]) -> None:
        for key, send in subscribers.items():
            self._owe(key, uri, send)
        if self._bus.listeners:
            await self._bus.publish(ResourceUpdated(uri=uri))  # buffered per stream: no wait

    def _owe(self, key: object, uri: str, send: Send) -> None:
        """Queue ``uri`` for one connection, which gets its notifications in a task of its
        own: a client that stopped reading holds up only itself (its transport's write
        blocks), never the others.  While one is being written, later ones coalesce."""
        owed = self._owed.setdefault(key, {})
        owed[uri] = send
        if key not in self._delivering:
            self._delivering.add(key)
            assert self._deliveries is not None  # subscriptions are served while run() runs
            self._deliveries.start_soon(self._deliver, key)

    async def _deliver(self, key: object) -> None:
        try:
            while owed := self._owed.get(key):
                uri = min(owed)
                send = owed.pop(uri)
                try:
                    await send(uri)  # the SDK drops a notification to a closed connection
                except Exception as err:  # that connection's problem, not the server's
                    log.debug("could not notify a client of %s: %r", uri, err)
                else:
                    self.notices += 1
        finally:
            self._delivering.discard(key)
            self._owed.pop(key, None)


def install(mcp: MCPServer[Any], notifier: ChangeNotifier) -> None:
    """Serve ``resources/subscribe`` and ``resources/unsubscribe`` for :data:`SUBSCRIBABLE`.

    Registered on the SDK's low-level server (``MCPServer`` has no way to); its capabilities
    then advertise ``resources.subscribe`` to handshake-era clients.
    """
    server = mcp._lowlevel_server

    async def subscribe(
        ctx: ServerRequestContext[Any], params: types.SubscribeRequestParams
    ) -> types.EmptyResult:
        uri = _known(str(params.uri))
        connection = _connection(ctx)
        if connection is not None and uri not in connection.state.setdefault(_SUBSCRIBED, set()):
            connection.state[_SUBSCRIBED].add(uri)
            if len(connection.state[_SUBSCRIBED]) == 1:
                connection.exit_stack.callback(notifier.unsubscribe, connection)
        key = connection if connection is not None else ctx.session
        notifier.subscribe(key, uri, ctx.session.send_resource_updated)
        return types.EmptyResult()

    async def unsubscribe(
        ctx: ServerRequestContext[Any], params: types.UnsubscribeRequestParams
    ) -> types.EmptyResult:
        uri = _known(str(params.uri))
        connection = _connection(ctx)
        if connection is not None:
            connection.state.get(_SUBSCRIBED, set()).discard(uri)
        notifier.unsubscribe(connection if connection is not None else ctx.session, uri)
        return types.EmptyResult()

    server.add_request_handler("resources/subscribe", types.SubscribeRequestParams, subscribe)
    server.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, unsubscribe)


_SUBSCRIBED: Final = "vestige.subscribed_uris"


def _known(uri: str) -> str:
    if uri not in SUBSCRIBABLE:
        raise MCPError(
            types.INVALID_PARAMS,
            f"cannot subscribe to {uri!r}: the resources that announce changes are "
            f"{', '.join(SUBSCRIBABLE)}",
        )
    return uri


def _connection(ctx: ServerRequestContext[Any]) -> Any:
    """The SDK's per-connection state behind a request's session, or None.

    A request's ``session`` is made per request; the connection outlives it, so it is what
    identifies a subscriber and what ends its subscriptions when it closes (its exit
    stack).  The SDK keeps it private on the session; without it, the session stands in.
    """
    connection = getattr(ctx.session, "_connection", None)
    if connection is None or not hasattr(connection, "exit_stack"):
        return None
    return connection
