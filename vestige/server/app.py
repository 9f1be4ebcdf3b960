"""What every tool call shares: the store, the threads its calls run on, and a fresh cache.

Every database call runs in a worker thread under its own ``CapacityLimiter``, never on the
event loop (a SQLite busy wait there would freeze the transport), and never on anyio's
default limiter, which the SDK's stdin/stdout threads need (mcp-sdk.md §6).  The MCP
client a call serves is named in that thread (``changelog.acting_for``), so the changelog
entries of the call say who asked for them; a write's request key is set there too
(``request_keys.guarding``).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Final, TypeVar

import anyio

from vestige import changelog, request_keys
from vestige.errors import StoreError

if TYPE_CHECKING:
    from collections.abc import Callable

    from vestige.owner import OwnerLock
    from vestige.server.options import Options
    from vestige.server.upkeep import Upkeep
    from vestige.store import Store

log = logging.getLogger("vestige.server")
T = TypeVar("T")

#: Worker threads for database calls.  The store serialises on one writer and one reader
#: connection anyway; more threads would only queue on its mutexes.
DB_THREADS: Final = 8


class VersionedCache:
    """Values computed from the database, dropped as soon as anyone commits.

    Keyed on ``Store.data_version()`` (``PRAGMA data_version`` read in a snapshot on the
    reader connection, which never writes, so every commit by any connection moves it).
    This is how the server notices writes made by other processes (the CLI, other
    ``--shared-writers`` servers): no cached answer outlives the data it came from.
    """

    def __init__(self, version: Callable[[], int]) -> None:
        self._version_of = version
        self._version: int | None = None
        self._values: dict[str, dict[str, Any]] = {}
        self._guard = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        version = self._version_of()
        with self._guard:
            if version != self._version:
                self._values.clear()
                self._version = version
            if key in self._values:
                self.hits += 1
                return self._values[key]
            self.misses += 1
        value = compute()
        with self._guard:
            if self._version == version:
                self._values[key] = value
        return value


class ServerApp:
    """The state of one running server, shared by its tools and its lifecycle."""

    def __init__(self, store: Store, lock: OwnerLock, options: Options) -> None:
        self.store = store
        self.lock = lock
        self.options = options
        self.started = time.time()
        self.cache = VersionedCache(store.data_version)
        self.upkeep: Upkeep | None = None
        #: Called after each write this server commits (the change notifier looks at once).
        self.wrote: Callable[[], None] = _nothing
        self.closing = False
        self._limiter = anyio.CapacityLimiter(DB_THREADS)
        self._inflight = 0

    @staticmethod
    def actor(options: Options) -> changelog.Actor:
        """Who the changelog names for this server's changes (each call adds its client)."""
        return changelog.Actor.this_process(options.transport, "vestige-mcp")

    async def run(
        self,
        fn: Callable[..., T],
        *args: Any,
        client: str | None = None,
        request_key: request_keys.RequestKey | None = None,
        **kwargs: Any,
    ) -> T:
        """Run a blocking store call in a worker thread, on behalf of MCP client ``client``.

        ``request_key`` guards the call's write (``vestige.request_keys``): a repeat raises
        ``RequestRepeated`` with the first answer.

        Cancelling the caller does not abandon the thread: a write in flight finishes (or
        rolls back) before the task ends, which is what shutdown relies on.
        """
        if self.closing:
            raise StoreError("the server is shutting down", hint="Retry once it has restarted.")
        self._inflight += 1
        try:
            return await anyio.to_thread.run_sync(
                functools.partial(_acting_for, client, request_key, fn, args, kwargs),
                limiter=self._limiter,
            )
        finally:
            self._inflight -= 1

    async def drain(self, timeout: float) -> bool:
        """Wait until no database call is running; False if some still are after ``timeout``."""
        with anyio.move_on_after(timeout):
            while self._inflight:
                await anyio.sleep(0.005)
            return True
        return False

    def describe(self) -> dict[str, Any]:
        """This server, for health_check: who it is and what it owns."""
        info = self.lock.info
        return {
            "pid": info.pid,
            "version": info.version,
            "data_dir": str(self.store.data_dir.path),
            "lock_mode": str(self.lock.mode),
            "transport": self.options.transport,
            "endpoint": self.options.endpoint,
            "maintenance_owner": bool(self.upkeep and self.upkeep.owner),
            "uptime_s": round(time.time() - self.started, 1),
        }


def _nothing() -> None:
    pass


def _acting_for(
    client: str | None,
    request_key: request_keys.RequestKey | None,
    fn: Callable[..., T],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> T:
    # Set in the worker thread itself: the name and the key reach the store however the
    # thread was started, without relying on the caller's context being copied into it.
    with changelog.acting_for(client), request_keys.guarding(request_key):
        return fn(*args, **kwargs)
