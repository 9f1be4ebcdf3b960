"""Backups (online, private, checked) and JSON Lines export/import (exact, all-or-nothing)."""

from __future__ import annotations

import io
import json
import re
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import apsw
import pytest

from tests.process_helpers import WorkerPool, read_lines
from vestige import Store, config, transfer
from vestige.errors import ImportFileError, InvalidInput


def count(store: Store) -> int:
    return store.stats().total_memories


def integrity(path: Path) -> str:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return "; ".join(r[0] for r in conn.execute("PRAGMA integrity_check"))
    finally:
        conn.close()


def backup_rows(path: Path) -> dict[str, str]:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        rows = conn.execute("SELECT id, content FROM knowledge_nodes").fetchall()
        return {str(mid): str(content) for mid, content in rows}
    finally:
        conn.close()


def varied(store: Store) -> None:
    """Memories that exercise every column: strengths, times, tags, links, unicode."""
    a = store.ingest("plain fact")
    b = store.ingest(
        '  naïve café ☕ — 日本語 "quoted" \\ back\nslash  ',
        node_type="decision",
        tags=["ünïcode", "ops"],
        source="chat: 2026-11-24",
        valid_from="2026-01-01",
        valid_until="2026-12-31T23:59:59.123456+05:30",
    )
    store.promote(a.id)
    store.demote(b.id)
    store.ingest("staging database runs on port 5433 behind bastion host firewall")
    fix = store.smart_ingest("actually staging database runs on port 5433 behind tunnel")
    assert fix.decision.value == "supersede"
    store.ingest("alpha bravo charlie delta")
    # An added detail extends the memory (smart_ingest's update).
    extended = store.smart_ingest("alpha bravo charlie delta, then echo and foxtrot")
    assert extended.decision.value == "update"
    store.decay()


# -- backup ------------------------------------------------------------------------------


def test_default_backup_is_private_checked_and_complete(store: Store) -> None:
    varied(store)
    expected = {m.id: m.content for m in store.iter_memories()}
    before = datetime.now(UTC).replace(microsecond=0)
    path = store.backup()
    after = datetime.now(UTC)
    assert path.parent == store.data_dir.path / "backups"
    match = re.fullmatch(r"vestige-(\d{8}-\d{6})\.db", path.name)
    assert match, path.name
    stamp = datetime.strptime(match.group(1), "%Y%m%d-%H%M%S").replace(tzinfo=UTC)
    assert before <= stamp <= after
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert integrity(path) == "ok"
    assert backup_rows(path) == expected
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no leftovers


def test_backup_opens_as_a_vestige_store(store: Store, tmp_path: Path) -> None:
    varied(store)
    target = tmp_path / "restore-check" / "vestige.db"
    target.parent.mkdir()
    store.backup(target)
    with Store.open(target.parent) as restored:
        assert [m.to_dict() for m in restored.iter_memories()] == [
            m.to_dict() for m in store.iter_memories()
        ]


def test_two_default_backups_get_distinct_names(store: Store) -> None:
    store.ingest("x")
    first, second = store.backup(), store.backup()
    assert first != second
    assert first.exists()
    assert second.exists()


def test_a_folder_target_takes_the_next_free_name(store: Store, tmp_path: Path) -> None:
    store.ingest("x")
    out = tmp_path / "out"
    out.mkdir()
    first = next(config.backup_names(out))
    first.write_bytes(b"taken")
    made = store.backup(out)
    assert made.parent == out
    assert made.name in {f"{first.stem}-2.db", next(config.backup_names(out)).name}
    assert first.read_bytes() == b"taken"
    assert integrity(made) == "ok"
    kept = store.backup(out, prefix="vestige-before-restore")
    assert kept.name.startswith("vestige-before-restore-")
    assert sorted(p.name for p in out.iterdir()) == sorted([first.name, made.name, kept.name])


