"""A ``vestige.db`` shared by two data directories: every command refuses it, doctor names it.

Through a hard link, SQLite keeps a ``-wal`` beside each name, so two CLI writers on the two
names wrote one file through two WALs and corrupted it ("wrong # of entries in index").
Through a symbolic link into another directory, a command wrote under the link directory's
own write gate.  The server already refused both; these are the real CLI, run concurrently.
"""

from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

import apsw
import pytest

from tests.cli_helpers import CLI, cli_json, run_cli
from vestige.cli._exit import ExitCode

pytestmark = pytest.mark.timeout(240)

WRITES: Final = 12


def _ingest_many(data_dir: Path) -> list[subprocess.CompletedProcess[str]]:
    return [
        subprocess.run(
            [
                *CLI,
                "ingest",
                f"via {data_dir.name} {i} " + "z" * 3000,
                "--force-create",
                "--data-dir",
                str(data_dir),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        for i in range(WRITES)
    ]


def _integrity(db: Path) -> str:
    conn = apsw.Connection(str(db))
    try:
        return "; ".join(str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall())
    finally:
        conn.close()


@pytest.mark.parametrize("kind", ["hard", "symbolic"])
def test_concurrent_writers_on_two_linked_names_are_refused(tmp_path: Path, kind: str) -> None:
    a, c = tmp_path / "a", tmp_path / "c"
    cli_json("ingest", "the only original", data_dir=a)
    c.mkdir(mode=0o700)
    if kind == "hard":
        os.link(a / "vestige.db", c / "vestige.db")
        dirs = (a, c)
        needle = "has 2 hard links"
    else:
        (c / "vestige.db").symlink_to(a / "vestige.db")
        dirs = (c, c)  # both writers go through the link; a's own name is not at fault
        needle = "is a symbolic link to"
    with ThreadPoolExecutor(2) as pool:
        results = [r for batch in pool.map(_ingest_many, dirs) for r in batch]
    for result in results:
        assert "Traceback" not in result.stderr, result.stderr
        assert result.returncode == ExitCode.USAGE, result.stdout + result.stderr
        assert needle in result.stderr, result.stderr
    for command in (("stats",), ("search", "original"), ("export", "-o", tmp_path / "x.jsonl")):
        refused = run_cli(*command, data_dir=c)
        assert refused.returncode == ExitCode.USAGE, (command, refused.stderr)
        assert needle in refused.stderr
    assert not (tmp_path / "x.jsonl").exists()
    assert not (c / "vestige.db-wal").exists()
    doctor = run_cli("doctor", "--json", data_dir=c)
    checks = {ch["name"]: ch for ch in json.loads(doctor.stdout)["checks"]}
    assert checks["database"]["status"] == "fail", checks
    assert needle in checks["database"]["detail"], checks["database"]
    assert "unable to open" not in doctor.stdout
    if kind == "hard":
        os.unlink(c / "vestige.db")
    assert _integrity(a / "vestige.db") == "ok"
    assert cli_json("stats", data_dir=a)["total_memories"] == 1
