"""The write gate: mutual exclusion across real processes, and a deadline on every wait."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from vestige._gate import GateTimeout, WriteGate
from vestige.errors import StoreBusyError

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX flock gate")

#: Each worker enters the gate this many times; with 4 workers that is 800 critical sections.
ROUNDS = 200

_WORKER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from vestige._gate import WriteGate

    gate_path, marker, counter, start, rounds = sys.argv[1:6]
    while not os.path.exists(start):
        time.sleep(0.001)
    gate = WriteGate(Path(gate_path))
    for _ in range(int(rounds)):
        gate.acquire(10.0)
        try:
            # Detector 1: an occupancy marker that only one process may create.
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.close(fd)
            # Detector 2: a read-modify-write counter that loses updates on overlap.
            value = int(Path(counter).read_text() or "0")
            Path(counter).write_text(str(value + 1))
            os.unlink(marker)
        finally:
            gate.release()
    gate.close()
    """
)

_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from vestige._gate import WriteGate

    gate = WriteGate(Path(sys.argv[1]))
    gate.acquire(5.0)
    print("held", flush=True)
    sys.stdin.readline()  # hold until the test says so
    gate.release()
    print("released", flush=True)
    gate.close()
    """
)


@pytest.mark.multiprocess
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_gate_four_processes_never_overlap(tmp_path: Path) -> None:
    gate, marker, counter, start = (
        tmp_path / "g.lock",
        tmp_path / "occupied",
        tmp_path / "counter",
        tmp_path / "start",
    )
    counter.write_text("0")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(gate), str(marker), str(counter), str(start),
             str(ROUNDS)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]  # fmt: skip
    try:
        start.touch()
        errors = [p.communicate(timeout=100)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    assert int(counter.read_text()) == 4 * ROUNDS


@pytest.mark.multiprocess
def test_gate_wait_ends_at_its_deadline_and_gives_the_lock_back(tmp_path: Path) -> None:
    gate_path = tmp_path / "g.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(gate_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    gate = WriteGate(gate_path)
    try:
        assert holder.stdout is not None
        assert holder.stdin is not None
        assert holder.stdout.readline().strip() == "held"
        began = time.monotonic()
        with pytest.raises(GateTimeout):
            gate.acquire(0.3)
        waited = time.monotonic() - began
        assert 0.25 <= waited < 3.0
        # The abandoned wait is still queued in the kernel; once the holder lets go, it must
        # pass the lock on rather than keep it: a third party gets it.
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "released"
        assert holder.wait(timeout=10) == 0
        third = WriteGate(gate_path)
        try:
            deadline = time.monotonic() + 5
            while True:
                try:
                    third.acquire(0.2)
                    break
                except GateTimeout:
                    assert time.monotonic() < deadline, "abandoned wait kept the gate"
            third.release()
        finally:
            third.close()
        # And this process can still take it normally afterwards.
        gate.acquire(5.0)
        gate.release()
    finally:
        gate.close()
        if holder.poll() is None:
            holder.kill()
        holder.communicate()


def test_gate_file_is_private_and_separate_from_the_database(tmp_path: Path) -> None:
    gate = WriteGate(tmp_path / "vestige.gate.lock")
    try:
        gate.acquire(1.0)
        gate.release()
    finally:
        gate.close()
    assert oct((tmp_path / "vestige.gate.lock").stat().st_mode & 0o777) == oct(0o600 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.multiprocess
def test_reading_an_up_to_date_store_never_waits_for_the_gate(tmp_path: Path) -> None:
    """WAL lets reads run beside a writer; opening for a read must not queue on the gate."""
    from vestige import Store  # noqa: PLC0415 - the gate tests above need only _gate

    data = tmp_path / "data"
    with Store.open(data) as store:
        store.ingest("readable while another process holds the write gate")
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(data / "vestige.gate.lock")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        began = time.monotonic()
        with Store.open(data, create=False) as store:
            hits = store.search("readable gate")
            store._db.write_deadline_s = 0.5
            with pytest.raises(StoreBusyError):
                store.ingest("a write does wait for the gate")
        assert [h.memory.content for h in hits] == [
            "readable while another process holds the write gate"
        ]
        assert time.monotonic() - began < 5.0
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.communicate()