def test_backup_refuses_an_existing_target(store: Store, tmp_path: Path) -> None:
    store.ingest("x")
    target = tmp_path / "exists.db"
    target.write_bytes(b"precious")
    with pytest.raises(InvalidInput, match="already exists"):
        store.backup(target)
    assert target.read_bytes() == b"precious"
    with pytest.raises(InvalidInput, match="already exists"):
        store.backup(store.path)  # the live database itself


def test_backup_into_a_missing_folder_is_refused(store: Store, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        store.backup(tmp_path / "no" / "such" / "dir" / "b.db")
    assert not (tmp_path / "no").exists()


@pytest.mark.multiprocess
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_backup_while_another_process_writes(
    store: Store, worker_pool: WorkerPool, tmp_path: Path
) -> None:
    acks, stop = tmp_path / "acks", tmp_path / "stop"
    writer = worker_pool.spawn(
        "write-loop",
        "writer",
        data_dir=str(store.data_dir.path),
        acks=str(acks),
        stop=str(stop),
        ready_after=50,
        max_s=60.0,
    )
    worker_pool.wait_ready(writer)
    sizes = []
    try:
        for i in range(4):
            acked_before = set(read_lines(acks))
            path = store.backup(tmp_path / f"under-load-{i}.db")
            assert writer.proc.poll() is None, "the writer must still be writing"
            assert integrity(path) == "ok"
            rows = backup_rows(path)
            assert acked_before <= set(rows)  # every write acknowledged before it is in it
            sizes.append(len(rows))
    finally:
        stop.touch()
    worker_pool.join(writer, deadline_s=30)
    written = writer.result()["written"]
    assert sizes == sorted(sizes)
    assert sizes[-1] > sizes[0]  # the writer really was writing between backups
    assert count(store) == written
    assert set(read_lines(acks)) == {m.id for m in store.iter_memories()}


# -- export and import -------------------------------------------------------------------------


def memory_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith('{"change": ')]


def change_lines(text: str) -> list[dict[str, Any]]:
    return [
        json.loads(line)["change"] for line in text.splitlines() if line not in memory_lines(text)
    ]


def export(store: Store) -> str:
    out = io.StringIO()
    n = store.export_jsonl(out)
    text = out.getvalue()
    assert n == len(memory_lines(text))
    return text


def test_round_trip_preserves_every_field(store: Store, tmp_path: Path) -> None:
    varied(store)
    original = [m.to_dict() for m in store.iter_memories()]
    assert any(m["superseded_by"] for m in original)
    text = export(store)
    with Store.open(tmp_path / "other") as other:
        report = other.import_jsonl(io.StringIO(text))
        assert (report.read, report.imported, report.skipped_existing) == (
            len(original),
            len(original),
            0,
        )
        assert [m.to_dict() for m in other.iter_memories()] == original
        exported = export(other)
        assert memory_lines(exported) == memory_lines(text)
        # The history came along (each entry once, with its origin), then one "imported"
        # entry per memory, made by this import.
        history = change_lines(text)
        assert report.changes_imported == len(history) > 0
        carried = change_lines(exported)
        assert carried[: len(history)] == history
        assert [c["kind"] for c in carried[len(history) :]] == ["imported"] * len(original)
        again = other.import_jsonl(io.StringIO(text))
        assert (again.imported, again.skipped_existing) == (0, len(original))
        assert again.changes_imported == 0
        assert change_lines(export(other)) == carried
        assert [m.to_dict() for m in other.iter_memories()] == original
        hits = other.search("café")
        assert [h.memory.content for h in hits] == [
            m["content"] for m in original if "café" in m["content"]
        ]


