"""A writer stopped (SIGSTOP, Ctrl-Z) while it holds the write gate: doctor names it.

The child is a real process writing through the public API, with the test-only write delay
(``VESTIGE_FAULT_WRITE_DELAY_MS``) so that it sits inside its write, holding the gate, most of
the time.  The test finds it holding the gate in the kernel's lock table, stops it, and asks
the real ``vestige doctor``.  It is continued and killed by pid in teardown.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pytest

from tests.cli_helpers import cli_json, run_cli
from vestige.config import GATE_FILE, WRITE_DELAY_ENV

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [
    pytest.mark.multiprocess,
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux's /proc/locks"),
]

UNHEALTHY = 3
HOLD_DEADLINE_S = 30.0
WRITER = """
import sys
from vestige import Store
store = Store.open(sys.argv[1], create=False)
print("open", flush=True)
n = 0
while True:
    n += 1
    store.ingest(f"a slow write {n}")
"""


def gate_holders(gate: Path) -> set[int]:
    """The pids holding a granted lock on ``gate``, read from /proc/locks by the test itself."""
    st = gate.stat()
    holders = set()
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1] != "->" and fields[5].endswith(f":{st.st_ino}"):
            holders.add(int(fields[4]))
    return holders


@pytest.fixture
def slow_writer(data_dir: Path) -> Iterator[subprocess.Popen[str]]:
    cli_json("ingest", "the first memory", data_dir=data_dir)
    env = {**os.environ, WRITE_DELAY_ENV: "800"}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "open\n", proc.stderr.read() if proc.stderr else ""
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def stop_while_holding(proc: subprocess.Popen[str], gate: Path) -> None:
    """SIGSTOP ``proc`` at a moment the kernel shows it holding the gate."""
    end = time.monotonic() + HOLD_DEADLINE_S
    while time.monotonic() < end:
        if proc.pid in gate_holders(gate):
            os.kill(proc.pid, signal.SIGSTOP)
            if _wait_status(proc.pid, psutil.STATUS_STOPPED) and proc.pid in gate_holders(gate):
                return
            os.kill(proc.pid, signal.SIGCONT)  # it let go just before stopping: try again
        time.sleep(0.01)
    pytest.fail(f"the writer never held the gate within {HOLD_DEADLINE_S:.0f} s")


def _wait_status(pid: int, status: str) -> bool:
    end = time.monotonic() + 5.0
    while time.monotonic() < end:
        if psutil.Process(pid).status() == status:
            return True
        time.sleep(0.005)
    return False


def doctor(data_dir: Path) -> tuple[int, dict[str, Any]]:
    result = run_cli("doctor", "--json", data_dir=data_dir)
    assert result.returncode in (0, UNHEALTHY), result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return result.returncode, report


def gate_check(report: dict[str, Any]) -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in report["checks"] if c["name"] == "write-gate"]
    (only,) = found
    return only


def test_doctor_names_a_stopped_process_holding_the_write_gate(
    data_dir: Path, slow_writer: subprocess.Popen[str]
) -> None:
    gate = data_dir / GATE_FILE
    stop_while_holding(slow_writer, gate)

    code, report = doctor(data_dir)
    assert code == UNHEALTHY
    found = gate_check(report)
    assert found["status"] == "fail"
    assert f"pid {slow_writer.pid}" in found["detail"]
    assert "stopped" in found["detail"]
    assert f"kill -CONT {slow_writer.pid}" in found["hint"]
    holders = report["write_gate"]["holders"]
    assert [(h["pid"], h["status"]) for h in holders] == [(slow_writer.pid, "stopped")]
    assert report["write_gate"]["from"] == "kernel lock table"
    text = run_cli("doctor", data_dir=data_dir).stdout
    assert f"kill -CONT {slow_writer.pid}" in text

    # Following the advice: continued, it finishes its write and the gate is healthy again.
    os.kill(slow_writer.pid, signal.SIGCONT)
    _, report = doctor(data_dir)
    assert gate_check(report)["status"] == "ok"
    assert all(h["status"] != "stopped" for h in report["write_gate"]["holders"])


def test_an_idle_gate_is_reported_free(data_dir: Path) -> None:
    cli_json("ingest", "x", data_dir=data_dir)
    code, report = doctor(data_dir)
    assert code == 0
    assert gate_check(report) == {
        "name": "write-gate",
        "status": "ok",
        "detail": "free: no write in progress",
        "hint": "",
    }
    assert report["write_gate"]["holders"] == []
