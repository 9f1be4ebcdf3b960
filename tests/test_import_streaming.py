"""Import reads its file a bounded piece at a time, and never waits on or drains a non-file.

Before: the whole file was read into memory (``/dev/zero`` grew memory until a MemoryError
traceback, a 106 MB JSON array peaked at 470 MB) and a FIFO with no writer hung for ever.
Each case runs the real `vestige` (or the library in a child process, to measure its peak
memory), on real files, FIFOs and devices.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

import pytest

from tests.cli_helpers import CLI, CLI_DEADLINE_S, cli_json, run_cli
from vestige import Store, transfer
from vestige.changelog import Change
from vestige.errors import ImportFileError

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow, pytest.mark.timeout(240)]

BAD_INPUT: Final = 5
#: The child's address space is capped, so a regression that reads an endless file whole
#: ends in a MemoryError there instead of taking the machine's memory.
CHILD_MEMORY_CAP_BYTES: Final = 1 << 30
#: The peak memory the check may add over a tiny file's, as a share of the file's size.  The
#: old reader held the text, the decoded JSON and the rows at once (over 3x the size).
MAX_PEAK_SHARE: Final = 0.5


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY_CAP_BYTES, CHILD_MEMORY_CAP_BYTES))


def run_capped(*args: str | os.PathLike[str], data_dir: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*CLI, *map(str, args), "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=CLI_DEADLINE_S,
        preexec_fn=_cap_memory,  # a plain rlimit, set before exec
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def memories(count: int, *, content_bytes: int = 40, prefix: str = "m") -> list[dict[str, Any]]:
    # "é" is two bytes: rows cross every read boundary in the middle of a character somewhere.
    filler = ("café crème " * (content_bytes // 12 + 1))[:content_bytes]
    return [
        {"id": f"{prefix}-{i}", "content": f"{i} {filler}", "tags": ["bulk"]} for i in range(count)
    ]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def write_array(path: Path, rows: list[dict[str, Any]]) -> Path:
    items = ",\n  ".join(json.dumps(r, ensure_ascii=False) for r in rows)
    path.write_text(f"[\n  {items}\n]\n", "utf-8")
    return path


def count(data_dir: Path) -> int:
    with Store.open(data_dir, create=False) as store:
        return store.stats().total_memories


# -- files that are not files ------------------------------------------------------------------


def test_a_fifo_with_no_writer_is_refused_at_once(tmp_path: Path, data_dir: Path) -> None:
    fifo = tmp_path / "memories.jsonl"
    os.mkfifo(fifo)
    started = time.monotonic()
    result = run_capped("import", fifo, data_dir=data_dir)
    took = time.monotonic() - started
    assert result.returncode == BAD_INPUT, result.stderr
    assert f"{fifo} is a FIFO (a named pipe), not a regular file" in result.stderr
    assert "Save the data to a file first" in result.stderr
    assert took < CLI_DEADLINE_S  # it returned: the old reader waited for a writer for ever
    assert not (data_dir / "vestige.db").exists()  # nothing was created for it


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero on this platform")
def test_an_endless_device_is_refused_without_reading_it(data_dir: Path) -> None:
    result = run_capped("import", "/dev/zero", data_dir=data_dir)
    assert result.returncode == BAD_INPUT, result.stderr
    assert "/dev/zero is a character device, not a regular file" in result.stderr
    assert "MemoryError" not in result.stderr


def test_a_line_over_the_limit_is_refused_by_number(tmp_path: Path, data_dir: Path) -> None:
    """A regular file of zeros (sparse: no disk used) with no line break in it."""
    file = write_jsonl(tmp_path / "zeros.jsonl", memories(3))
    with file.open("r+b") as f:
        f.truncate(file.stat().st_size + transfer.MAX_IMPORT_LINE_BYTES + 1)
    result = run_capped("import", file, data_dir=data_dir)
    assert result.returncode == BAD_INPUT, result.stderr
    limit = f"{transfer.MAX_IMPORT_LINE_BYTES:,}"
    assert f"{file}, line 4: longer than {limit} bytes" in result.stderr
    assert not (data_dir / "vestige.db").exists() or count(data_dir) == 0


def test_an_array_item_over_the_limit_is_refused_by_number(tmp_path: Path) -> None:
    file = tmp_path / "huge.json"
    rows = [json.dumps(r) for r in memories(2)]
    huge = json.dumps({"id": "huge", "content": "x" * (transfer.MAX_IMPORT_LINE_BYTES + 10)})
    file.write_text("[" + ", ".join([*rows, huge]) + "]", "utf-8")
    with pytest.raises(ImportFileError) as info:
        transfer.read_import(file)
    assert info.value.message.startswith(f"{file}, item 3: longer than")


# -- memory stays bounded ------------------------------------------------------------------------

_PEAK_SCRIPT: Final = """
import resource, sys
from pathlib import Path
from vestige import transfer
checked = transfer.read_import(Path(sys.argv[1]))
rows = sum(1 for _ in checked.rows)
print(rows, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def _check_peak(file: Path) -> tuple[int, int]:
    """Rows found and peak memory (bytes) of a child that checks ``file`` and reads its rows."""
    result = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, str(file)],
        capture_output=True,
        text=True,
        timeout=CLI_DEADLINE_S * 2,
        preexec_fn=_cap_memory,  # a plain rlimit, set before exec
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows, peak = map(int, result.stdout.split())
    return rows, peak


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_a_large_file_is_checked_in_bounded_memory(tmp_path: Path, fmt: str) -> None:
    """A 40 MB file adds far less than its size to the peak (the old reader: over 3x)."""
    write = write_array if fmt == "json" else write_jsonl
    rows = memories(2_000, content_bytes=20_000)
    big = write(tmp_path / f"big.{fmt}", rows)
    tiny = write(tmp_path / f"tiny.{fmt}", rows[:1])
    size = big.stat().st_size
    assert size > 30_000_000
    tiny_rows, tiny_peak = _check_peak(tiny)
    big_rows, big_peak = _check_peak(big)
    assert (tiny_rows, big_rows) == (1, len(rows))
    added = big_peak - tiny_peak
    assert added < MAX_PEAK_SHARE * size, (
        f"checking {size:,} bytes peaked {added:,} bytes over a 1-row file "
        f"({tiny_peak:,} -> {big_peak:,}); the bound is {MAX_PEAK_SHARE:.0%} of the size"
    )


