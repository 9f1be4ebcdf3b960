"""``vestige-mcp --attach``: relay one client to the directory's owner, and outlive that owner.

Every ``--attach`` launch is a proxy: it never opens the store.  It reads the endpoint the
owner published (:mod:`vestige.server.endpoint`), connects, and relays the client's stdio
lines both ways.  When there is no owner, the proxy that wins the election
(:mod:`vestige.owner.election`) starts one: a detached ``vestige-mcp --attach-owner`` in a
session of its own, so closing any window, or killing its process group, never takes the
shared server down.  The owner ends on its own shortly after its last session leaves.

**Why a detached owner.**  If the owner were also some client's own server, that client's
session would end whenever the owner died, and the owner's lifetime would be tied to one
window.  With every client behind a proxy, an owner that dies (crash, OOM, kill -9) costs no
client its session: every proxy notices at once (its connection ends), one wins the
election and starts the next owner, and all of them re-attach.  Each then replays its
client's session setup under private ids, whose answers it swallows: ``initialize`` and
``notifications/initialized`` (a 2026-style client sends neither: each request carries its
own envelope, so there is nothing to replay), and resource subscriptions, after which it
tells the client that each subscribed resource may have changed (nobody announced what was
committed while no owner was there).  Then it resends every request that was in flight.
Reads are simply run again; each ``tools/call`` carries a request key the proxy assigned
(``params._meta``, :data:`REQUEST_KEY_META`), which the owner records in the write's own
transaction, so a write that had committed before the owner died answers with its first
answer instead of running twice.

The proxy imports no MCP SDK, no pydantic and no SQLite: it starts in a fraction of a direct
server's time and stays small.  It parses each line only as far as it must (ids, methods).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from vestige import __version__
from vestige.errors import VestigeError
from vestige.owner import LockState, lock_state, read_owners
from vestige.owner.election import Election
from vestige.server import (
    EXIT_CONFIG,
    EXIT_OK,
    EXIT_OWNER_LOCKED,
    EXIT_STORE,
    STOP_SIGNALS,
    _wire,
    endpoint,
    terminal,
)
from vestige.server._fds import claim_standard_fds
from vestige.server.options import MAX_MESSAGE_BYTES, REQUEST_KEY_META

if TYPE_CHECKING:
    from pathlib import Path

    from vestige.server.options import Options

log = logging.getLogger("vestige.server.proxy")

#: How long a proxy keeps trying to reach some owner (its own election, or another's owner
#: starting) before it gives up and says why.  An owner starts in about a second.
ATTACH_WAIT_S: Final = 30.0
#: How often a proxy without an owner looks for one, and tries the election.
ELECTION_POLL_S: Final = 0.02
#: After stdin ends, how long the requests already sent may take to be answered.
EOF_ANSWER_WAIT_S: Final = 10.0
#: How often the proxy checks that its parent (the client) is still there.
PARENT_POLL_S: Final = 0.25
#: A proxy that gives up before its client has sent anything waits this long for the first
#: request (an MCP client sends ``initialize`` at once), so the client gets the reason as
#: an error answer, which it shows, rather than a closed pipe.
FIRST_REQUEST_WAIT_S: Final = 2.0
#: The owner's log is started afresh past this size (the previous one is kept as ``.1``).
OWNER_LOG_MAX_BYTES: Final = 1024 * 1024
READ_CHUNK_BYTES: Final = 64 * 1024
#: Exit statuses of an owner that trying again will not cure: unusable configuration or
#: data directory, a database that cannot be opened.
FINAL_EXITS: Final = frozenset({EXIT_CONFIG, EXIT_STORE})
#: JSON-RPC's "internal error": what a request gets when no owner can serve it.
INTERNAL_ERROR: Final = -32603
PARSE_ERROR: Final = -32700
_REPLAY: Final = "vestige-attach-replay-"


class AttachError(VestigeError):
    """No owner can serve this proxy; ``code`` is the exit status."""

    def __init__(self, message: str, *, hint: str = "", code: int = EXIT_CONFIG) -> None:
        super().__init__(message, hint=hint)
        self.code = code


@dataclass(slots=True)
class _Owner:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    pid: int


def run(opts: Options) -> int:
    """Relay until the client leaves; returns through ``os._exit`` (threads may be blocked)."""
    stdin, stdout = claim_standard_fds()
    proxy = Proxy(opts.data_dir.path, opts.parent_pid, stdin, stdout)
    try:
        code = asyncio.run(proxy.main())
    except KeyboardInterrupt:
        code = EXIT_OK
    proxy.flush()
    logging.shutdown()
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    os._exit(code)


class Proxy:
    def __init__(self, data_dir: Path, parent_pid: int, stdin: int, stdout: int) -> None:
        self._data_dir = data_dir
        self._parent = parent_pid
        self._stdin = stdin
        #: A person typing at the proxy on a terminal gets a hint besides the parse error.
        self._person = os.isatty(stdin)
        self._out = _Output(stdout, self._stdout_closed)
        self._election = Election(data_dir)
        #: Requests sent (or to send) to the owner and not yet answered, by JSON id.
        self._inflight: dict[str, bytes] = {}
        self._init: bytes | None = None  # the client's initialize, once answered
        self._init_id: str | None = None
        self._initialized: bytes | None = None
        self._subscriptions: dict[str, bytes] = {}
        #: Lines that are not requests we track (not JSON, batches) read with no owner.
        self._unsent: list[bytes] = []
        self._replays: dict[str, asyncio.Future[None]] = {}
        self._replay_seq = 0
        self._owner: _Owner | None = None
        self._done = asyncio.Event()
        self._code = EXIT_OK
        self._client_ended = False
        self._heard_from_client = False
        self._giving_up = False  # the owner side found a reason to end: its code is the exit's
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_exit: int | None = None  # of the last owner this proxy started

    # -- the relay -------------------------------------------------------------------

    async def main(self) -> int:
        self._loop = loop = asyncio.get_running_loop()
        for signum in STOP_SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, self._stop, EXIT_OK)
        tasks = [
            asyncio.create_task(self._client_side()),
            asyncio.create_task(self._owner_side()),
            asyncio.create_task(self._watch_parent()),
        ]
        await self._done.wait()
        for task in tasks:
            task.cancel()
        return self._code

    def flush(self) -> None:
        self._out.close()

    def _stop(self, code: int) -> None:
        if not self._done.is_set():
            self._code = code
            self._done.set()

    def _stdout_closed(self) -> None:
        """Called from the output thread."""
        log.info("the client stopped reading")
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: leaving anyway
            self._loop.call_soon_threadsafe(self._stop, EXIT_OK)

    async def _client_side(self) -> None:
        chunks: asyncio.Queue[bytes] = asyncio.Queue()
        threading.Thread(target=self._read_stdin, args=(chunks,), daemon=True).start()
        partial = bytearray()
        discarding = False
        while chunk := await chunks.get():
            start = 0
            while (end := chunk.find(b"\n", start)) >= 0:
                if discarding:
                    discarding = False
                    self._too_long()
                else:
                    partial += chunk[start:end]
                    await self._from_client(bytes(partial))
                    partial.clear()
                start = end + 1
            if not discarding:
                partial += chunk[start:]
                if len(partial) > MAX_MESSAGE_BYTES:
                    partial.clear()
                    discarding = True
        if partial.strip() and not discarding:
            await self._from_client(bytes(partial))
        self._client_ended = True
        deadline = time.monotonic() + EOF_ANSWER_WAIT_S
        while self._inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if not self._giving_up:  # else the refusal's own exit status stands
            self._stop(EXIT_OK)

    def _read_stdin(self, chunks: asyncio.Queue[bytes]) -> None:
        while True:
            try:
                chunk = os.read(self._stdin, READ_CHUNK_BYTES)
            except OSError:
                chunk = b""
            assert self._loop is not None
            try:
                self._loop.call_soon_threadsafe(chunks.put_nowait, chunk)
            except RuntimeError:  # the loop is closed: the proxy is leaving
                return
            if not chunk:
                return

    def _too_long(self) -> None:
        limit = MAX_MESSAGE_BYTES // (1024 * 1024)
        self._out.put(
            _error_line(None, PARSE_ERROR, f"Parse error: the line is longer than {limit} MiB")
        )

    def _not_json(self, exc: json.JSONDecodeError) -> None:
        self._out.put(_error_line(None, PARSE_ERROR, _wire.not_json(exc)))
        if self._person:
            terminal.show(terminal.NOT_JSON_RPC_HINT)

    async def _from_client(self, line: bytes) -> None:
        """Note what failover needs of a client line, then send it if an owner is there."""
        if not line.strip():
            return
        self._heard_from_client = True
        try:
            message = json.loads(line)
        except json.JSONDecodeError as exc:
            # Answered here, as the owner would: sent to an owner that is dying, it would
            # get no answer, and it has no id by which to send it again.
            self._not_json(exc)
            return
        except (ValueError, RecursionError):
            message = None  # not UTF-8, or nested too deeply: the owner says which
        if not isinstance(message, dict) and self._owner is None:
            self._unsent.append(line)  # not JSON, or a batch: its answer comes from the owner
            return
        if isinstance(message, dict) and "method" in message:
            method = message["method"]
            if "id" in message:
                line = self._note_request(message, line)
            elif method == "notifications/initialized":
                self._initialized = line
            elif method == "notifications/cancelled":
                # The owner may never answer a cancelled request: never resend it either.
                params = message.get("params")
                if isinstance(params, dict):
                    self._inflight.pop(_key(params.get("requestId")), None)
                if self._owner is None:
                    return
            elif self._owner is None:
                return  # a notification for an owner that is gone: nothing to tell
        elif self._owner is None:
            return  # an answer to a request of the owner that is gone
        await self._send(line)

    def _note_request(self, message: dict[str, Any], line: bytes) -> bytes:
        method = message["method"]
        params = message.get("params")
        if method == "tools/call" and isinstance(params, dict):
            if params.get("_meta") is None:
                params["_meta"] = {}
            meta = params["_meta"]
            if isinstance(meta, dict) and REQUEST_KEY_META not in meta:
                meta[REQUEST_KEY_META] = uuid.uuid4().hex
                line = _dump(message)
        elif method == "resources/subscribe" and isinstance(params, dict):
            self._subscriptions[str(params.get("uri"))] = line
        elif method == "resources/unsubscribe" and isinstance(params, dict):
            self._subscriptions.pop(str(params.get("uri")), None)
        key = _key(message["id"])
        if method == "initialize":
            self._init_id = key
        self._inflight[key] = line
        return line

    async def _send(self, line: bytes) -> None:
        owner = self._owner
        if owner is None:
            return  # kept in _inflight: sent once an owner is attached
        owner.writer.write(line + b"\n")
        with contextlib.suppress(OSError):
            await owner.writer.drain()

    def _from_owner(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        if isinstance(message, dict) and "id" in message and "method" not in message:
            key = _key(message["id"])
            replay = self._replays.pop(key, None)
            if replay is not None:
                if not replay.done():
                    replay.set_result(None)
                return  # the answer to a replay: the client asked for it long ago
            sent = self._inflight.pop(key, None)
            if key == self._init_id and sent is not None:
                self._init = sent
        self._out.put(line)

    # -- the owner -------------------------------------------------------------------

    async def _owner_side(self) -> None:
        lost_at: float | None = None
        while True:
            try:
                owner = await self._attach()
            except AttachError as err:
                await self._give_up(err)
                return
            except OSError as exc:
                await self._give_up(AttachError(f"cannot attach: {exc.strerror or exc}"))
                return
            except Exception as exc:  # a bug: say so to the client rather than fall silent
                log.exception("attaching failed")
                await self._give_up(AttachError(f"internal error while attaching: {exc!r}"))
                return
            reading = asyncio.create_task(self._pump(owner))
            try:
                await self._resume(owner, reading)
            except OSError as exc:
                # Start over with whichever owner there is then: never stay attached to one
                # that was not given the session.
                log.warning("the owner (pid %d) left during the replay: %s", owner.pid, exc)
                self._owner = None
                owner.writer.close()
            else:
                if lost_at is not None:
                    log.info(
                        "re-attached to pid %d, %.0f ms after the owner was lost",
                        owner.pid,
                        (time.monotonic() - lost_at) * 1000,
                    )
                    self._announce_subscribed()
            await reading
            self._owner = None
            lost_at = time.monotonic()
            if self._done.is_set():
                return
            log.warning("the owner (pid %d) is gone; finding the next one", owner.pid)

    async def _pump(self, owner: _Owner) -> None:
        while True:
            try:
                line = await owner.reader.readline()
            except (OSError, ValueError):
                line = b""
            if not line.endswith(b"\n"):  # the end, or half a line from a dying owner
                owner.writer.close()
                return
            self._from_owner(line.rstrip(b"\n"))

    async def _resume(self, owner: _Owner, reading: asyncio.Task[None]) -> None:
        """Replay the session's setup to a new owner, then send everything still unanswered.

        The replayed ``initialize`` is waited for as long as the owner lives (``reading``
        ends with it), as a client waits for its own: a slow owner is no reason to give up.
        """
        if self._init is not None:
            answered = await self._replay(owner, self._init)
            await asyncio.wait({answered, reading}, return_when=asyncio.FIRST_COMPLETED)
            if not answered.done():
                raise ConnectionResetError("it closed the connection before answering")
            if self._initialized is not None:
                owner.writer.write(self._initialized + b"\n")
        for line in self._subscriptions.values():
            await self._replay(owner, line)
        # No await from here until _owner is set: a client line arriving in between would
        # be neither in this batch nor sent by _from_client.
        for line in [*self._unsent, *self._inflight.values()]:
            owner.writer.write(line + b"\n")
        self._unsent.clear()
        self._owner = owner
        await owner.writer.drain()

    def _announce_subscribed(self) -> None:
        """Tell the client that each resource it subscribed to may have changed.

        Changes committed while no owner was there reached nobody; the new owner announces
        only later ones.  One notification too many makes the client read again; one too
        few would leave it wrong until the next change.
        """
        for uri in self._subscriptions:
            self._out.put(
                _dump(
                    {
                        "jsonrpc": "2.0",
                        "method": "notifications/resources/updated",
                        "params": {"uri": uri},
                    }
                )
            )

    async def _replay(self, owner: _Owner, line: bytes) -> asyncio.Future[None]:
        """Send ``line`` again under a private id; the future is done when it is answered."""
        message = json.loads(line)
        self._replay_seq += 1
        replay_id = f"{_REPLAY}{self._replay_seq}"
        message["id"] = replay_id
        answered = asyncio.get_running_loop().create_future()
        self._replays[_key(replay_id)] = answered
        owner.writer.write(_dump(message) + b"\n")
        await owner.writer.drain()
        return answered

    async def _attach(self) -> _Owner:
        """Connect to the owner, starting one if this proxy wins the election."""
        deadline = time.monotonic() + ATTACH_WAIT_S
        while True:
            owner = await self._connect()
            if owner is not None:
                return owner
            if self._election.try_win():
                try:
                    owner = await self._connect() or await self._start_owner(deadline)
                finally:
                    self._election.step_down()
                if owner is not None:
                    return owner
            if time.monotonic() >= deadline:
                raise self._no_owner()
            await asyncio.sleep(ELECTION_POLL_S)

    async def _connect(self) -> _Owner | None:
        """Attach to the owner the endpoint file names; None when it cannot be reached (no
        file, a dead owner's, an earlier owner's token, an impostor): look again later."""
        where = endpoint.read(self._data_dir)
        if where is None:
            return None
        streams = await self._open(where)
        if streams is None:
            return None
        reader, writer = streams
        ours = endpoint.nonce()
        try:
            writer.write(endpoint.hello(os.getpid(), __version__, ours))
            await writer.drain()
            welcome = endpoint.parse(
                await asyncio.wait_for(reader.readline(), endpoint.HELLO_TIMEOUT_S)
            )
        except (OSError, TimeoutError, ValueError):
            welcome = None
        if welcome is None or not endpoint.proves(where.token, "owner", ours, welcome.get("proof")):
            # The file named an earlier owner (its token), whoever answers is not the owner
            # at all, or an owner too busy to read our nonce: believe nothing it says, send
            # nothing of the client's, and look again.
            writer.close()
            return None
        if welcome["vestige_attach"] != endpoint.PROTOCOL or not welcome.get("ok"):
            writer.close()
            raise self._refused(welcome, where)
        their = welcome.get("nonce")
        if not endpoint.valid_nonce(their):
            writer.close()
            return None
        writer.write(endpoint.answer(endpoint.proof(where.token, "proxy", str(their))))
        pid = welcome.get("pid")
        return _Owner(reader, writer, pid if isinstance(pid, int) else where.pid)

    async def _open(
        self, where: endpoint.Endpoint
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            if where.unix is not None:
                reader, writer = await asyncio.open_unix_connection(
                    where.unix, limit=MAX_MESSAGE_BYTES + 1
                )
            else:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", where.port, limit=MAX_MESSAGE_BYTES + 1
                )
        except OSError:
            return None  # a dead owner's endpoint: the next owner replaces it
        _pid, uid = endpoint.peer(writer.get_extra_info("socket"))
        if uid is not None and uid not in (os.geteuid(), 0):
            writer.close()  # another user listens where the file says: never talk to it
            log.warning(
                "the attach endpoint of %s belongs to user %d: ignored", self._data_dir, uid
            )
            return None
        return reader, writer

    def _refused(self, welcome: dict[str, Any], where: endpoint.Endpoint) -> AttachError:
        """The error that ends this proxy, for a refusal the owner proved it sent."""
        if welcome["vestige_attach"] != endpoint.PROTOCOL:
            return AttachError(
                endpoint.mismatch(
                    __version__,
                    welcome.get("version"),
                    welcome["vestige_attach"],
                    f"the server that owns {self._data_dir} (pid {where.pid})",
                ),
                hint=str(welcome.get("hint") or ""),
            )
        return AttachError(
            f"the server that owns {self._data_dir} (pid {where.pid}) refused to attach "
            f"this window: {welcome.get('error')}",
            hint=str(welcome.get("hint") or ""),
        )

    async def _start_owner(self, deadline: float) -> _Owner | None:
        """Start a detached owner if the directory is free; None while someone else holds it."""
        state = lock_state(self._data_dir)
        if state is LockState.SHARED and not any(
            o.alive and o.mode == "shared" for o in read_owners(self._data_dir)
        ):
            return None  # a probe caught the lock of an owner in its last moments: look again
        if state is LockState.SHARED:
            raise AttachError(
                f"{self._data_dir} is served by --shared-writers servers, which accept no "
                "attached windows",
                hint="Start every window the same way: all with --attach, or all with "
                "--shared-writers.",
                code=EXIT_OWNER_LOCKED,
            )
        if state is LockState.EXCLUSIVE:
            return None  # an owner still starting, a restore, or an older vestige
        log_path = self._data_dir / endpoint.OWNER_LOG_FILE
        proc, logged_from = self._spawn_owner(log_path)
        log.info("started the owner of %s: pid %d", self._data_dir, proc.pid)
        while time.monotonic() < deadline:
            owner = await self._connect()
            if owner is not None:
                return owner
            code = proc.poll()
            if code in FINAL_EXITS:
                message, hint = _refusal_in(log_path, logged_from)
                raise AttachError(
                    f"the server started for {self._data_dir} could not start: {message}",
                    hint=f"{hint} (Its log: {log_path}.)" if hint else f"Its log: {log_path}.",
                    code=code,
                )
            if code is not None:  # killed, crashed, or another took the lock: elect again
                self._last_exit = code
                log.warning("the owner started for %s exited with status %s", self._data_dir, code)
                return None
            await asyncio.sleep(ELECTION_POLL_S)
        return None

    def _spawn_owner(self, log_path: Path) -> tuple[subprocess.Popen[bytes], int]:
        """The owner's process, and the offset in its log where its own lines begin."""
        with contextlib.suppress(OSError):
            if log_path.stat().st_size > OWNER_LOG_MAX_BYTES:
                os.replace(log_path, log_path.with_name(log_path.name + ".1"))
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        logged_from = os.lseek(fd, 0, os.SEEK_END)
        try:
            proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [
                    sys.executable,
                    "-m",
                    "vestige.server",
                    "--attach-owner",
                    "--data-dir",
                    str(self._data_dir),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=fd,
                close_fds=True,
                cwd=self._data_dir,  # not a window's folder, which may be deleted under it
                start_new_session=True,  # no window's signals or process group reach it
            )
        finally:
            os.close(fd)
        # Reap it if it exits while we live (else it stays a zombie until we exit).
        threading.Thread(target=proc.wait, daemon=True).start()
        return proc, logged_from

    def _no_owner(self) -> AttachError:
        """Why no owner answered within :data:`ATTACH_WAIT_S`, as far as the proxy can tell."""
        holders = [o for o in read_owners(self._data_dir) if o.alive]
        where = endpoint.read(self._data_dir)
        if where is not None and where.pid in {o.pid for o in holders}:
            return AttachError(
                f"the server that owns {self._data_dir} (pid {where.pid}) did not answer "
                f"within {ATTACH_WAIT_S:.0f} s: it may be stopped (SIGSTOP, a debugger) or "
                "stuck",
                hint=f"If you stopped it, `kill -CONT {where.pid}`; else stop it (`kill -INT "
                f"{where.pid}`) and the windows start another. `vestige doctor` shows it.",
                code=EXIT_OWNER_LOCKED,
            )
        if self._last_exit is not None:
            return AttachError(
                f"the servers started for {self._data_dir} kept exiting (the last with "
                f"status {self._last_exit})",
                hint=f"Their log is {self._data_dir / endpoint.OWNER_LOG_FILE}.",
                code=EXIT_CONFIG,
            )
        who = ", ".join(f"pid {o.pid}" for o in holders) or "another process"
        return AttachError(
            f"no server accepted this window on {self._data_dir} within {ATTACH_WAIT_S:.0f} s: "
            f"{who} holds it without accepting attached windows (vestige restore, or a "
            "vestige older than --attach)",
            hint="Wait for it to finish, or stop it; `vestige doctor` shows who it is.",
            code=EXIT_OWNER_LOCKED,
        )

    async def _give_up(self, err: AttachError) -> None:
        self._giving_up = True
        print(f"vestige-mcp: {err}", file=sys.stderr)
        # Found out before the client said anything (a quick mismatch, a loaded machine):
        # its initialize is on the way, and answering it is how the client learns why.
        deadline = time.monotonic() + FIRST_REQUEST_WAIT_S
        while (
            not self._heard_from_client and not self._client_ended and time.monotonic() < deadline
        ):
            await asyncio.sleep(0.01)
        for key, line in list(self._inflight.items()):
            with contextlib.suppress(ValueError):
                self._out.put(_error_line(json.loads(line).get("id"), INTERNAL_ERROR, str(err)))
            self._inflight.pop(key, None)
        self._stop(err.code)

    async def _watch_parent(self) -> None:
        if self._parent == 1:
            return
        while os.getppid() == self._parent:
            await asyncio.sleep(PARENT_POLL_S)
        log.info("parent process %d exited", self._parent)
        self._stop(EXIT_OK)


