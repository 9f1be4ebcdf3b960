"""A full ext4 with 1 KiB blocks after a kill -9: every command says the disk is full.

The first process to open a WAL database after a kill -9 rebuilds ``-shm``: SQLite
truncates it and grows it again by writing one byte at the end of each 4 KiB page.  With
1 KiB blocks the other three blocks of each page stay holes, and on a full disk the first
touch of one through SQLite's mapping kills the process with SIGBUS (exit 135, no word to
the user).  The disk here is a real loop-mounted ext4 made with ``mkfs.ext4 -b 1024 -m 0``,
filled to the last block under a real server that is then killed with SIGKILL.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Final

import pytest

from tests.cli_helpers import cli_json, run_cli
from tests.fs_helpers import fill, small_ext4
from tests.server_helpers import ServerProcess
from tests.test_server_startup_faults import start_server
from vestige.cli._exit import ExitCode

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

WRITES: Final = 40


def _text(i: int) -> str:
    return f"memory {i}: " + " ".join(f"w{(i * 37 + k) % 1009}" for k in range(300))


def test_every_command_after_a_kill_9_on_a_full_small_block_disk_names_the_disk(
    tmp_path: Path,
) -> None:
    with small_ext4(tmp_path / "e4", size_mib=8, block_bytes=1024) as mount:
        data_dir = mount / "data"
        home = tmp_path / "home"
        home.mkdir()
        cli_json("ingest", "written before the server", data_dir=data_dir)
        srv = ServerProcess(data_dir, home=home)
        try:
            srv.initialize()
            for i in range(WRITES // 2):
                assert not srv.call_tool("ingest", {"content": _text(i)})["isError"]
            fill(mount)
            refused = sum(
                bool(srv.call_tool("ingest", {"content": _text(i)})["isError"])
                for i in range(WRITES // 2, WRITES)
            )
            srv.proc.kill()  # SIGKILL: -wal and -shm stay as they are
            srv.proc.wait(10)
        finally:
            srv.stop()
        print(f"{refused} writes refused on the full disk")
        for command in (("stats",), ("search", "memory"), ("ingest", "one more")):
            result = run_cli(*command, data_dir=data_dir)
            assert result.returncode != -signal.SIGBUS, f"{command}: killed by SIGBUS"
            assert result.returncode == ExitCode.ERROR, (command, result.stderr)
            assert f"the disk holding {data_dir} is full" in result.stderr, result.stderr
        server = start_server(data_dir, home)
        assert server.returncode not in (-signal.SIGBUS, 128 + signal.SIGBUS), server.stderr
        assert "is full" in server.stderr, server.stderr
        assert "Traceback" not in server.stderr, server.stderr
        (mount / "filler").unlink()  # space again: everything acknowledged is there
        stats = cli_json("stats", data_dir=data_dir)
        assert stats["total_memories"] >= 1 + WRITES // 2, stats
        assert cli_json("health", data_dir=data_dir)["quick_check"] == "ok"