def test_export_to_a_file_is_private_whole_and_never_replaces_one(
    store: Store, tmp_path: Path
) -> None:
    varied(store)
    out = tmp_path / "out"
    out.mkdir()
    target = out / "all.json"
    seen: list[int] = []
    n = store.export(target, fmt="json", progress=seen.append)
    assert n == len(seen) == count(store)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    items = [i for i in json.loads(target.read_text("utf-8")) if "change" not in i]
    assert [i["id"] for i in items] == [m.id for m in store.iter_memories()]
    with pytest.raises(InvalidInput, match="already exists"):
        store.export(target)
    with pytest.raises(InvalidInput, match="does not exist"):
        store.export(out / "missing" / "x.jsonl")
    assert sorted(p.name for p in out.iterdir()) == ["all.json"]  # no partial file


def test_read_import_checks_the_whole_file_once_and_can_skip_bad_rows(
    store: Store, tmp_path: Path
) -> None:
    file = tmp_path / "mixed.jsonl"
    file.write_text("\n".join([GOOD[0], "not json", "", GOOD[1], "[1]"]) + "\n", "utf-8")
    with pytest.raises(ImportFileError) as info:
        transfer.read_import(file)
    assert info.value.message.startswith(f"{file}, line 2: not valid JSON")
    assert "--skip-invalid" in info.value.hint
    checked = transfer.read_import(file, skip_invalid=True)
    assert (checked.unit, checked.read, len(checked.rows)) == ("line", 4, 2)
    assert [(r.number, r.error.split(" (")[0]) for r in checked.rejected] == [
        (2, "not valid JSON"),
        (5, "expected a JSON object"),
    ]
    assert count(store) == 0  # reading writes nothing
    done: list[int] = []
    report = store.import_checked(checked, progress=done.append)
    assert (report.read, report.imported, report.skipped_existing) == (4, 2, 0)
    assert sum(done) == 2


def test_a_json_array_is_read_as_items(store: Store, tmp_path: Path) -> None:
    file = tmp_path / "array.json"
    file.write_text("[" + ", ".join([GOOD[0], '"text"', GOOD[1]]) + "]", "utf-8")
    with pytest.raises(ImportFileError, match=r", item 2: expected a JSON object"):
        transfer.read_import(file)
    checked = transfer.read_import(file, skip_invalid=True)
    assert (checked.unit, checked.read, len(checked.rows)) == ("item", 3, 2)
    assert store.import_checked(checked).imported == 2


def test_export_lines_are_json_objects_with_every_column(store: Store) -> None:
    store.ingest("one", tags=["a"])
    line, change = export(store).splitlines()
    assert json.loads(change)["change"]["kind"] == "created"
    data = json.loads(line)
    assert data["content"] == "one"
    assert data["tags"] == ["a"]
    assert set(data) == set(store.get(data["id"]).to_dict())


def test_import_into_the_same_store_imports_nothing(store: Store) -> None:
    varied(store)
    before = [m.to_dict() for m in store.iter_memories()]
    report = store.import_jsonl(io.StringIO(export(store)))
    assert report.imported == 0
    assert report.skipped_existing == len(before)
    assert [m.to_dict() for m in store.iter_memories()] == before


def test_import_fills_defaults_and_skips_blank_lines(store: Store) -> None:
    text = '\n{"id": "hand-written-1", "content": "typed by hand"}\n\n'
    report = store.import_jsonl(io.StringIO(text))
    assert (report.read, report.imported) == (1, 1)
    m = store.get("hand-written-1")
    assert m.content == "typed by hand"
    assert (m.node_type, m.tags, m.retention_strength) == ("fact", (), 1.0)
    assert m.created_at == m.updated_at == m.last_accessed


def test_large_import_spans_several_batches(store: Store) -> None:
    lines = [json.dumps({"id": f"bulk-{i}", "content": f"bulk row {i}"}) for i in range(1203)]
    report = store.import_jsonl(io.StringIO("\n".join(lines)))
    assert report.imported == 1203
    assert count(store) == 1203


GOOD = [json.dumps({"id": f"good-{i}", "content": f"good {i}"}) for i in range(5)]

