"""`vestige doctor` as a subprocess: holders, locks, staleness, damage, and honest exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pytest

from tests import cli_helpers, damage_helpers
from tests.cli_helpers import cli_json, damage, plain_holder, run_cli
from vestige import Store
from vestige.config import DATA_DIR_ENV
from vestige.migrations import LATEST_VERSION

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.cli_helpers import Server

servers = cli_helpers.servers  # the fixture, under its own name

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow, pytest.mark.timeout(120)]

UNHEALTHY = 3


def doctor(
    data_dir: Path | None, *args: str, env: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    result = run_cli("doctor", "--json", *args, data_dir=data_dir, env=env)
    assert result.returncode in (0, UNHEALTHY), result.stderr
    return result.returncode, json.loads(result.stdout)


def check(report: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in report["checks"] if c["name"] == name]
    return found


def failing(report: dict[str, Any]) -> list[str]:
    return [c["name"] for c in report["checks"] if c["status"] == "fail"]


def snapshot(path: Path) -> dict[str, tuple[int, float]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime) for p in sorted(path.rglob("*"))}


def test_a_healthy_idle_store_exits_0_and_doctor_changes_nothing(data_dir: Path) -> None:
    cli_json("ingest", "a healthy memory", data_dir=data_dir)
    before = snapshot(data_dir)
    code, report = doctor(data_dir)
    assert code == 0
    assert report["healthy"] is True
    assert failing(report) == []
    assert report["data_dir"] == {
        "path": str(data_dir),
        "source": "argument",
        "chosen_by": "--data-dir",
        "exists": True,
    }
    assert report["owner_lock"]["state"] == "free"
    assert report["processes"]["holders"] == []
    assert report["database"]["journal_mode"] == "wal"
    assert report["deep"] is False
    assert report["database"]["integrity_check"] is None  # not run without --deep
    assert report["database"]["schema_version"] == report["database"]["latest_schema_version"]
    assert {c["name"] for c in report["checks"]} >= {
        "data-dir", "sqlite-version", "filesystem", "permissions", "owner-lock",
        "processes", "journal-mode", "integrity-check", "schema", "wal-size",
    }  # fmt: skip
    assert snapshot(data_dir) == before  # no file created, removed or written
    text = run_cli("doctor", data_dir=data_dir)
    assert text.returncode == 0
    assert f"{data_dir} (chosen by --data-dir)" in text.stdout
    summary, not_checked, how = text.stdout.splitlines()[-3:]
    assert summary.startswith("No problem found in what was checked")
    assert (not_checked.startswith("Not checked: "), how) == (
        True,
        "Run `vestige doctor --deep` to check the whole file.",
    )


def test_it_says_which_rule_chose_the_data_dir(tmp_path: Path, data_dir: Path) -> None:
    cli_json("ingest", "x", data_dir=data_dir)
    env = {**os.environ, DATA_DIR_ENV: str(data_dir)}
    _, report = doctor(None, env=env)
    assert (report["data_dir"]["source"], report["data_dir"]["chosen_by"]) == (
        "environment",
        DATA_DIR_ENV,
    )
    # The platform default (the test's HOME is a temp dir): missing, reported, not created.
    env.pop(DATA_DIR_ENV)
    code, report = doctor(None, env=env)
    assert code == UNHEALTHY
    assert report["data_dir"]["source"] == "default"
    assert report["data_dir"]["path"].startswith(str(tmp_path / "home"))
    assert failing(report) == ["data-dir"]
    assert not Path(report["data_dir"]["path"]).exists()


def test_it_names_a_running_servers_pid_and_the_files_it_holds(
    data_dir: Path, servers: Callable[..., Server]
) -> None:
    server = servers(data_dir)
    code, report = doctor(data_dir)
    assert code == 0, report
    lock = report["owner_lock"]
    assert lock["state"] == "exclusive"
    (holder,) = lock["holders"]
    assert (holder["pid"], holder["alive"], holder["mode"]) == (server.pid, True, "exclusive")
    (proc,) = [p for p in report["processes"]["holders"] if p["pid"] == server.pid]
    names = {Path(f).name for f in proc["files"]}
    assert names >= {"vestige.db", "vestige.db-wal", "vestige.db-shm", "vestige.owner.lock"}
    assert proc["create_time"] == pytest.approx(psutil.Process(server.pid).create_time(), abs=0.01)
    assert os.getpid() not in [p["pid"] for p in report["processes"]["holders"]]
    text = run_cli("doctor", data_dir=data_dir).stdout
    assert f"held by an exclusive owner: pid {server.pid}" in text
    assert "db,shm,wal,gate-lock,owner-lock" in text


def test_shared_writers_are_reported_as_shared(
    data_dir: Path, servers: Callable[..., Server]
) -> None:
    first = servers(data_dir, "--shared-writers")
    second = servers(data_dir, "--shared-writers")
    code, report = doctor(data_dir)
    assert code == 0
    assert report["owner_lock"]["state"] == "shared"
    assert {h["pid"] for h in report["owner_lock"]["holders"]} == {first.pid, second.pid}
    assert {first.pid, second.pid} <= {p["pid"] for p in report["processes"]["holders"]}


def test_a_killed_owner_leaves_a_free_lock_and_stale_metadata(
    data_dir: Path, servers: Callable[..., Server]
) -> None:
    server = servers(data_dir)
    pid = server.pid
    server.kill()  # SIGKILL: no clean-up ran
    meta = data_dir / "owners" / f"{pid}.json"
    assert meta.exists()
    code, report = doctor(data_dir)
    # Stale metadata blocks nothing (the kernel freed the lock): a warning, exit 0.
    assert code == 0
    assert report["healthy"] is True
    assert report["owner_lock"]["state"] == "free"  # the kernel released it
    assert failing(report) == []
    stale = check(report, "owner-metadata")
    assert stale["status"] == "warn"
    assert f"{meta} (pid {pid} no longer exists)" in stale["detail"]
    assert f"vestige doctor --remove-stale --data-dir {data_dir}" in stale["hint"]
    assert f"rm {meta}" in stale["hint"]
    assert meta.exists()  # doctor changed nothing on its own
    text = run_cli("doctor", data_dir=data_dir)
    assert text.returncode == 0
    assert "WARN  owner-metadata" in text.stdout
    summary = text.stdout.splitlines()[-3]
    assert summary.startswith("No problem found in what was checked, "), summary
    assert "warning(s)" in summary
    assert check(report, "schema")["status"] == "ok"  # read through the WAL
    assert check(doctor(data_dir, "--deep")[1], "integrity-check")["status"] == "ok"
    # It blocks nothing: a new server starts on the directory, and takes the file away.
    servers(data_dir)
    assert not meta.exists()


def test_remove_stale_removes_only_the_files_of_a_killed_owner(
    data_dir: Path, servers: Callable[..., Server]
) -> None:
    server = servers(data_dir)
    pid = server.pid
    server.kill()  # SIGKILL: no clean-up ran
    meta = data_dir / "owners" / f"{pid}.json"
    before = {p for p in data_dir.rglob("*") if p != meta}
    code, fixed = doctor(data_dir, "--remove-stale")
    assert code == 0
    assert fixed["removed_stale"] == [str(meta)]
    assert check(fixed, "owner-metadata")["status"] == "ok"
    assert not meta.exists()
    assert set(data_dir.rglob("*")) == before
    code, again = doctor(data_dir)
    assert code == 0
    assert [c for c in again["checks"] if c["name"] == "owner-metadata"] == []


def test_metadata_of_a_reused_pid_is_stale(data_dir: Path) -> None:
    cli_json("ingest", "x", data_dir=data_dir)
    owners = data_dir / "owners"
    owners.mkdir()
    # A live pid (this test's) with another process's creation time: the pid was reused.
    me = psutil.Process()
    fake = {
        "pid": me.pid,
        "create_time": me.create_time() - 1000.0,
        "cmdline": ["vestige-mcp"],
        "data_dir": str(data_dir),
        "version": "0",
        "mode": "exclusive",
        "transport": "stdio",
        "endpoint": None,
        "started_at": "2025-01-01T00:00:00+00:00",
    }
    path = owners / f"{me.pid}.json"
    path.write_text(json.dumps(fake))
    code, report = doctor(data_dir)
    assert code == 0  # stale: a warning, never a failure
    stale = check(report, "owner-metadata")
    assert stale["status"] == "warn"
    assert "now belongs to another process (pid reused)" in stale["detail"]
    assert report["owner_lock"]["holders"][0]["alive"] is False


def test_a_plain_process_with_the_database_open_is_listed(data_dir: Path) -> None:
    cli_json("ingest", "x", data_dir=data_dir)
    with plain_holder(data_dir) as holder:
        started = time.time()
        code, report = doctor(data_dir)
    assert code == 0
    assert report["owner_lock"]["state"] == "free"
    (proc,) = report["processes"]["holders"]
    assert proc["pid"] == holder.pid
    assert proc["cmdline"][:2] == [sys.executable, "-c"]
    assert {Path(f).name for f in proc["files"]} >= {"vestige.db", "vestige.gate.lock"}
    assert 0 <= proc["running_s"] <= time.time() - started + 30


def test_a_damaged_database_fails_and_points_at_the_newest_backup(data_dir: Path) -> None:
    cli_json("ingest", "soon damaged", data_dir=data_dir)
    backup = cli_json("backup", data_dir=data_dir)["path"]
    damage(data_dir / "vestige.db")
    code, report = doctor(data_dir, "--deep")
    assert code == UNHEALTHY
    assert failing(report) == ["integrity-check"]
    assert "found damage" in check(report, "integrity-check")["detail"]
    hint = check(report, "integrity-check")["hint"]
    assert f"vestige salvage --data-dir {data_dir} -o rescue.jsonl" in hint
    assert f"vestige restore --data-dir {data_dir} {backup} --move-damaged" in hint
    # The routine doctor reads no page of the table, so it cannot see this damage; it says
    # that it did not look instead of calling the file verified.
    code, fast = doctor(data_dir)
    assert code == 0
    assert check(fast, "integrity-check")["status"] == "skipped"
    assert "--deep" in check(fast, "integrity-check")["hint"]


def test_a_file_that_is_not_a_database_fails(data_dir: Path) -> None:
    cli_json("ingest", "x", data_dir=data_dir)
    (data_dir / "vestige.db").write_bytes(b"garbage " * 1000)
    code, report = doctor(data_dir)
    assert code == UNHEALTHY
    assert failing(report) == ["integrity"]
    assert "is damaged or is not a database" in check(report, "integrity")["detail"]
    text = run_cli("doctor", data_dir=data_dir)
    assert text.returncode == UNHEALTHY
    assert "1 problem(s) found" in text.stdout


def test_a_newer_schema_fails_with_an_upgrade_hint(data_dir: Path) -> None:
    cli_json("ingest", "x", data_dir=data_dir)
    import apsw  # noqa: PLC0415

    conn = apsw.Connection(str(data_dir / "vestige.db"))
    conn.execute("INSERT INTO schema_version VALUES (99, 'future', '2099-01-01')")
    conn.close()
    code, report = doctor(data_dir)
    assert code == UNHEALTHY
    assert check(report, "schema")["detail"] == (
        f"version 99 is newer than this Vestige knows ({LATEST_VERSION})"
    )
    assert "pip install --upgrade vestige" in check(report, "schema")["hint"]


def test_missing_database_and_data_dir_that_is_a_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, report = doctor(empty)
    assert code == UNHEALTHY
    assert failing(report) == ["database"]
    assert list(empty.iterdir()) == []  # nothing created, not even a lock file
    file = tmp_path / "file"
    file.write_text("x")
    code, report = doctor(file)
    assert code == UNHEALTHY
    assert failing(report) == ["data-dir"]
    assert "is a file, not a directory" in check(report, "data-dir")["detail"]


def test_processes_it_may_not_inspect_are_counted_not_ignored(data_dir: Path) -> None:
    denied = set()
    for proc in psutil.process_iter():
        try:
            proc.open_files()
        except psutil.AccessDenied:
            denied.add(proc.pid)
        except psutil.NoSuchProcess:
            pass
    if not denied:
        pytest.skip("every process on this machine can be inspected by this user")
    cli_json("ingest", "x", data_dir=data_dir)
    _, report = doctor(data_dir)
    # Long-lived protected processes (an init, other users' daemons) are still there.
    assert denied & set(report["processes"]["not_inspected_pids"])
    assert report["processes"]["complete"] is False
    found = check(report, "processes")
    assert found["status"] == "warn"
    assert "could not be inspected (access denied" in found["detail"]
    assert "authoritative" in found["hint"]


def test_the_fast_doctor_says_what_it_did_not_check(data_dir: Path) -> None:
    """Without --deep no page of the file is read, and both outputs say so."""
    cli_json("ingest", "checked lightly", data_dir=data_dir)
    code, report = doctor(data_dir)
    assert code == 0
    assert report["deep"] is False
    (not_checked,) = report["not_checked"]
    assert "pages, indexes and rows were not read" in not_checked
    skipped = check(report, "integrity-check")
    assert skipped["status"] == "skipped"
    assert skipped["detail"] == f"not run: {not_checked}"
    text = run_cli("doctor", data_dir=data_dir)
    assert text.returncode == 0
    lines = text.stdout.splitlines()
    assert any(line.startswith("skip") and "integrity-check" in line for line in lines)
    assert lines[-2] == f"Not checked: {not_checked}."
    assert lines[-1] == "Run `vestige doctor --deep` to check the whole file."
    code, deep = doctor(data_dir, "--deep")
    assert (code, deep["deep"], "not_checked" in deep) == (0, True, False)
    assert check(deep, "integrity-check")["status"] == "ok"
    assert deep["database"]["integrity_check"] == ["ok"]
    deep_text = run_cli("doctor", "--deep", data_dir=data_dir).stdout
    assert "Not checked" not in deep_text
    assert "skip" not in deep_text


def test_deep_finds_damage_in_an_index_the_fast_doctor_does_not_read(data_dir: Path) -> None:
    """Random bytes over the leaves of an index: only --deep reads them, and it fails."""
    with Store.open(data_dir) as store:  # closed before a byte is damaged
        for i in range(300):
            store.ingest(f"memory {i} spread over many pages " + "words " * 40)
    db = data_dir / "vestige.db"
    damage_helpers.checkpoint_away(db)
    damage_helpers.overwrite_pages(db, damage_helpers.pages_of(db, "idx_nodes_created")[:1])
    code, fast = doctor(data_dir)
    assert code == 0
    assert check(fast, "integrity-check")["status"] == "skipped"
    code, deep = doctor(data_dir, "--deep")
    assert code == UNHEALTHY
    # A page this damaged stops integrity_check itself: SQLite reports it as corrupt.
    assert failing(deep) == ["integrity"]
    assert "is damaged or is not a database" in check(deep, "integrity")["detail"]
    assert "vestige salvage" in check(deep, "integrity")["hint"]


#: A holder that owns the directory as ``vestige-mcp --attach``'s owner would, and lists
#: the sessions given as JSON; it holds until its stdin closes.
SESSIONS_HOLDER = """
import json, sys
from vestige.owner import AttachedSession, acquire_owner
lock = acquire_owner(sys.argv[1], transport="attach", endpoint=sys.argv[2])
lock.publish_sessions([AttachedSession(**s) for s in json.loads(sys.argv[3])])
print("ready", flush=True)
sys.stdin.read()
lock.release()
"""


def test_it_shows_the_owner_and_every_attached_session(tmp_path: Path, data_dir: Path) -> None:
    cli_json("ingest", "a memory for the attached sessions", data_dir=data_dir)
    backup = cli_json("backup", tmp_path / "b.db", data_dir=data_dir)["path"]
    endpoint = str(data_dir / "vestige.sock")
    sessions = [
        {"pid": 4242, "client": "claude-code", "since": 1_700_000_000.0},
        {"pid": 4243, "client": None, "since": 1_700_000_060.5},
        {"pid": 4244, "client": "\x1b[31mred", "since": 1_700_000_120},
    ]
    holder = subprocess.Popen(
        [sys.executable, "-c", SESSIONS_HOLDER, str(data_dir), endpoint, json.dumps(sessions)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "ready\n"
        code, report = doctor(data_dir)
        assert code == 0, report["checks"]
        (owner,) = report["owner_lock"]["holders"]
        assert (owner["pid"], owner["transport"], owner["verified"]) == (holder.pid, "attach", True)
        assert owner["sessions"] == [
            {"pid": 4242, "client": "claude-code", "since": 1_700_000_000.0},
            {"pid": 4243, "client": None, "since": 1_700_000_060.5},
            {"pid": 4244, "client": "\\x1b[31mred", "since": 1_700_000_120.0},
        ]
        lock_check = check(report, "owner-lock")
        assert (
            f"pid {holder.pid} (exclusive, vestige-mcp --attach owner {endpoint})"
            in (lock_check["detail"])
        )
        listed = check(report, "attached-sessions")
        assert listed["status"] == "ok"
        assert listed["detail"] == (
            f"pid {holder.pid} serves 3 attached sessions through proxies: "
            "proxy pid 4242 (client claude-code) since 2023-11-14 22:13:20 UTC, "
            "proxy pid 4243 (client not named yet) since 2023-11-14 22:14:20 UTC, "
            "proxy pid 4244 (client \\x1b[31mred) since 2023-11-14 22:15:20 UTC"
        )

        text = run_cli("doctor", data_dir=data_dir)
        assert text.returncode == 0, text.stdout
        assert "attached-sessions" in text.stdout
        flat = " ".join(text.stdout.split())  # long details may be wrapped
        for shown in (
            "proxy pid 4242 (client claude-code) since 2023-11-14 22:13:20 UTC",
            "proxy pid 4243 (client not named yet)",
            "proxy pid 4244 (client \\x1b[31mred)",
        ):
            assert shown in flat, text.stdout
        assert "\x1b" not in text.stdout

        restore = run_cli("restore", backup, data_dir=data_dir)
        assert restore.returncode == 4, restore.stderr  # in use
        flat = " ".join(restore.stderr.split())
        assert "serves 3 attached sessions through proxies: proxy pid 4242" in flat
        assert (
            f"Stop it first (kill -INT {holder.pid}; the 3 sessions attached to it would then "
            "elect a new owner among their proxies; close those clients too to free the "
            "directory)"
        ) in flat, restore.stderr
    finally:
        holder.communicate(timeout=10)
    assert holder.returncode == 0
