"""`vestige ingest | stats | search | health`, run as real subprocesses, and their bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.cli_helpers import cli_json, run_cli
from vestige.config import DATA_DIR_ENV
from vestige.migrations import LATEST_VERSION

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]

NOT_FOUND, USAGE, UNHEALTHY, BAD_INPUT = 6, 2, 3, 5


def ingest(data_dir: Path, text: str, *args: str) -> dict:
    return cli_json("ingest", text, *args, data_dir=data_dir)


def test_ingest_creates_the_store_and_every_read_command_sees_it(data_dir: Path) -> None:
    made = ingest(data_dir, "The staging database is read-only on Fridays", "--tags", "ops,db")
    assert made["decision"] == "create"
    assert made["memory"]["tags"] == ["ops", "db"]
    stats = cli_json("stats", data_dir=data_dir)
    assert stats["total_memories"] == 1
    assert stats["node_types"] == {"fact": 1}
    hits = cli_json("search", "staging Fridays", data_dir=data_dir)
    assert hits["total"] == 1
    assert hits["results"][0]["memory"]["id"] == made["memory"]["id"]
    health = cli_json("health", data_dir=data_dir)
    assert health["status"] == "healthy"
    assert health["quick_check"] == "ok"
    assert health["journal_mode"] == "wal"


def test_ingest_reads_stdin_merges_tag_options_and_reinforces_a_repeat(data_dir: Path) -> None:
    text = "Deploys go out on Tuesdays after the standup"
    first = run_cli(
        "ingest", "-", "--tags", "a,b", "--tags", "c", "--json", data_dir=data_dir, input=text
    )
    assert first.returncode == 0, first.stderr
    memory = json.loads(first.stdout)["memory"]
    assert (memory["content"], memory["tags"]) == (text, ["a", "b", "c"])
    again = ingest(data_dir, text)
    assert again["decision"] == "reinforce"
    assert again["memory"]["id"] == memory["id"]
    assert cli_json("stats", data_dir=data_dir)["total_memories"] == 1


def test_text_output_is_aligned_labels(data_dir: Path) -> None:
    ingest(data_dir, "one memory to count")
    result = run_cli("stats", data_dir=data_dir)
    assert result.returncode == 0
    lines = dict(line.split(":", 1) for line in result.stdout.splitlines())
    assert lines["Total memories"].strip() == "1"
    assert lines["Schema version"].strip() == str(LATEST_VERSION)
    found = run_cli("search", "count", data_dir=data_dir)
    assert found.stdout.splitlines()[0].split() == ["SCORE", "ID", "TYPE", "RETENTION", "CONTENT"]
    assert "one memory to count" in found.stdout
    assert run_cli("search", "absent", data_dir=data_dir).stdout == "No memories match.\n"


def test_search_filters_by_tag_type_and_limit(data_dir: Path) -> None:
    ingest(data_dir, "python packaging with hatch", "--tags", "python", "--force-create")
    ingest(data_dir, "python typing with mypy", "--tags", "python,types", "--force-create")
    ingest(data_dir, "python decision: use ruff", "--node-type", "decision", "--force-create")
    by_tag = cli_json("search", "python", "--tag", "types", data_dir=data_dir)
    assert [h["memory"]["content"] for h in by_tag["results"]] == ["python typing with mypy"]
    by_type = cli_json("search", "python", "--node-type", "decision", data_dir=data_dir)
    assert [h["memory"]["node_type"] for h in by_type["results"]] == ["decision"]
    assert cli_json("search", "python", "-n", "2", data_dir=data_dir)["total"] == 2


def test_environment_variable_is_used_and_the_flag_beats_it(tmp_path: Path) -> None:
    env_dir, flag_dir = tmp_path / "from-env", tmp_path / "from-flag"
    env = {**os.environ, DATA_DIR_ENV: str(env_dir)}
    assert run_cli("ingest", "in the env dir", env=env).returncode == 0
    assert (env_dir / "vestige.db").is_file()
    result = run_cli("ingest", "in the flag dir", "--data-dir", str(flag_dir), env=env)
    assert result.returncode == 0
    assert (flag_dir / "vestige.db").is_file()
    # Before the command (a group option) works too.
    stats = run_cli("--data-dir", str(flag_dir), "stats", "--json", env=env)
    assert json.loads(stats.stdout)["total_memories"] == 1


@pytest.mark.parametrize(
    "command",
    [["stats"], ["search", "x"], ["health"], ["export"], ["backup"], ["consolidate"]],
)
def test_read_commands_never_create_a_database(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "missing"
    result = run_cli(*command, data_dir=missing)
    assert result.returncode == NOT_FOUND
    assert result.stderr.startswith(
        f"Error: the data directory {missing} (chosen by --data-dir) does not exist\nHint: "
    )
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli(*command, data_dir=empty)
    assert result.returncode == NOT_FOUND
    assert f"Error: there is no Vestige database in {empty}" in result.stderr
    assert list(empty.iterdir()) == []


def test_a_data_dir_that_is_a_file_is_a_usage_error(tmp_path: Path) -> None:
    file = tmp_path / "not-a-dir"
    file.write_text("x")
    for command in (["stats"], ["ingest", "x"]):
        result = run_cli(*command, data_dir=file)
        assert result.returncode == USAGE
        assert "is a file, not a directory" in result.stderr or "not a directory" in result.stderr
        assert result.stderr.startswith("Error: ")
    assert file.read_text() == "x"


def test_invalid_content_is_one_clear_error(data_dir: Path) -> None:
    result = run_cli("ingest", "   ", data_dir=data_dir)
    assert result.returncode == BAD_INPUT
    assert result.stderr == "Error: content is empty\nHint: Pass the text to remember.\n"
    bad_type = run_cli("ingest", "x", "--node-type", "no spaces allowed", data_dir=data_dir)
    assert bad_type.returncode == BAD_INPUT
    assert "node_type 'no spaces allowed' is not valid" in bad_type.stderr


def test_a_corrupt_database_is_reported_not_raised(data_dir: Path) -> None:
    ingest(data_dir, "soon to be damaged")
    # No process has the file open now: overwriting it is how a test damages it.
    (data_dir / "vestige.db").write_bytes(b"this is not a SQLite database at all" * 200)
    for command in (["stats"], ["health"], ["search", "x"]):
        result = run_cli(*command, data_dir=data_dir)
        assert result.returncode == UNHEALTHY, (command, result.stderr)
        assert "is damaged or is not a Vestige database" in result.stderr
        assert "Hint: " in result.stderr


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any directory")
def test_an_unreadable_data_dir_is_refused(data_dir: Path) -> None:
    ingest(data_dir, "private")
    data_dir.chmod(0)
    try:
        result = run_cli("stats", data_dir=data_dir)
    finally:
        data_dir.chmod(0o700)
    assert result.returncode == USAGE
    assert "cannot be read by this user" in result.stderr


def test_unknown_command_and_help(data_dir: Path) -> None:
    assert run_cli("frobnicate").returncode == USAGE
    for command in ("stats", "search", "health", "ingest"):
        result = run_cli(command, "--help")
        assert result.returncode == 0
        assert "--data-dir" in result.stdout
        assert "Example:" in result.stdout