BAD_LINES: list[tuple[str, str, str]] = [
    ("not-json", '{"id": "x", "content": ', "not valid JSON"),
    ("array", '["id", "content"]', "JSON object"),
    ("string", '"just text"', "JSON object"),
    ("null", "null", "JSON object"),
    ("bad-number", '{"id": "b1", "content": "c", "stability": "high"}', "stability"),
    ("bool-number", '{"id": "b2", "content": "c", "reps": true}', "reps"),
    ("bad-tags", '{"id": "b3", "content": "c", "tags": "identity"}', "tags"),
    ("bad-text", '{"id": "b4", "content": "c", "scope": 5}', "scope"),
    ("bad-date", '{"id": "b5", "content": "c", "created_at": "last week"}', "created_at"),
    ("missing-content", '{"id": "b6"}', "content"),
    ("missing-id", '{"content": "c"}', "id"),
    ("empty-content", '{"id": "b7", "content": "  "}', "empty"),
    ("content-not-text", '{"id": "b8", "content": 42}', "content must be text"),
    ("content-surrogate", '{"id": "b10", "content": "half \\ud800 a pair"}', "lone surrogate"),
    ("bad-id", '{"id": "has space", "content": "c"}', "not a memory id"),
    ("unknown-field", '{"id": "b9", "content": "c", "colour": "red"}', "unknown fields"),
    ("nan", '{"id": "n1", "content": "c", "stability": NaN}', "stability must be a finite"),
    ("infinity", '{"id": "n2", "content": "c", "difficulty": -Infinity}', "difficulty must"),
    ("overflow-float", '{"id": "n3", "content": "c", "storage_strength": 1e400}', "finite"),
    ("huge-float", '{"id": "n4", "content": "c", "stability": ' + "9" * 400 + "}", "finite"),
    ("nan-int", '{"id": "n5", "content": "c", "reps": NaN}', "reps must be a whole number"),
    ("infinite-int", '{"id": "n6", "content": "c", "lapses": Infinity}', "lapses must be"),
    ("fraction-int", '{"id": "n7", "content": "c", "scheduled_days": 2.5}', "whole number"),
    ("huge-int", '{"id": "n8", "content": "c", "reps": 9223372036854775808}', "2**63"),
    ("tiny-int", '{"id": "n9", "content": "c", "reps": -9223372036854775809}', "2**63"),
    ("huge-int-float", '{"id": "n10", "content": "c", "lapses": 1e19}', "2**63"),
    ("digits", '{"id": "n11", "content": "c", "reps": ' + "9" * 5000 + "}", "too many digits"),
    *[
        (f"{field}-surrogate", f'{{"id": "s1", "content": "c", "{field}": "a\\udc80"}}', field)
        for field in ("learning_state", "scope", "embedding_model", "superseded_by")
    ],
]


@pytest.mark.parametrize(
    ("bad", "fragment"), [pytest.param(bad, frag, id=name) for name, bad, frag in BAD_LINES]
)
@pytest.mark.parametrize("position", [1, 4, 7])
def test_one_bad_line_imports_nothing(store: Store, bad: str, fragment: str, position: int) -> None:
    store.ingest("already here")
    lines: list[Any] = list(GOOD)
    lines.insert(position - 1, bad)
    if position == 7:
        lines.insert(5, "")  # a blank line still counts in the numbering
    text = "\n".join(lines) + "\n"
    with pytest.raises(ImportFileError) as info:
        store.import_jsonl(io.StringIO(text))
    expected_line = text.splitlines().index(bad) + 1
    assert info.value.line == expected_line
    assert info.value.message.startswith(f"line {expected_line}: ")
    assert fragment in info.value.message
    assert "nothing was imported" in info.value.hint
    assert count(store) == 1


