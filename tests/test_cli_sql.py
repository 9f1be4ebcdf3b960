"""`vestige sql`: reads with SQL beside a running server; anything but one read is refused
with one clear error and leaves the database exactly as it was."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import cli_helpers
from tests.cli_helpers import Server, run_cli, tool_json
from vestige import Store
from vestige.cli._exit import ExitCode
from vestige.errors import InvalidInput

pytestmark = pytest.mark.timeout(120)
servers = cli_helpers.servers  # the fixture, under its own name


def test_it_reads_beside_a_running_server_and_sees_its_writes(
    data_dir: Path, servers: Callable[..., Server]
) -> None:
    server = servers(data_dir)
    for text, tag in (
        ("The user prefers tabs", "identity"),
        ("Okta is the IdP", "identity-provider"),
    ):
        tool_json(server.call_tool("ingest", {"content": text, "tags": [tag]}))  # fmt: skip
    # The docs' tag query: json_each matches the tag itself, never "identity-provider".
    query = (
        "SELECT content FROM knowledge_nodes n "
        "WHERE EXISTS (SELECT 1 FROM json_each(n.tags) WHERE value = 'identity')"
    )
    result = run_cli("sql", query, "--json", data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "columns": ["content"],
        "rows": [["The user prefers tabs"]],
        "truncated": False,
    }
    text = run_cli("sql", "SELECT count(*) AS n FROM knowledge_nodes", data_dir=data_dir)
    assert text.returncode == 0, text.stderr
    assert text.stdout.split() == ["n", "2"]
    tool_json(server.call_tool("ingest", {"content": "A third memory"}))
    again = run_cli("sql", "SELECT count(*) FROM knowledge_nodes", "--json", data_dir=data_dir)
    assert json.loads(again.stdout)["rows"] == [[3]]


@pytest.mark.parametrize(
    ("statement", "says"),
    [
        ("DELETE FROM knowledge_nodes", "does more than read (delete)"),
        ("UPDATE knowledge_nodes SET content = 'x'", "does more than read (update)"),
        ("INSERT INTO knowledge_nodes(id, content) VALUES ('a', 'b')", "more than read"),
        ("DROP TABLE knowledge_nodes", "more than read"),
        ("CREATE TEMP TABLE t(x)", "more than read"),
        ("PRAGMA query_only = OFF", "more than read (pragma)"),
        ("PRAGMA writable_schema = ON", "more than read (pragma)"),
        ("ATTACH 'elsewhere.db' AS other", "more than read (attach)"),
        ("BEGIN IMMEDIATE", "more than read (transaction)"),
        ("VACUUM", "cannot VACUUM"),
        ("SELECT 1; SELECT 2", "more than one SQL statement"),
        ("SELECT 1; DELETE FROM knowledge_nodes", "more than read (delete)"),
        ("SELECT x FROM nowhere", "SQLite could not run it: no such table: nowhere"),
        ("   ", "no SQL statement given"),
        ("/* only a comment */", "no SQL statement given"),
    ],
)
def test_anything_but_one_read_is_refused_and_changes_nothing(
    data_dir: Path, tmp_path: Path, statement: str, says: str
) -> None:
    assert run_cli("ingest", "kept as it is", data_dir=data_dir).returncode == 0
    before = run_cli("export", data_dir=data_dir).stdout
    result = run_cli("sql", statement, data_dir=data_dir)
    assert result.returncode == ExitCode.BAD_INPUT, result
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    assert says in lines[0], lines[0]
    assert lines[1].startswith("Hint: "), lines[1]
    assert result.stdout == ""
    assert run_cli("export", data_dir=data_dir).stdout == before
    assert not (tmp_path / "elsewhere.db").exists()
    assert not (data_dir / "elsewhere.db").exists()


def test_one_statement_with_a_trailing_semicolon_and_comment_is_one(data_dir: Path) -> None:
    assert run_cli("ingest", "one", data_dir=data_dir).returncode == 0
    result = run_cli("sql", "SELECT content FROM knowledge_nodes; -- done", data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["content", "one"]


def test_control_characters_are_escaped_for_a_person_and_exact_in_json(data_dir: Path) -> None:
    assert run_cli("ingest", "x", data_dir=data_dir).returncode == 0
    query = "SELECT 'a' || char(27) || ']0;owned' || char(7) AS v, x'00ff' AS b"
    text = run_cli("sql", query, data_dir=data_dir)
    assert "\x1b" not in text.stdout
    assert "\\x1b" in text.stdout
    assert "x'00ff'" in text.stdout
    data = json.loads(run_cli("sql", query, "--json", data_dir=data_dir).stdout)
    assert data["rows"] == [["a\x1b]0;owned\x07", "00ff"]]


def test_a_statement_that_never_ends_is_stopped_at_its_timeout(data_dir: Path) -> None:
    assert run_cli("ingest", "x", data_dir=data_dir).returncode == 0
    endless = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    )
    result = run_cli("sql", endless, "--timeout", "0.5", data_dir=data_dir)
    assert result.returncode == ExitCode.BAD_INPUT, result
    assert "ran for more than 0.5 s and was stopped" in result.stderr
    assert "--timeout" in result.stderr


def test_rows_past_max_rows_are_counted_not_printed(data_dir: Path) -> None:
    assert run_cli("ingest", "x", data_dir=data_dir).returncode == 0
    many = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 50) SELECT x FROM c"
    )
    text = run_cli("sql", many, "--max-rows", "20", data_dir=data_dir)
    assert text.returncode == 0, text.stderr
    assert text.stdout.split() == ["x", *map(str, range(1, 21))]
    assert "only the first 20 rows" in text.stderr
    data = json.loads(run_cli("sql", many, "--max-rows", "20", "--json", data_dir=data_dir).stdout)
    assert (len(data["rows"]), data["truncated"]) == (20, True)
    whole = json.loads(run_cli("sql", many, "--json", data_dir=data_dir).stdout)
    assert (len(whole["rows"]), whole["truncated"]) == (50, False)


@pytest.mark.parametrize(
    ("statement", "says"),
    [
        ("SELECT ?", "has a parameter"),
        ("SELECT CAST(x'ff41' AS TEXT)", "not valid UTF-8 text"),
        ("SELECT zeroblob(2000000000)", "string or blob too big"),
    ],
)
def test_what_sqlite_refuses_to_give_is_one_clear_error(
    data_dir: Path, statement: str, says: str
) -> None:
    assert run_cli("ingest", "x", data_dir=data_dir).returncode == 0
    result = run_cli("sql", statement, data_dir=data_dir)
    assert result.returncode == ExitCode.BAD_INPUT, result
    assert says in result.stderr.splitlines()[0]


def test_the_store_is_itself_after_a_query_that_failed_midway(data_dir: Path) -> None:
    # A statement left mid-way would keep the reader's snapshot: later writes unseen.
    with Store.open(data_dir) as store:
        for n in range(5):
            store.ingest(f"before {n}")
        broken = (
            "SELECT CASE WHEN seq = 3 THEN CAST(x'ff' AS TEXT) ELSE content END "
            "FROM knowledge_nodes"
        )
        with pytest.raises(InvalidInput, match="not valid UTF-8"):
            store.query(broken)
        for n in range(20):
            store.ingest(f"after {n}")
        assert store.stats().total_memories == 25
        assert len(store.search("after", limit=50)) == 20
        # The same text twice: the statement cache must not skip the authorizer's count.
        assert store.query("SELECT count(*) FROM knowledge_nodes").rows == [(25,)]
        assert store.query("SELECT count(*) FROM knowledge_nodes").rows == [(25,)]
        with pytest.raises(InvalidInput, match="more than read"):
            store.query("DELETE FROM knowledge_nodes")
        store.ingest("writes still work")
        assert store.stats().total_memories == 26


def test_column_names_are_escaped_for_a_person(data_dir: Path) -> None:
    assert run_cli("ingest", "x", data_dir=data_dir).returncode == 0
    result = run_cli("sql", 'SELECT 1 AS "\x1b[31mred"', data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout
    assert "\\x1b[31mred" in result.stdout
