"""`vestige watch`: the changes any process commits, printed as they happen, like ``tail -f``.

It is a reader only: it opens the store as every reading command does (``open_store``),
takes no owner lock and no write gate, and each look is a short read transaction
(``vestige.feed``), so servers start, write and checkpoint beside it as if it were not
there.

A watch has no natural end: Ctrl-C, SIGTERM and a reader that went away (``| head -1``)
are how it is meant to stop, so all three end it with exit code 0 and nothing on stderr.
"""

from __future__ import annotations

import json
import os
import select
import signal
import stat
import sys
import time
from typing import TYPE_CHECKING, NoReturn

import click

from vestige.cli import _changes, _render
from vestige.cli._options import data_dir_option, json_option, open_store, resolved_data_dir
from vestige.errors import MemoryNotFound
from vestige.feed import FEED_POLL_S, ChangeFeed
from vestige.printable import escape_json_controls

if TYPE_CHECKING:
    from types import FrameType

    from vestige.changelog import Change, Gap
    from vestige.store import Store

#: What a gap means for a watcher, after the changelog's own words.
_GAP_ADVICE = (
    "; watching goes on from the oldest change still kept. Older changes are only in a "
    "backup made before they were trimmed (`vestige restore` it into another --data-dir "
    "and run `vestige log` there)."
)


class _Stopped(BaseException):
    """Ctrl-C or SIGTERM: the way a watch is meant to end, not an error."""


def _stop(_signum: int, _frame: FrameType | None) -> NoReturn:
    # One signal is enough: later ones must not interrupt the store closing on the way out.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise _Stopped


@click.command()
@click.option("--memory", "memory_id", default=None, help="Only changes to this memory (its id).")
@click.option(
    "--since",
    default=None,
    help="Start after this change: a change number (e.g. 120), or a time for the changes "
    "made after it (2025-06-01T14:30; local time unless it names a zone). "
    "Default: only changes committed from now on.",
)
@data_dir_option
@json_option
def watch(*, memory_id: str | None, since: str | None, as_json: bool) -> None:
    """Print each change to the memories as it is committed, by any process, until stopped.

    One line per change, oldest first: its number, local time, kind, memory, who made it
    and what it did (as `vestige log` shows them).  With --json, one JSON object per line.
    It only reads: running servers are not held up.  Stop it with Ctrl-C.

    \b
    Example:
      vestige watch
      vestige watch --json --since 120 | jq -c '{seq, kind, memory_id}'
    """
    try:
        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
        after_seq, since_time = _changes.parse_since(since)
        with open_store() as store:
            feed = _open_feed(store, memory_id, after_seq, since_time)
            if not as_json and sys.stderr.isatty():
                where = resolved_data_dir().database
                click.echo(f"Watching {where} for changes (Ctrl-C to stop)", err=True)
            _follow(feed, as_json=as_json)
    except _Stopped:
        return
    except BrokenPipeError:
        # The reader left (`| head -1`): the end of a watch like any other.  Point stdout
        # at /dev/null so the interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return


def _open_feed(
    store: Store, memory_id: str | None, after_seq: int | None, since_time: str | None
) -> ChangeFeed:
    """The feed, with a bad --since or an unknown memory refused before anything prints."""
    store.changes(after_seq=after_seq, since=since_time, limit=1)  # the library's checks
    if memory_id is not None:
        try:
            store.get(memory_id)
        except MemoryNotFound:
            # Deleted or purged memories still have a history that can grow (an undo).
            if not store.changes(memory_id=memory_id, limit=1).changes:
                raise
    return ChangeFeed(store, after_seq=after_seq, since=since_time, memory_id=memory_id)


def _follow(feed: ChangeFeed, *, as_json: bool) -> None:
    """Poll until stopped: at once while behind, else every FEED_POLL_S."""
    reader = _PipeReader()
    while not reader.gone():
        batch = feed.poll()
        if batch is not None:
            if batch.gap is not None:
                _warn_gap(batch.gap)
            for change in batch.changes:
                _print(change, as_json=as_json)
            if batch.behind:
                continue
        time.sleep(FEED_POLL_S)


class _PipeReader:
    """Notices that the reader of a stdout pipe left, without waiting for the next change.

    ``tail -f | head -1`` lingers until the next line fails to be written, which for a
    quiet memory may be hours.  The write end of a pipe whose reader closed it reports
    POLLERR (Linux) or POLLHUP (BSD, macOS) to ``poll``, which costs one system call per
    look; stdout that is not a pipe (a terminal, a file) or a platform without ``poll``
    simply finds out on the next write.
    """

    def __init__(self) -> None:
        self._poller: select.poll | None = None
        try:
            fd = sys.stdout.fileno()
            if hasattr(select, "poll") and stat.S_ISFIFO(os.fstat(fd).st_mode):
                self._poller = select.poll()
                self._poller.register(fd, 0)  # no events asked for: errors are always reported
        except (OSError, ValueError):  # stdout closed or replaced by something with no fd
            self._poller = None

    def gone(self) -> bool:
        if self._poller is None:
            return False
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in self._poller.poll(0))


def _print(change: Change, *, as_json: bool) -> None:
    """One line, flushed at once: a watcher's reader acts on each change as it comes."""
    if as_json:
        text = escape_json_controls(
            json.dumps(change.to_dict(with_before=False), ensure_ascii=False, default=str)
        )
    else:
        text = _changes.line(change)
    click.echo(text)
    sys.stdout.flush()


def _warn_gap(gap: Gap) -> None:
    _render.warn(gap.message + _GAP_ADVICE)


COMMANDS = (watch,)
