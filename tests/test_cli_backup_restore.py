"""`vestige backup`, `restore` and `consolidate` against real running `vestige-mcp` servers."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import apsw
import pytest

from tests import cli_helpers
from tests.cli_helpers import (
    CLI,
    CLI_DEADLINE_S,
    cli_json,
    damage,
    integrity,
    plain_holder,
    run_cli,
    tool_json,
)
from vestige.migrations import LATEST_VERSION

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.cli_helpers import Server

servers = cli_helpers.servers  # the fixture, under its own name

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow, pytest.mark.timeout(120)]

UNHEALTHY, IN_USE, BAD_INPUT = 3, 4, 5


def memories(db: Path) -> list[str]:
    conn = apsw.Connection(
        f"file:{db}?mode=ro", flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI
    )
    try:
        return [r[0] for r in conn.execute("SELECT content FROM knowledge_nodes ORDER BY seq")]
    finally:
        conn.close()


def changes(db: Path) -> list[tuple[int, str, str, str]]:
    conn = apsw.Connection(
        f"file:{db}?mode=ro", flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI
    )
    try:
        return [
            (r[0], r[1], r[2], r[3])
            for r in conn.execute("SELECT seq, kind, transport, detail FROM changelog ORDER BY seq")
        ]
    finally:
        conn.close()


def fill(data_dir: Path, *texts: str) -> None:
    for text in texts:
        cli_json("ingest", text, "--force-create", data_dir=data_dir)


# -- backup ---------------------------------------------------------------------------------


def test_default_backup_is_timestamped_private_and_complete(data_dir: Path) -> None:
    fill(data_dir, "first", "second")
    made = cli_json("backup", data_dir=data_dir)
    path = Path(made["path"])
    assert path.parent == data_dir / "backups"
    assert path.name.startswith("vestige-")
    assert path.suffix == ".db"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert made["bytes"] == path.stat().st_size
    assert integrity(path) == ["ok"]
    assert memories(path) == ["first", "second"]


def test_backup_to_a_folder_and_refusal_of_an_existing_file(data_dir: Path, tmp_path: Path) -> None:
    fill(data_dir, "kept")
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    made = cli_json("backup", folder, data_dir=data_dir)
    assert Path(made["path"]).parent == folder
    existing = tmp_path / "taken.db"
    existing.write_bytes(b"do not overwrite")
    result = run_cli("backup", existing, data_dir=data_dir)
    assert result.returncode == BAD_INPUT
    assert result.stderr == (
        f"Error: the backup target {existing} already exists\n"
        "Hint: Choose a new file name, or move the old backup away first.\n"
    )
    assert existing.read_bytes() == b"do not overwrite"
    missing = run_cli("backup", tmp_path / "no" / "such" / "x.db", data_dir=data_dir)
    assert missing.returncode == BAD_INPUT
    assert "does not exist" in missing.stderr


@pytest.mark.parametrize("where", ["folder", "default"])
def test_two_backups_at_once_into_one_folder_both_succeed(
    data_dir: Path, tmp_path: Path, where: str
) -> None:
    """`vestige backup DIR` and `vestige backup` follow one naming rule, even run together.

    Every name the runs can start from (one per second, for two minutes) is already taken, so
    each must move on to the next free one; started together, they ask for the same name.
    """
    fill(data_dir, "kept twice")
    folder = tmp_path / "shared" if where == "folder" else data_dir / "backups"
    folder.mkdir()
    now = datetime.now(UTC)
    taken = [
        folder / f"vestige-{now + timedelta(seconds=s):%Y%m%d-%H%M%S}.db" for s in range(-1, 120)
    ]
    for path in taken:
        path.write_bytes(b"an older backup")
    target = [str(folder)] if where == "folder" else []
    argv = [*CLI, "backup", *target, "--json", "--data-dir", str(data_dir)]
    runs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outcomes = []
    try:
        for run in runs:
            out, err = run.communicate(timeout=CLI_DEADLINE_S)
            outcomes.append((run.returncode, out, err))
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()  # this pid only
                run.communicate()
    assert [code for code, _, _ in outcomes] == [0, 0], outcomes
    made = [Path(json.loads(out)["path"]) for _, out, _ in outcomes]
    assert made[0] != made[1]
    for path in made:
        assert path.parent == folder
        assert path.name.startswith("vestige-")
        assert integrity(path) == ["ok"]
        assert memories(path) == ["kept twice"]
    assert all(path.read_bytes() == b"an older backup" for path in taken)
    assert sorted(folder.iterdir()) == sorted([*taken, *made])  # no partial file left


@pytest.fixture
def writer(tmp_path: Path, servers: Callable[..., Server]) -> Iterator[tuple[Server, list[str]]]:
    """A server with a client thread writing through MCP until the test ends."""
    server = servers(tmp_path / "data")
    acked: list[str] = []
    stop = threading.Event()
    failure: list[BaseException] = []

    def loop() -> None:
        try:
            while not stop.is_set():
                n = len(acked)
                server.call_tool("ingest", {"content": f"continuous write {n} " + "x" * 300})
                acked.append(f"continuous write {n}")
        except BaseException as exc:  # reported by the test below
            failure.append(exc)

    thread = threading.Thread(target=loop, name="mcp-writer")
    thread.start()
    try:
        yield server, acked
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not failure, failure


def test_backup_while_a_server_writes_continuously_passes_integrity_check(
    writer: tuple[Server, list[str]], tmp_path: Path
) -> None:
    server, acked = writer
    data_dir = server.data_dir
    sizes = []
    for n in range(3):
        before = len(acked)
        made = cli_json("backup", tmp_path / f"live-{n}.db", data_dir=data_dir)
        path = Path(made["path"])
        assert integrity(path) == ["ok"]
        rows = memories(path)
        # A snapshot: every write acknowledged before the backup started is in it.
        assert len(rows) >= before
        assert rows == [f"continuous write {i} " + "x" * 300 for i in range(len(rows))]
        sizes.append(len(rows))
    assert sizes[-1] > sizes[0]  # the server really was writing between the backups


def test_read_commands_answer_from_one_snapshot_while_a_server_writes(
    writer: tuple[Server, list[str]],
) -> None:
    server, _ = writer
    totals = []
    for _ in range(5):
        stats = cli_json("stats", data_dir=server.data_dir)
        # Counted by separate queries: they agree only if all ran in one snapshot.
        assert sum(stats["retention_bands"].values()) == stats["total_memories"]
        assert sum(stats["node_types"].values()) == stats["total_memories"]
        totals.append(stats["total_memories"])
        assert cli_json("health", data_dir=server.data_dir)["quick_check"] == "ok"
    assert totals == sorted(totals)
    assert totals[-1] > totals[0]  # the writes really were going on


# -- restore --------------------------------------------------------------------------------


def test_restore_refuses_while_a_server_runs_and_names_it(
    data_dir: Path, tmp_path: Path, servers: Callable[..., Server]
) -> None:
    fill(data_dir, "original")
    backup = Path(cli_json("backup", tmp_path / "b.db", data_dir=data_dir)["path"])
    fill(data_dir, "newer")
    server = servers(data_dir)
    result = run_cli("restore", backup, data_dir=data_dir)
    assert result.returncode == IN_USE
    assert result.stderr.startswith(
        f"Error: cannot restore while a server uses {data_dir / 'vestige.db'}"
    )
    assert f"pid {server.pid} (exclusive, stdio)" in result.stderr
    assert f"Hint: Stop it first (kill -INT {server.pid})" in result.stderr
    assert server.proc.poll() is None
    assert tool_json(server.call_tool("stats", {}))["total_memories"] == 2
    assert [
        h["memory"]["content"] for h in cli_json("search", "newer", data_dir=data_dir)["results"]
    ] == ["newer"]


def test_restore_refuses_while_another_process_has_the_database_open(
    data_dir: Path, tmp_path: Path
) -> None:
    fill(data_dir, "original")
    backup = Path(cli_json("backup", tmp_path / "b.db", data_dir=data_dir)["path"])
    with plain_holder(data_dir) as holder:
        result = run_cli("restore", backup, data_dir=data_dir)
        assert result.returncode == IN_USE
        assert f"in use by 1 other process(es): pid {holder.pid} python" in result.stderr
        assert f"Hint: Stop them first (kill -INT {holder.pid})" in result.stderr
    # The lock it took was released: no holder metadata is left behind.
    assert list((data_dir / "owners").glob("*.json")) == []


def test_restore_replaces_the_database_and_keeps_the_old_one(
    data_dir: Path, tmp_path: Path, servers: Callable[..., Server]
) -> None:
    fill(data_dir, "original")
    backup = Path(cli_json("backup", tmp_path / "b.db", data_dir=data_dir)["path"])
    fill(data_dir, "added after the backup")
    result = cli_json("restore", backup, data_dir=data_dir)
    got = (result["memories"], result["quick_check"], result["schema_version"])
    assert got == (1, "ok", LATEST_VERSION)
    previous = Path(result["previous"])
    assert previous.parent == data_dir / "backups"
    assert memories(previous) == ["original", "added after the backup"]
    assert memories(data_dir / "vestige.db") == ["original"]
    assert integrity(data_dir / "vestige.db") == ["ok"]
    # The backup's history, then the restore itself, named after the CLI and numbered after
    # the replaced database's newest change (#2), which is gone: asking after #1 says so.
    entries = changes(data_dir / "vestige.db")
    assert [(seq, kind) for seq, kind, _, _ in entries] == [(1, "created"), (3, "restored")]
    _, _, transport, detail = entries[-1]
    assert transport == "cli"
    assert json.loads(detail) == {"backup": str(backup), "previous_kept_as": str(previous)}
    gap = cli_json("log", "--since", "1", "--json", data_dir=data_dir)["gap"]
    assert gap["trimmed_through"] == 2
    doctor = json.loads(run_cli("doctor", "--json", data_dir=data_dir).stdout)
    assert doctor["owner_lock"]["state"] == "free"
    assert doctor["owner_lock"]["holders"] == []
    assert doctor["database"]["journal_mode"] == "wal"
    # A server starts on the restored data and serves it.
    server = servers(data_dir)
    found = tool_json(server.call_tool("search", {"query": "original"}))
    assert [r["content"] for r in found["results"]] == ["original"]


def test_restore_into_an_empty_data_dir(tmp_path: Path) -> None:
    source = tmp_path / "source"
    fill(source, "carried over")
    backup = Path(cli_json("backup", data_dir=source)["path"])
    fresh = tmp_path / "fresh"
    result = cli_json("restore", backup, data_dir=fresh)
    assert result["previous"] is None
    assert cli_json("stats", data_dir=fresh)["total_memories"] == 1


def sqlite_file(path: Path, sql: str) -> Path:
    conn = apsw.Connection(str(path))
    try:
        conn.execute(sql)
    finally:
        conn.close()
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("garbage", "is not a SQLite database"),
        ("jsonl", "is not a SQLite database"),
        ("foreign", "is not a Vestige database"),
        ("empty", "is an empty SQLite database, not a Vestige backup"),
        ("newer", f"has schema version 99, newer than this Vestige knows ({LATEST_VERSION})"),
        ("damaged", "is damaged"),
    ],
)
def test_restore_checks_the_file_before_touching_anything(
    data_dir: Path, tmp_path: Path, kind: str, message: str
) -> None:
    fill(data_dir, "must survive")
    bad = tmp_path / f"{kind}.db"
    if kind == "garbage":
        bad.write_bytes(os.urandom(8192))
    elif kind == "jsonl":
        bad.write_text('{"id": "a", "content": "b"}\n')
    elif kind == "foreign":
        sqlite_file(bad, "CREATE TABLE invoices(id INTEGER PRIMARY KEY, total REAL)")
    elif kind == "empty":
        sqlite_file(bad, "PRAGMA user_version = 0")
    else:
        bad = Path(cli_json("backup", bad, data_dir=data_dir)["path"])
        if kind == "newer":
            sqlite_file(bad, "INSERT INTO schema_version VALUES (99, 'future', '2099-01-01')")
        else:
            damage(bad)
    result = run_cli("restore", bad, data_dir=data_dir)
    assert result.returncode == BAD_INPUT, result.stderr
    assert result.stderr.startswith(f"Error: {bad} ")
    assert message in result.stderr
    assert memories(data_dir / "vestige.db") == ["must survive"]
    assert not (data_dir / "backups").exists()  # refused before any step was taken


def test_a_damaged_live_database_is_moved_aside_only_when_asked(
    data_dir: Path, tmp_path: Path
) -> None:
    fill(data_dir, "good old days")
    backup = Path(cli_json("backup", tmp_path / "b.db", data_dir=data_dir)["path"])
    fill(data_dir, "then it broke")
    damage(data_dir / "vestige.db")
    refused = run_cli("restore", backup, data_dir=data_dir)
    assert refused.returncode == UNHEALTHY
    assert "the current database is damaged" in refused.stderr
    assert "--move-damaged" in refused.stderr
    result = cli_json("restore", backup, "--move-damaged", data_dir=data_dir)
    moved = Path(result["moved_damaged"])
    assert moved.parent == data_dir / "backups"
    assert (moved / "vestige.db").is_file()
    assert integrity(moved / "vestige.db") != ["ok"]  # kept as it was, for forensics
    assert memories(data_dir / "vestige.db") == ["good old days"]
    assert integrity(data_dir / "vestige.db") == ["ok"]


@pytest.mark.parametrize("mask", [0o022, 0o000])
def test_folders_restore_makes_are_0700_whatever_the_umask(
    data_dir: Path, tmp_path: Path, mask: int
) -> None:
    fill(data_dir, "good old days")
    backup = Path(cli_json("backup", tmp_path / "b.db", data_dir=data_dir)["path"])
    damage(data_dir / "vestige.db")
    assert not (data_dir / "backups").exists()
    result = subprocess.run(
        [*CLI, "restore", str(backup), "--move-damaged", "--json", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        umask=mask,
        timeout=CLI_DEADLINE_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    moved = Path(json.loads(result.stdout)["moved_damaged"])
    for folder in (data_dir / "backups", moved):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    # The next restore keeps the replaced database in the same private folder.
    again = subprocess.run(
        [*CLI, "restore", str(backup), "--json", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        umask=mask,
        timeout=CLI_DEADLINE_S,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    kept = Path(json.loads(again.stdout)["previous"])
    assert kept.parent == data_dir / "backups"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600


# -- consolidate ----------------------------------------------------------------------------


def test_consolidate_runs_beside_a_server(data_dir: Path, servers: Callable[..., Server]) -> None:
    fill(data_dir, "one", "two", "three")
    # A pass now means the server's own scheduled pass is hours away and cannot take the
    # claim first; the passes below then run beside the serving process.
    assert cli_json("consolidate", data_dir=data_dir)["ran"] is True
    servers(data_dir)
    report = cli_json("consolidate", data_dir=data_dir)
    assert report["ran"] is True
    assert report["nodes_processed"] == 3
    text = run_cli("consolidate", data_dir=data_dir)
    assert text.returncode == 0
    assert "Nodes processed:  3" in text.stdout
