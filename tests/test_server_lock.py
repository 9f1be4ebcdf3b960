"""Launching ``vestige-mcp``: refusals, kill -9 recovery, shared writers, command line."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from mcp.client import Client

from tests.server_helpers import (
    CALL_TIMEOUT_S,
    START_TIMEOUT_S,
    ServerProcess,
    launch,
    owner_of,
    server_env,
    stdio_params,
    wait_for,
)
from tests.timing import assert_within, startup_s
from vestige import Store, __version__
from vestige.owner import (
    LOCK_FILE,
    YOUNG_HOLDER_WINDOW_S,
    LockState,
    lock_state,
    read_owners,
)
from vestige.server import EXIT_CONFIG, EXIT_OWNER_LOCKED, EXIT_STORE, EXIT_USAGE

pytestmark = pytest.mark.multiprocess

#: A refusal costs about one light start-up (owner lock, metadata, message; 0.14 s against
#: 0.12 s for the bare imports on a quiet machine, bench_server.py).  Importing the MCP SDK
#: first would add over a second and fail this.
REFUSAL_TIMES_STARTUP = 3.0


#: How long the second launch waits behind the probe before the probe is killed: longer
#: than a refusal without the young-holder window ever waits (a 50 ms grace and 0.3 s for
#: metadata), and well inside the two seconds in which clients kill their probes.
BEHIND_THE_PROBE_S = 0.5


def _is_waiting_for_the_lock(pid: int, data_dir: Path) -> bool:
    """``pid`` has opened the owner lock file, which a launch does only to try the lock."""
    try:
        opened = {f.path for f in psutil.Process(pid).open_files()}
    except psutil.NoSuchProcess:
        return True  # it exited: the caller's assertion on its exit says why
    return str(data_dir / LOCK_FILE) in opened


@pytest.mark.slow
def test_second_launch_waits_out_a_young_owner_then_refuses_an_old_one_fast(
    tmp_path: Path, data_dir: Path
) -> None:
    with ServerProcess(data_dir, home=tmp_path) as owner:
        # Young: the owner took the lock moments ago (it could be a client's probe), so the
        # second launch waits for it to go away until it is YOUNG_HOLDER_WINDOW_S old.
        young = owner_of(data_dir, owner.pid)
        window_ends = datetime.fromisoformat(young.started_at).timestamp() + YOUNG_HOLDER_WINDOW_S
        remainder = window_ends - time.time()
        assert remainder > 1.0, f"the owner was {young.held_for_s:.1f} s old already"
        done, elapsed = launch(data_dir, home=tmp_path)
        ended = time.time()
        assert done.returncode == EXIT_OWNER_LOCKED, done.stderr
        assert ended >= window_ends, "refused before the owner was out of the young window"
        # Waiting is all it added: the rest is a refusal's ordinary cost (below).
        baseline = startup_s(env=server_env(tmp_path))
        assert_within(
            elapsed,
            times=REFUSAL_TIMES_STARTUP,
            baseline_s=baseline,
            what="a refusal after waiting out a young owner",
            plus_s=remainder,
            plus_why="the young-holder window's remainder at launch",
        )
        assert f"pid {owner.pid} (exclusive, stdio)" in done.stderr
        assert "--attach (or VESTIGE_ATTACH=1" in done.stderr

        # Old (it is now, and it serves): refused at once.
        owner.initialize()
        info = owner_of(data_dir, owner.pid)
        assert info.held_for_s >= YOUNG_HOLDER_WINDOW_S
        done, elapsed = launch(data_dir, home=tmp_path)
        assert done.returncode == EXIT_OWNER_LOCKED
        again, elapsed_again = launch(data_dir, home=tmp_path)
        assert again.returncode == EXIT_OWNER_LOCKED
        assert_within(
            min(elapsed, elapsed_again),
            times=REFUSAL_TIMES_STARTUP,
            baseline_s=baseline,
            what="the faster of two refusals by an old owner",
        )
        assert done.stdout == ""  # nothing was served
        err = done.stderr
        assert err.startswith("vestige-mcp: the Vestige database ")
        assert str(data_dir / "vestige.db") in err
        assert f"pid {owner.pid} (exclusive, stdio)" in err
        assert "running for " in err
        assert f"command: {' '.join(info.cmdline)}" in err
        assert "vestige-mcp --data-dir" in err
        assert "Start this one with --attach (or VESTIGE_ATTACH=1" in err
        assert f"kill -INT {owner.pid}" in err
        assert "vestige doctor" in err
        assert "pass another --data-dir" in err
        assert "attached session" not in err  # a plain owner with nobody attached
        assert "Traceback" not in err
        # Refused before the MCP SDK and pydantic were even imported.
        imports = subprocess.run(
            [
                sys.executable,
                "-X",
                "importtime",
                "-m",
                "vestige.server",
                "--data-dir",
                str(data_dir),
            ],
            capture_output=True,
            text=True,
            env=server_env(tmp_path),
            timeout=START_TIMEOUT_S,
            check=False,
        )
        assert imports.returncode == EXIT_OWNER_LOCKED
        loaded = {line.split("|")[-1].strip() for line in imports.stderr.splitlines()}
        assert "vestige.owner" in loaded
        assert not {m for m in loaded if m.split(".")[0] in {"mcp", "pydantic", "anyio"}}
        # The refused launch did not disturb the owner.
        result = owner.call_tool("ingest", {"content": "still serving"})
        assert result["isError"] is False
        assert [o.pid for o in read_owners(data_dir)] == [owner.pid]


@pytest.mark.slow
def test_a_launch_behind_a_probe_killed_moments_after_it_started_serves(
    tmp_path: Path, data_dir: Path
) -> None:
    with ServerProcess(data_dir, home=tmp_path) as probe:
        owner_of(data_dir, probe.pid)
        with ServerProcess(data_dir, home=tmp_path) as second:
            # The second launch found the lock held and is trying it again, not refused.
            assert wait_for(lambda: _is_waiting_for_the_lock(second.pid, data_dir), 10)
            time.sleep(BEHIND_THE_PROBE_S)
            assert second.proc.poll() is None, second.stderr()  # still waiting, not refused
            age = owner_of(data_dir, probe.pid).held_for_s
            assert age < YOUNG_HOLDER_WINDOW_S, f"the probe got {age:.1f} s old"
            print(f"the probe was {age:.2f} s old when killed")
            probe.signal(signal.SIGKILL)  # what a client does to its probe
            assert probe.wait(10) == -signal.SIGKILL
            second.initialize()  # it took the lock the probe's death freed
            assert [o.pid for o in read_owners(data_dir) if o.alive] == [second.pid]
            assert owner_of(data_dir, second.pid).verified
            result = second.call_tool("ingest", {"content": "served after the probe died"})
            assert result["isError"] is False
            assert "OwnerLockHeld" not in second.stderr()


@pytest.mark.slow
def test_kill9_of_the_owner_lets_a_new_launch_serve_at_once(tmp_path: Path, data_dir: Path) -> None:
    with ServerProcess(data_dir, home=tmp_path) as first:
        first.initialize()
        acked = first.call_tool("ingest", {"content": "acknowledged before the crash"})
        assert acked["isError"] is False
        first.signal(signal.SIGKILL)
        assert first.wait(10) == -signal.SIGKILL
    assert [(o.pid, o.alive) for o in read_owners(data_dir)] == [(first.pid, False)]
    with ServerProcess(data_dir, home=tmp_path) as second:
        second.initialize()  # no refusal: the kernel freed the dead owner's lock
        assert [o.pid for o in read_owners(data_dir)] == [second.pid]  # stale entry cleared
        found = second.call_tool("search", {"query": "acknowledged crash"})
        assert found["structuredContent"]["total"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("first_shared", [False, True], ids=["exclusive-first", "shared-first"])
def test_exclusive_and_shared_refuse_each_other(
    tmp_path: Path, data_dir: Path, first_shared: bool
) -> None:
    # The first server is young when the second launches: the refusal comes after the
    # young-holder window, which is all this test costs over an old owner's refusal.
    flags = ("--shared-writers",) if first_shared else ()
    with ServerProcess(data_dir, *flags, home=tmp_path) as first:
        first.initialize()
        owner_of(data_dir, first.pid)
        other = () if first_shared else ("--shared-writers",)
        done, _ = launch(data_dir, *other, home=tmp_path)
        assert done.returncode == EXIT_OWNER_LOCKED
        assert f"pid {first.pid}" in done.stderr
        assert "--shared-writers" in done.stderr
        expected = LockState.SHARED if first_shared else LockState.EXCLUSIVE
        assert lock_state(data_dir) is expected


@pytest.mark.slow
def test_two_shared_writer_servers_write_concurrently_and_lose_nothing(
    tmp_path: Path, data_dir: Path
) -> None:
    per_server = 60
    acked: dict[str, list[str]] = {"flag": [], "env": []}
    connected: list[str] = []
    both_up = anyio.Event()

    async def writer(params: Any, name: str) -> None:
        async with Client(params) as client:
            connected.append(name)
            if len(connected) == 2:
                # Both servers hold the lock, shared, before anyone writes.
                assert lock_state(data_dir) is LockState.SHARED
                assert len([o for o in read_owners(data_dir) if o.alive]) == 2
                both_up.set()
            with anyio.fail_after(START_TIMEOUT_S):
                await both_up.wait()
            for i in range(per_server):
                result = await client.call_tool(
                    "ingest",
                    {"content": f"{name} writer note number {i}"},
                    read_timeout_seconds=CALL_TIMEOUT_S,
                )
                assert not result.is_error, result.content
                acked[name].append(result.structured_content["id"])

    async def scenario() -> None:
        by_flag = stdio_params(data_dir, "--shared-writers", home=tmp_path)
        by_env = stdio_params(data_dir, home=tmp_path, VESTIGE_SHARED_WRITERS="1")
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer, by_flag, "flag")
            tg.start_soon(writer, by_env, "env")

    anyio.run(scenario)
    ids = acked["flag"] + acked["env"]
    assert len(set(ids)) == 2 * per_server  # each note was a new memory
    with Store.open(data_dir) as store:
        present = {m.id for m in store.iter_memories()}
        with store._db.read() as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert set(ids) <= present
    assert lock_state(data_dir) is LockState.FREE
    assert read_owners(data_dir) == []


@pytest.mark.slow
def test_only_one_shared_server_runs_maintenance(tmp_path: Path, data_dir: Path) -> None:
    env = {"VESTIGE_CONSOLIDATION_INTERVAL_HOURS": "0.0001"}  # a decay pass is due at once
    with (
        ServerProcess(data_dir, "--shared-writers", home=tmp_path, env=env) as a,
        ServerProcess(data_dir, "--shared-writers", home=tmp_path, env=env) as b,
    ):
        a.initialize()
        b.initialize()
        with Store.open(data_dir) as store:

            def claimed() -> list[tuple[str, str]]:
                with store._db.read() as conn:
                    return conn.execute(
                        "SELECT task, holder FROM maintenance_claims WHERE task = 'maintenance'"
                    ).fetchall()

            def decayed() -> int:
                with store._db.read() as conn:
                    rows = conn.execute("SELECT COUNT(*) FROM decay_runs").fetchall()
                return int(rows[0][0])

            assert wait_for(lambda: bool(claimed()) and decayed() > 0, timeout=20)
            (_, holder), *rest = claimed()
            assert rest == []
        owners = [s.call_tool("health_check", {})["structuredContent"]["server"] for s in (a, b)]
        assert sorted(o["maintenance_owner"] for o in owners) == [False, True]
        winner = next(o["pid"] for o in owners if o["maintenance_owner"])
        assert f":{winner}:" in holder


@pytest.mark.slow
def test_damaged_database_exits_with_the_store_code(tmp_path: Path, data_dir: Path) -> None:
    data_dir.mkdir()
    (data_dir / "vestige.db").write_bytes(b"this is not a database at all " * 200)
    done, _ = launch(data_dir, home=tmp_path)
    assert done.returncode == EXIT_STORE
    assert "is damaged or is not a Vestige database" in done.stderr
    assert "Hint:" in done.stderr
    assert "Traceback" not in done.stderr
    assert lock_state(data_dir) is LockState.FREE
    assert read_owners(data_dir) == []


@pytest.mark.slow
def test_version_help_and_bad_command_lines(tmp_path: Path, data_dir: Path) -> None:
    done, _ = launch(data_dir, "--version", home=tmp_path)
    assert (done.returncode, done.stdout) == (0, f"vestige-mcp {__version__}\n")
    done, _ = launch(data_dir, "--help", home=tmp_path)
    assert done.returncode == 0
    for flag in ("--data-dir", "--transport", "--host", "--port", "--shared-writers"):
        assert flag in done.stdout
    assert "exit codes" in done.stdout
    for bad in (["--bogus"], ["--data"], ["--transport", "smoke"], ["--port", "70000"]):
        done, _ = launch(data_dir, *bad, home=tmp_path)
        assert done.returncode == EXIT_USAGE, bad
        assert "vestige-mcp: error:" in done.stderr
    assert not data_dir.exists()  # nothing was created by a refused command line


@pytest.mark.slow
def test_unusable_configuration_exits_with_its_own_code(tmp_path: Path) -> None:
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("x")
    done, _ = launch(a_file, home=tmp_path)
    assert done.returncode == EXIT_CONFIG
    assert "exists but is not a directory" in done.stderr
    done, _ = launch(tmp_path / "d", home=tmp_path, env={"VESTIGE_SHARED_WRITERS": "perhaps"})
    assert done.returncode == EXIT_CONFIG
    assert "VESTIGE_SHARED_WRITERS='perhaps'" in done.stderr
    env = {"VESTIGE_CONSOLIDATION_INTERVAL_HOURS": "-1"}
    done, _ = launch(tmp_path / "d", home=tmp_path, env=env)
    assert done.returncode == EXIT_CONFIG
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_http_port_in_use_is_a_clear_error(tmp_path: Path, data_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        done, _ = launch(data_dir, "--transport", "http", "--port", str(port), home=tmp_path)
    assert done.returncode == EXIT_CONFIG, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert lock_state(data_dir) is LockState.FREE  # the lock was handed back
