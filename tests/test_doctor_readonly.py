"""`vestige doctor` changes no byte of vestige.db, -wal or -shm, whatever state it finds.

The test process takes each file's size and sha256 before and after running doctor as a
subprocess.  The test process has no SQLite connection at all, so reading the files here
cannot drop anyone's locks; every process that had one is gone (exited or SIGKILLed and
reaped) before the first hash.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests import cli_helpers
from tests.cli_helpers import cli_json, run_cli, tool_json

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.cli_helpers import Server

servers = cli_helpers.servers  # the fixture, under its own name

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow, pytest.mark.timeout(120)]

NAMES = ("vestige.db", "vestige.db-wal", "vestige.db-shm")


def fingerprint(data_dir: Path) -> dict[str, tuple[int, str] | None]:
    """Size and sha256 of each SQLite file (None: absent), computed in this process."""
    out: dict[str, tuple[int, str] | None] = {}
    for name in NAMES:
        path = data_dir / name
        if path.exists():
            data = path.read_bytes()
            out[name] = (len(data), hashlib.sha256(data).hexdigest())
        else:
            out[name] = None
    return out


def doctor(data_dir: Path, *args: str) -> dict[str, Any]:
    """Doctor's report; nothing fails (a killed server's stale metadata is a warning)."""
    result = run_cli("doctor", "--json", *args, data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    failed = {c["name"] for c in report["checks"] if c["status"] == "fail"}
    assert failed == set(), report["checks"]
    return report


def status(report: dict[str, Any], name: str) -> str:
    (found,) = [c for c in report["checks"] if c["name"] == name]
    return str(found["status"])


@pytest.mark.parametrize("deep", [False, True], ids=["fast", "deep"])
def test_a_healthy_idle_database_is_left_byte_identical(data_dir: Path, deep: bool) -> None:
    for n in range(3):
        cli_json("ingest", f"an idle memory number {n}", data_dir=data_dir)
    before = fingerprint(data_dir)
    assert before["vestige.db"] is not None
    assert before["vestige.db-wal"] is None, "the last CLI run should have removed its WAL"
    report = doctor(data_dir, *(["--deep"] if deep else []))
    assert fingerprint(data_dir) == before  # no -wal or -shm made, the database untouched
    assert report["database"]["journal_mode"] == "wal"
    assert status(report, "integrity-check") == ("ok" if deep else "skipped")
    assert status(report, "schema") == "ok"


def test_a_wal_left_by_kill_9_of_a_server_is_left_byte_identical(
    data_dir: Path, servers: Callable[..., Server]
) -> None:
    server = servers(data_dir)
    for n in range(5):
        server.call_tool("ingest", {"content": f"acknowledged before the kill {n}"})
    server.kill()  # SIGKILL: no checkpoint, -wal and -shm stay as they were
    before = fingerprint(data_dir)
    wal, shm = before["vestige.db-wal"], before["vestige.db-shm"]
    assert wal is not None
    assert wal[0] > 0, "the killed server left no WAL to protect"
    assert shm is not None
    report = doctor(data_dir)
    second = doctor(data_dir, "--deep")
    assert fingerprint(data_dir) == before  # neither recovery nor a checkpoint happened
    assert report["database"]["opened"] == "read-only shared memory"
    assert status(report, "schema") == "ok"
    assert status(second, "integrity-check") == "ok"
    # What doctor read was the WAL's content: the five memories are only there.
    assert cli_json("stats", data_dir=data_dir)["total_memories"] == 5


def test_a_wal_without_its_shm_is_reported_and_left_alone(
    data_dir: Path, servers: Callable[..., Server]
) -> None:
    server = servers(data_dir)
    server.call_tool("ingest", {"content": "a memory still in the WAL"})
    server.kill()
    # A crash can leave -wal without -shm; no process has any of the files open now.
    (data_dir / "vestige.db-shm").unlink()
    before = fingerprint(data_dir)
    report = doctor(data_dir)
    assert fingerprint(data_dir) == before  # no -shm created, the WAL not recovered
    (wal_check,) = [c for c in report["checks"] if c["name"] == "wal"]
    assert wal_check["status"] == "warn"
    assert "without the changes still in the WAL" in wal_check["detail"]
    # The memory was never lost: the next real open recovers it from the WAL.
    found = cli_json("search", "still in the WAL", data_dir=data_dir)
    assert [h["memory"]["content"] for h in found["results"]] == ["a memory still in the WAL"]


def test_doctor_beside_a_running_server_reads_its_snapshot(
    data_dir: Path, servers: Callable[..., Server]
) -> None:
    server = servers(data_dir)
    server.call_tool("ingest", {"content": "served while doctor looks"})
    report = doctor(data_dir)
    assert report["database"]["opened"] == "read-only shared memory"
    assert status(report, "schema") == "ok"
    assert status(doctor(data_dir, "--deep"), "integrity-check") == "ok"
    assert tool_json(server.call_tool("stats", {}))["total_memories"] == 1
