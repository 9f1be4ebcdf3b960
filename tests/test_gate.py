"""The write gate: mutual exclusion across real processes, and a deadline on every wait."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from portalocker import LockFlags

from tests.lock_helpers import refuse_locks
from vestige._gate import GateError, GateTimeout, WriteGate
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
        # It waited out its deadline, and the deadline (not the holder, who holds on until
        # told) ended the wait: a wait that ignored it would hang until pytest's timeout.
        assert time.monotonic() - began >= 0.25
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
        with Store.open(data, create=False) as store:
            hits = store.search("readable gate")
            store._db.write_deadline_s = 0.5
            with pytest.raises(StoreBusyError):
                store.ingest("a write does wait for the gate")
        assert [h.memory.content for h in hits] == [
            "readable while another process holds the write gate"
        ]
        # No clock needed: the holder never lets go, so an open or a search that queued on
        # the gate would have failed with StoreBusyError at its own deadline.
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.communicate()


def acquire_within(gate: WriteGate, deadline_s: float) -> bool:
    """Try in short waits until the deadline; True once the gate was granted."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            gate.acquire(0.2)
        except GateTimeout:
            continue
        return True
    return False


_INTERRUPTED = textwrap.dedent(
    """
    import signal, sys, threading, time
    from pathlib import Path
    from vestige._gate import WriteGate

    # Ctrl-C must raise here even if whoever started us ignores SIGINT (a background job
    # of a non-interactive shell does, and passes that on).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    gate = WriteGate(Path(sys.argv[1]))
    main = threading.main_thread().ident
    # Ctrl-C aimed at the waiting (main) thread while the helper is queued in flock.
    threading.Timer(0.3, signal.pthread_kill, (main, signal.SIGINT)).start()
    try:
        gate.acquire(30.0)
        print("granted", flush=True)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    # Once the test lets go, the kernel grants the flock still queued on the helper thread.
    end = time.monotonic() + 10
    while gate._state == "waiting" and time.monotonic() < end:
        time.sleep(0.005)
    print(gate._state, flush=True)
    sys.stdin.readline()  # stay alive (with the gate open) until the test is done
    gate.close()
    """
)


