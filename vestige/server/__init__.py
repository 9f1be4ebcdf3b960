"""``vestige-mcp``: the MCP server over a Vestige data directory.

``main`` takes the owner lock *before* importing the MCP SDK (about a second of imports on a
small machine), so a second server on the same directory is refused in a fraction of a
second with :data:`EXIT_OWNER_LOCKED` and a message naming the owner.  Everything heavy
lives in :mod:`vestige.server.lifecycle`, imported only once the lock is held.
"""

from __future__ import annotations

import errno
import gc
import logging
import shlex
import signal
import socket
import sys
import time
from typing import TYPE_CHECKING, Final

from vestige import __version__
from vestige.config import prepare_data_dir
from vestige.errors import ConfigError, OwnerLockHeld, VestigeError
from vestige.owner import OwnerLock, acquire_owner
from vestige.server import options as _options
from vestige.server import terminal

if TYPE_CHECKING:
    from vestige.config import DataDir

__all__ = [
    "EXIT_CONFIG",
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_OWNER_LOCKED",
    "EXIT_STORE",
    "EXIT_USAGE",
    "main",
]

#: Clean shutdown: stdin or stdout closed, SIGINT, SIGTERM, SIGHUP, or the parent process died.
EXIT_OK: Final = 0
#: A bug: the traceback is in the log (stderr).
EXIT_ERROR: Final = 1
#: Bad command line (unknown flag, bad value); argparse's convention.
EXIT_USAGE: Final = 2
#: Another process owns the data directory; stderr names it and says what to do.
EXIT_OWNER_LOCKED: Final = 3
#: Unusable configuration: environment variable, data directory (not a directory, not
#: writable, no file locking), or HTTP port (in use, not allowed).
EXIT_CONFIG: Final = 4
#: The database cannot be opened: damaged, SQLite too old, migration failed, stayed busy.
EXIT_STORE: Final = 5

log = logging.getLogger("vestige.server")

#: How long the detached owner that a proxy started waits for the owner lock: the previous
#: owner may be in its last moments (leaving after its last session, or checkpointing).
ATTACH_OWNER_LOCK_WAIT_S: Final = 10.0

#: Each asks for the same clean shutdown.  SIGHUP is what closing the terminal that started
#: the server sends; its default action would kill the process with no cleanup.
STOP_SIGNALS: Final = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name)
)


