"""Everything after the owner lock is held: open the store, serve, and stop within 2 s.

Stop triggers: stdin EOF or a closed stdout (stdio), SIGINT, SIGTERM, SIGHUP, the parent
process dying (stdio: a host that dies without closing our stdin), or the transport ending.
Shutdown then runs in a fixed order, each step bounded by one deadline:

1. stop the transport (no new calls); in-flight handlers are cancelled, but a database
   call already running in its thread finishes (its write commits or rolls back whole);
2. wait for those calls to drain;
3. hand back the maintenance lease, TRUNCATE-checkpoint the WAL, close the store;
4. remove this holder's metadata and drop the owner lock;
5. ``os._exit``.  A write to a client that stopped reading, or a read of stdin where the
   descriptor cannot be polled, is a thread blocked in the kernel that nothing can
   interrupt (python-sdk #3551), so a normal interpreter exit could hang (mcp-sdk.md §6).
   Everything worth doing is done by then; if a step overran the deadline, SQLite's
   journal makes the abandoned work roll back.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Any, Final, NoReturn

import anyio
from mcp.server.mcpserver import MCPServer

from vestige import __version__
from vestige.errors import ConfigError, VestigeError
from vestige.owner import LockMode
from vestige.server import (
    EXIT_CONFIG,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_STORE,
    STOP_SIGNALS,
    notify,
    resources,
    tools,
)
from vestige.server.app import ServerApp
from vestige.server.attachments import Attachments
from vestige.server.stdio import StdioTransport
from vestige.server.upkeep import Upkeep
from vestige.store import Store

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable

    from vestige.owner import OwnerLock
    from vestige.server.options import Options

log = logging.getLogger("vestige.server")

#: SIGTERM to exit, with margin under the 2 s promise.
SHUTDOWN_BUDGET_S: Final = 1.5
#: Kept back from the budget for checkpoint + close + unlock.
CLEANUP_RESERVE_S: Final = 0.6
#: How often the stdio server checks that its parent is still there.
PARENT_POLL_S: Final = 0.25
#: The detached owner of --attach proxies ends this long after its last session left: a
#: client that restarts its server (or a probe followed by the real launch) finds it still
#: there, while a directory nobody uses is soon free for `vestige restore` or a plain server.
OWNER_LINGER_S: Final = 2.0
#: ... and this long after it started, if no session ever attached (its proxy died first).
OWNER_FIRST_SESSION_WAIT_S: Final = 10.0
IDLE_POLL_S: Final = 0.1
#: anyio's default thread limiter (40) also runs the SDK's stdin/stdout I/O; database calls
#: have their own limiter, and this headroom keeps a burst from stalling the transport.
DEFAULT_THREAD_TOKENS: Final = 200

INSTRUCTIONS: Final = """\
Vestige is a long-term memory that fades like human memory (FSRS-6 decay). Search it before \
answering questions about the user or their projects (search). Save durable facts, \
preferences and decisions with smart_ingest, which merges repeats and corrections. Use \
promote_memory / demote_memory when a memory helped or misled."""


class Stop:
    """The first reason to stop wins; later ones are ignored.

    ``code`` is the exit status: EXIT_OK for the normal triggers, EXIT_ERROR when the
    transport itself failed (the shutdown still releases everything in order).
    """

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.reason = ""
        self.code = EXIT_OK

    def __call__(self, reason: str, code: int = EXIT_OK) -> None:
        if not self.event.is_set():
            self.reason = reason
            self.code = code
            self.event.set()


def run(lock: OwnerLock, opts: Options, sock: socket.socket | None) -> int:
    """Serve until stopped.  Returns only for start-up failures; otherwise leaves by _exit."""
    try:
        store = Store.open(opts.data_dir, actor=ServerApp.actor(opts))
    except ConfigError as err:
        return _refuse(err, EXIT_CONFIG)
    except VestigeError as err:
        return _refuse(err, EXIT_STORE)
    if lock.stale:
        _check_after_unclean_stop(store, lock)
    app = ServerApp(store, lock, opts)
    code = EXIT_ERROR
    try:
        mcp, notifier = _build(app)
        _startup_built()
        anyio.run(_serve, app, mcp, notifier, sock)  # _serve leaves through _exit
    except KeyboardInterrupt:
        code = EXIT_OK
    except ConfigError as err:
        code = _refuse(err, EXIT_CONFIG)
    except BaseException:
        log.exception("the server crashed")
    # Only reached if serving failed before its own shutdown: clean up without deadlines.
    app.closing = True
    try:
        store.close()
    finally:
        lock.release()
    _exit(code)


def _check_after_unclean_stop(store: Store, lock: OwnerLock) -> None:
    """The previous holder left its metadata behind: it was killed or crashed, perhaps
    mid-write.  Check the database before the first write (bounded by the store's wait; a
    longer check goes on in the background); a damaged one is served read-only."""
    pids = ", ".join(str(info.pid) for info in lock.stale)
    log.warning("the previous server (pid %s) stopped uncleanly: checking %s", pids, store.path)
    started = time.monotonic()
    outcome = store.check_after_unclean_stop()
    log.info(
        "check after the unclean stop: %s (%.0f ms)", outcome, (time.monotonic() - started) * 1000
    )


def _startup_built() -> None:
    """Keep what start-up built out of every later collection, then collect as usual.

    ``vestige.server`` turned the collector off before the imports.  Frozen objects are
    never scanned again, so no full collection walks them in the middle of a tool call;
    the few hundred cycles start-up left unreachable stay (a few hundred KB at most).
    """
    gc.freeze()
    gc.enable()


def _build(app: ServerApp) -> tuple[MCPServer[Any], notify.ChangeNotifier]:
    extra: dict[str, Any] = {}
    bus = notify.CountingBus()
    if app.options.transport == "http":
        from vestige.server import http  # noqa: PLC0415 - stdio never loads the HTTP stack

        extra = http.auth_kwargs(app.options)
    mcp: MCPServer[Any] = MCPServer(
        "vestige",
        version=__version__,
        instructions=INSTRUCTIONS,
        log_level=app.options.log_level,
        tools=list(tools.build(app)),
        resources=resources.build(app),
        subscriptions=bus,
        **extra,
    )
    resources.withdraw_prompts(mcp)
    notifier = notify.ChangeNotifier(app, bus)
    notify.install(mcp, notifier)
    app.wrote = notifier.wrote
    return mcp, notifier


async def _serve(
    app: ServerApp,
    mcp: MCPServer[Any],
    notifier: notify.ChangeNotifier,
    sock: socket.socket | None,
) -> NoReturn:
    anyio.to_thread.current_default_thread_limiter().total_tokens = DEFAULT_THREAD_TOKENS
    stop = Stop()
    app.upkeep = Upkeep(app)
    detached = app.options.attach_owner
    keeper = SessionKeeper(stop)
    attachments = None
    if app.lock.mode is LockMode.EXCLUSIVE:  # shared writers each serve their own client
        attachments = Attachments(mcp, app.lock, app.store.data_dir.path, keeper.count_changed)
    async with anyio.create_task_group() as tg:
        if sys.platform != "win32":  # asyncio has no signal handlers there: Ctrl-C unwinds
            tg.start_soon(_watch_signals, app, stop)
        transport: Any = None
        if detached:
            tg.start_soon(keeper.end_when_idle)
        elif sock is None:
            transport = StdioTransport(mcp, keeper.client_left)
            tg.start_soon(_watch_parent, app.options.parent_pid, keeper.client_left)
        else:
            from vestige.server import http  # noqa: PLC0415

            transport = http.HttpTransport(mcp, app.options, sock, stop)
        if transport is not None:
            tg.start_soon(transport.serve)
        if attachments is not None:
            tg.start_soon(attachments.serve)
        tg.start_soon(app.upkeep.run)
        tg.start_soon(notifier.run)
        log.info(
            "serving %s (%s owner, %s, pid %d)",
            app.store.path,
            app.lock.mode,
            "attached sessions only" if detached else app.options.transport,
            os.getpid(),
        )
        await stop.event.wait()
        started = time.monotonic()
        log.info("shutting down: %s", stop.reason)
        app.closing = True
        deadline = started + SHUTDOWN_BUDGET_S
        if attachments is not None:
            await attachments.stop()  # first: no proxy attaches to a server that is leaving
        if transport is not None:
            await transport.stop(max(0.0, deadline - CLEANUP_RESERVE_S - time.monotonic()))
        if not await app.drain(max(0.0, deadline - CLEANUP_RESERVE_S - time.monotonic())):
            log.warning("a database call was still running at shutdown; it rolls back")
        await _cleanup(app, deadline)
        log.info("stopped in %.0f ms", (time.monotonic() - started) * 1000)
        _exit(stop.code)
    raise AssertionError("unreachable")  # pragma: no cover


class SessionKeeper:
    """Keep serving while attached sessions remain.

    The server's own client leaving (stdin closed, stdout closed, parent gone) ends the
    server only once no attached session is left: those windows did nothing to deserve it.
    A signal still stops everything at once.  The detached owner has no client of its own:
    it ends :data:`OWNER_LINGER_S` after its last session left (or, if none ever came,
    :data:`OWNER_FIRST_SESSION_WAIT_S` after it started).
    """

    def __init__(self, stop: Stop) -> None:
        self._stop = stop
        self._count = 0
        self._left: tuple[str, int] | None = None
        self._idle_since = time.monotonic()
        self._served = False

    def client_left(self, reason: str, code: int = EXIT_OK) -> None:
        if self._count and code == EXIT_OK:
            if self._left is None:
                log.info("%s; serving %d attached session(s) until they leave", reason, self._count)
            self._left = (reason, code)
        else:
            self._stop(reason, code)

    def count_changed(self, count: int) -> None:
        self._count = count
        if count:
            self._served = True
        else:
            self._idle_since = time.monotonic()
            if self._left is not None:
                reason, code = self._left
                self._stop(f"{reason}, and the last attached session left", code)

    async def end_when_idle(self) -> None:
        while True:
            await anyio.sleep(IDLE_POLL_S)
            wait = OWNER_LINGER_S if self._served else OWNER_FIRST_SESSION_WAIT_S
            if not self._count and time.monotonic() - self._idle_since >= wait:
                self._stop(
                    "the last attached session left"
                    if self._served
                    else f"no session attached within {wait:.0f} s"
                )
                return


async def _watch_signals(app: ServerApp, stop: Stop) -> None:
    with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            if stop.event.is_set():
                log.warning("%s again: exiting now", name)
                app.lock.release()
                _exit(EXIT_OK)
            stop(f"{name} received")


async def _watch_parent(parent: int, stop: Callable[[str], None]) -> None:
    """Exit with the host: a wrapper between host and server may keep our stdin open.

    ``parent`` was read at process start: reading it here could already see init.
    """
    if parent == 1:
        return  # started by init or a service manager: there is no host to outlive
    while os.getppid() == parent:
        await anyio.sleep(PARENT_POLL_S)
    stop(f"parent process {parent} exited")


async def _cleanup(app: ServerApp, deadline: float) -> None:
    store = app.store
    ok = True
    if app.upkeep is not None:
        ok = await _bounded("release the maintenance lease", app.upkeep.release, deadline)
    if ok:
        ok = await _bounded("checkpoint", lambda: store.checkpoint(truncate=True), deadline)
    if ok:
        await _bounded("close the store", store.close, deadline)
    app.lock.release()


async def _bounded(what: str, fn: Callable[[], object], deadline: float) -> bool:
    """Run a blocking step in a thread until the deadline; False if it is still running."""
    with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
        try:
            await anyio.to_thread.run_sync(fn, abandon_on_cancel=True)
        except Exception as err:  # best effort: report it and go on with the next step
            log.warning("shutdown: could not %s: %s", what, err)
        return True
    log.warning("shutdown: %s did not finish in time; leaving it to SQLite's recovery", what)
    return False


def _refuse(err: VestigeError, code: int) -> int:
    print(f"vestige-mcp: {err}", file=sys.stderr)  # the message a person reads
    return code


def _exit(code: int) -> NoReturn:
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
