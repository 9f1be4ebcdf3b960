"""What the CLI prints of a memory cannot drive the terminal; what it reads from stdin is named.

Memory content comes from agents and files: an escape sequence in it, printed raw, retitles
or clears the terminal (C0 ``ESC``, and the one-byte C1 CSI ``0x9b``).  Text output shows such
characters escaped; ``--json`` and export stay exact (a parser reads back the same string)
while holding no raw control either.  ``ingest -`` reads bytes and names the first one that
is not UTF-8.
"""

from __future__ import annotations

import json
import re
import subprocess
from typing import TYPE_CHECKING

import pytest

from tests.cli_helpers import CLI, CLI_DEADLINE_S, cli_json, run_cli

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]

#: A title change, a screen clear through the C1 CSI, a bell and a right-to-left override.
HOSTILE = "giraffe report \x1b]0;pwned\x07 then \x9b2J cleared \u202eright-to-left\u202c done"
#: Raw control characters a terminal acts on (C0 but line breaks and tabs, DEL, C1, bidi).
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
BAD_INPUT = 5


def ingest_bytes(data: bytes, data_dir: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(
        [*CLI, "ingest", "-", *args, "--data-dir", str(data_dir)],
        input=data,
        capture_output=True,
        timeout=CLI_DEADLINE_S,
        check=False,
    )
    assert b"Traceback" not in result.stderr, result.stderr
    return result


@pytest.fixture
def hostile(data_dir: Path) -> str:
    """The id of a memory whose content is ``HOSTILE``, ingested as UTF-8 bytes on stdin."""
    done = ingest_bytes(HOSTILE.encode(), data_dir, "--json")
    assert done.returncode == 0, done.stderr
    memory_id: str = json.loads(done.stdout)["memory"]["id"]
    return memory_id


@pytest.mark.parametrize(
    "command",
    [("search", "giraffe"), ("edit", "ID", "--tags", "zoo")],
    ids=["search", "edit"],
)
def test_text_output_escapes_control_characters(
    data_dir: Path, hostile: str, command: tuple[str, ...]
) -> None:
    args = [hostile if a == "ID" else a for a in command]
    result = run_cli(*args, data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    assert not RAW_CONTROL.search(result.stdout), repr(result.stdout)
    assert "\\x1b]0;pwned\\x07" in result.stdout
    if command[0] == "search":
        assert "\\x9b2J" in result.stdout
        assert "\\u202eright-to-left" in result.stdout


def test_json_output_is_exact_and_holds_no_raw_control(data_dir: Path, hostile: str) -> None:
    result = run_cli("search", "giraffe", "--json", data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    assert not RAW_CONTROL.search(result.stdout), repr(result.stdout)
    (hit,) = json.loads(result.stdout)["results"]
    assert hit["memory"]["id"] == hostile
    assert hit["memory"]["content"] == HOSTILE


def test_export_is_exact_inert_and_imports_back(
    data_dir: Path, hostile: str, tmp_path: Path
) -> None:
    exported = run_cli("export", data_dir=data_dir)
    assert exported.returncode == 0, exported.stderr
    assert not RAW_CONTROL.search(exported.stdout), repr(exported.stdout)
    assert "\\u009b2J" in exported.stdout
    file = tmp_path / "export.jsonl"
    file.write_text(exported.stdout, "utf-8")
    other = tmp_path / "other"
    assert cli_json("import", file, data_dir=other)["imported"] == 1
    assert [m["content"] for m in map(json.loads, exported.stdout.splitlines()[:1])] == [HOSTILE]
    (hit,) = cli_json("search", "giraffe", data_dir=other)["results"]
    assert hit["memory"]["content"] == HOSTILE


@pytest.mark.parametrize(
    ("data", "byte", "offset"),
    [
        ("café au lait".encode("latin-1"), 0xE9, 3),
        (b"\x89PNG\r\n\x1a\n\x00\x00", 0x89, 0),
    ],
    ids=["latin-1", "binary"],
)
def test_ingest_of_bytes_that_are_not_utf8_names_the_byte(
    data_dir: Path, data: bytes, byte: int, offset: int
) -> None:
    result = ingest_bytes(data, data_dir)
    assert result.returncode == BAD_INPUT
    stderr = result.stderr.decode()
    assert f"standard input is not UTF-8 text (byte 0x{byte:02x} at offset {offset})" in stderr
    assert "surrogate" not in stderr
    assert "iconv" in stderr


def test_ingest_of_endless_input_stops_at_the_content_limit(data_dir: Path) -> None:
    """``< /dev/zero`` ends with a message at once, instead of filling memory."""
    with open("/dev/zero", "rb") as zeros:
        result = subprocess.run(
            [*CLI, "ingest", "-", "--data-dir", str(data_dir)],
            stdin=zeros,
            capture_output=True,
            timeout=CLI_DEADLINE_S,
            check=False,
        )
    assert result.returncode == BAD_INPUT, result.stderr
    assert b"standard input holds more than 1,000,000 bytes" in result.stderr
    assert b"Traceback" not in result.stderr


def test_ingest_of_utf8_with_a_byte_order_mark_keeps_the_text(data_dir: Path) -> None:
    result = ingest_bytes("\ufeffcafé crème".encode(), data_dir, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["memory"]["content"] == "café crème"
