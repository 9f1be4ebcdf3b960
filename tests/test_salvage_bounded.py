"""Salvage of a database whose b-trees lie: it ends, in bounded memory, and says what it lost.

The damage is made byte by byte in a closed file (``tests.damage_helpers``): a child pointer
of the memories' root page pointing back at the root (a cursor walking it goes round), and
a changelog whose last leaf is unreadable while ``sqlite_sequence`` claims 10^12 entries.  A
salvage that trusted either ran for hours, or grew to gigabytes and died of MemoryError.
"""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import time
from pathlib import Path
from typing import Final

import pytest

from tests.cli_helpers import CLI, cli_json
from tests.damage_helpers import loop_back_to_root, overwrite_pages, pages_of, set_sequence
from vestige.cli._exit import ExitCode
from vestige.store import Store

pytestmark = pytest.mark.timeout(300)

MEMORIES: Final = 300
#: The address space the salvage may use: far more than it needs, far less than a runaway.
MEMORY_LIMIT_BYTES: Final = 1 << 30
#: Only to stop a runaway salvage (the faulty one ran for hours); never a yardstick.
HANG_S: Final = 120.0


def _fill(data_dir: Path) -> set[str]:
    with Store.open(data_dir) as store:
        return {
            store.ingest(f"memory {i}: " + "the quick brown fox jumps over the lazy dog " * 12).id
            for i in range(MEMORIES)
        }


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))


@pytest.fixture
def lying(data_dir: Path) -> tuple[Path, set[str]]:
    ids = _fill(data_dir)
    db = data_dir / "vestige.db"
    set_sequence(db, "changelog", 10**12)
    overwrite_pages(db, pages_of(db, "changelog")[-1:])
    loop_back_to_root(db, "knowledge_nodes", cell=5)
    return data_dir, ids


def test_salvage_of_looping_and_lying_b_trees_ends_and_reports_the_loss(
    lying: tuple[Path, set[str]], tmp_path: Path
) -> None:
    data_dir, ids = lying
    rescue = tmp_path / "rescue.jsonl"
    result = subprocess.run(
        [*CLI, "salvage", "-o", str(rescue), "--json", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=HANG_S,
        preexec_fn=_limited,
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == ExitCode.UNHEALTHY, result.stderr
    report = json.loads(result.stdout)
    lines = [json.loads(line) for line in rescue.read_text(encoding="utf-8").splitlines()]
    saved = [m["id"] for m in lines if "change" not in m]
    print(f"salvaged {len(saved)} of {len(ids)}; lost {report['lost_memories']}")
    assert len(saved) == len(set(saved)) == report["memories"]  # each once, loop or not
    assert set(saved) <= ids
    assert 0 < report["lost_memories"] < MEMORIES // 5  # one leaf, not the table
    assert set(report["lost_ids"]) == ids - set(saved)
    assert report["lost_changes"] is None  # the claimed top cannot be trusted
    changelog_spans = report["unreadable_seq_ranges"]["changelog"]
    assert changelog_spans[-1][1] == 10**12
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]
    imported = cli_json("import", rescue, data_dir=tmp_path / "fresh")
    assert imported["imported"] == len(saved)


def test_a_terminated_salvage_leaves_no_partial_file(
    lying: tuple[Path, set[str]], tmp_path: Path
) -> None:
    """SIGTERM (and Ctrl-C) end a salvage, an export or a backup with its temporary file
    removed.  The signal is sent as soon as the temporary file appears."""
    data_dir, _ = lying
    out = tmp_path / "out"
    landed = 0
    for attempt in range(5):
        out.mkdir()
        proc = subprocess.Popen(
            [*CLI, "salvage", "-o", str(out / "r.jsonl"), "--data-dir", str(data_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + HANG_S
        while proc.poll() is None and not any(out.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.001)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # this pid only
        _, err = proc.communicate(timeout=HANG_S)
        assert "Traceback" not in err, err
        if proc.returncode == -signal.SIGTERM or proc.returncode == 128 + signal.SIGTERM:
            landed += 1
            assert list(out.iterdir()) == [], f"attempt {attempt}: {list(out.iterdir())}"
        for leftover in out.iterdir():
            leftover.unlink()
        out.rmdir()
        if landed:
            break
    assert landed, "salvage always finished before SIGTERM could land"
