"""The external writer: another SQLite client on the same file, holding write transactions.

It plays the seed's "external writers" row: a script of the user's that opens
``vestige.db`` directly (apsw, busy_timeout 5 s, as ``sqlite3`` with ``.timeout 5000``),
knows nothing of Vestige's write gate, and writes to a table of its own.  It runs as its own
process (``python -m loadtest.external``), so it can be killed with SIGKILL mid-transaction.

Protocol, one JSON object per line on stdout (``ready``, ``commit``, ``hold``, ``error``); on
stdin, ``long`` makes the next transaction hold its lock for ``--long-hold-s`` after
announcing ``hold`` (the parent kills it there), ``stop`` (or EOF) ends it cleanly.
A ``commit`` line is printed only after COMMIT returned: that is the acknowledgement.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import select
import signal
import sys
import time
from typing import TYPE_CHECKING, Any, Final

import anyio

from loadtest.spawn import wait_exit

if TYPE_CHECKING:
    from pathlib import Path

    from loadtest.client import Clock
    from loadtest.ledger import ExternalLedger
    from loadtest.profiles import LoadProfile
    from loadtest.spawn import Child, Registry
    from loadtest.workload import Recorder

TABLE: Final = "loadtest_external"
BUSY_TIMEOUT_MS: Final = 5_000
#: Long enough that the parent's SIGKILL surely lands inside it; short of the servers'
#: 10 s write deadline, so a missed kill shows as latency, not as errors.
LONG_HOLD_S: Final = 3.0
READY_TIMEOUT_S: Final = 30.0
HOLD_TIMEOUT_S: Final = 15.0
#: How long a SIGKILLed writer may take to be reaped, and its last stdout lines read.
KILL_EXIT_TIMEOUT_S: Final = 10.0


def judge_kill(returncode: int | None, committed: bool) -> tuple[bool, str]:
    """The kill fault counts only if SIGKILL ended the writer while the transaction was still
    open: it must die of SIGKILL, and must not have reported the transaction committed."""
    if returncode is None:
        return False, f"still running {KILL_EXIT_TIMEOUT_S:.0f} s after SIGKILL"
    if returncode != -signal.SIGKILL:
        return False, f"exit {returncode}, not SIGKILL: the kill did not end it"
    if committed:
        return False, "it committed the transaction before SIGKILL landed: the kill came too late"
    return True, "killed by SIGKILL"


# -- the child process ------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.external")
    parser.add_argument("--db", required=True)
    parser.add_argument("--marker", required=True)
    parser.add_argument("--rows", type=int, default=5)
    parser.add_argument("--hold-ms", type=float, default=5.0)
    parser.add_argument("--every-ms", type=float, default=250.0)
    parser.add_argument("--long-hold-s", type=float, default=LONG_HOLD_S)
    args = parser.parse_args(argv)

    import apsw  # noqa: PLC0415 - the parent never needs it

    # READWRITE without CREATE: the servers made the database; never make a stray one.
    conn = apsw.Connection(args.db, flags=apsw.SQLITE_OPEN_READWRITE)
    conn.set_busy_timeout(BUSY_TIMEOUT_MS)
    _create_table(conn, apsw)
    _emit(ev="ready", pid=os.getpid())
    rng = random.Random()
    txn, long_next = 0, False
    while True:
        commands = _commands()
        if commands is None or "stop" in commands:
            break
        long_next = long_next or "long" in commands
        txn += 1
        tokens = [f"{args.marker}t{txn}r{i}" for i in range(args.rows)]
        started = time.perf_counter()
        try:
            conn.execute("BEGIN IMMEDIATE")
            waited = time.perf_counter() - started
            for token in tokens:
                conn.execute(
                    f"INSERT INTO {TABLE}(token, txn, payload) VALUES (?, ?, ?)",
                    (token, txn, rng.randbytes(64).hex()),
                )
            if long_next:
                _emit(ev="hold", txn=txn, tokens=tokens)
                time.sleep(args.long_hold_s)
                long_next = False
            else:
                time.sleep(args.hold_ms / 1000)
            conn.execute("COMMIT")
            _emit(ev="commit", txn=txn, tokens=tokens, wait_ms=round(waited * 1000, 3))
        except apsw.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            kind = "busy" if isinstance(exc, apsw.BusyError) else "sqlite_error"
            _emit(ev="error", kind=kind, txn=txn, tokens=tokens, msg=str(exc))
        time.sleep(max(0.0, args.every_ms / 1000 - (time.perf_counter() - started)))
    conn.close()
    return 0


def _create_table(conn: Any, apsw: Any) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE}(token TEXT PRIMARY KEY, "
                "txn INTEGER NOT NULL, payload TEXT NOT NULL)"
            )
            return
        except apsw.BusyError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _commands() -> list[str] | None:
    """Lines waiting on stdin, without blocking; None once stdin is closed."""
    lines: list[str] = []
    while select.select([sys.stdin], [], [], 0)[0]:
        line = sys.stdin.readline()
        if not line:
            return None
        lines.append(line.strip())
    return lines


def _emit(**event: Any) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


# -- the parent's side ------------------------------------------------------------------


class ExternalWriter:
    """Runs generations of the external writer; a kill fault ends one and starts the next."""

    def __init__(
        self,
        *,
        registry: Registry,
        db: Path,
        marker: str,
        profile: LoadProfile,
        clock: Clock,
        recorder: Recorder,
        ledger: ExternalLedger,
        env: dict[str, str],
    ) -> None:
        self.registry, self.db, self.marker = registry, db, marker
        self.profile, self.clock, self.recorder, self.ledger = profile, clock, recorder, ledger
        self.env = env
        self.generation = 0
        self.child: Child | None = None
        self.ready = anyio.Event()
        self.stopping = False
        self._hold: anyio.Event | None = None
        self._held: tuple[str, list[str]] | None = None
        #: Set once the current generation's stdout is read to its end.
        self._drained = anyio.Event()

    def argv(self) -> list[str]:
        p = self.profile
        return [
            sys.executable,
            "-m",
            "loadtest.external",
            "--db",
            str(self.db),
            "--marker",
            f"{self.marker}g{self.generation}",
            "--rows",
            str(p.external_rows),
            "--hold-ms",
            str(p.external_hold_ms),
            "--every-ms",
            str(p.external_every_ms),
        ]

    async def run(self) -> None:
        """Keep one writer running until ``stop``; restart it after a kill."""
        failures = 0
        while not self.stopping and failures < 3:
            self.generation += 1
            child = await self.registry.spawn("external", self.argv(), self.env)
            self.child = child
            self._drained = anyio.Event()
            await self._pump(child)
            self._drained.set()
            rc = await self.registry.stop(child)
            if not child.killed and not self.stopping:
                failures += 1
                self.recorder.error(
                    "external_exit", "external", f"exit {rc}: {child.stderr_tail(500)}"
                )
                await anyio.sleep(1.0)

    async def _pump(self, child: Child) -> None:
        stdout = child.process.stdout
        assert stdout is not None
        buffer = b""
        try:
            async for chunk in stdout:
                *lines, buffer = (buffer + chunk).split(b"\n")
                for line in lines:
                    if line.strip():
                        self._event(json.loads(line))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            pass

    def _event(self, ev: dict[str, Any]) -> None:
        from loadtest.workload import Sample  # noqa: PLC0415 - keeps the child free of mcp

        now = self.clock.now()
        key = f"g{self.generation}t{ev.get('txn')}"
        if ev["ev"] == "ready":
            self.ready.set()
        elif ev["ev"] == "commit":
            self.ledger.committed[key] = ev["tokens"]
            self.recorder.add(Sample(now, "external_txn", "external", ev["wait_ms"]))
        elif ev["ev"] == "hold":
            self._held = (key, ev["tokens"])
            if self._hold is not None:
                self._hold.set()
        elif ev["ev"] == "error":
            self.ledger.refused[key] = ev["tokens"]
            self.recorder.error(f"external_{ev['kind']}", "external", ev.get("msg", ""))

    async def kill_in_transaction(self) -> tuple[bool, str]:
        """Ask for a long transaction, SIGKILL the writer inside it; the next one starts."""
        child, drained = self.child, self._drained
        if child is None or child.returncode is not None or child.process.stdin is None:
            return False, "no external writer running"
        self._hold, self._held = anyio.Event(), None
        await child.process.stdin.send(b"long\n")
        with anyio.move_on_after(HOLD_TIMEOUT_S):
            await self._hold.wait()
        held = self._held
        if held is None:
            return False, f"the writer never opened the long transaction in {HOLD_TIMEOUT_S} s"
        child.kill9()
        exited = await wait_exit(child, KILL_EXIT_TIMEOUT_S)
        with anyio.move_on_after(KILL_EXIT_TIMEOUT_S):
            await drained.wait()  # a "commit" line it wrote before dying is read by now
        key, tokens = held
        self.ledger.killed[key] = tokens
        ok, why = judge_kill(child.returncode if exited else None, key in self.ledger.committed)
        return ok, f"pid {child.pid} holding txn {key} ({len(tokens)} rows): {why}"

    async def stop(self) -> None:
        self.stopping = True
        child = self.child
        if child is not None and child.returncode is None and child.process.stdin is not None:
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                await child.process.stdin.send(b"stop\n")


if __name__ == "__main__":
    sys.exit(main())
