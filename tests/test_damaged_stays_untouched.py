"""A server that found its database damaged writes nothing more to it, not even at shutdown.

It used to checkpoint the WAL into the damaged file when it stopped, and delete ``-wal`` and
``-shm``: the frames a kill -9 left in the WAL went into a file whose pages were already
wrong, and a later salvage had no WAL left to read them from.  Real kill -9, real damage
(random bytes over a leaf of the database file, with the WAL from before the kill kept).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.damage_helpers import overwrite_pages, pages_of
from tests.test_unclean_start import _fill, _kill_9, _started, _tool

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_server_that_refuses_writes_for_damage_never_checkpoints(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    home = tmp_path / "home"
    home.mkdir()
    _fill(data_dir)
    first, _ = _started(data_dir, home)
    for i in range(5):
        failed, text = _tool(first, "ingest", {"content": f"only in the WAL {i}"})
        assert not failed, text
    _kill_9(first)
    db, wal = data_dir / "vestige.db", data_dir / "vestige.db-wal"
    assert wal.stat().st_size > 0  # frames the kill left behind
    leaves = pages_of(db, "knowledge_nodes")
    overwrite_pages(db, [leaves[len(leaves) // 3]])  # an old leaf: not in the WAL
    db_before, wal_before = _sha(db), _sha(wal)

    second, _ = _started(data_dir, home)
    with second:
        failed, text = _tool(second, "ingest", {"content": "must not be written"})
        assert failed, text
        assert "writes are refused" in text, text
    # A clean stop (stdin closed): the shutdown checkpoint and the close are where it wrote.
    log = second.stderr()
    assert "DAMAGED DATABASE" in log, log
    assert _sha(db) == db_before, "the damaged file was written at shutdown"
    assert wal.exists(), "the WAL was checkpointed away at shutdown"
    assert _sha(wal) == wal_before
