"""`vestige-mcp` start-up on an unusable data directory: one clear line, exit 4, no traceback.

Each fault is real: a tmpfs filled to the last byte, a path part of 300 bytes, a parent
folder this user may not enter (as root, the server runs without the capabilities that let
root ignore permissions, so the kernel refuses it as it would refuse anyone else).  The CLI
is run on the same directory to show that both faces say the same thing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Final

import pytest

from tests.cli_helpers import cli_json, run_cli
from tests.fs_helpers import fill, small_tmpfs, tree
from tests.server_helpers import server_command, server_env
from vestige.server import EXIT_CONFIG

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

START_DEADLINE_S: Final = 60.0
CLI_USAGE: Final = 2  # the CLI's code for an unusable --data-dir
#: Root ignores directory permissions through these capabilities; without them it cannot.
_DAC_CAPS: Final = "-dac_override,-dac_read_search"


def start_server(
    data_dir: Path, home: Path, *, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Start a real vestige-mcp; it must give up on its own (stdin stays open)."""
    home.mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [*prefix, *server_command("--data-dir", str(data_dir))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=server_env(home),
        cwd=home,
    )
    try:
        out, err = proc.communicate(timeout=START_DEADLINE_S)
    finally:
        if proc.poll() is None:
            proc.kill()  # this pid only
            proc.wait(timeout=10)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def assert_one_clear_line(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if not line.startswith("20")]  # logs
    assert lines[0].startswith("vestige-mcp: "), result.stderr
    assert any(line.startswith("Hint: ") for line in lines), result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr
    assert result.stdout == ""  # nothing on the protocol stream


def test_a_full_disk_under_an_existing_database(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "small", size="2m") as mount:
        data_dir = mount / "data"
        cli_json("ingest", "written before the disk filled", data_dir=data_dir)
        fill(mount)
        result = start_server(data_dir, tmp_path / "home")
        assert_one_clear_line(result, "No space left on device", "Free some space")
        (mount / "filler").unlink()  # space again: nothing was lost
        assert cli_json("stats", data_dir=data_dir)["total_memories"] == 1


def test_a_full_disk_for_a_new_data_dir(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "small", size="1m") as mount:
        fill(mount)
        result = start_server(mount / "new", tmp_path / "home")
        assert_one_clear_line(result, "No space left on device", "Free some space")


def test_a_path_part_of_300_bytes(tmp_path: Path) -> None:
    data_dir = tmp_path / "p" / ("x" * 300)
    result = start_server(data_dir, tmp_path / "home")
    assert_one_clear_line(result, "a part of 300 bytes", "Choose a shorter --data-dir")
    assert not (tmp_path / "p").exists()  # nothing made on the way
    cli = run_cli("ingest", "hello", data_dir=data_dir)
    assert cli.returncode == CLI_USAGE, cli.stderr
    assert "a part of 300 bytes" in cli.stderr
    assert not (tmp_path / "p").exists()


def test_a_path_longer_than_sqlite_opens(tmp_path: Path) -> None:
    data_dir = tmp_path.joinpath("q", *["d" * 120] * 4)
    result = start_server(data_dir, tmp_path / "home")
    assert_one_clear_line(result, "too long: SQLite opens paths of at most")
    assert tree(tmp_path) == {"home"}


def _without_root_privilege() -> tuple[str, ...]:
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: root would enter any folder")
    return ("setpriv", f"--bounding-set={_DAC_CAPS}", f"--inh-caps={_DAC_CAPS}")


def test_a_parent_folder_this_user_may_not_enter(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    closed.mkdir()
    closed.chmod(0o600)  # readable, not searchable: nothing inside can be reached
    try:
        result = start_server(closed / "data", tmp_path / "home", prefix=_without_root_privilege())
        assert_one_clear_line(result, f"this user may not enter {closed}", "chmod u+x")
    finally:
        closed.chmod(0o700)
    assert list(closed.iterdir()) == []
