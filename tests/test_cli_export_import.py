"""`vestige export` and `vestige import`: every field round-trips, idempotence, bad files."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests import cli_helpers
from tests.cli_helpers import cli_json, run_cli
from vestige.models import MEMORY_COLUMNS

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.cli_helpers import Server

servers = cli_helpers.servers  # the fixture, under its own name

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow, pytest.mark.timeout(120)]

BAD_INPUT = 5


def full_row(n: int) -> dict[str, Any]:
    """A memory whose every field differs from the defaults (content_hash is recomputed)."""
    return {
        "id": f"imported-{n}",
        "content": f'Row {n}: café ☕ with "quotes" and a\nnewline',
        "node_type": "decision",
        "created_at": f"2025-0{n + 1}-02T03:04:05.123456+00:00",
        "updated_at": f"2025-0{n + 1}-03T03:04:05+00:00",
        "last_accessed": f"2025-0{n + 1}-04T03:04:05+00:00",
        "stability": 12.5 + n,
        "difficulty": 7.25,
        "reps": 3 + n,
        "lapses": 2,
        "learning_state": "review",
        "storage_strength": 1.75,
        "retrieval_strength": 0.625,
        "retention_strength": 0.5,
        "sentiment_score": -0.25,
        "sentiment_magnitude": 0.75,
        "next_review": f"2025-0{n + 1}-09T00:00:00+00:00",
        "scheduled_days": 5,
        "source": f"https://example.invalid/{n}",
        "tags": ["alpha", f"n{n}"],
        "has_embedding": True,
        "embedding_model": "test-model",
        "valid_from": "2025-01-01T00:00:00+00:00",
        "valid_until": "2030-01-01T00:00:00+00:00",
        "scope": "project",
        "superseded_by": "imported-0" if n else None,
    }


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def quiet_decay(data_dir: Path, tmp_path: Path) -> None:
    """Create the store and run a decay pass now, so a server started on it will not run one
    for hours: decay legitimately rewrites strengths, which would race the comparisons."""
    cli_json("import", write_jsonl(tmp_path / "nothing.jsonl", []), data_dir=data_dir)
    assert cli_json("consolidate", data_dir=data_dir)["ran"] is True


def export_lines(data_dir: Path, *args: str) -> list[dict[str, Any]]:
    result = run_cli("export", *args, data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    items = [json.loads(line) for line in result.stdout.split("\n") if line]
    return [i for i in items if "change" not in i]  # the memories; the changelog follows them


def test_export_import_round_trips_every_field_beside_running_servers(
    tmp_path: Path, servers: Callable[..., Server]
) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    for data_dir in (source, target):
        quiet_decay(data_dir, tmp_path)
    server = servers(source)
    server.call_tool("smart_ingest", {"content": "written by the MCP server", "tags": ["mcp"]})
    rows = [full_row(n) for n in range(3)]
    imported = cli_json("import", write_jsonl(tmp_path / "rows.jsonl", rows), data_dir=source)
    assert imported == {
        "read": 3,
        "imported": 3,
        "skipped_existing": 0,
        "duplicates": 0,
        "invalid": [],
        "changes_imported": 0,
    }
    exported = export_lines(source)
    assert len(exported) == 4
    for row, out in zip(rows, exported[1:], strict=True):
        assert set(out) == set(MEMORY_COLUMNS)
        assert {k: out[k] for k in row} == row  # every field as given
    assert exported[0]["content"] == "written by the MCP server"

    servers(target)
    dump = tmp_path / "dump.jsonl"
    result = run_cli("export", "-o", dump, data_dir=source)
    assert result.returncode == 0
    assert result.stdout == ""
    assert result.stderr == f"Exported 4 memories to {dump}.\n"
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600
    assert cli_json("import", dump, data_dir=target)["imported"] == 4
    assert export_lines(target) == exported


def test_json_array_format_round_trips_and_import_is_idempotent(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    cli_json(
        "import", write_jsonl(tmp_path / "rows.jsonl", [full_row(0), full_row(1)]), data_dir=source
    )
    array = tmp_path / "all.json"
    assert run_cli("export", "--format", "json", "-o", array, data_dir=source).returncode == 0
    items = json.loads(array.read_text("utf-8"))
    assert isinstance(items, list)
    assert [i["id"] for i in items if "change" not in i] == ["imported-0", "imported-1"]
    assert [i["change"]["kind"] for i in items if "change" in i] == ["imported", "imported"]
    first = cli_json("import", array, data_dir=target)
    assert (first["read"], first["imported"], first["skipped_existing"]) == (2, 2, 0)
    second = cli_json("import", array, data_dir=target)
    assert (second["read"], second["imported"], second["skipped_existing"]) == (2, 0, 2)
    assert export_lines(target) == export_lines(source)


def test_empty_store_exports_nothing_in_either_format(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    cli_json("import", write_jsonl(tmp_path / "none.jsonl", []), data_dir=data_dir)
    assert run_cli("export", data_dir=data_dir).stdout == ""
    assert json.loads(run_cli("export", "--format", "json", data_dir=data_dir).stdout) == []


@pytest.mark.parametrize("position", [1, 3])
def test_a_bad_row_names_its_line_and_imports_nothing(tmp_path: Path, position: int) -> None:
    data_dir = tmp_path / "d"
    lines = [json.dumps(full_row(n)) for n in range(3)]
    lines.insert(position - 1, '{"id": "no-content"}')
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n", "utf-8")
    result = run_cli("import", bad, data_dir=data_dir)
    assert result.returncode == BAD_INPUT
    assert result.stderr == (
        f"Error: {bad}, line {position}: a memory needs at least an id and a content\n"
        "Hint: Fix or remove that row, or pass --skip-invalid to import the rest; "
        "nothing was imported.\n"
    )
    assert not data_dir.exists()  # nothing half-way: not even a database was created


def test_skip_invalid_imports_the_good_rows_and_lists_the_bad(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    bad = tmp_path / "mixed.jsonl"
    bad.write_text(
        "\n".join([json.dumps(full_row(0)), "not json", json.dumps(full_row(1)), "[1, 2]"]) + "\n",
        "utf-8",
    )
    result = run_cli("import", bad, "--skip-invalid", "--json", data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["read"], report["imported"]) == (4, 2)
    assert [i["line"] for i in report["invalid"]] == [2, 4]
    assert "not valid JSON" in report["invalid"][0]["error"]
    assert f"Warning: {bad}, line 2: not valid JSON" in result.stderr
    assert [r["id"] for r in export_lines(data_dir)] == ["imported-0", "imported-1"]


def test_a_bad_item_in_a_json_array_is_named_by_position(tmp_path: Path) -> None:
    array = tmp_path / "array.json"
    array.write_text(json.dumps([full_row(0), {"id": "x", "content": "y", "reps": "many"}]))
    result = run_cli("import", array, data_dir=tmp_path / "d")
    assert result.returncode == BAD_INPUT
    assert result.stderr.startswith(f"Error: {array}, item 2: reps must be a number, not 'many'\n")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe\x00garbage", "is UTF-16 text; import reads UTF-8"),
        (b"{}\n\xc3(", "line 2: not UTF-8 text (byte 0xc3 at offset 3 of the file)"),
        (b"[1, 2", "starts like a JSON array but is not valid JSON"),
        (b"SQLite format 3\x00", "line 1: not valid JSON"),
    ],
)
def test_an_import_file_that_is_not_json_is_one_clear_error(
    tmp_path: Path, content: bytes, message: str
) -> None:
    file = tmp_path / "input"
    file.write_bytes(content)
    result = run_cli("import", file, data_dir=tmp_path / "d")
    assert result.returncode == BAD_INPUT
    assert result.stderr.startswith("Error: ")
    assert message in result.stderr
    assert not (tmp_path / "d").exists()


def test_import_of_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("import", tmp_path / "absent.jsonl", data_dir=tmp_path / "d")
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_export_never_overwrites_a_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    cli_json("ingest", "something", data_dir=data_dir)
    existing = tmp_path / "keep.jsonl"
    existing.write_text("precious")
    result = run_cli("export", "-o", existing, data_dir=data_dir)
    assert result.returncode == BAD_INPUT
    assert result.stderr.startswith(f"Error: the export target {existing} already exists\n")
    assert existing.read_text() == "precious"
    assert sorted(os.listdir(tmp_path)) == ["d", "keep.jsonl"]  # no partial file left


def test_unicode_line_separators_inside_a_memory_round_trip(tmp_path: Path) -> None:
    """Export leaves U+2028, U+2029 and U+0085 raw; only a newline may end an import line."""
    source, target = tmp_path / "source", tmp_path / "target"
    content = "first\u2028second\u2029third\x85fourth"
    cli_json("ingest", content, data_dir=source)
    dump = tmp_path / "dump.jsonl"
    assert run_cli("export", "-o", dump, data_dir=source).returncode == 0
    text = dump.read_text("utf-8")
    assert "\u2028" in text  # raw, not escaped: the case the reader must survive
    [row, change] = [json.loads(line) for line in text.split("\n") if line]
    assert row["content"] == content
    assert change["change"]["kind"] == "created"

    report = cli_json("import", dump, data_dir=target)
    assert report == {
        "read": 1,
        "imported": 1,
        "skipped_existing": 0,
        "duplicates": 0,
        "invalid": [],
        "changes_imported": 1,
    }
    assert export_lines(target) == [row]


# -- one id twice in one file, byte order marks and other encodings ----------------------------


def stored(data_dir: Path) -> int:
    return int(cli_json("stats", data_dir=data_dir)["total_memories"])


def test_one_id_with_different_content_is_refused_naming_both_lines(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    cli_json("ingest", "already here", data_dir=data_dir)
    first, second = full_row(0), {**full_row(0), "content": "a different text"}
    file = tmp_path / "conflict.jsonl"
    file.write_text(
        "\n".join(json.dumps(r) for r in [first, full_row(1), second, full_row(2)]) + "\n",
        "utf-8",
    )
    result = run_cli("import", file, data_dir=data_dir)
    assert result.returncode == BAD_INPUT
    assert result.stderr == (
        f"Error: {file}, line 3: the id 'imported-0' is also on line 1, "
        "with different content\n"
        "Hint: Fix the file: keep one of the two rows (or give one a new id), or pass "
        "--skip-invalid to import the rest without either; nothing was imported.\n"
    )
    assert stored(data_dir) == 1

    skipped = run_cli("import", file, "--skip-invalid", "--json", data_dir=data_dir)
    assert skipped.returncode == 0, skipped.stderr
    report = json.loads(skipped.stdout)
    assert (report["read"], report["imported"], report["duplicates"]) == (4, 2, 0)
    assert [i["line"] for i in report["invalid"]] == [1, 3]
    assert f"Warning: {file}, line 1: the id 'imported-0' is also on line 3" in skipped.stderr
    assert stored(data_dir) == 3


def test_identical_rows_are_imported_once_and_counted(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    file = write_jsonl(tmp_path / "twice.jsonl", [full_row(0), full_row(1), full_row(0)])
    result = run_cli("import", file, data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "Read 3 rows: imported 2, already present 0, repeated in the file 1 (imported once).\n"
    )
    assert cli_json("import", file, data_dir=data_dir) == {
        "read": 3,
        "imported": 0,
        "skipped_existing": 2,
        "duplicates": 1,
        "changes_imported": 0,
        "invalid": [],
    }
    assert stored(data_dir) == 2


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_a_file_with_a_utf8_byte_order_mark_imports(tmp_path: Path, fmt: str) -> None:
    data_dir = tmp_path / "d"
    rows = [full_row(0), full_row(1)]
    if fmt == "json":
        text = json.dumps(rows, ensure_ascii=False, indent=2)
    else:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    file = tmp_path / f"from-windows.{fmt}"
    file.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    report = cli_json("import", file, data_dir=data_dir)
    assert (report["read"], report["imported"]) == (2, 2)
    assert [{k: r[k] for k in rows[0]} for r in export_lines(data_dir)] == rows


@pytest.mark.parametrize(
    ("encoding", "name"), [("utf-16", "UTF-16"), ("utf-32", "UTF-32"), ("latin-1", "")]
)
def test_a_file_in_another_encoding_is_one_clear_error(
    tmp_path: Path, encoding: str, name: str
) -> None:
    data_dir = tmp_path / "d"
    cli_json("ingest", "already here", data_dir=data_dir)
    file = tmp_path / "other-encoding.jsonl"
    rows = [{**full_row(n), "content": f"café crème {n}"} for n in range(2)]
    file.write_bytes("\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode(encoding))
    result = run_cli("import", file, data_dir=data_dir)
    assert result.returncode == BAD_INPUT
    error, hint, end = result.stderr.split("\n")
    if name:
        assert error == f"Error: {file} is {name} text; import reads UTF-8"
    else:
        offset = file.read_bytes().index(b"\xe9")
        assert error == (
            f"Error: {file}, line 1: not UTF-8 text (byte 0xe9 at offset {offset} of the file)"
        )
    assert hint.startswith("Hint: ")
    assert "UTF-8" in hint
    assert end == ""
    assert stored(data_dir) == 1