@pytest.mark.parametrize(
    "bad",
    [
        '{"id": "late-nan", "content": "c", "retention_strength": NaN}',
        '{"id": "late-big", "content": "c", "scheduled_days": 1e300}',
    ],
)
def test_a_bad_number_after_the_first_batch_imports_nothing(store: Store, bad: str) -> None:
    """Every line is checked before the first batch commits, numbers included."""
    store.ingest("already here")
    lines = [json.dumps({"id": f"early-{i}", "content": f"early {i}"}) for i in range(600)]
    with pytest.raises(ImportFileError) as info:
        store.import_jsonl(io.StringIO("\n".join([*lines, bad])))
    assert info.value.line == 601
    assert count(store) == 1


def test_integral_floats_are_whole_numbers_and_the_int_range_is_accepted(store: Store) -> None:
    line = json.dumps(
        {"id": "edge", "content": "c", "reps": 3.0, "lapses": 2**63 - 1, "scheduled_days": -(2**63)}
    )
    store.import_jsonl(io.StringIO(line))
    m = store.get("edge")
    assert (m.reps, m.lapses, m.scheduled_days) == (3, 2**63 - 1, -(2**63))
    assert isinstance(m.reps, int)


# -- one id twice in one file, byte order marks and other encodings ----------------------------


def row(mid: str, content: str, **fields: Any) -> str:
    return json.dumps({"id": mid, "content": content, **fields}, ensure_ascii=False)


def test_one_id_with_different_content_names_both_lines_and_imports_nothing(
    store: Store, tmp_path: Path
) -> None:
    store.ingest("already here")
    file = tmp_path / "conflict.jsonl"
    lines = [GOOD[0], row("dup", "the first version"), GOOD[1], "", row("dup", "the second")]
    file.write_text("\n".join(lines) + "\n", "utf-8")
    with pytest.raises(ImportFileError) as info:
        transfer.read_import(file)
    assert info.value.line == 5
    assert info.value.message == (
        f"{file}, line 5: the id 'dup' is also on line 2, with different content"
    )
    assert "keep one of the two rows" in info.value.hint
    assert "nothing was imported" in info.value.hint
    with pytest.raises(ImportFileError, match=r"^line 5: the id 'dup' is also on line 2"):
        store.import_jsonl(io.StringIO(file.read_text("utf-8")))
    assert [m.content for m in store.iter_memories()] == ["already here"]


def test_one_id_with_different_fields_in_a_json_array_names_both_items(
    store: Store, tmp_path: Path
) -> None:
    file = tmp_path / "conflict.json"
    items = [row("same", "text", tags=["a"]), GOOD[0], row("same", "text", tags=["b"], reps=2)]
    file.write_text("[\n" + ",\n".join(items) + "\n]\n", "utf-8")
    with pytest.raises(ImportFileError) as info:
        transfer.read_import(file)
    assert info.value.message == (
        f"{file}, item 3: the id 'same' is also item 1, with different reps, tags"
    )
    assert count(store) == 0


def test_identical_rows_with_one_id_are_imported_once(store: Store, tmp_path: Path) -> None:
    """Equal once defaults are filled in (a field given with its default value counts as
    equal), so a file concatenated with itself, or a row repeated, is harmless."""
    file = tmp_path / "repeated.jsonl"
    lines = [row("twice", "same text"), GOOD[0], row("twice", "same text", node_type="fact")]
    file.write_text("\n".join([*lines, *GOOD]) + "\n", "utf-8")
    checked = transfer.read_import(file)
    assert (checked.read, len(checked.rows), checked.duplicates) == (8, 6, 2)
    report = store.import_checked(checked)
    assert (report.read, report.imported, report.skipped_existing) == (8, 6, 0)
    assert sorted(m.id for m in store.iter_memories()) == sorted(
        ["twice", *(f"good-{i}" for i in range(5))]
    )


