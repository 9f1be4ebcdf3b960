"""The owner lock: exclusive and shared holders across real processes, stale metadata."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import pickle
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from portalocker import LockFlags

from tests.lock_helpers import refuse_locks
from vestige.changelog import MAX_CLIENT_CHARS
from vestige.errors import OwnerLockHeld, OwnerLockUnsupported, VestigeError
from vestige.owner import (
    LOCK_FILE,
    MAX_SESSIONS,
    OWNERS_DIR,
    AttachedSession,
    LockMode,
    LockState,
    _metadata,
    acquire_owner,
    lock_state,
    read_owners,
)

pytestmark = pytest.mark.multiprocess

HOLDER = """
import sys
from vestige.owner import acquire_owner
transport = sys.argv[3] if len(sys.argv) > 3 else "test-holder"
lock = acquire_owner(sys.argv[1], shared=sys.argv[2] == "shared", transport=transport)
print("ready", flush=True)
sys.stdin.read()  # hold until the test closes our stdin
lock.release()
"""


@contextlib.contextmanager
def holder(
    data_dir: Path, mode: str, transport: str = "test-holder"
) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the lock until the block ends (then reaped)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(data_dir), mode, transport],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == "ready\n", proc.stderr.read() if proc.stderr else line
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.communicate(timeout=5)
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def ddir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


def test_exclusive_refuses_exclusive_and_names_the_owner(ddir: Path) -> None:
    with holder(ddir, "exclusive") as proc:
        with pytest.raises(OwnerLockHeld) as caught:
            acquire_owner(ddir)
        err = caught.value
        assert [o.pid for o in err.owners] == [proc.pid]
        assert err.owners[0].mode == "exclusive"
        assert err.owners[0].transport == "test-holder"
        text = str(err)
        assert str(ddir / "vestige.db") in text
        assert f"pid {proc.pid} (exclusive, test-holder)" in text
        assert f"kill -INT {proc.pid}" in text
        assert "vestige doctor" in text
        assert "--data-dir" in text
        assert sys.executable in text  # the holder's command line
        assert lock_state(ddir) is LockState.EXCLUSIVE
    assert lock_state(ddir) is LockState.FREE
    assert read_owners(ddir) == []


def test_shared_holders_coexist(ddir: Path) -> None:
    with holder(ddir, "shared") as proc:
        lock = acquire_owner(ddir, shared=True, transport="stdio")
        try:
            assert lock.mode is LockMode.SHARED
            assert lock_state(ddir) is LockState.SHARED
            owners = read_owners(ddir)
            assert {o.pid for o in owners} == {proc.pid, os.getpid()}
            assert all(o.alive and o.mode == "shared" for o in owners)
        finally:
            lock.release()
        assert [o.pid for o in read_owners(ddir)] == [proc.pid]
        assert lock_state(ddir) is LockState.SHARED


@pytest.mark.parametrize(("held", "wanted"), [("shared", False), ("exclusive", True)])
def test_shared_and_exclusive_refuse_each_other(ddir: Path, held: str, wanted: bool) -> None:
    with holder(ddir, held) as proc:
        with pytest.raises(OwnerLockHeld) as caught:
            acquire_owner(ddir, shared=wanted)
        assert [o.pid for o in caught.value.owners] == [proc.pid]
        assert "--shared-writers" in str(caught.value)
    # Once the holder is gone, the same request succeeds.
    with acquire_owner(ddir, shared=wanted) as lock:
        assert lock.held


def test_kill9_frees_the_lock_and_its_metadata_reads_as_stale(ddir: Path) -> None:
    with holder(ddir, "exclusive") as proc:
        dead_pid = proc.pid
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    stale = read_owners(ddir)
    assert [(o.pid, o.alive) for o in stale] == [(dead_pid, False)]
    assert "no longer exists" in stale[0].problem
    assert lock_state(ddir) is LockState.FREE
    # No waiting at all: the kernel released the lock when the holder died.
    with acquire_owner(ddir, grace_s=0.0) as lock:
        assert [o.pid for o in read_owners(ddir)] == [os.getpid()]  # stale file removed
        assert lock.info.alive


def test_pid_reuse_is_detected_through_create_time(ddir: Path) -> None:
    owners = ddir / OWNERS_DIR
    owners.mkdir()
    me = psutil.Process()
    record = {
        "pid": me.pid,
        "create_time": me.create_time() - 1000.0,  # the "same" pid, started long before us
        "cmdline": ["vestige-mcp"],
        "data_dir": str(ddir),
        "version": "0",
        "mode": "exclusive",
        "transport": "stdio",
        "endpoint": None,
        "started_at": "2026-01-01T00:00:00+00:00",
    }
    (owners / f"{me.pid}.json").write_text(json.dumps(record))
    (owners / "77.json").write_text("{not json")
    infos = {o.path.name: o for o in read_owners(ddir)}
    assert infos[f"{me.pid}.json"].alive is False
    assert "pid reused" in infos[f"{me.pid}.json"].problem
    assert infos["77.json"].alive is False
    assert infos["77.json"].pid == 77
    assert infos["77.json"].problem.startswith("invalid: not JSON")
    # A stale record never blocks, and the next holder clears it.
    with acquire_owner(ddir):
        assert [o.path.name for o in read_owners(ddir)] == [f"{me.pid}.json"]
        assert read_owners(ddir)[0].alive


def test_metadata_is_private_complete_and_written_atomically(ddir: Path) -> None:
    with acquire_owner(ddir, transport="http", endpoint="http://127.0.0.1:1/mcp", version="9"):
        files = sorted(p.name for p in (ddir / OWNERS_DIR).iterdir())
        assert files == [f"{os.getpid()}.json"]  # no temp file left behind
        path = ddir / OWNERS_DIR / files[0]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE((ddir / LOCK_FILE).stat().st_mode) == 0o600
        data = json.loads(path.read_text())
        assert data["pid"] == os.getpid()
        assert data["create_time"] == pytest.approx(psutil.Process().create_time(), abs=0.01)
        assert data["cmdline"] == psutil.Process().cmdline()
        assert data["data_dir"] == str(ddir)
        assert (data["version"], data["mode"], data["transport"]) == ("9", "exclusive", "http")
        assert data["endpoint"] == "http://127.0.0.1:1/mcp"
        assert data["started_at"].endswith("+00:00")
    assert list((ddir / OWNERS_DIR).iterdir()) == []


def test_probing_from_the_holder_process_keeps_the_lock(ddir: Path) -> None:
    """flock belongs to the open file description: the probe's own open+close drops nothing."""
    lock = acquire_owner(ddir)
    try:
        assert lock_state(ddir) is LockState.EXCLUSIVE
        assert lock_state(ddir) is LockState.EXCLUSIVE
        probe = subprocess.run(
            [sys.executable, "-c", HOLDER, str(ddir), "exclusive"],
            input="",
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert probe.returncode == 1
        assert "OwnerLockHeld" in probe.stderr
    finally:
        lock.release()
    lock.release()  # idempotent
    assert lock_state(ddir) is LockState.FREE


def test_one_lock_per_process_and_directory(ddir: Path) -> None:
    with acquire_owner(ddir, shared=True), pytest.raises(RuntimeError, match="already holds"):
        acquire_owner(ddir, shared=True)


def test_refusal_survives_pickling(ddir: Path) -> None:
    with holder(ddir, "exclusive") as proc:
        with pytest.raises(OwnerLockHeld) as caught:
            acquire_owner(ddir)
        copy = pickle.loads(pickle.dumps(caught.value))  # noqa: S301 - our own object
    assert isinstance(copy, VestigeError)
    assert isinstance(copy, OwnerLockHeld)
    assert str(copy) == str(caught.value)
    assert [o.pid for o in copy.owners] == [proc.pid]


def test_unlockable_directory_fails_closed(tmp_path: Path) -> None:
    missing = tmp_path / "does-not-exist"
    with pytest.raises(OwnerLockUnsupported, match="cannot open the owner lock"):
        acquire_owner(missing)


@pytest.mark.parametrize("shared", [False, True], ids=["exclusive", "shared"])
def test_a_filesystem_without_locks_fails_closed(
    ddir: Path, monkeypatch: pytest.MonkeyPatch, shared: bool
) -> None:
    """ENOLCK (some network mounts) is no contention: one clear error, nothing published."""
    refuse_locks(monkeypatch, lambda flags: flags & (LockFlags.EXCLUSIVE | LockFlags.SHARED))
    with pytest.raises(OwnerLockUnsupported) as caught:
        acquire_owner(ddir, shared=shared, grace_s=1.0)
    assert caught.value.message == (
        f"the filesystem holding {ddir} cannot take the owner lock (No locks available); "
        "Vestige refuses to run without it"
    )
    assert "local disk" in caught.value.hint
    assert read_owners(ddir) == []
    monkeypatch.undo()
    # Nothing was left held: the same request succeeds once the kernel locks again.
    with acquire_owner(ddir, shared=shared, grace_s=0.0) as lock:
        assert lock.held


# -- attached sessions --------------------------------------------------------------------


def test_published_sessions_are_read_back_and_bounded(ddir: Path) -> None:
    now = time.time()
    sessions = [AttachedSession(4242, "claude-code", now - 60), AttachedSession(4243, None, now)]
    endpoint = str(ddir / "vestige.sock")
    with acquire_owner(ddir, transport="attach", endpoint=endpoint) as lock:
        (info,) = read_owners(ddir)
        assert (info.transport, info.endpoint, info.sessions) == ("attach", endpoint, ())
        lock.publish_sessions(sessions)
        (info,) = read_owners(ddir)
        assert info.sessions == tuple(sessions)
        assert (info.alive, info.holds_lock) == (True, True)  # still a valid holder
        assert info.to_dict()["sessions"] == [
            {"pid": 4242, "client": "claude-code", "since": now - 60},
            {"pid": 4243, "client": None, "since": now},
        ]
        # Rewritten in place, privately, with no temporary file left behind.
        assert [p.name for p in (ddir / OWNERS_DIR).iterdir()] == [f"{os.getpid()}.json"]
        assert stat.S_IMODE(info.path.stat().st_mode) == 0o600
        many = [AttachedSession(i + 1, f"client {i}", now) for i in range(MAX_SESSIONS + 10)]
        lock.publish_sessions(many)
        assert read_owners(ddir)[0].sessions == tuple(many[:MAX_SESSIONS])
        lock.publish_sessions([])
        assert read_owners(ddir)[0].sessions == ()
        meta = info.path
    lock.publish_sessions(sessions)  # released: nothing to rewrite, nothing recreated
    assert not meta.exists()


def test_forged_session_entries_are_dropped_and_the_holder_stays_valid(ddir: Path) -> None:
    hostile = "\x1b]0;owned\x07\x1b[2J" + "A" * 5000
    entries: list[object] = [
        {"pid": 77, "client": "good", "since": 1.5},
        "a string",
        None,
        [77, "list", 1.0],
        {"pid": 0, "client": "zero", "since": 1},
        {"pid": -5, "client": "negative", "since": 1},
        {"pid": True, "client": "bool", "since": 1},
        {"pid": "77", "client": "text pid", "since": 1},
        {"pid": 2**31, "client": "too big", "since": 1},
        {"pid": 78, "client": 12, "since": 1},
        {"pid": 79, "client": ["x"], "since": 1},
        {"pid": 80, "client": None, "since": "yesterday"},
        {"pid": 81, "client": None, "since": float("inf")},
        {"pid": 82, "client": None, "since": float("nan")},
        {"pid": 83, "client": None, "since": -1},
        {"pid": 84, "client": None},
        {"pid": 85, "client": None, "since": False},
        {"pid": 86, "client": hostile, "since": 2},
    ]
    with acquire_owner(ddir, transport="attach") as lock:
        path = lock.info.path
        raw = json.loads(path.read_text())
        raw["sessions"] = entries
        path.write_text(json.dumps(raw))  # json writes inf and nan as Infinity and NaN
        (info,) = read_owners(ddir)
        assert (info.alive, info.holds_lock, info.problem) == (True, True, "")
        assert [(s.pid, s.since) for s in info.sessions] == [(77, 1.5), (86, 2.0)]
        shown = info.sessions[1].client
        assert shown is not None
        assert "\x1b" not in shown
        assert "\x07" not in shown
        assert shown.startswith("\\x1b]0;owned\\x07\\x1b[2J")
        assert len(shown) == MAX_CLIENT_CHARS
        assert shown.endswith("\u2026")
        for junk in ({"pid": 1}, "sessions", 3, None):
            raw["sessions"] = junk
            path.write_text(json.dumps(raw))
            (info,) = read_owners(ddir)
            assert (info.alive, info.sessions) == (True, ())
        raw["sessions"] = [{"pid": 9, "client": "c", "since": 1}] * (MAX_SESSIONS * 4)
        path.write_text(json.dumps(raw))
        assert len(read_owners(ddir)[0].sessions) == MAX_SESSIONS


def test_a_failed_publication_is_logged_and_keeps_the_old_list(
    ddir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    first = [AttachedSession(4242, "first", 1.0)]
    with acquire_owner(ddir, transport="attach") as lock:
        lock.publish_sessions(first)

        def full_disk(*_: object) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(_metadata, "write_atomic", full_disk)
        with caplog.at_level(logging.WARNING, logger="vestige.owner"):
            lock.publish_sessions([*first, AttachedSession(4243, "second", 2.0)])  # no raise
        assert "could not list 2 attached session(s)" in caplog.text
        assert os.strerror(errno.ENOSPC) in caplog.text
        assert read_owners(ddir)[0].sessions == tuple(first)


def test_a_refusal_counts_the_sessions_attached_to_the_owner(ddir: Path) -> None:
    code = """
import sys
from vestige.owner import AttachedSession, acquire_owner
lock = acquire_owner(sys.argv[1], transport="attach")
lock.publish_sessions([AttachedSession(101, "claude-code", 0.0), AttachedSession(102, None, 60.0)])
print("ready", flush=True)
sys.stdin.read()
lock.release()
"""
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(ddir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        # The window for a young server holder is another test's subject: refuse at once.
        with pytest.raises(OwnerLockHeld) as caught:
            acquire_owner(ddir, young_window_s=0.0)
    finally:
        proc.communicate(timeout=10)
    text = str(caught.value)
    assert f"pid {proc.pid} (exclusive, vestige-mcp --attach owner)" in text
    assert (
        "serves 2 attached sessions through proxies: proxy pid 101 (client claude-code) since "
        "1970-01-01 00:00:00 UTC, proxy pid 102 (client not named yet) since 1970-01-01 "
        "00:01:00 UTC"
    ) in text
    assert "Start this one with --attach (or VESTIGE_ATTACH=1" in text
    assert (
        f"or stop it with `kill -INT {proc.pid}` (the 2 sessions attached to it would then "
        "elect a new owner among their proxies; close those clients too to free the "
        "directory) and start again."
    ) in text


class _GiveUp(Exception):
    pass


def test_waiting_for_a_young_server_can_be_abandoned_and_a_young_non_server_is_not_waited_for(
    ddir: Path,
) -> None:
    calls: list[float] = []

    def waiting() -> None:
        calls.append(time.monotonic())
        if len(calls) == 3:
            raise _GiveUp

    with holder(ddir, "exclusive", transport="stdio") as proc:
        with pytest.raises(_GiveUp):
            acquire_owner(ddir, waiting=waiting)
        assert len(calls) == 3  # it was waiting out the young server, between attempts
        assert [o.pid for o in read_owners(ddir)] == [proc.pid]  # nothing of ours published
        assert lock_state(ddir) is LockState.EXCLUSIVE
    assert lock_state(ddir) is LockState.FREE  # and we hold nothing either
    calls.clear()
    with holder(ddir, "exclusive") as proc:  # a library holder ("test-holder"), as young
        with pytest.raises(OwnerLockHeld) as caught:
            acquire_owner(ddir, waiting=waiting)
        assert calls == []  # refused at once: not a server, so not a client's probe
        assert [o.pid for o in caught.value.owners] == [proc.pid]
