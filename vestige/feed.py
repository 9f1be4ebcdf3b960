"""Follow the changelog as it grows: what any process committed since the last look.

Several processes share one database (servers with ``--shared-writers``, a server and its
attached windows, the CLI), and an agent that wants to sense what the others did should
not have to ask each of them.  The changelog already orders every committed change by a
sequence number that only grows, and a writer's transaction both takes its number and
commits before the next writer can begin, so a reader never sees change N+1 without N.
Following it therefore needs two things only:

- noticing that *someone* committed, cheaply: ``Store.data_version()`` (``PRAGMA
  data_version`` on the reader connection) moves on every commit by any connection of any
  process, and reading it costs a read of the WAL index, no page of the database;
- reading only what came after the last change seen (``seq > last``, on the seq index).

:class:`ChangeFeed` is that loop's body, with no clock of its own: the server polls it from
its event loop (``vestige.server.notify``), `vestige watch` from a plain loop, and the
dashboard from its own.  :data:`FEED_POLL_S` is how often they look.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from vestige.changelog import Change, Gap
    from vestige.store import Store

#: How often a follower looks for other processes' commits.  A look that finds nothing
#: reads one integer (no page of the database); ten a second keeps the delay from a write
#: to its notice near 50 ms on average at a cost measured by the load test (LOADTEST.md).
FEED_POLL_S: Final = 0.1
#: Changes read per look.  A follower far behind (a burst of imports) catches up over
#: several looks instead of holding the reader connection for one long read.
FEED_PAGE_ROWS: Final = 500


@dataclass(frozen=True, slots=True)
class FeedBatch:
    """The changes found by one look, oldest first, and any gap before them."""

    changes: tuple[Change, ...]
    gap: Gap | None  # some changes the follower asked for were trimmed (or left by a restore)
    newest_seq: int  # the newest seq of the whole log at the time of the look
    behind: bool  # more changes are waiting: look again at once


class ChangeFeed:
    """The changes committed after a point, by any process, each reported once.

    ``after_seq`` starts after that change; ``since`` (an ISO time) starts with the changes
    made after that time; neither starts with the next change committed from now on.
    ``memory_id`` keeps only changes to that memory (an undo or a supersede that involves
    it counts).  Not thread-safe: one follower polls one feed.
    """

    def __init__(
        self,
        store: Store,
        *,
        after_seq: int | None = None,
        since: str | None = None,
        memory_id: str | None = None,
    ) -> None:
        self._store = store
        self._memory = memory_id
        self._since = since
        self._version: int | None = None
        if memory_id is not None:  # the store's rules and message for a bad id
            store.changes(memory_id=memory_id, limit=1)
        if after_seq is None and since is None:
            after_seq = store.changes(limit=1).newest_seq
        self._last = after_seq if after_seq is not None else 0
        self._first = True

    @property
    def last_seq(self) -> int:
        """The seq of the last change this feed has looked past."""
        return self._last

    def poll(self) -> FeedBatch | None:
        """The changes committed since the last look; None when nobody committed anything.

        The version is read *before* the changes, so a commit that lands in between moves
        it again and is found by the next look, never lost.
        """
        version = self._store.data_version()
        if version == self._version and not self._first:
            return None
        if self._first and self._since is not None:
            page = self._store.changes(
                since=self._since, limit=FEED_PAGE_ROWS, oldest_first=True, after_name="since"
            )
        else:
            page = self._store.changes(
                after_seq=self._last, limit=FEED_PAGE_ROWS, oldest_first=True
            )
        self._first = False
        if page.changes:
            self._last = max(self._last, page.changes[-1].seq)
        elif self._since is not None and self._last == 0:
            self._last = page.newest_seq  # nothing since that time: go on from now
        self._version = None if page.more else version  # behind: the next look reads on
        wanted = page.changes
        if self._memory is not None:
            wanted = tuple(c for c in wanted if self._memory in c.memories())
        return FeedBatch(changes=wanted, gap=page.gap, newest_seq=page.newest_seq, behind=page.more)