def test_skip_invalid_skips_every_row_of_a_conflicting_id(store: Store, tmp_path: Path) -> None:
    """Which of two different rows is right cannot be known: neither is imported."""
    file = tmp_path / "conflict.jsonl"
    lines = [
        row("dup", "first"),
        GOOD[0],
        row("dup", "second"),
        "not json",
        row("dup", "first"),
        row("rep", "repeated"),
        row("rep", "repeated"),
    ]
    file.write_text("\n".join(lines) + "\n", "utf-8")
    checked = transfer.read_import(file, skip_invalid=True)
    assert [(r.number, r.error) for r in checked.rejected] == [
        (1, "the id 'dup' is also on lines 3, 5, with different content"),
        (3, "the id 'dup' is also on lines 1, 5, with different content"),
        (4, "not valid JSON (Expecting value)"),
        (5, "the id 'dup' is also on lines 1, 3, with different content"),
    ]
    assert (checked.read, len(checked.rows), checked.duplicates) == (7, 2, 1)
    store.import_checked(checked)
    assert sorted(m.id for m in store.iter_memories()) == ["good-0", "rep"]


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_a_utf8_byte_order_mark_is_accepted(store: Store, tmp_path: Path, fmt: str) -> None:
    text = "[" + ", ".join(GOOD) + "]\n" if fmt == "json" else "\n".join(GOOD) + "\n"
    plain, marked = tmp_path / f"plain.{fmt}", tmp_path / f"bom.{fmt}"
    plain.write_text(text, "utf-8")
    marked.write_text(text, "utf-8-sig")  # the BOM some Windows editors write
    assert marked.read_bytes().startswith(b"\xef\xbb\xbf")
    with_bom, without = transfer.read_import(marked), transfer.read_import(plain)
    assert (
        (with_bom.unit, with_bom.read)
        == (without.unit, without.read)
        == (
            "item" if fmt == "json" else "line",
            5,
        )
    )
    assert [r[:2] for r in with_bom.rows] == [r[:2] for r in without.rows]
    report = store.import_jsonl(io.StringIO("\ufeff" + text))  # a stream with the BOM
    assert report.imported == 5


def test_byte_order_marks_where_two_exports_were_joined(store: Store, tmp_path: Path) -> None:
    """`cat a.jsonl b.jsonl` of two files that start with a BOM puts one inside the file."""
    file = tmp_path / "joined.jsonl"
    file.write_text("".join(f"\ufeff{line}\n" for line in GOOD), "utf-8")
    assert store.import_checked(transfer.read_import(file)).imported == 5


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_a_utf16_or_utf32_file_is_one_clear_error(
    store: Store, tmp_path: Path, encoding: str
) -> None:
    file = tmp_path / "windows.jsonl"
    data = "\n".join(GOOD).encode(encoding)
    if not encoding.startswith("utf-32") and encoding != "utf-16":
        data = "\ufeff".encode(encoding) + data  # the explicit-endian codecs write no BOM
    file.write_bytes(data)
    with pytest.raises(ImportFileError) as info:
        transfer.read_import(file)
    name = "UTF-32" if encoding.startswith("utf-32") else "UTF-16"
    assert info.value.message == f"{file} is {name} text; import reads UTF-8"
    assert "Convert it to UTF-8" in info.value.hint
    assert "\n" not in info.value.message
    assert "codec" not in str(info.value)
    assert count(store) == 0


def test_a_file_that_is_not_utf8_names_the_line_and_byte(tmp_path: Path) -> None:
    file = tmp_path / "latin1.jsonl"
    data = "\n".join([GOOD[0], GOOD[1], row("x", "café crème")]).encode("latin-1")
    file.write_bytes(data)
    offset = data.index(b"\xe9")
    with pytest.raises(ImportFileError) as info:
        transfer.read_import(file)
    assert info.value.line == 3
    assert info.value.message == (
        f"{file}, line 3: not UTF-8 text (byte 0xe9 at offset {offset} of the file)"
    )
    assert "convert the file to UTF-8" in info.value.hint
    assert "codec" not in str(info.value)
