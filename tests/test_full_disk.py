"""A full disk under a live database: writes fail with the disk named, and nothing healthy is
ever called damaged.

Each disk is a real tmpfs filled to the last byte (``tests.fs_helpers``), so SQLite meets
ENOSPC where it really writes: the WAL at commit, or ``-wal``/``-shm`` at open.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import apsw
import pytest

from tests.cli_helpers import cli_json, run_cli
from tests.fs_helpers import fill, small_tmpfs
from tests.server_helpers import ServerProcess
from vestige import migrations
from vestige._database import Database
from vestige.cli._exit import ExitCode
from vestige.errors import StoreError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

HEALTH_CALLS: Final = 5
WORDS: Final = ("alpha", "beta", "gamma", "delta", "disk", "full", "space", "memory", "page")


def _text(i: int, words: int) -> str:
    return " ".join(f"{WORDS[(i * 7 + k) % len(WORDS)]}{(i * 31 + k) % 97}" for k in range(words))


def _tool(srv: ServerProcess, name: str, arguments: dict[str, Any]) -> tuple[bool, str]:
    result = srv.call_tool(name, arguments)
    return bool(result["isError"]), str(result["content"][0]["text"])


def _fresh_check(db: Path) -> str:
    conn = apsw.Connection(str(db))
    try:
        return "; ".join(str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall())
    finally:
        conn.close()


def test_a_server_on_a_full_disk_never_calls_its_healthy_database_damaged(
    tmp_path: Path,
) -> None:
    """The issue's scenario: a running server, the disk filled to the last byte, writes
    fail, space is freed, health_check is asked again and again."""
    with small_tmpfs(tmp_path / "small", size="16m") as mount:
        data_dir = mount / "data"
        home = tmp_path / "home"
        home.mkdir()
        with ServerProcess(data_dir, home=home) as srv:
            srv.initialize()
            ids = []
            for i in range(40):
                failed, text = _tool(srv, "ingest", {"content": _text(i, 30)})
                assert not failed, text
                ids.append(json.loads(text)["id"])
            _, first = _tool(srv, "health_check", {})  # the reader has been used for a check
            assert json.loads(first)["status"] != "damaged", first

            fill(mount)
            refused = 0
            for i in range(40, 80):  # inserts, edits (FTS5 secure-delete) and deletes
                call = (
                    ("ingest", {"content": _text(i, 200)})
                    if i % 3 == 0
                    else ("edit_memory", {"id": ids[i % len(ids)], "content": _text(i, 50)})
                    if i % 3 == 1
                    else ("search", {"query": WORDS[i % len(WORDS)]})
                )
                failed, text = _tool(srv, *call)
                if failed:
                    refused += 1
                    assert f"the disk holding {data_dir} is full" in text, text
                    assert "rolled back" in text
            assert refused > 0, "the disk never filled up"

            (mount / "filler").unlink()
            statuses = []
            for _ in range(HEALTH_CALLS):
                failed, text = _tool(srv, "health_check", {})
                assert not failed, text
                health = json.loads(text)
                statuses.append((health["status"], health["quick_check"]))
            print(f"{refused} writes refused; health after freeing space: {statuses}")
            assert all(s != "damaged" and q == "ok" for s, q in statuses), statuses
            for i in range(80, 90):  # writes go on, with both kinds of FTS5 change
                failed, text = _tool(srv, "ingest", {"content": _text(i, 30)})
                assert not failed, text
                failed, text = _tool(
                    srv, "edit_memory", {"id": ids[i % len(ids)], "content": _text(i, 9)}
                )
                assert not failed, text
            failed, text = _tool(srv, "health_check", {})
            assert json.loads(text)["status"] != "damaged", text
            failed, text = _tool(srv, "stats", {})
            total = json.loads(text)["total_memories"]
        assert _fresh_check(data_dir / "vestige.db") == "ok"
        assert cli_json("stats", data_dir=data_dir)["total_memories"] == total


def test_both_connections_are_replaced_after_a_full_disk(tmp_path: Path) -> None:
    """After SQLITE_FULL the writer and the reader start fresh: a long-lived reader that had
    run a check before the episode reported FTS5 "corruption" (fts5: corruption found
    reading blob) for a database that a fresh connection found whole."""
    with small_tmpfs(tmp_path / "small", size="3m") as mount:
        path = mount / "vestige.db"
        db = Database(path, needs_init=lambda c: True, init=migrations.migrate)
        try:
            for i in range(30):
                db.write(_insert(i, 20))
            with db.read() as conn:  # a check on the long-lived reader
                assert conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]
            fill(mount)
            failure = _first_failure(db, range(30, 60))
            assert "is full" in str(failure)
            assert isinstance(failure.__cause__, apsw.FullError)
            (mount / "filler").unlink()
            for i in range(1, 20):  # FTS5 secure-delete rewrites the index's segments
                db.write(_update(i))
            with db.read() as conn:
                on_reader = [str(r[0]) for r in conn.execute("PRAGMA quick_check").fetchall()]
        finally:
            db.close()
        assert _fresh_check(path) == "ok"
        assert on_reader == ["ok"], on_reader


def _first_failure(db: Database, numbers: range) -> StoreError:
    for i in numbers:
        try:
            db.write(_insert(i, 400))
        except StoreError as exc:
            return exc
    raise AssertionError("the disk never filled up")


def _insert(i: int, words: int) -> Any:
    def tx(conn: apsw.Connection) -> None:
        conn.execute(
            "INSERT INTO knowledge_nodes(id, content, created_at, updated_at, last_accessed, "
            "content_hash) VALUES (?, ?, 'now', 'now', 'now', ?)",
            (f"id-{i}", _text(i, words), f"hash-{i}"),
        )

    return tx


def _update(i: int) -> Any:
    def tx(conn: apsw.Connection) -> None:
        conn.execute(
            "UPDATE knowledge_nodes SET content = ? WHERE id = ?", (_text(i + 500, 15), f"id-{i}")
        )

    return tx


def test_a_full_disk_under_a_database_without_wal_is_named(tmp_path: Path) -> None:
    """SQLite says "disk I/O error" when it cannot create -wal/-shm for an existing database;
    Vestige says the disk is full, and doctor does not blame the database."""
    with small_tmpfs(tmp_path / "small", size="2m") as mount:
        data_dir = mount / "data"
        cli_json("ingest", "written before the disk filled", data_dir=data_dir)
        assert not (data_dir / "vestige.db-wal").exists()  # the last close removed it
        fill(mount)
        for command in (("stats",), ("search", "written"), ("ingest", "one more")):
            result = run_cli(*command, data_dir=data_dir)
            assert result.returncode == ExitCode.ERROR, result.stderr
            assert f"the disk holding {data_dir} is full" in result.stderr, result.stderr
            assert "disk I/O error" not in result.stderr
        doctor = run_cli("doctor", "--json", data_dir=data_dir)
        report = json.loads(doctor.stdout)
        failing = {c["name"]: c for c in report["checks"] if c["status"] == "fail"}
        assert set(failing) == {"disk-space"}, failing
        assert f"the disk holding {data_dir} is full" in failing["disk-space"]["detail"]
        (mount / "filler").unlink()
        assert cli_json("stats", data_dir=data_dir)["total_memories"] == 1
        assert run_cli("doctor", data_dir=data_dir).returncode == 0
