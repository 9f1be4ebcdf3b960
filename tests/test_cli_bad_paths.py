"""Paths a person can get wrong: each one clear error, the documented exit code, nothing made."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli_helpers import cli_json, run_cli

USAGE, BAD_INPUT, NOT_FOUND = 2, 5, 6


def test_backup_to_a_folder_that_cannot_be_written_names_the_target(
    data_dir: Path, tmp_path: Path
) -> None:
    cli_json("ingest", "worth keeping", data_dir=data_dir)
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("x")
    target = blocked / "b.db"  # its "folder" is a file: SQLite cannot create it
    result = run_cli("backup", target, data_dir=data_dir)
    assert result.returncode == BAD_INPUT, result.stderr
    assert str(blocked) in result.stderr
    assert str(data_dir / "vestige.db") not in result.stderr  # the live database is fine


def test_backup_target_sqlite_cannot_open_names_the_target(data_dir: Path, tmp_path: Path) -> None:
    cli_json("ingest", "worth keeping", data_dir=data_dir)
    result = run_cli("backup", "/proc/vestige-backup.db", data_dir=data_dir)
    assert result.returncode == BAD_INPUT, result.stderr
    assert "cannot write a backup to /proc/" in result.stderr
    assert "Hint:" in result.stderr


def test_export_into_a_missing_folder_is_bad_input(data_dir: Path, tmp_path: Path) -> None:
    cli_json("ingest", "worth keeping", data_dir=data_dir)
    result = run_cli("export", "-o", tmp_path / "nowhere" / "x.jsonl", data_dir=data_dir)
    assert result.returncode == BAD_INPUT, result.stderr
    assert f"the folder {tmp_path / 'nowhere'} does not exist" in result.stderr
    assert ".partial-" not in result.stderr
    assert not (tmp_path / "nowhere").exists()


def test_an_empty_database_file_is_no_database_and_is_left_alone(data_dir: Path) -> None:
    data_dir.mkdir()
    (data_dir / "vestige.db").touch()
    for command in ("stats", "health"):
        result = run_cli(command, data_dir=data_dir)
        assert result.returncode == NOT_FOUND, result.stderr
        assert "there is no Vestige database" in result.stderr
    assert (data_dir / "vestige.db").stat().st_size == 0


@pytest.mark.parametrize("command", [("stats",), ("ingest", "x")])
def test_a_directory_named_vestige_db_is_the_same_error_for_reads_and_writes(
    data_dir: Path, command: tuple[str, ...]
) -> None:
    (data_dir / "vestige.db").mkdir(parents=True)
    result = run_cli(*command, data_dir=data_dir)
    assert result.returncode == USAGE, result.stderr
    assert "is not a regular file" in result.stderr
