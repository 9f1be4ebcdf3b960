"""A memory on a read-only mount can be read; writes there, and files another user owns, are named.

Real faults: a small tmpfs with a data directory is remounted read-only (``mount -o
remount,ro``), and a ``vestige.db`` made by root sits in a directory that belongs to an
unprivileged user who then runs the CLI (``setpriv``).  Both need root and are skipped, with
the reason, where the test cannot mount or change user.

Before: every read command failed on ``vestige.gate.lock`` with a bare "Read-only file
system" (SQLite could have read the file), ingest and the server advised ``chmod u+rwx``,
and the other user's CLI said only "unable to open database file".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Final

import apsw
import pytest

from tests import cli_helpers
from tests.cli_helpers import CLI, CLI_DEADLINE_S, cli_json, run_cli, server_command
from tests.fs_helpers import MOUNT_DEADLINE_S, small_tmpfs
from vestige.migrations import MIGRATIONS

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.cli_helpers import Server

servers = cli_helpers.servers  # the fixture, under its own name

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow, pytest.mark.timeout(180)]

MEMORIES: Final = ("giraffes sleep standing up", "giraffes have blue tongues", "okapi kin")
UNHEALTHY: Final = 3
USAGE: Final = 2
#: The unprivileged user of the ownership test (``nobody`` on Linux).
NOBODY: Final = 65534


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file's sha256 (this process has no SQLite connection to any of them)."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()
    }


@contextlib.contextmanager
def read_only(mount: Path) -> Iterator[None]:
    subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True, timeout=MOUNT_DEADLINE_S)
    try:
        yield
    finally:
        subprocess.run(
            ["mount", "-o", "remount,rw", str(mount)], check=True, timeout=MOUNT_DEADLINE_S
        )


@pytest.fixture(params=["closed", "killed"])
def ro_data_dir(
    request: pytest.FixtureRequest, tmp_path: Path, servers: Callable[..., Server]
) -> Iterator[Path]:
    """A data directory with three memories on a tmpfs remounted read-only.

    ``closed``: the last process closed it (no -wal, no -shm: SQLite could not create its
    shared memory there).  ``killed``: a server took the last memory and was killed -9, so
    it is only in -wal, beside a -shm.
    """
    with small_tmpfs(tmp_path / "mnt", size="16m") as mount:
        data_dir = mount / "data"
        for text in MEMORIES[:2]:
            cli_json("ingest", text, data_dir=data_dir)
        if request.param == "killed":
            server = servers(data_dir)
            server.call_tool("ingest", {"content": MEMORIES[2]})
            server.kill()
            assert (data_dir / "vestige.db-wal").stat().st_size > 0
        else:
            cli_json("ingest", MEMORIES[2], data_dir=data_dir)
            assert not (data_dir / "vestige.db-wal").exists()
        with read_only(mount):
            yield data_dir


def test_read_commands_work_on_a_read_only_mount(ro_data_dir: Path) -> None:
    before = fingerprint(ro_data_dir)
    assert cli_json("stats", data_dir=ro_data_dir)["total_memories"] == 3
    hits = cli_json("search", "giraffes", data_dir=ro_data_dir)["results"]
    assert sorted(h["memory"]["content"] for h in hits) == sorted(MEMORIES[:2])
    health = cli_json("health", data_dir=ro_data_dir)
    assert (health["quick_check"], health["journal_mode"], health["warnings"]) == ("ok", "wal", [])
    exported = run_cli("export", data_dir=ro_data_dir)
    assert exported.returncode == 0, exported.stderr
    contents = [json.loads(line).get("content") for line in exported.stdout.splitlines()]
    assert sorted(c for c in contents if c) == sorted(MEMORIES)
    doctor = run_cli("doctor", "--json", data_dir=ro_data_dir)
    assert doctor.returncode == 0, doctor.stderr  # a killed server's metadata only warns
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["permissions"]["status"] == "warn"
    assert "is mounted read-only" in checks["permissions"]["detail"]
    assert "chmod" not in doctor.stdout
    failed = {name for name, c in checks.items() if c["status"] == "fail"}
    assert failed == set(), checks
    assert fingerprint(ro_data_dir) == before


def test_writes_on_a_read_only_mount_name_it_and_never_advise_chmod(ro_data_dir: Path) -> None:
    for command in (["ingest", "a new memory"], ["consolidate"]):
        result = run_cli(*command, data_dir=ro_data_dir)
        assert result.returncode != 0, command
        assert f"the filesystem holding {ro_data_dir}" in result.stderr, result.stderr
        assert "is mounted read-only" in result.stderr
        assert "mount -o remount,rw" in result.stderr
        assert "chmod" not in result.stderr
    server = subprocess.run(
        server_command(ro_data_dir),
        input=b"",
        capture_output=True,
        timeout=CLI_DEADLINE_S,
        check=False,
    )
    assert server.returncode != 0
    stderr = server.stderr.decode()
    assert "is mounted read-only" in stderr, stderr
    assert "chmod" not in stderr
    assert "Traceback" not in stderr


def test_a_new_data_dir_on_a_read_only_mount_is_refused_by_name(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "mnt") as mount, read_only(mount):
        result = run_cli("ingest", "x", data_dir=mount / "new")
    assert result.returncode == USAGE
    assert f"the filesystem holding {mount / 'new'} is mounted read-only ({mount})" in (
        result.stderr
    )
    assert "chmod" not in result.stderr


def test_an_older_database_on_a_read_only_mount_says_how_to_upgrade_it(tmp_path: Path) -> None:
    """A database of the previous schema cannot be read there (it must be upgraded first):
    the hint must not send the user to read or back it up there, which both fail."""
    with small_tmpfs(tmp_path / "mnt") as mount:
        data_dir = mount / "data"
        data_dir.mkdir(mode=0o700)
        conn = apsw.Connection(str(data_dir / "vestige.db"))
        with conn:
            for migration in MIGRATIONS[:-1]:
                for _ in conn.execute(migration.sql):
                    pass
                conn.execute(
                    "INSERT INTO schema_version VALUES (?, ?, '2026-01-01T00:00:00+00:00')",
                    (migration.version, migration.description),
                )
        conn.close()
        with read_only(mount):
            result = run_cli("stats", data_dir=data_dir)
    assert result.returncode == USAGE, result.stderr
    assert "the database must be upgraded first" in result.stderr
    assert "must be upgraded once before this version can read it" in result.stderr
    assert f"mount -o remount,rw {mount}" in result.stderr
    assert "Reading works there" not in result.stderr
    assert "Traceback" not in result.stderr


# -- a vestige.db that root made in the user's own directory ---------------------------------------


def _ownership_refusal() -> str | None:
    if not sys.platform.startswith("linux"):
        return "changing user with setpriv is a Linux test fixture"
    if os.geteuid() != 0:
        return "making a file as root and reading it as another user needs root"
    if shutil.which("setpriv") is None:
        return "no setpriv command on PATH"
    return None


def as_nobody(*args: str | os.PathLike[str], data_dir: Path) -> subprocess.CompletedProcess[str]:
    """`vestige ARGS` run as uid/gid 65534 with no supplementary groups."""
    result = subprocess.run(
        [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            *CLI,
            *map(str, args),
            "--data-dir",
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        cwd="/",
        env={**os.environ, "HOME": "/"},
        timeout=CLI_DEADLINE_S,
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


@pytest.fixture
def sudo_made(tmp_path: Path) -> Iterator[Path]:
    """The user's own data directory holding a vestige.db (and gate) that root made."""
    refusal = _ownership_refusal()
    if refusal is not None:
        pytest.skip(refusal)
    top = Path(tempfile.mkdtemp(prefix="vestige-owner-"))  # pytest's tmp_path is root's 0700
    try:
        top.chmod(0o755)
        data_dir = top / "data"
        cli_json("ingest", "made under sudo", data_dir=data_dir)  # as root
        os.chown(data_dir, NOBODY, NOBODY)
        if as_nobody("--version", data_dir=data_dir).returncode != 0:
            pytest.skip(
                "the test's user cannot run this interpreter (it lives in a private folder)"
            )
        yield data_dir
    finally:
        shutil.rmtree(top)


