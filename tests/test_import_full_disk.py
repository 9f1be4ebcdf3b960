"""An import that a full disk stops midway says how far it got and how to finish (issue 11)."""

from __future__ import annotations

import json
import subprocess
from typing import TYPE_CHECKING

from tests.cli_helpers import cli_json, run_cli
from tests.fs_helpers import small_tmpfs

if TYPE_CHECKING:
    from pathlib import Path

ROWS = 4_000


def test_an_import_stopped_by_a_full_disk_says_how_far_it_got_and_finishes_when_rerun(
    tmp_path: Path,
) -> None:
    rows = tmp_path / "rows.jsonl"
    with rows.open("w", encoding="utf-8") as f:
        for i in range(ROWS):
            f.write(json.dumps({"id": f"row-{i}", "content": f"memory {i} " + "x" * 400}) + "\n")
    with small_tmpfs(tmp_path / "disk", size="6m") as disk:
        data_dir = disk / "data"
        assert run_cli("ingest", "the first memory", data_dir=data_dir).returncode == 0
        stopped = run_cli("import", rows, data_dir=data_dir)
        assert stopped.returncode != 0, stopped.stdout
        assert "is full" in stopped.stderr
        assert f"of {ROWS:,} memories (and 0 changelog entries) were imported" in stopped.stderr
        assert "run the same import again" in stopped.stderr
        # Room again (the same mount, grown): the same command completes the import.
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        again = cli_json("import", rows, data_dir=data_dir)
        assert again["imported"] + again["skipped_existing"] == ROWS
        assert again["skipped_existing"] > 0  # the batches of the first run stayed
        assert cli_json("stats", data_dir=data_dir)["total_memories"] == ROWS + 1
