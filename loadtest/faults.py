"""The fault schedule: kill -9 a server, kill -9 the external writer mid-transaction, and
try to start an exclusive server beside the shared writers.

Each fault is judged on its own (did it happen as intended: the server came back, the kill
landed inside a transaction, the exclusive launch was refused naming a live owner), and each
kill is followed at once by a check of the live file against the ledger.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import anyio

from loadtest.checks import Check
from loadtest.spawn import wait_exit

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from loadtest.client import Clock
    from loadtest.external import ExternalWriter
    from loadtest.runner import ServerSlot
    from loadtest.spawn import Registry

#: ``vestige-mcp`` exit code when another process owns the data directory (its --help:
#: "3 data directory owned by another process").
EXIT_OWNER_LOCKED: Final = 3
#: The server promises a refusal "in a fraction of a second"; the interpreter start on a
#: loaded 2-core machine can take seconds, hence the margin.
REFUSAL_TIMEOUT_S: Final = 20.0
RESTART_TIMEOUT_S: Final = 60.0
#: The kill waits up to this long for a server with an ingest in flight, so that some
#: acknowledgements are really lost (Jepsen's indeterminate outcomes), then kills anyway.
AIM_TIMEOUT_S: Final = 3.0
_PID_RE: Final = re.compile(r"\bpid (\d+)")


@dataclass
class FaultEvent:
    """One fault: when (run clock), what, on whom, whether it went as intended, and how long
    the system took to recover (restart, refusal)."""

    at: float
    kind: str
    target: str
    ok: bool
    detail: str
    recovery_s: float | None = None
    #: False when the load ended before the outcome could be seen (a server killed just
    #: before the stop is not restarted): reported as info, neither passed nor failed.
    judged: bool = True

    def to_dict(self) -> dict[str, object]:
        return {
            "at_s": round(self.at, 3),
            "kind": self.kind,
            "target": self.target,
            "ok": self.ok,
            "judged": self.judged,
            "detail": self.detail,
            "recovery_s": None if self.recovery_s is None else round(self.recovery_s, 3),
        }


def owners_named(stderr: str) -> set[int]:
    """The pids a refusal message names ("pid 1234 (shared, stdio) ...")."""
    return {int(p) for p in _PID_RE.findall(stderr)}


def judge_refusal(rc: int | None, stderr: str, live_pids: set[int]) -> tuple[bool, str]:
    """An exclusive launch beside shared writers must exit 3 naming at least one live owner,
    and no pid that is not one."""
    if rc is None:
        return False, f"still running after {REFUSAL_TIMEOUT_S:.0f} s: it was not refused"
    named = owners_named(stderr)
    first_line = stderr.strip().splitlines()[0] if stderr.strip() else "(no stderr)"
    if rc != EXIT_OWNER_LOCKED:
        return False, f"exit {rc}, expected {EXIT_OWNER_LOCKED}: {first_line}"
    if not named & live_pids:
        return False, f"names pids {sorted(named)}, none of the live servers {sorted(live_pids)}"
    strangers = named - live_pids
    if strangers:
        return False, f"names pids {sorted(strangers)} that are not live servers"
    return True, f"exit {rc}, names owner pid(s) {sorted(named)}"


def fault_checks(
    events: Sequence[FaultEvent],
    not_reached: Sequence[tuple[float, str]],
    planned: int,
    *,
    load_started: float,
    load_s: float,
) -> list[Check]:
    """One line per fault.  A fault the load ended before (``--ops``) is info, not a
    failure; one that was due while the load still ran, yet never ran, fails."""
    out = [
        Check(
            f"fault {e.kind} at {e.at - load_started:.1f} s ({e.target})",
            e.ok,
            e.detail,
            excused=not e.judged,
        )
        for e in events
    ]
    late = [(at, kind) for at, kind in not_reached if at >= load_s]
    out += [
        Check(
            f"fault {kind} planned at {at:.1f} s",
            False,
            f"not run: the load ended at {load_s:.1f} s, before it was due",
            excused=True,
        )
        for at, kind in late
    ]
    missing = planned - len(events) - len(late)
    if missing > 0:
        due = [kind for at, kind in not_reached if at < load_s] or ["?"] * missing
        out.append(
            Check(
                "every planned fault ran",
                False,
                f"not run although due while the load ran: {', '.join(due)}",
            )
        )
    return out


class FaultRunner:
    def __init__(
        self,
        schedule: Sequence[tuple[float, str]],
        *,
        clock: Clock,
        slots: Sequence[ServerSlot],
        external: ExternalWriter | None,
        registry: Registry,
        exclusive_argv: list[str],
        env: dict[str, str],
        after_kill: Callable[[str], Awaitable[None]],
        stop: anyio.Event,
        writes_in_flight: Callable[[str], int],
        seed: int,
    ) -> None:
        self.schedule = list(schedule)
        self.clock, self.slots, self.external = clock, slots, external
        self.registry, self.exclusive_argv, self.env = registry, exclusive_argv, env
        self.after_kill, self.stop, self.stopping = after_kill, stop, stop.is_set
        self.writes_in_flight = writes_in_flight
        self.rng = random.Random(seed)
        self.events: list[FaultEvent] = []
        #: (offset, kind) of the faults the load ended before.
        self.not_reached: list[tuple[float, str]] = []

    async def run(self, load_started: float) -> None:
        for i, (offset, kind) in enumerate(self.schedule):
            with anyio.move_on_after(max(0.0, load_started + offset - self.clock.now())):
                await self.stop.wait()  # the stop ends the wait: an early end never stalls
            if self.stopping():
                self.not_reached = self.schedule[i:]
                return
            if kind == "kill-server":
                await self.kill_server()
            elif kind == "kill-external":
                await self.kill_external()
            elif kind == "exclusive-launch":
                await self.exclusive_launch()

    def _record(self, event: FaultEvent) -> None:
        self.events.append(event)

    async def kill_server(self) -> None:
        at = self.clock.now()
        slot = await self._aim()
        if slot is None or slot.child is None:
            self._record(FaultEvent(at, "kill-server", "-", False, "no server was up"))
            return
        pid, generation = slot.child.pid, slot.generation
        in_flight = self.writes_in_flight(slot.name)
        slot.child.kill9()
        await self.after_kill(f"after kill -9 of {slot.name} (pid {pid})")
        with anyio.move_on_after(RESTART_TIMEOUT_S):
            while not (slot.generation > generation and slot.up.is_set()):
                if self.stopping():
                    break
                await anyio.sleep(0.02)
        restarted = slot.generation > generation and slot.up.is_set()
        new_pid = slot.child.pid if slot.child is not None else None
        if restarted:
            outcome = f"restarted as pid {new_pid}"
        elif self.stopping():
            outcome = "the load ended before it could come back: not judged"
        else:
            outcome = "did not come back"
        self._record(
            FaultEvent(
                at,
                "kill-server",
                f"{slot.name} pid {pid}",
                restarted,
                f"{in_flight} ingest(s) in flight; {outcome}",
                self.clock.now() - at if restarted else None,
                judged=restarted or not self.stopping(),
            )
        )

    async def _aim(self) -> ServerSlot | None:
        """A server that is up, preferably one with a write in flight."""
        with anyio.move_on_after(AIM_TIMEOUT_S):
            while not self.stopping():
                busy = [s for s in self._up() if self.writes_in_flight(s.name) > 0]
                if busy:
                    return self.rng.choice(busy)
                await anyio.sleep(0.001)
        up = self._up()
        return self.rng.choice(up) if up else None

    def _up(self) -> list[ServerSlot]:
        return [s for s in self.slots if s.up.is_set() and s.child is not None and s.child.alive]

    async def kill_external(self) -> None:
        at = self.clock.now()
        if self.external is None:
            self._record(FaultEvent(at, "kill-external", "-", False, "no external writer"))
            return
        ok, detail = await self.external.kill_in_transaction()
        if ok:
            await self.after_kill("after kill -9 of the external writer")
        self._record(FaultEvent(at, "kill-external", "external writer", ok, detail))

    def _alive_servers(self) -> set[int]:
        return {s.child.pid for s in self.slots if s.child is not None and s.child.alive}

    async def exclusive_launch(self) -> None:
        at = self.clock.now()
        live = self._alive_servers()
        child = await self.registry.spawn("exclusive", self.exclusive_argv, self.env)
        exited = await wait_exit(child, REFUSAL_TIMEOUT_S)
        took = self.clock.now() - at
        live |= self._alive_servers()  # a server restarting meanwhile is an owner too
        if not exited:
            await self.registry.stop(child)
        ok, detail = judge_refusal(
            child.returncode if exited else None, child.stderr_tail(4000), live
        )
        self._record(
            FaultEvent(at, "exclusive-launch", f"pid {child.pid}", ok, detail, took if ok else None)
        )
