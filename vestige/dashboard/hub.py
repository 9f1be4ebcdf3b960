"""One follower of the changelog, fanned out to every open page.

Each open page holds a server-sent event stream.  Polling the feed once per page would
multiply the reads by the pages; one :class:`Hub` polls instead and offers each batch to
every page's :class:`Listener`, a bounded queue.  A page that stops reading (a laptop lid
closed on a busy store) overflows its own queue and nobody else's: it is then told to
catch up from the changelog itself, where nothing is lost, instead of holding every change
in memory until it reads again.

A page joins by taking the hub's ``last_seq`` (no database call, so nothing can commit in
between): everything after it will reach the page's queue, and everything up to it the page
reads from the changelog (:meth:`Hub.replay`).  Joining and offering happen on the event
loop without an ``await`` between them, so no change falls between the two.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import anyio

from vestige.errors import VestigeError
from vestige.feed import FEED_PAGE_ROWS, FEED_POLL_S, ChangeFeed

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from vestige.changelog import Change, Gap
    from vestige.store import Store

log = logging.getLogger("vestige.dashboard")

#: Batches a page may fall behind by before it is told to catch up from the changelog.
LISTENER_MAX_BATCHES: Final = 256
#: After a failed look at the changelog, wait this long before the next one.
FEED_RETRY_S: Final = 1.0
#: A failure of the feed is logged at most this often (it is shown on every page at once).
FEED_ERROR_LOG_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class Problem:
    """The feed cannot read the changelog; pages show it until a look succeeds again."""

    message: str
    hint: str | None


#: What a page is offered: changes, a gap, a problem, or None (the feed works again).
Item: TypeAlias = "tuple[Change, ...] | Gap | Problem | None"


class Listener:
    """One page's queue of what the hub found, bounded by :data:`LISTENER_MAX_BATCHES`."""

    def __init__(self) -> None:
        self._items: deque[Item] = deque()
        self._ready = anyio.Event()
        self.overflowed = False
        self.closed = False

    def close(self) -> None:
        """The dashboard is stopping: the page's stream ends at its next wait."""
        self.closed = True
        self._ready.set()

    def offer(self, item: Item) -> None:
        if len(self._items) >= LISTENER_MAX_BATCHES:
            self.overflowed = True  # the page reads the changelog itself from where it is
            self._items.clear()
        else:
            self._items.append(item)
        self._ready.set()

    async def next(self, timeout: float) -> list[Item]:
        """What arrived, waiting up to ``timeout`` seconds; [] when nothing did."""
        if not self._items and not self.overflowed and not self.closed:
            with anyio.move_on_after(timeout):
                await self._ready.wait()
        self._ready = anyio.Event()
        taken = list(self._items)
        self._items.clear()
        return taken


class Hub:
    """Polls the changelog every :data:`FEED_POLL_S` and offers what it finds to every page.

    ``call`` runs a database call off the event loop (one worker thread for the whole
    dashboard: the store's reader serves one call at a time).
    """

    def __init__(self, store: Store, call: Callable[..., Any]) -> None:
        self._store = store
        self._call = call
        self._feed: ChangeFeed | None = None
        self._listeners: set[Listener] = set()
        self._problem: Problem | None = None
        self._logged_at = float("-inf")
        self._closed = False
        self.last_seq = 0

    async def start(self) -> None:
        """Start from the newest change: pages replay what came before from the changelog."""
        self._feed = await self._call(ChangeFeed, self._store)
        self.last_seq = self._feed.last_seq

    def join(self) -> tuple[Listener, int]:
        """A new page's queue, and the last seq it must read from the changelog itself."""
        listener = Listener()
        if self._closed:
            listener.close()
        self._listeners.add(listener)
        if self._problem is not None:
            listener.offer(self._problem)
        return listener, self.last_seq

    def leave(self, listener: Listener) -> None:
        self._listeners.discard(listener)

    def close(self) -> None:
        """End every page's stream, so that the web server can stop without cutting them."""
        self._closed = True
        for listener in self._listeners:
            listener.close()

    async def run(self) -> None:
        if self._feed is None:
            await self.start()
        assert self._feed is not None
        while True:
            try:
                batch = await self._call(self._feed.poll)
            except VestigeError as exc:
                self._fail(Problem(exc.message, exc.hint))
                await anyio.sleep(FEED_RETRY_S)
                continue
            if self._problem is not None:
                self._problem = None
                self._offer(None)
            if batch is not None:
                if batch.gap is not None:
                    self._offer(batch.gap)
                if batch.changes:
                    self._offer(batch.changes)
                self.last_seq = self._feed.last_seq
                if batch.behind:
                    continue
            await anyio.sleep(FEED_POLL_S)

    def _offer(self, item: Item) -> None:
        for listener in self._listeners:
            listener.offer(item)

    def _fail(self, problem: Problem) -> None:
        now = time.monotonic()
        if problem != self._problem or now - self._logged_at >= FEED_ERROR_LOG_S:
            log.warning("cannot read the changelog: %s", problem.message)
            self._logged_at = now
        if problem != self._problem:
            self._problem = problem
            self._offer(problem)

    async def replay(self, after_seq: int, upto_seq: int) -> AsyncIterator[Change | Gap]:
        """The changes after ``after_seq`` up to ``upto_seq`` (and a gap first, if any)."""
        last = after_seq
        while last < upto_seq:
            page = await self._call(
                self._store.changes, after_seq=last, limit=FEED_PAGE_ROWS, oldest_first=True
            )
            if page.gap is not None:
                yield page.gap
            for change in page.changes:
                if change.seq > upto_seq:
                    return
                yield change
                last = change.seq
            if not page.more or not page.changes:
                return
