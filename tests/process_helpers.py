"""Real worker processes for the multi-process tests, and the worker side that runs in them.

The parent spawns ``sys.executable`` on this file with a role and JSON parameters.  Workers
are released together by a start file (each first announces itself with a ready file), so
no test sleeps to synchronise.  Every wait has a deadline; a worker still running when its
test ends is killed by pid and reaped.  A worker exits 0 only if its role finished without
any error; otherwise it prints the traceback to stderr and exits 1.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

HELPER: Final = Path(__file__).resolve()
#: How often a waiting side looks for a file it waits on (a barrier poll, not a timed wait).
POLL_S: Final = 0.002
#: Upper bound on any wait in these helpers; tests pass shorter ones where they can.
DEFAULT_DEADLINE_S: Final = 60.0
START_FILE: Final = "start"


class WorkerFailed(AssertionError):
    """A worker did not finish cleanly; the message carries its exit code and stderr."""


def wait_for_file(path: Path, deadline_s: float, *, alive: Any = None) -> None:
    """Wait until ``path`` exists; ``alive()`` returning False stops the wait early."""
    end = time.monotonic() + deadline_s
    while not path.exists():
        if alive is not None and not alive():
            raise WorkerFailed(f"gave up waiting for {path.name}: the process it waits on ended")
        if time.monotonic() >= end:
            raise WorkerFailed(f"{path.name} did not appear within {deadline_s:.0f} s")
        time.sleep(POLL_S)


def read_lines(path: Path) -> list[str]:
    """Complete lines of a file another process may still be appending to."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    complete, _, _partial = text.rpartition("\n")
    return [line for line in complete.split("\n") if line] if complete else []


# -- parent side ----------------------------------------------------------------------


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path
    ready: Path
    files: dict[str, Path] = field(default_factory=dict)

    def stderr(self) -> str:
        return self.err.read_text(encoding="utf-8", errors="replace")

    def result(self) -> dict[str, Any]:
        """The JSON object the worker printed last (call after it exited 0)."""
        lines = self.out.read_text(encoding="utf-8").strip().splitlines()
        if not lines:
            raise WorkerFailed(f"worker {self.name} printed no result; stderr:\n{self.stderr()}")
        result: dict[str, Any] = json.loads(lines[-1])
        return result