@pytest.mark.parametrize("command", [("stats",), ("ingest", "hello")], ids=["read", "write"])
def test_files_root_made_in_the_users_directory_are_named_with_the_fix(
    sudo_made: Path, command: tuple[str, ...]
) -> None:
    result = as_nobody(*command, data_dir=sudo_made)
    assert result.returncode == USAGE, result.stderr
    db = sudo_made / "vestige.db"
    assert "this user (nobody) may not" in result.stderr
    assert f"vestige.db, vestige.gate.lock in {sudo_made}" in result.stderr
    assert "they belong to root (uid 0)" in result.stderr
    assert f"sudo chown nobody {db}" in result.stderr
    assert "unable to open database file" not in result.stderr
    doctor = as_nobody("doctor", "--json", data_dir=sudo_made)
    assert doctor.returncode == UNHEALTHY
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert "sudo chown nobody" in checks["permissions"]["hint"]
    assert "export" not in checks.get("database", {}).get("hint", "")  # no rescue advice


# -- a SQLite file that is not Vestige's -----------------------------------------------------------


def test_a_foreign_database_is_named_and_doctor_gives_no_advice_for_it(data_dir: Path) -> None:
    data_dir.mkdir(mode=0o700)
    db = data_dir / "vestige.db"
    conn = apsw.Connection(str(db))
    conn.execute("CREATE TABLE notes(body TEXT); INSERT INTO notes VALUES ('not ours')")
    conn.close()
    db.chmod(0o644)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    result = run_cli("stats", data_dir=data_dir)
    assert result.returncode == UNHEALTHY
    assert f"Error: {db} has tables but no schema_version: it is not a Vestige database" in (
        result.stderr
    )
    doctor = run_cli("doctor", "--json", data_dir=data_dir)
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert str(db) in checks["schema"]["detail"]
    assert "leaves this file as it is" in checks["schema"]["hint"]
    hints = " ".join(c["hint"] for c in checks.values())
    assert "switches it back to WAL" not in hints
    assert f"chmod 600 {db}" not in hints
    assert checks["journal-mode"]["status"] == "ok"
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert oct(db.stat().st_mode & 0o777) == oct(0o644)


def test_a_data_directory_the_user_may_not_write_is_still_read(tmp_path: Path) -> None:
    """chmod 0500 on the user's own data directory: reads work, as on a read-only mount."""
    refusal = _ownership_refusal()
    if refusal is not None:
        pytest.skip(refusal)
    top = Path(tempfile.mkdtemp(prefix="vestige-0500-"))
    try:
        top.chmod(0o755)
        data_dir = top / "data"
        cli_json("ingest", "kept in a locked folder", data_dir=data_dir)  # as root
        for path in (data_dir, *data_dir.rglob("*")):
            os.chown(path, NOBODY, NOBODY)
        data_dir.chmod(0o500)
        if as_nobody("--version", data_dir=data_dir).returncode != 0:
            pytest.skip("the test's user cannot run this interpreter (a private folder)")
        result = as_nobody("stats", "--json", data_dir=data_dir)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["total_memories"] == 1
        found = as_nobody("search", "locked", "--json", data_dir=data_dir)
        assert found.returncode == 0, found.stderr
    finally:
        shutil.rmtree(top, ignore_errors=True)
