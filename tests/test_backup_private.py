"""Backups nobody else can read, even mid-copy; full disks blamed on the right file.

- A backup is copied inside a private folder (0700) beside its target, into a file Vestige
  creates (0600) before SQLite opens it.  The test stops a real `vestige backup` with
  SIGSTOP while the copy is in progress and looks at what is on disk at that moment, as
  root and as another user.
- A link planted under the temporary name is never followed.
- A backup or an export onto a real, full tmpfs names that disk's file, not the database.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pytest

from tests.cli_helpers import CLI, CLI_DEADLINE_S, cli_json, run_cli
from tests.fs_helpers import fill, small_tmpfs, tree
from vestige import Store, transfer
from vestige.errors import InvalidInput

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ERROR = 1
#: Memories of this size make a database big enough for a copy to take a while.
BIG_ROWS: Final = 3_000
BIG_ROW_BYTES: Final = 8_000
#: Runs of `vestige backup` tried before giving up on stopping one mid-copy.
MID_COPY_ATTEMPTS: Final = 8
NOBODY: Final = 65534
PRIVATE_MEMORY: Final = "the launch code is 0000"


def big_database(data_dir: Path, tmp_path: Path) -> None:
    """A database of ~24 MB (through `vestige import`), with a secret memory in it."""
    rows = [{"id": "secret", "content": PRIVATE_MEMORY}]
    rows += [{"id": f"m{i}", "content": f"{i} " + "x" * BIG_ROW_BYTES} for i in range(BIG_ROWS)]
    source = tmp_path / "big.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = run_cli("import", source, data_dir=data_dir)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A folder every user may enter and write, like /tmp (1777), outside pytest's 0700 tree."""
    folder = Path(tempfile.mkdtemp(prefix="vestige-shared-", dir="/tmp"))
    folder.chmod(0o1777)
    try:
        yield folder
    finally:
        for path in sorted(folder.rglob("*"), reverse=True):
            if path.is_dir() and not path.is_symlink():
                path.rmdir()
            else:
                path.unlink()
        folder.rmdir()


def _temp_entries(folder: Path) -> list[tuple[Path, os.stat_result]]:
    """Every hidden partial entry in ``folder`` and everything inside one (lstat)."""
    found: list[tuple[Path, os.stat_result]] = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if ".partial-" not in entry.name:
                    continue
                path = Path(entry.path)
                found.append((path, path.lstat()))
                if stat.S_ISDIR(found[-1][1].st_mode):
                    found.extend((p, p.lstat()) for p in path.iterdir())
    except FileNotFoundError:
        pass  # vanished between the listing and the lstat: the copy just ended
    return found


def _read_as_nobody(path: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["cat", str(path)], user=NOBODY, capture_output=True, timeout=30, check=False
    )


