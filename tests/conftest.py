"""Shared fixtures: every test gets its own temp data directory, never the user's real one."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest

from tests.process_helpers import WorkerPool
from vestige import Store
from vestige.config import DATA_DIR_ENV


def pytest_report_header() -> list[str]:
    return [
        f"python {sys.version.split()[0]}, SQLite {apsw.sqlite_lib_version()} (apsw "
        f"{apsw.apsw_version()}), {platform.platform()}"
    ]


@pytest.fixture(autouse=True)
def _no_real_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A test that forgets --data-dir lands in a temp home, never in the user's memory."""
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home" / ".local" / "share"))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    return path


@pytest.fixture
def store(data_dir: Path) -> Iterator[Store]:
    s = Store.open(data_dir)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def child_env(data_dir: Path) -> dict[str, str]:
    """Environment for child processes: this interpreter's, pointed at the temp data dir."""
    env = dict(os.environ)
    env[DATA_DIR_ENV] = str(data_dir)
    return env


@pytest.fixture
def worker_pool(tmp_path: Path, child_env: dict[str, str]) -> Iterator[WorkerPool]:
    """Real worker processes for this test; every one is reaped (then SIGKILLed) at the end."""
    pool = WorkerPool(tmp_path / "workers", env=child_env)
    try:
        yield pool
    finally:
        pool.close()
