"""A database with damaged pages: backup and export fail cleanly, salvage rescues the rest.

The damage is real: pages of a closed database are overwritten with random bytes
(``tests.damage_helpers``).  Salvage must read every row it still can, write a normal
export file that ``vestige import`` takes, name what was lost, and leave every byte of the
damaged files as it found them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Final

import pytest

from tests.cli_helpers import cli_json, run_cli
from tests.damage_helpers import overwrite_pages, pages_of
from vestige.cli._exit import ExitCode
from vestige.store import Store

pytestmark = pytest.mark.timeout(120)

MEMORIES: Final = 300


def _fill(data_dir: Path) -> dict[str, dict[str, Any]]:
    """MEMORIES memories long enough to spread over many pages; returns them by id."""
    with Store.open(data_dir) as store:
        made = [
            store.ingest(f"memory {i}: " + "the quick brown fox jumps over the lazy dog " * 12)
            for i in range(MEMORIES)
        ]
    return {m.id: m.to_dict() for m in made}


def _fingerprint(data_dir: Path) -> dict[str, str | None]:
    """sha256 of vestige.db, -wal and -shm (None where absent)."""
    out: dict[str, str | None] = {}
    for name in ("vestige.db", "vestige.db-wal", "vestige.db-shm"):
        path = data_dir / name
        out[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
    return out


@pytest.fixture
def damaged(data_dir: Path) -> tuple[Path, dict[str, dict[str, Any]]]:
    """A data directory whose database has two damaged leaves of memories and one of the
    changelog; returns it and the memories it held."""
    memories = _fill(data_dir)
    db = data_dir / "vestige.db"
    leaves = pages_of(db, "knowledge_nodes")
    assert len(leaves) > 20, leaves
    overwrite_pages(db, [leaves[3], leaves[len(leaves) // 2], pages_of(db, "changelog")[1]])
    return data_dir, memories


def _read_export(path: Path) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    memories: dict[str, dict[str, Any]] = {}
    changes = []
    for line in path.read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        if set(item) == {"change"}:
            changes.append(item["change"])
        else:
            memories[item["id"]] = item
    return memories, changes


def test_backup_of_a_damaged_database_fails_cleanly_and_names_salvage(
    damaged: tuple[Path, dict[str, dict[str, Any]]], tmp_path: Path
) -> None:
    data_dir, _ = damaged
    target = tmp_path / "b.db"
    result = run_cli("backup", target, data_dir=data_dir)  # run_cli: never a traceback
    assert result.returncode == ExitCode.UNHEALTHY, result.stderr
    assert f"{data_dir / 'vestige.db'} is damaged" in result.stderr
    assert "vestige salvage --data-dir" in result.stderr
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".b.db")] == []


def test_export_of_a_damaged_database_points_at_salvage(
    damaged: tuple[Path, dict[str, dict[str, Any]]], tmp_path: Path
) -> None:
    data_dir, _ = damaged
    result = run_cli("export", "-o", tmp_path / "e.jsonl", data_dir=data_dir)
    assert result.returncode == ExitCode.UNHEALTHY, result.stderr
    assert f"vestige salvage --data-dir {data_dir} -o {tmp_path / 'e.jsonl'}" in result.stderr
    assert not (tmp_path / "e.jsonl").exists()


def test_salvage_reads_every_readable_row_and_names_what_was_lost(
    damaged: tuple[Path, dict[str, dict[str, Any]]], tmp_path: Path
) -> None:
    data_dir, before = damaged
    untouched = _fingerprint(data_dir)
    rescue = tmp_path / "rescue.jsonl"
    result = run_cli("salvage", "-o", rescue, "--json", data_dir=data_dir)
    assert result.returncode == ExitCode.UNHEALTHY, result.stderr  # something was lost
    report = json.loads(result.stdout)
    assert _fingerprint(data_dir) == untouched  # nothing written over the original

    saved, changes = _read_export(rescue)
    lost = set(report["lost_ids"])
    print(f"salvaged {len(saved)} of {len(before)}; lost {len(lost)}")
    assert 0 < len(lost) < 40  # two leaves of ~6 rows each, not the whole table
    assert report["lost_memories"] == len(lost)
    assert report["memories"] == len(saved) == len(before) - len(lost)
    assert set(saved) | lost == set(before)
    assert not set(saved) & lost
    for memory_id, memory in saved.items():
        assert memory == before[memory_id]  # every field as it was
    assert report["unreadable_seq_ranges"]["knowledge_nodes"]
    assert report["lost_changes"] > 0
    assert report["unreadable_seq_ranges"]["changelog"]
    assert len(changes) == report["changes"] > 0

    # A normal export file: import brings the rescued memories into a new database.
    fresh = tmp_path / "fresh"
    imported = cli_json("import", rescue, data_dir=fresh)
    assert imported["imported"] == len(saved)
    assert cli_json("stats", data_dir=fresh)["total_memories"] == len(saved)


def test_salvage_of_a_healthy_database_is_a_whole_export(data_dir: Path, tmp_path: Path) -> None:
    before = _fill(data_dir)
    rescue = tmp_path / "rescue.jsonl"
    report = cli_json("salvage", "-o", rescue, data_dir=data_dir)
    assert (report["complete"], report["lost_memories"], report["lost_changes"]) == (True, 0, 0)
    saved, changes = _read_export(rescue)
    assert saved == before
    export = tmp_path / "export.jsonl"
    assert run_cli("export", "-o", export, data_dir=data_dir).returncode == 0
    assert _read_export(export) == (saved, changes)
    again = run_cli("salvage", "-o", rescue, data_dir=data_dir)
    assert again.returncode == ExitCode.BAD_INPUT  # never over an existing file
    assert "already exists" in again.stderr


def test_doctor_names_a_rescue_that_works(
    damaged: tuple[Path, dict[str, dict[str, Any]]], tmp_path: Path
) -> None:
    data_dir, before = damaged
    result = run_cli("doctor", "--json", "--deep", data_dir=data_dir)  # reads every page
    assert result.returncode == ExitCode.UNHEALTHY
    hints = [c["hint"] for c in json.loads(result.stdout)["checks"] if c["status"] == "fail"]
    assert hints, result.stdout
    assert all("vestige salvage --data-dir" in h and "-o rescue.jsonl" in h for h in hints), hints
    assert all("vestige export" not in h for h in hints), hints
    # The command it names does what it says.
    rescue = tmp_path / "rescue.jsonl"
    salvaged = run_cli("salvage", "-o", rescue, data_dir=data_dir)
    assert salvaged.returncode == ExitCode.UNHEALTHY, salvaged.stderr
    assert "memories could not be read" in salvaged.stderr
    assert 0 < len(_read_export(rescue)[0]) < len(before)