class WorkerPool:
    """Spawns workers in one scratch directory and guarantees they are all reaped."""

    def __init__(self, directory: Path, env: dict[str, str] | None = None) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ if env is None else env)
        self.workers: list[Worker] = []

    @property
    def start_file(self) -> Path:
        return self.dir / START_FILE

    def spawn(self, role: str, name: str, **params: Any) -> Worker:
        ready = self.dir / f"ready-{name}"
        out, err = self.dir / f"{name}.out", self.dir / f"{name}.err"
        params = {"name": name, "ready": str(ready), "start": str(self.start_file), **params}
        with out.open("wb") as fout, err.open("wb") as ferr:
            proc = subprocess.Popen(
                [sys.executable, str(HELPER), role, json.dumps(params)],
                stdout=fout,
                stderr=ferr,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.dir,
            )
        worker = Worker(name, proc, out, err, ready)
        self.workers.append(worker)
        return worker

    def wait_ready(self, *workers: Worker, deadline_s: float = 30.0) -> None:
        end = time.monotonic() + deadline_s
        for w in workers or tuple(self.workers):
            try:
                wait_for_file(
                    w.ready,
                    max(0.0, end - time.monotonic()),
                    alive=lambda w=w: w.proc.poll() is None,
                )
            except WorkerFailed:
                if w.ready.exists():
                    continue  # became ready just as it finished
                raise WorkerFailed(
                    f"worker {w.name} never became ready (exit {w.proc.poll()}); "
                    f"stderr:\n{w.stderr()}"
                ) from None

    def release(self) -> None:
        """Open the start line: every worker waiting on it goes at once."""
        self.start_file.touch()

    def join(self, *workers: Worker, deadline_s: float = DEFAULT_DEADLINE_S) -> None:
        """Wait for the workers to exit; kill them all past the deadline; require exit 0."""
        end = time.monotonic() + deadline_s
        chosen = workers or tuple(self.workers)
        for w in chosen:
            try:
                w.proc.wait(timeout=max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill_all()
                raise WorkerFailed(
                    f"worker {w.name} still running after {deadline_s:.0f} s; killed. "
                    f"stderr:\n{w.stderr()}"
                ) from None
        failed = [w for w in chosen if w.proc.returncode != 0]
        if failed:
            report = "\n".join(
                f"--- {w.name} exited {w.proc.returncode}:\n{w.stderr()}" for w in failed
            )
            raise WorkerFailed(f"{len(failed)} worker(s) failed:\n{report}")

    def kill_all(self) -> None:
        for w in self.workers:
            if w.proc.poll() is None:
                w.proc.kill()  # SIGKILL to this pid only
        for w in self.workers:
            with contextlib.suppress(subprocess.TimeoutExpired):  # ignoring SIGKILL: D state
                w.proc.wait(timeout=10)

    def close(self) -> None:
        """Reap every worker: a short grace period, then SIGKILL by pid."""
        end = time.monotonic() + 5.0
        for w in self.workers:
            if w.proc.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    w.proc.wait(timeout=max(0.0, end - time.monotonic()))
        self.kill_all()


# -- worker side ----------------------------------------------------------------------


def _mark_ready(p: dict[str, Any]) -> None:
    Path(p["ready"]).touch()


def _wait_start(p: dict[str, Any]) -> None:
    wait_for_file(Path(p["start"]), p.get("deadline_s", DEFAULT_DEADLINE_S))


def _role_ingest(p: dict[str, Any]) -> dict[str, Any]:
    """Open the store, then at the start line ingest ``count`` memories, acking each id."""
    from vestige import Store  # noqa: PLC0415 - imported in the worker only

    acked = 0
    with Store.open(p["data_dir"]) as store, open(p["acks"], "a", encoding="utf-8") as acks:
        _mark_ready(p)
        _wait_start(p)
        for i in range(p["count"]):
            memory = store.ingest(f"{p['name']} memory number {i}", tags=[p["name"]])
            # Acknowledged only after the call returned: the id must now be durable.
            acks.write(f"{memory.id}\t{memory.content}\n")
            acks.flush()
            acked += 1
    return {"acked": acked}


def _role_open_new(p: dict[str, Any]) -> dict[str, Any]:
    """At the start line, open a data directory nobody has opened yet and write one memory."""
    from vestige import Store  # noqa: PLC0415

    _mark_ready(p)
    _wait_start(p)
    with Store.open(p["data_dir"]) as store:
        memory = store.ingest(f"opened by {p['name']}")
        return {"schema_version": store.schema_version, "id": memory.id}


def _role_hold_write_lock(p: dict[str, Any]) -> dict[str, Any]:
    """Hold SQLite's write lock with a plain connection (bypassing the write gate)."""
    import apsw  # noqa: PLC0415

    conn = apsw.Connection(p["database"])
    try:
        conn.execute("BEGIN IMMEDIATE")
        held_at = time.monotonic()
        _mark_ready(p)
        release = Path(p["release"])
        end = held_at + p["hold_s"]
        while time.monotonic() < end and not release.exists():
            time.sleep(POLL_S)
        conn.execute("ROLLBACK")
        released_at = time.time()
    finally:
        conn.close()
    return {"held_s": time.monotonic() - held_at, "released_at": released_at}


def _role_hold_gate(p: dict[str, Any]) -> dict[str, Any]:
    """Hold the cross-process write gate until told to let go."""
    from vestige._gate import WriteGate  # noqa: PLC0415

    gate = WriteGate(Path(p["gate"]))
    try:
        gate.acquire(10.0)
        _mark_ready(p)
        wait_for_file(Path(p["release"]), p.get("deadline_s", DEFAULT_DEADLINE_S))
        gate.release()
    finally:
        gate.close()
    return {"held": True}


def _role_decay(p: dict[str, Any]) -> dict[str, Any]:
    from vestige import Store  # noqa: PLC0415

    with Store.open(p["data_dir"]) as store:
        _mark_ready(p)
        _wait_start(p)
        return store.decay().to_dict()


def _role_write_loop(p: dict[str, Any]) -> dict[str, Any]:
    """Ingest continuously until the stop file appears (bounded in count and time)."""
    from vestige import Store  # noqa: PLC0415

    stop = Path(p["stop"])
    end = time.monotonic() + p.get("max_s", 30.0)
    written = 0
    with Store.open(p["data_dir"]) as store, open(p["acks"], "a", encoding="utf-8") as acks:
        while not stop.exists() and time.monotonic() < end and written < p.get("max", 50_000):
            memory = store.ingest(f"{p['name']} continuous write {written} " + "x" * 200)
            acks.write(f"{memory.id}\n")
            acks.flush()
            written += 1
            if written == p.get("ready_after", 1):
                _mark_ready(p)
    return {"written": written}


ROLES: Final = {
    "ingest": _role_ingest,
    "open-new": _role_open_new,
    "hold-write-lock": _role_hold_write_lock,
    "hold-gate": _role_hold_gate,
    "decay": _role_decay,
    "write-loop": _role_write_loop,
}


def main(argv: list[str]) -> int:
    role, params = argv[1], json.loads(argv[2])
    try:
        result = ROLES[role](params)
    except BaseException:  # any error at all is a failed worker, reported to the parent
        traceback.print_exc()
        return 1
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
