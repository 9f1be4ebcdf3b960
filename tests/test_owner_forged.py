"""An ownership that can't be fooled: deleted lock files, linked databases, forged metadata.

Every case runs real processes on a real directory: real ``vestige-mcp`` servers, a real
``sleep`` standing in for an unrelated live process, the real ``vestige`` CLI for doctor and
restore.  What is forged is only what an attacker (or a cloned repository) could forge: the
files in ``owners/``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pytest

from tests import cli_helpers
from tests.cli_helpers import cli_json, run_cli, server_command
from vestige.errors import DataDirError, OwnerLockHeld
from vestige.owner import LOCK_FILE, OWNERS_DIR, acquire_owner, lock_state, read_owners

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.cli_helpers import Server

servers = cli_helpers.servers  # the fixture, under its own name

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow, pytest.mark.timeout(180)]

EXIT_OWNER_LOCKED = 3
EXIT_CONFIG = 4
UNHEALTHY = 3
#: A refused or misbehaving second server never needs longer than this (it reads EOF on stdin).
SECOND_SERVER_DEADLINE_S = 60.0


def second_server(data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Start another real vestige-mcp; with stdin at EOF, one that gets in exits 0 at once."""
    result = subprocess.run(
        server_command(data_dir, *extra),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SECOND_SERVER_DEADLINE_S,
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def doctor(data_dir: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = run_cli("doctor", "--json", *args, data_dir=data_dir)
    assert result.returncode in (0, UNHEALTHY), result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return result.returncode, report


def check(report: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in report["checks"] if c["name"] == name]
    (only,) = found
    return only


def kill_advice(text: str) -> set[int]:
    """Every pid a message tells a person to kill."""
    return {int(pid) for pid in re.findall(r"kill -(?:INT|TERM|9|KILL) (\d+)", text)}


def proc_identity(pid: int) -> dict[str, Any]:
    """The identity fields a forger can copy from a live process: the most convincing fake."""
    proc = psutil.Process(pid)
    fields = (Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2]).split()
    return {
        "create_time": proc.create_time(),
        "start_ticks": int(fields[19]),
        "boot_id": Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
        "cmdline": proc.cmdline(),
    }


def record(pid: int, data_dir: Path, **fields: Any) -> dict[str, Any]:
    return {
        "pid": pid,
        "create_time": 1_700_000_000.0,
        "cmdline": ["vestige-mcp"],
        "data_dir": str(data_dir),
        "version": "0",
        "mode": "exclusive",
        "transport": "stdio",
        "endpoint": None,
        "started_at": "2026-01-01T00:00:00+00:00",
        **fields,
    }


def forge(data_dir: Path, name: str, content: str | dict[str, Any] | list[Any]) -> Path:
    owners = data_dir / OWNERS_DIR
    owners.mkdir(mode=0o700, exist_ok=True)
    path = owners / name
    text = content if isinstance(content, str) else json.dumps(content)
    path.write_text(text, encoding="utf-8")
    return path


def rewrite(path: Path, data: dict[str, Any]) -> None:
    """Replace a live holder's metadata atomically, as a clock step or a forger would."""
    tmp = path.with_name(path.name + ".tmp-test")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process that has nothing to do with Vestige; killed by pid at the end."""
    proc = subprocess.Popen(["sleep", "300"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


@pytest.fixture
def ddir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    cli_json("ingest", "a memory worth keeping", data_dir=path)
    return path


# -- a deleted lock file ------------------------------------------------------------------


def test_deleting_the_lock_file_lets_no_second_owner_in(
    ddir: Path, servers: Callable[..., Server]
) -> None:
    first = servers(ddir)
    meta = ddir / OWNERS_DIR / f"{first.pid}.json"
    assert meta.exists()
    (ddir / LOCK_FILE).unlink()  # what a user "cleaning up a stale lock" does

    refused = second_server(ddir)
    assert refused.returncode == EXIT_OWNER_LOCKED, refused.stderr
    assert f"pid {first.pid} (exclusive, stdio)" in refused.stderr
    assert kill_advice(refused.stderr) == {first.pid}
    assert meta.exists()  # the refused server deleted nothing
    assert first.proc.poll() is None

    code, report = doctor(ddir)
    assert code == 0, report["checks"]
    assert report["owner_lock"]["state"] == "exclusive"  # never "free" while it serves
    assert check(report, "owner-lock")["status"] == "ok"
    assert f"pid {first.pid}" in check(report, "owner-lock")["detail"]
    (holder,) = report["owner_lock"]["holders"]
    assert (holder["pid"], holder["alive"], holder["verified"]) == (first.pid, True, True)
    # The first server still serves its memory.
    assert cli_helpers.tool_json(first.call_tool("stats", {}))["total_memories"] == 1


def test_deleting_the_lock_file_keeps_shared_and_exclusive_apart(
    ddir: Path, servers: Callable[..., Server]
) -> None:
    first = servers(ddir, "--shared-writers")
    (ddir / LOCK_FILE).unlink()
    refused = second_server(ddir)  # exclusive, over a shared holder
    assert refused.returncode == EXIT_OWNER_LOCKED, refused.stderr
    assert "--shared-writers" in refused.stderr
    assert (ddir / OWNERS_DIR / f"{first.pid}.json").exists()
    assert lock_state(ddir).value == "shared"


# -- a linked database --------------------------------------------------------------------


def test_a_database_linked_from_another_directory_is_refused(
    tmp_path: Path, ddir: Path, servers: Callable[..., Server]
) -> None:
    first = servers(ddir)
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    (other / "vestige.db").symlink_to(ddir / "vestige.db")

    refused = second_server(other)
    assert refused.returncode == EXIT_CONFIG, refused.stderr
    assert f"{other / 'vestige.db'} is a symbolic link to {ddir / 'vestige.db'}" in refused.stderr
    assert f"--data-dir {ddir}" in refused.stderr
    assert first.proc.poll() is None
    assert not (other / OWNERS_DIR).exists()  # nothing published for the refused one
    assert not (ddir / "vestige.db-wal").is_symlink()

    # The same refusal with nobody serving: the link itself is the problem.
    first.stop()
    refused = second_server(other)
    assert refused.returncode == EXIT_CONFIG, refused.stderr
    with pytest.raises(DataDirError, match="symbolic link"):
        acquire_owner(other)


def test_a_link_inside_the_directory_is_the_same_lock(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cli_json("ingest", "x", data_dir=data)
    (data / "vestige.db").rename(data / "real.db")
    (data / "vestige.db").symlink_to("real.db")
    with acquire_owner(data) as lock:
        assert lock.held


def test_a_hard_linked_database_is_refused(tmp_path: Path, ddir: Path) -> None:
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    os.link(ddir / "vestige.db", other / "vestige.db")
    for path in (ddir, other):
        with pytest.raises(DataDirError, match="has 2 hard links") as caught:
            acquire_owner(path)
        assert "corrupts" in str(caught.value)
    refused = second_server(other)
    assert refused.returncode == EXIT_CONFIG, refused.stderr
    assert "hard links" in refused.stderr


# -- forged and corrupt metadata ----------------------------------------------------------

FORGED: dict[str, Callable[[Path], str | dict[str, Any] | list[Any]]] = {
    "pid -1": lambda d: record(-1, d),
    "pid 0": lambda d: record(0, d),
    "huge pid": lambda d: record(2**64, d),
    "naive started_at": lambda d: record(4_000_001, d, started_at="2026-01-01T00:00:00"),
    "NaN create time": lambda d: record(4_000_002, d, create_time=math.nan),
    "infinite create time": lambda d: record(4_000_003, d, create_time=math.inf),
    "bool pid": lambda d: record(True, d),  # JSON true where a pid belongs
    "a JSON list": lambda d: [1, 2, 3],
    "a JSON string": lambda d: '"just a string"',
    "not JSON": lambda d: "{not json",
    "not UTF-8": lambda d: "\udcff",
    "unknown mode": lambda d: record(4_000_004, d, mode="owner"),
    "cmdline not a list": lambda d: record(4_000_005, d, cmdline="vestige-mcp"),
    "oversized": lambda d: record(4_000_006, d, cmdline=["x" * 100_000]),
}
#: The file name each case is forged under: its pid where it has one, so only the content is
#: wrong.
NAMES = {"pid -1": "-1.json", "pid 0": "0.json", "huge pid": f"{2**64}.json"}


def forge_case(data_dir: Path, case: str) -> Path:
    content = FORGED[case](data_dir)
    name = NAMES.get(case) or (
        f"{content['pid']}.json" if isinstance(content, dict) else f"{abs(hash(case))}.json"
    )
    if case == "not UTF-8":
        path = forge(data_dir, name, "")
        path.write_bytes(b'{"pid": "\xff"}')
        return path
    return forge(data_dir, name, content)


@pytest.mark.parametrize("case", sorted(FORGED))
def test_a_forged_file_is_an_invalid_claim(ddir: Path, case: str) -> None:
    path = forge_case(ddir, case)
    (info,) = read_owners(ddir)
    assert info.path == path
    assert (info.alive, info.verified) == (False, False)
    assert info.problem.startswith("invalid: "), info.problem
    assert info.held_for_s == 0.0 or math.isfinite(info.held_for_s)
    # It blocks nobody, and the next exclusive owner clears it.
    with acquire_owner(ddir, grace_s=0.0) as lock:
        assert (lock.info.alive, lock.info.holds_lock) == (True, True)
        assert not path.exists()


def test_hostile_files_neither_hang_nor_crash_a_server_or_doctor(
    ddir: Path, servers: Callable[..., Server]
) -> None:
    hostile = [forge_case(ddir, case) for case in sorted(FORGED)]
    fifo = ddir / OWNERS_DIR / "x.json"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    link = ddir / OWNERS_DIR / "4000100.json"
    link.symlink_to("/dev/zero")  # reading through it would never end
    folder = ddir / OWNERS_DIR / "4000101.json"
    folder.mkdir()
    hostile += [fifo, link]

    code, report = doctor(ddir)
    assert code == 0  # stale files block nothing: a warning
    assert [c["name"] for c in report["checks"] if c["status"] == "fail"] == []
    assert check(report, "owner-metadata")["status"] == "warn"
    assert report["owner_lock"]["state"] == "free"
    problems = {Path(h["path"]).name: h["problem"] for h in report["owner_lock"]["holders"]}
    assert problems["x.json"] == "invalid: not a regular file"
    assert problems["4000100.json"] == "invalid: not a regular file"
    assert all(p.startswith("invalid: ") for p in problems.values()), problems
    assert not kill_advice(json.dumps(report))

    # A server starts over all of it (and, owning the directory alone, clears it).
    server = servers(ddir)
    assert [p.name for p in (ddir / OWNERS_DIR).iterdir() if p != folder] == [f"{server.pid}.json"]
    for path in hostile:
        assert not os.path.lexists(path), path
    assert folder.is_dir()  # not a file: left alone, and no crash over it


def test_a_live_unrelated_process_is_never_named_in_kill_advice(
    ddir: Path,
    servers: Callable[..., Server],
    sleeper: subprocess.Popen[bytes],
) -> None:
    backup = cli_json("backup", data_dir=ddir)["path"]
    server = servers(ddir, "--shared-writers")
    # The most convincing forgeries: the sleep's and pid 1's real identity, with a Vestige
    # command line or with their own.
    for pid in (sleeper.pid, 1):
        identity = proc_identity(pid)
        forge(ddir, f"{pid}.json", record(pid, ddir, **identity, mode="shared"))
    owners = {o.pid: o for o in read_owners(ddir)}
    assert (owners[sleeper.pid].alive, owners[sleeper.pid].verified) == (True, False)
    assert (owners[1].alive, owners[1].verified) == (True, False)
    assert owners[server.pid].verified

    refused = second_server(ddir)  # exclusive: refused by the shared holders
    assert refused.returncode == EXIT_OWNER_LOCKED, refused.stderr
    assert kill_advice(refused.stderr) == {server.pid}
    assert "not proved to hold the lock" in refused.stderr

    _, report = doctor(ddir)
    assert kill_advice(json.dumps(report["checks"])) <= {server.pid}
    lock_check = check(report, "owner-lock")
    assert f"held by shared writers: pid {server.pid}" in lock_check["detail"]
    assert f"pid {sleeper.pid} (" in lock_check["detail"]  # shown as a claim, not a holder
    assert "not proved to hold it" in lock_check["detail"]

    restore = run_cli("restore", backup, data_dir=ddir)
    assert restore.returncode != 0
    assert kill_advice(restore.stderr) == {server.pid}, restore.stderr

    # With nobody holding the lock, there is no one to stop at all.
    server.stop()
    forge(ddir, f"{sleeper.pid}.json", record(sleeper.pid, ddir, **proc_identity(sleeper.pid)))
    _, report = doctor(ddir)
    assert report["owner_lock"]["state"] == "free"
    assert not kill_advice(json.dumps(report["checks"]))
    assert sleeper.poll() is None


def test_printed_text_is_escaped_and_paths_in_commands_are_quoted(
    ddir: Path, tmp_path: Path
) -> None:
    evil_arg = "\x1b]0;owned\x07\x1b[2J\x9b31m"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(ddir), evil_arg],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "ready\n"
        with pytest.raises(OwnerLockHeld) as caught:
            acquire_owner(ddir)
        text = str(caught.value)
        assert "\\x1b]0;owned\\x07\\x1b[2J\\x9b31m" in text
        assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f]", text), text
        assert kill_advice(text) == {holder.pid}
        doctor_text = run_cli("doctor", data_dir=ddir).stdout
        assert "\\x1b]0;owned" in doctor_text
        assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f]", doctor_text), doctor_text
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()

    names = ["x; touch PWNED; .json", "$(touch PWNED2).json", "tab\there\x1b[2J.json"]
    for name in names:
        forge(ddir, name, record(4_000_200, ddir))
    code, report = doctor(ddir)
    assert code == 0
    stale = check(report, "owner-metadata")
    assert not re.search("[\x00-\x1f\x7f-\x9f]", stale["detail"] + stale["hint"])
    command = stale["hint"].split("after checking them again: ", 1)[1]
    words = shlex.split(command.replace("$'", "'"))  # shlex knows no $'...'; bash does
    assert words[0] == "rm"
    assert len(words) == 1 + len(names)
    # Run the advice as a person would paste it: it removes exactly those files, nothing runs.
    work = tmp_path / "cwd"
    work.mkdir()
    subprocess.run(["bash", "-c", command], cwd=work, check=True, timeout=30)
    assert list(work.iterdir()) == []
    assert [p.name for p in (ddir / OWNERS_DIR).iterdir()] == []


HOLDER = """
import sys
from vestige.owner import acquire_owner
lock = acquire_owner(sys.argv[1], transport="test-holder")
print("ready", flush=True)
sys.stdin.read()  # hold until the test closes our stdin
lock.release()
"""


# -- clock steps ----------------------------------------------------------------------------


def test_a_clock_step_does_not_make_a_live_server_look_stale(
    ddir: Path, servers: Callable[..., Server]
) -> None:
    first = servers(ddir, "--shared-writers")
    meta = ddir / OWNERS_DIR / f"{first.pid}.json"
    original = json.loads(meta.read_text())
    assert original["start_ticks"] == proc_identity(first.pid)["start_ticks"]
    # NTP stepped the clock 30 s since the server wrote its file: psutil's create time moved.
    rewrite(meta, {**original, "create_time": original["create_time"] - 30.0})
    (info,) = read_owners(ddir)
    assert (info.alive, info.verified, info.problem) == (True, True, "")

    # A file from a writer that recorded no ticks (an older Vestige, another OS): the command
    # line matches and the kernel shows the lock held, so the 30 s are a clock step.
    older = {k: v for k, v in original.items() if k not in ("start_ticks", "boot_id")}
    rewrite(meta, {**older, "create_time": original["create_time"] - 30.0})
    (info,) = read_owners(ddir)
    assert (info.alive, info.verified) == (True, True), info.problem

    code, report = doctor(ddir)
    assert code == 0, report["checks"]
    assert "owner-metadata" not in {c["name"] for c in report["checks"]}
    # A starting shared server keeps its peer's file.
    second = servers(ddir, "--shared-writers")
    assert meta.exists()
    assert {o.pid for o in read_owners(ddir) if o.verified} == {first.pid, second.pid}


def test_a_recorded_time_that_matches_nothing_is_stale(
    ddir: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    identity = proc_identity(sleeper.pid)
    without_ticks = record(sleeper.pid, ddir, create_time=identity["create_time"] - 30.0)
    path = forge(ddir, f"{sleeper.pid}.json", without_ticks)
    (info,) = read_owners(ddir)
    assert (info.alive, info.problem) == (False, f"pid {sleeper.pid} now belongs to another "
                                                 "process (pid reused)")  # fmt: skip
    wrong_ticks = {**without_ticks, **identity, "start_ticks": identity["start_ticks"] + 5}
    wrong_ticks["cmdline"] = ["vestige-mcp"]
    rewrite(path, wrong_ticks)
    (info,) = read_owners(ddir)
    assert info.alive is False
    assert "pid reused" in info.problem
    other_boot = {**identity, "boot_id": "00000000-0000-0000-0000-000000000000"}
    rewrite(path, record(sleeper.pid, ddir, **other_boot))
    (info,) = read_owners(ddir)
    assert (info.alive, info.problem) == (False, f"pid {sleeper.pid} was recorded before the "
                                                 "machine restarted")  # fmt: skip
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