class _Output:
    """Lines to the client, written by one thread: a client that stops reading blocks only it."""

    def __init__(self, fd: int, on_closed: Any) -> None:
        self._fd = fd
        self._on_closed = on_closed
        self._lines: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def put(self, line: bytes) -> None:
        self._lines.put(line + b"\n")

    def close(self, timeout: float = 1.0) -> None:
        """Write what is queued (up to ``timeout``), then stop."""
        self._lines.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while (data := self._lines.get()) is not None:
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self._fd, view) :]
            except OSError:
                self._on_closed()
                return


def _dump(message: dict[str, Any]) -> bytes:
    """A message as one line, no longer than the client sent it: UTF-8 text stays as it
    is (escaping it could triple a line past the size limit), and only text that UTF-8
    cannot carry (a lone surrogate) is escaped, for the owner to refuse as it would."""
    try:
        return json.dumps(message, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return json.dumps(message).encode()


def _key(request_id: object) -> str:
    """A JSON-RPC id as a dict key: 1 and "1" are different ids."""
    return json.dumps(request_id)


def _error_line(request_id: object, code: int, message: str) -> bytes:
    return json.dumps(
        {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}
    ).encode()


def _refusal_in(path: Path, start: int) -> tuple[str, str]:
    """The message and hint an owner that could not start wrote to its log after ``start``
    (its one ``vestige-mcp: ...`` line and the ``Hint:`` after it)."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            lines = f.read(64 * 1024).decode(errors="replace").splitlines()
    except OSError:
        return "(its log cannot be read)", ""
    for i, line in enumerate(lines):
        if line.startswith("vestige-mcp: "):
            rest = "\n".join(lines[i + 1 :])
            hint = rest.removeprefix("Hint: ").strip() if rest.startswith("Hint: ") else ""
            return line.removeprefix("vestige-mcp: "), hint
    meaningful = [ln for ln in lines if ln.strip()]
    return (meaningful[-1] if meaningful else "(it logged nothing)"), ""
