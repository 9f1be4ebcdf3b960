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
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from vestige.cli import _changes, _render, fail
from vestige.cli._exit import ExitCode
from vestige.cli._options import data_dir_option, json_option, open_store, resolved_data_dir
from vestige.errors import InvalidInput, MemoryNotFound, VestigeError
from vestige.feed import FEED_POLL_S, ChangeFeed
from vestige.printable import escape_json_controls

if TYPE_CHECKING:
    from pathlib import Path
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
    """Ctrl-C, SIGTERM or a closed terminal: the way a watch is meant to end, not an error."""


#: The signals that end a watch quietly (SIGHUP: the terminal or ssh session closed).
_STOP_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    *((signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ()),
)


class _Stopper:
    """Raises :class:`_Stopped` once; later signals (a second Ctrl-C while the store closes)
    are let go, so nothing interrupts the way out.  The handler itself changes no handler:
    doing so from inside a handler raced with the next signal and printed a traceback."""

    def __init__(self) -> None:
        self.stopping = False

    def __call__(self, _signum: int, _frame: FrameType | None) -> None:
        if not self.stopping:
            self.stopping = True
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
    if sys.stdout is None:  # started with stdout closed (`>&-`)
        fail(
            "standard output is closed: there is nowhere to print the changes",
            "Give it somewhere to write, e.g. `vestige watch > changes.log`.",
            ExitCode.USAGE,
        )
    stopper = _Stopper()
    try:
        for signum in _STOP_SIGNALS:
            signal.signal(signum, stopper)
        after_seq, since_time = _changes.parse_since(since)
        with open_store() as store:
            feed = _open_feed(store, memory_id, after_seq, since_time)
            if not as_json and sys.stderr.isatty():
                where = resolved_data_dir().database
                click.echo(f"Watching {where} for changes (Ctrl-C to stop)", err=True)
            _follow(feed, store.path, as_json=as_json)
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
    newest = store.changes(after_seq=after_seq, since=since_time, limit=1).newest_seq
    if after_seq is not None and after_seq > newest:
        # Not silence until change N+1 some day: a typo, or another database's number.
        raise InvalidInput(
            f"--since {after_seq} is past the newest change, #{newest}",
            hint="Leave --since out to watch from now on, or give a change number up to "
            f"{newest} (`vestige log` lists them).",
        )
    if since_time is not None and _in_future(since_time):
        raise InvalidInput(
            f"--since {since_time} is in the future: no change was made after it yet",
            hint="Leave --since out to watch from now on, or give a past time.",
        )
    if memory_id is not None:
        try:
            store.get(memory_id)
        except MemoryNotFound:
            # Deleted or purged memories still have a history that can grow (an undo).
            if not store.changes(memory_id=memory_id, limit=1).changes:
                raise
    return ChangeFeed(store, after_seq=after_seq, since=since_time, memory_id=memory_id)


def _follow(feed: ChangeFeed, database: Path, *, as_json: bool) -> None:
    """Poll until stopped: at once while behind, else every FEED_POLL_S."""
    reader = _PipeReader()
    opened = _identity(database)
    while not reader.gone():
        if _identity(database) != opened:
            # The connection still reads the old file, which nothing writes any more: an
            # endless silence is the one wrong answer.
            raise VestigeError(
                f"{database} was deleted or replaced while watching: this watch followed "
                "the old file",
                hint="Run `vestige watch` again to follow the database that is there now.",
            )
        batch = feed.poll()
        if batch is not None:
            if batch.gap is not None:
                _warn_gap(batch.gap)
            for change in batch.changes:
                _print(change, as_json=as_json)
            if batch.behind:
                continue
        time.sleep(FEED_POLL_S)


def _in_future(when: str) -> bool:
    try:
        return datetime.fromisoformat(when) > datetime.now(UTC)
    except (ValueError, TypeError):  # a form the library took and Python does not compare
        return False


def _identity(path: Path) -> tuple[int, int] | None:
    """Which file is at ``path`` (device, inode), read with stat: never opened."""
    try:
        found = path.stat()
    except OSError:
        return None
    return found.st_dev, found.st_ino


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
        except (OSError, ValueError, AttributeError):  # no stdout, or one with no fd
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
