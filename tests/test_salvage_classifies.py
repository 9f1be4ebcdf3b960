"""Salvage calls a database damaged only when it is, and names its own target's full disk.

Each fault is real: a tmpfs filled to the last byte (where a plain SQLite open left the
3-byte ``-shm`` and empty ``-wal`` a full disk leaves), a foreign SQLite file, a target
on a full disk.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import apsw
import pytest

from tests.cli_helpers import cli_json, run_cli
from tests.fs_helpers import fill, small_tmpfs
from vestige.cli._exit import ExitCode

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def _fingerprint(data_dir: Path) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in ("vestige.db", "vestige.db-wal", "vestige.db-shm"):
        path = data_dir / name
        out[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
    return out


def test_salvage_reads_a_healthy_database_that_a_full_disk_left_half_opened(
    tmp_path: Path,
) -> None:
    with small_tmpfs(tmp_path / "small", size="2m") as mount:
        data_dir = mount / "data"
        cli_json("ingest", "kept through the full disk", data_dir=data_dir)
        fill(mount)
        with pytest.raises(apsw.IOError):  # another SQLite program meets the full disk
            apsw.Connection(str(data_dir / "vestige.db")).execute(
                "SELECT count(*) FROM knowledge_nodes"
            ).fetchall()
        shm, wal = data_dir / "vestige.db-shm", data_dir / "vestige.db-wal"
        assert (shm.stat().st_size, wal.stat().st_size) == (3, 0)
        before = _fingerprint(data_dir)
        rescue = tmp_path / "rescue.jsonl"  # on another disk, which has room
        result = run_cli("salvage", "-o", rescue, data_dir=data_dir)
        assert result.returncode == ExitCode.OK, result.stderr
        assert "restore" not in result.stderr
        assert "kept through the full disk" in rescue.read_text(encoding="utf-8")
        assert _fingerprint(data_dir) == before  # not even the -shm rewritten


def test_salvage_onto_a_full_disk_names_the_target(data_dir: Path, tmp_path: Path) -> None:
    for i in range(60):
        cli_json("ingest", f"memory {i} " + "words " * 200, "--force-create", data_dir=data_dir)
    with small_tmpfs(tmp_path / "small", size="1m") as mount:
        fill(mount)
        target = mount / "rescue.jsonl"
        result = run_cli("salvage", "-o", target, data_dir=data_dir)
        assert result.returncode == ExitCode.ERROR, result.stderr
        assert f"the disk holding {target} is full" in result.stderr, result.stderr
        assert "salvage to another disk" in result.stderr
        assert "No space left on device" not in result.stderr
        assert sorted(p.name for p in mount.iterdir()) == ["filler"]


def test_salvage_of_a_foreign_sqlite_file_says_so(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    conn = apsw.Connection(str(data_dir / "vestige.db"))
    conn.execute("CREATE TABLE notes(x); INSERT INTO notes VALUES (1)")
    conn.close()
    stats = run_cli("stats", data_dir=data_dir)
    result = run_cli("salvage", "-o", tmp_path / "r.jsonl", data_dir=data_dir)
    assert result.returncode == stats.returncode == ExitCode.UNHEALTHY, result.stderr
    assert result.stderr == stats.stderr  # the same words as every other command
    assert "not a Vestige database" in result.stderr, result.stderr
    assert "restore" not in result.stderr
    assert not (tmp_path / "r.jsonl").exists()