def test_a_large_array_imports_exactly(tmp_path: Path, data_dir: Path) -> None:
    """Items cross the reader's chunks (with two-byte characters cut there): all arrive whole."""
    rows = memories(300, content_bytes=12_000)
    file = write_array(tmp_path / "big.json", rows)
    assert file.stat().st_size > 3 * (1 << 20)
    report = cli_json("import", file, data_dir=data_dir)
    assert (report["read"], report["imported"]) == (300, 300)
    with Store.open(data_dir, create=False) as store:
        got = {m.id: m.content for m in store.iter_memories()}
    assert got == {r["id"]: r["content"] for r in rows}


def test_a_byte_that_is_not_utf8_deep_in_an_array_is_named(tmp_path: Path) -> None:
    rows = memories(200, content_bytes=10_000)
    file = write_array(tmp_path / "bad.json", rows)
    data = bytearray(file.read_bytes())
    offset = data.index(b'"m-150"')
    data[offset + 2] = 0xFF
    file.write_bytes(bytes(data))
    with pytest.raises(ImportFileError) as info:
        transfer.read_import(file)
    assert info.value.message == (
        f"{file}, line 152: not UTF-8 text (byte 0xff at offset {offset + 2} of the file)"
    )


# -- all or nothing, then short batches that a second run completes --------------------------------


def test_a_bad_last_line_of_a_large_file_imports_nothing(tmp_path: Path, data_dir: Path) -> None:
    rows = memories(1_203)
    file = write_jsonl(tmp_path / "bad-end.jsonl", rows)
    with file.open("a", encoding="utf-8") as f:
        f.write('{"id": "last", "content": "c", "stability": NaN}\n')
    run_cli("ingest", "already here", data_dir=data_dir)
    result = run_cli("import", file, data_dir=data_dir)
    assert result.returncode == BAD_INPUT
    assert f"{file}, line 1204: stability must be a finite number" in result.stderr
    assert count(data_dir) == 1


def test_an_import_killed_midway_is_completed_by_running_it_again(
    tmp_path: Path, data_dir: Path
) -> None:
    """kill -9 between batches (each held 150 ms by the write-delay fault), then run again:
    every memory once, one ``imported`` entry each, the file's history once."""
    source = tmp_path / "source"
    with Store.open(source) as store:
        for i in range(3):
            store.ingest(f"history entry source {i}")
    exported = tmp_path / "export.jsonl"
    assert run_cli("export", "-o", exported, data_dir=source).returncode == 0
    rows = memories(3_000)
    with exported.open("a", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    total = 3_000 + 3
    run_cli("ingest", "already here", data_dir=data_dir)
    env = {**os.environ, "VESTIGE_FAULT_WRITE_DELAY_MS": "150"}
    proc = subprocess.Popen(
        [*CLI, "import", str(exported), "--data-dir", str(data_dir)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + CLI_DEADLINE_S
        seen = 1
        while seen <= 1 + transfer.IMPORT_BATCH_ROWS and time.monotonic() < deadline:
            assert proc.poll() is None, "the import ended before it could be interrupted"
            time.sleep(0.05)
            seen = count(data_dir)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=CLI_DEADLINE_S)
    interrupted = count(data_dir)
    assert 1 < interrupted < 1 + total, interrupted
    again = cli_json("import", exported, data_dir=data_dir)
    assert again["imported"] == 1 + total - interrupted
    assert again["skipped_existing"] == interrupted - 1
    assert again["changes_imported"] == 0  # the history went in before the memories
    with Store.open(data_dir, create=False) as store:
        ids = {m.id: m.content for m in store.iter_memories()}
        changes = all_changes(store)
    assert len(ids) == 1 + total
    history = [c for c in changes if c.origin is not None]
    assert len(history) == 3  # the source's three "created" entries, once
    imported = [c.memory_id for c in changes if c.kind == "imported"]
    assert len(imported) == len(set(imported)) == total
    assert set(imported) == {i for i, content in ids.items() if content != "already here"}


def all_changes(store: Store) -> list[Change]:
    found: list[Change] = []
    while True:
        page = store.changes(
            after_seq=found[-1].seq if found else 0, limit=1_000, oldest_first=True
        )
        if not page.changes:
            return found
        found.extend(page.changes)
