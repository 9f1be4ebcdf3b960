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
from vestige.server import (
    EXIT_CONFIG,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_STORE,
    STOP_SIGNALS,
    resources,
    tools,
)
from vestige.server.app import ServerApp
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
        mcp = _build(app)
        _startup_built()
        anyio.run(_serve, app, mcp, sock)  # _serve leaves through _exit
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


def _build(app: ServerApp) -> MCPServer[Any]:
    extra: dict[str, Any] = {}
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
        subscriptions=False,  # nothing is published yet: advertise no subscriptions
        **extra,
    )
    resources.withdraw_prompts(mcp)
    return mcp


async def _serve(app: ServerApp, mcp: MCPServer[Any], sock: socket.socket | None) -> NoReturn:
    anyio.to_thread.current_default_thread_limiter().total_tokens = DEFAULT_THREAD_TOKENS
    stop = Stop()
    app.upkeep = Upkeep(app)
    async with anyio.create_task_group() as tg:
        if sys.platform != "win32":  # asyncio has no signal handlers there: Ctrl-C unwinds
            tg.start_soon(_watch_signals, app, stop)
        if sock is None:
            transport: Any = StdioTransport(mcp, stop)
            tg.start_soon(_watch_parent, app.options.parent_pid, stop)
        else:
            from vestige.server import http  # noqa: PLC0415

            transport = http.HttpTransport(mcp, app.options, sock, stop)
        tg.start_soon(transport.serve)
        tg.start_soon(app.upkeep.run)
        log.info(
            "serving %s (%s owner, %s, pid %d)",
            app.store.path,
            app.lock.mode,
            app.options.transport,
            os.getpid(),
        )
        await stop.event.wait()
        started = time.monotonic()
        log.info("shutting down: %s", stop.reason)
        app.closing = True
        deadline = started + SHUTDOWN_BUDGET_S
        await transport.stop(max(0.0, deadline - CLEANUP_RESERVE_S - time.monotonic()))
        if not await app.drain(max(0.0, deadline - CLEANUP_RESERVE_S - time.monotonic())):
            log.warning("a database call was still running at shutdown; it rolls back")
        await _cleanup(app, deadline)
        log.info("stopped in %.0f ms", (time.monotonic() - started) * 1000)
        _exit(stop.code)
    raise AssertionError("unreachable")  # pragma: no cover


async def _watch_signals(app: ServerApp, stop: Stop) -> None:
    with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            if stop.event.is_set():
                log.warning("%s again: exiting now", name)
                app.lock.release()
                _exit(EXIT_OK)
            stop(f"{name} received")


async def _watch_parent(parent: int, stop: Stop) -> None:
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