def main(argv: list[str] | None = None) -> int:
    """Run the server; return the exit code (the serving path leaves through os._exit)."""
    try:
        opts = _options.parse(argv)
    except ConfigError as err:
        return _fail(err, EXIT_CONFIG)
    logging.basicConfig(
        level=opts.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Asked first: the transport later points fd 0 at the null device.
    person = terminal.stdin_is_terminal()
    held = _hold(STOP_SIGNALS)  # a stop signal waits until its handler is in place
    try:
        data_dir = prepare_data_dir(opts.data_dir)
        if opts.attach:
            _release(held)
            from vestige.server import proxy  # noqa: PLC0415 - a proxy loads no SDK

            if person:
                terminal.show(terminal.banner(opts))
            return proxy.run(opts)
        lock = _acquire(data_dir, opts)
    except _StopPending:  # a stop signal came while a young owner was being waited out
        return EXIT_OK  # the signal, still blocked, is discarded with the process
    except OwnerLockHeld as err:
        _release(held)
        return _fail(err, EXIT_OWNER_LOCKED)
    except (ConfigError, OSError) as err:  # any failure of the data directory: one line
        _release(held)
        return _fail(err if isinstance(err, ConfigError) else _start_failed(err, opts), EXIT_CONFIG)
    return _serve(lock, opts, held, banner=person)


def _acquire(data_dir: DataDir, opts: _options.Options) -> OwnerLock:
    """The owner lock; the detached owner of --attach proxies waits for a predecessor's
    last moments (it was started because the owner was gone or leaving)."""
    deadline = time.monotonic() + (ATTACH_OWNER_LOCK_WAIT_S if opts.attach_owner else 0.0)
    while True:
        try:
            return acquire_owner(
                data_dir,
                shared=opts.shared_writers,
                transport="attach" if opts.attach_owner else opts.transport,
                endpoint=opts.endpoint,
                version=__version__,
                waiting=_stop_pending,
            )
        except OwnerLockHeld:
            if time.monotonic() >= deadline:
                raise
            _stop_pending()
            time.sleep(0.02)


class _StopPending(Exception):
    """A stop signal arrived while the lock was being waited for."""


def _stop_pending() -> None:
    """Give up a wait for the owner lock as soon as a stop signal is pending (they are
    blocked until the lock is held, so nothing else would notice one)."""
    if hasattr(signal, "sigpending") and signal.sigpending() & set(STOP_SIGNALS):
        raise _StopPending


def _serve(
    lock: OwnerLock, opts: _options.Options, held: set[int | signal.Signals], *, banner: bool
) -> int:
    # Until the event loop takes signals over, a stop signal must unwind like Ctrl-C
    # (releasing the lock and its metadata) instead of killing the process outright.
    for signum in STOP_SIGNALS:
        signal.signal(signum, _interrupt)
    try:
        _release(held)  # one that came in meanwhile is raised here, inside this try
        try:
            sock = _bind(opts) if opts.transport == "http" else None
        except ConfigError as err:
            return _fail(err, EXIT_CONFIG)
        if banner:  # a person started it on a terminal: say so before the slow imports
            terminal.show(terminal.banner(opts))
        # Only now, with the lock held: the SDK and pydantic cost most of the start-up time.
        # They build ~95k objects that all live as long as the server; the cyclic collector
        # would walk them again and again while they are built (~15% of the start-up's CPU).
        # lifecycle.run freezes them and turns the collector back on once the server is built
        # (and the finally does, should it return: a start-up failure).
        gc.disable()
        try:
            from vestige.server import lifecycle  # noqa: PLC0415

            return lifecycle.run(lock, opts, sock)
        finally:
            gc.enable()
    except KeyboardInterrupt:  # a stop signal before the event loop took over signals
        return EXIT_OK
    finally:
        lock.release()


def _hold(signals: tuple[int, ...]) -> set[int | signal.Signals]:
    """Block ``signals`` (POSIX); returns the previous mask for :func:`_release`."""
    if not hasattr(signal, "pthread_sigmask"):
        return set()
    return signal.pthread_sigmask(signal.SIG_BLOCK, signals)


def _release(previous: set[int | signal.Signals]) -> None:
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _bind(opts: _options.Options) -> socket.socket:
    """Bind the HTTP port before serving, so "port in use" is a clear error, not a traceback."""
    try:
        infos = socket.getaddrinfo(opts.host, opts.port, type=socket.SOCK_STREAM)
        family, _, _, _, address = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {opts.host}:{opts.port}: {exc.strerror or exc}",
            hint="Pick another --port, or stop whatever uses it.",
        ) from exc
    sock.set_inheritable(False)
    return sock


def _start_failed(exc: OSError, opts: _options.Options) -> VestigeError:
    """One line for an OS error on the data directory while starting, never a traceback."""
    where = opts.data_dir.path
    if exc.errno == errno.ENOSPC:
        return VestigeError(
            f"the disk holding {where} is full, so the server cannot start",
            hint="Free some space there, then start it again.",
        )
    name = f" ({exc.filename})" if exc.filename else ""
    return VestigeError(
        f"cannot start on {where}: {exc.strerror or exc}{name}",
        hint=f"Run `vestige doctor --data-dir {shlex.quote(str(where))}` to check the data "
        "directory.",
    )


def _fail(err: VestigeError, code: int) -> int:
    print(f"vestige-mcp: {err}", file=sys.stderr)  # the one message a person reads
    return code
