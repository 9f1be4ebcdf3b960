"""Every face names the same rescue for a damaged database: salvage first (``rescue_hint``).

`vestige stats` used to say "restore the newest backup with `vestige restore FILE`", which
restore refuses without --move-damaged and which skips salvage; `vestige health` named no
step at all.  The damage is real: random bytes over leaves of a closed database.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli_helpers import run_cli
from tests.damage_helpers import overwrite_pages, pages_of
from vestige.cli._exit import ExitCode
from vestige.store import Store

pytestmark = pytest.mark.timeout(120)


def test_stats_and_health_on_a_damaged_database_name_salvage(data_dir: Path) -> None:
    with Store.open(data_dir) as store:
        for i in range(200):
            store.ingest(f"memory {i}: " + "the quick brown fox jumps over the lazy dog " * 12)
    db = data_dir / "vestige.db"
    leaves = pages_of(db, "knowledge_nodes")
    # stats reads kept figures (migration 6), not every row: damage them too, so that
    # stats meets the damage as health's quick_check does.
    overwrite_pages(db, leaves[1:-1] + pages_of(db, "memory_totals"))
    salvage = f"vestige salvage --data-dir {data_dir} -o rescue.jsonl"
    stats = run_cli("stats", data_dir=data_dir)
    assert stats.returncode == ExitCode.UNHEALTHY, stats.stderr
    assert salvage in stats.stderr, stats.stderr
    assert "restore FILE`" not in stats.stderr
    health = run_cli("health", "--json", data_dir=data_dir)
    assert health.returncode == ExitCode.UNHEALTHY, health.stderr
    report = json.loads(health.stdout)
    assert report["status"] == "damaged", report
    assert any(salvage in w for w in report["warnings"]), report["warnings"]