@pytest.mark.multiprocess
def test_an_interrupted_wait_does_not_keep_the_gate_for_nobody(tmp_path: Path) -> None:
    gate_path = tmp_path / "g.lock"
    holder = WriteGate(gate_path)
    holder.acquire(5.0)
    waiter = subprocess.Popen(
        [sys.executable, "-c", _INTERRUPTED, str(gate_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    third = WriteGate(gate_path)
    try:
        assert waiter.stdout is not None
        assert waiter.stdin is not None
        assert waiter.stdout.readline().strip() == "interrupted"
        # The kernel now grants the interrupted process's queued flock: it must give it back.
        holder.release()
        assert waiter.stdout.readline().strip() == "idle"
        assert acquire_within(third, 5.0), "the interrupted waiter kept the gate"
        third.release()
        waiter.stdin.write("done\n")
        waiter.stdin.flush()
        assert waiter.wait(timeout=10) == 0
    finally:
        third.close()
        holder.close()
        if waiter.poll() is None:
            waiter.kill()
        waiter.communicate()


@pytest.mark.parametrize(
    "fail",
    [
        pytest.param(lambda flags: flags == LockFlags.EXCLUSIVE, id="blocking-in-helper"),
        pytest.param(lambda flags: flags & LockFlags.EXCLUSIVE, id="non-blocking"),
    ],
)
def test_a_lock_the_kernel_refuses_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: Any
) -> None:
    holder, gate = WriteGate(tmp_path / "g.lock"), WriteGate(tmp_path / "g.lock")
    try:
        holder.acquire(1.0)  # contended: the waiter goes through the helper thread
        refuse_locks(monkeypatch, fail)
        with pytest.raises(GateError) as info:
            gate.acquire(5.0)  # a GateError, not a GateTimeout: told, not left waiting
        assert isinstance(info.value, OSError)
        assert info.value.errno == errno.ENOLCK
        assert f"cannot lock the write gate {tmp_path / 'g.lock'}" in str(info.value)
        monkeypatch.undo()
        holder.release()
        gate.acquire(5.0)  # the gate works again once the kernel does
        gate.release()
    finally:
        gate.close()
        holder.close()


_FORKER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from vestige._gate import WriteGate

    gate = WriteGate(Path(sys.argv[1]))
    gate.acquire(5.0)
    child = os.fork()
    if child == 0:  # no exec: the child only waits, holding whatever descriptors it kept
        end = time.monotonic() + 30
        while not os.path.exists(sys.argv[2]) and time.monotonic() < end:
            time.sleep(0.01)
        os._exit(0)
    print(child, flush=True)
    time.sleep(60)  # the test kills us while we hold the gate
    """
)


@pytest.mark.multiprocess
def test_a_forked_child_does_not_keep_the_gate_of_a_dead_parent(tmp_path: Path) -> None:
    gate_path, stop = tmp_path / "g.lock", tmp_path / "stop"
    parent = subprocess.Popen(
        [sys.executable, "-c", _FORKER, str(gate_path), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
    )
    child = 0
    gate = WriteGate(gate_path)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        parent.kill()  # SIGKILL: dies holding the gate, its forked child lives on
        parent.wait(timeout=10)
        assert psutil.pid_exists(child)
        assert acquire_within(gate, 5.0), "the forked child kept the dead parent's gate"
        gate.release()
    finally:
        gate.close()
        stop.touch()
        if parent.poll() is None:
            parent.kill()
        parent.communicate()
        if child:
            stop_orphan(child)


def stop_orphan(pid: int) -> None:
    """Wait for an orphaned grandchild to exit (its reaper is init, not us); SIGKILL it late."""
    end = time.monotonic() + 10
    while time.monotonic() < end:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)


_FORK_AFTER_CLOSE = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from vestige._gate import WriteGate

    gate = WriteGate(Path(sys.argv[1]))
    gate.acquire(5.0)
    gate.release()
    number = gate._fd
    gate.close()
    fd = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    if fd != number:  # the kernel hands out the lowest free number; make sure it is reused
        os.dup2(fd, number)
        os.close(fd)
        fd = number
    child = os.fork()
    if child == 0:  # no exec: the at-fork handlers have run
        try:
            os.write(fd, b"written by the child\\n")
            code = 0
        except OSError as exc:
            print(f"child cannot write to fd {fd}: {exc}", file=sys.stderr, flush=True)
            code = 1
        os._exit(code)
    _, status = os.waitpid(child, 0)
    sys.exit(os.waitstatus_to_exitcode(status))
    """
)


@pytest.mark.multiprocess
def test_a_closed_gate_is_forgotten_so_a_forked_child_keeps_newer_files(tmp_path: Path) -> None:
    """A file that reuses a closed gate's descriptor number survives the at-fork handler."""
    out = tmp_path / "out.txt"
    run = subprocess.run(
        [sys.executable, "-c", _FORK_AFTER_CLOSE, str(tmp_path / "g.lock"), str(out)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert out.read_text() == "written by the child\n"


def test_closing_a_gate_twice_closes_its_descriptor_once(tmp_path: Path) -> None:
    gate = WriteGate(tmp_path / "g.lock")
    number = gate._fd
    gate.close()
    fd = os.open(tmp_path / "other", os.O_WRONLY | os.O_CREAT, 0o600)
    if fd != number:  # another file now holds the closed gate's number
        os.dup2(fd, number)
        os.close(fd)
        fd = number
    try:
        gate.close()
        os.fstat(fd)  # still open
        with pytest.raises(GateError, match="is closed"):
            gate.acquire(1.0)
    finally:
        os.close(fd)