def _stop_mid_copy(data_dir: Path, folder: Path) -> dict[str, Any] | None:
    """Run one backup into ``folder``; SIGSTOP it once its copy has bytes; report what is seen.

    None when the backup finished before the poll caught it mid-copy.
    """
    proc = subprocess.Popen(
        [*CLI, "backup", str(folder), "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        umask=0o022,  # the usual umask: a file SQLite made itself would be 0644
    )
    seen: dict[str, Any] | None = None
    try:
        deadline = time.monotonic() + CLI_DEADLINE_S
        while proc.poll() is None and time.monotonic() < deadline:
            entries = _temp_entries(folder)
            if any(stat.S_ISREG(s.st_mode) and s.st_size > 0 for _, s in entries):
                os.kill(proc.pid, signal.SIGSTOP)  # this pid only
                try:
                    entries = _temp_entries(folder)  # as they are while it cannot move
                    seen = {"entries": entries, "reads": {}}
                    if os.geteuid() == 0:
                        for path, st in entries:
                            if stat.S_ISREG(st.st_mode):
                                seen["reads"][path] = _read_as_nobody(path)
                finally:
                    os.kill(proc.pid, signal.SIGCONT)
                break
        _out, err = proc.communicate(timeout=CLI_DEADLINE_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err
    return seen


def test_a_backup_mid_copy_is_private_to_its_owner(
    data_dir: Path, tmp_path: Path, shared_folder: Path
) -> None:
    big_database(data_dir, tmp_path)
    caught = None
    for _ in range(MID_COPY_ATTEMPTS):
        caught = _stop_mid_copy(data_dir, shared_folder)
        if caught is not None:
            break
    assert caught is not None, f"no backup was caught mid-copy in {MID_COPY_ATTEMPTS} runs"
    for path, st in caught["entries"]:
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            assert mode == 0o700, f"{path} is {mode:04o} mid-copy"
        else:
            assert stat.S_ISREG(st.st_mode), f"{path} is not a regular file"
            assert mode == 0o600, f"{path} is {mode:04o} mid-copy"
            assert path.parent != shared_folder, f"{path} lies open in the shared folder"
    for path, read in caught["reads"].items():
        assert read.returncode != 0, f"another user read {len(read.stdout)} bytes of {path}"
        assert PRIVATE_MEMORY.encode() not in read.stdout
    # Each run left one whole backup, 0600, and no temporary entry.
    backups = sorted(shared_folder.iterdir())
    assert backups
    assert all(".partial-" not in p.name for p in backups)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in backups)


def test_a_link_planted_at_the_temporary_name_is_not_followed(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = tmp_path / "elsewhere" / "victim.db"
    victim.parent.mkdir()
    victim.write_text("someone else's file")
    folder = tmp_path / "backups-here"
    folder.mkdir()
    planted = folder / ".vestige.partial-planted"
    planted.symlink_to(victim)
    names = iter([planted, folder / ".vestige.partial-fresh"])
    # The next temporary names are the planted link, then a free one.
    monkeypatch.setattr(transfer, "_temp_beside", lambda _folder, _stem: next(names))
    with Store.open(data_dir) as store:
        store.ingest("worth a backup")
        made = store.backup(folder)
    assert victim.read_text() == "someone else's file"
    assert planted.is_symlink()  # not ours: left alone
    assert made.parent == folder
    assert stat.S_IMODE(made.stat().st_mode) == 0o600
    assert sorted(p.name for p in folder.iterdir()) == sorted([planted.name, made.name])


def test_links_at_every_temporary_name_fail_cleanly(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = tmp_path / "victim.db"
    victim.write_text("someone else's file")
    folder = tmp_path / "backups-here"
    folder.mkdir()
    planted = folder / ".vestige.partial-planted"
    planted.symlink_to(victim)
    monkeypatch.setattr(transfer, "_temp_beside", lambda _folder, _stem: planted)
    with Store.open(data_dir) as store:
        store.ingest("worth a backup")
        with pytest.raises(InvalidInput) as info:
            store.backup(folder / "mine.db")
    assert "no free temporary name" in info.value.message
    assert victim.read_text() == "someone else's file"
    assert [p.name for p in folder.iterdir()] == [planted.name]


@pytest.mark.parametrize("mask", [0o022, 0o000])
def test_backups_folders_are_0700_whatever_the_umask(data_dir: Path, mask: int) -> None:
    cli_json("ingest", "to keep", data_dir=data_dir)
    env = dict(os.environ)
    result = subprocess.run(
        [*CLI, "backup", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        env=env,
        umask=mask,
        timeout=CLI_DEADLINE_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE((data_dir / "backups").stat().st_mode) == 0o700


# -- full disks ---------------------------------------------------------------------------


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs, filled to the last byte."""
    with small_tmpfs(tmp_path / "small", size="1m") as mount:
        fill(mount)
        yield mount


def test_a_backup_onto_a_full_other_disk_names_that_disk(data_dir: Path, full_disk: Path) -> None:
    cli_json("ingest", "kept safe on the big disk", data_dir=data_dir)
    target = full_disk / "b.db"
    result = run_cli("backup", target, data_dir=data_dir)
    assert result.returncode == ERROR, result.stderr
    assert f"the disk holding {target} is full" in result.stderr
    assert f"nothing was changed in {data_dir / 'vestige.db'}" in result.stderr
    assert "rolled back" not in result.stderr
    assert "Hint: Free some space on that disk" in result.stderr
    assert tree(full_disk) == {"filler"}  # no partial file or folder left on it
    assert cli_json("stats", data_dir=data_dir)["total_memories"] == 1


def test_a_backup_that_outgrows_the_other_disk_mid_copy(data_dir: Path, tmp_path: Path) -> None:
    big_database(data_dir, tmp_path)  # ~24 MB: does not fit in 4 MiB
    with small_tmpfs(tmp_path / "small", size="4m") as mount:
        result = run_cli("backup", mount, data_dir=data_dir)
        assert result.returncode == ERROR, result.stderr
        assert f"the disk holding {mount} is full" in result.stderr
        assert tree(mount) == set()


def test_an_export_onto_a_full_disk_names_the_file(data_dir: Path, full_disk: Path) -> None:
    for n in range(20):
        cli_json("ingest", f"memory {n} " + "y" * 500, data_dir=data_dir)
    target = full_disk / "out.jsonl"
    result = run_cli("export", "-o", target, data_dir=data_dir)
    assert result.returncode == ERROR, result.stderr
    assert f"the disk holding {target} is full" in result.stderr
    assert "Hint:" in result.stderr
    assert tree(full_disk) == {"filler"}


def test_an_export_to_stdout_on_a_full_disk_says_so(data_dir: Path, full_disk: Path) -> None:
    for n in range(20):
        cli_json("ingest", f"memory {n} " + "y" * 500, data_dir=data_dir)
    # `vestige export > full/out.jsonl`: the shell's redirection, the disk full.
    with (full_disk / "filler").open("ab") as out:
        result = subprocess.run(
            [*CLI, "export", "--data-dir", str(data_dir)],
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            timeout=CLI_DEADLINE_S,
            check=False,
        )
    assert result.returncode == ERROR, result.stderr
    assert "Traceback" not in result.stderr
    assert "Exception ignored" not in result.stderr
    assert "the disk receiving the export (standard output) is full" in result.stderr
