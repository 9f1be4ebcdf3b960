"""The real ``vestige-mcp`` driven by a client nobody here wrote: the official TypeScript SDK.

``tests/ts_client`` pins ``@modelcontextprotocol/sdk`` (package-lock.json); the fixture
installs it once per test run with ``npm ci`` into the run's temp directory (shared by the
xdist workers, under a lock).  ``drive.mjs`` lists the tools, calls every one with good
arguments, with an unknown key and with a value of the wrong type, and sends the
lone-surrogate request a JavaScript client produces when it cuts a string inside an emoji,
then prints what the SDK saw as JSON for these tests to judge.

The SDK's ``Client.callTool`` validates ``structuredContent`` against the tool's
``outputSchema`` (compiled with Ajv at ``listTools``) and throws -32602 when it does not
match, so a good call that comes back as a result, not a rejection, met its schema.
``extraKeyValid`` runs the same validator on the result plus an undeclared key: false shows
the validator is live and the schema closed.

Skipped, with npm's own words, only when npm cannot reach its registry.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import IO, Any, Final

import psutil
import pytest

from tests.http_helpers import HttpServer
from tests.server_helpers import server_command, server_env
from tests.test_server_stdio import TOOLS
from vestige.owner import OwnerInfo, read_owners

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow, pytest.mark.timeout(300)]

CLIENT_SOURCES: Final = Path(__file__).with_name("ts_client")
INSTALL_TIMEOUT_S: Final = 240.0
DRIVE_TIMEOUT_S: Final = 120.0
#: A detached owner ends about 2 s after its last session left; past this it is killed.
OWNER_EXIT_WAIT_S: Final = 15.0
#: What npm prints when the registry is out of reach (DNS, refused, timed out, offline).
UNREACHABLE: Final = (
    "ENOTFOUND",
    "EAI_AGAIN",
    "ECONNREFUSED",
    "ECONNRESET",
    "ETIMEDOUT",
    "ENETUNREACH",
    "EHOSTUNREACH",
    "network request",
    "ENOTCACHED",
)
#: npm's own cache, read at import, before the fixtures point HOME at a temp directory.
NPM_ENV: Final = {
    k: v for k, v in os.environ.items() if k in {"PATH", "HOME"} or k.startswith("npm_config_")
}


@pytest.fixture(scope="session")
def ts_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the SDK installed and the scripts (``*.mjs``) beside it; once per run."""
    npm = shutil.which("npm")
    assert npm is not None, "npm is not on PATH: install Node.js 20+ (npm comes with it)"
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by every worker of this run
    target = root / "ts-client"
    with (root / "ts-client.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        skipped = target / "unreachable.txt"
        if skipped.exists():
            pytest.skip(skipped.read_text())
        if not (target / "installed").exists():
            target.mkdir(exist_ok=True)
            for name in ("package.json", "package-lock.json"):
                shutil.copyfile(CLIENT_SOURCES / name, target / name)
            done = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=target,
                capture_output=True,
                text=True,
                env=NPM_ENV,
                timeout=INSTALL_TIMEOUT_S,
                check=False,
            )
            if done.returncode != 0:
                output = done.stdout + done.stderr
                if any(sign in output for sign in UNREACHABLE):
                    reason = f"npm cannot reach its registry: {output.strip()[-400:]}"
                    skipped.write_text(reason)
                    pytest.skip(reason)
                raise AssertionError(f"npm ci failed ({done.returncode}):\n{output}")
            (target / "installed").touch()
        for script in CLIENT_SOURCES.glob("*.mjs"):
            shutil.copyfile(script, target / script.name)
    return target


def drive(client_dir: Path, config: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        ["node", "drive.mjs", json.dumps(config)],
        cwd=client_dir,
        capture_output=True,
        text=True,
        env=NPM_ENV,
        timeout=DRIVE_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    report["stderr"] = done.stderr
    return report


def check(report: dict[str, Any]) -> None:
    assert report["server"]["name"] == "vestige"
    assert set(report["tools"]) == TOOLS

    made = report["ingest"]
    assert made["isError"] is False, made
    mid = made["structured"]["id"]
    assert [r["id"] for r in report["search"]["structured"]["results"]] == [mid]
    assert report["get"]["structured"]["memory"]["content"] == "Ada writes TypeScript at night"
    assert report["stats"]["structured"]["total_memories"] == 1

    bad = report["bad"]
    for case, argument in [
        ("emptyContent", "content"),
        ("zeroLimit", "limit"),
        ("unknownAction", "action"),
        ("missingMemory", "no memory with id 'no-such-memory'"),
    ]:
        assert bad[case].get("isError") is True, (case, bad[case])
        assert argument in bad[case]["text"], (case, bad[case]["text"])

    # Answered at once with the request's own id (the SDK resolves it as an McpError), not
    # left to the client's timeout.
    lone = report["loneSurrogate"]
    assert lone.get("rejected", {}).get("code") == -32602, lone
    assert (
        "tools/call ingest: argument content holds a lone surrogate \\ud83d at character 6 "
        '("hello \\ud83d"): send valid UTF-16 pairs / UTF-8'
    ) in lone["rejected"]["message"]
    assert report["afterwards"]["structured"]["total_memories"] == 1  # nothing else stored

    assert report["capabilities"].get("prompts") is None  # none served, none advertised
    assert report["capabilities"]["resources"]["subscribe"] is True
    for name, schema in report["schemas"].items():
        assert schema["inputAdditional"] is False, (name, schema)
        assert schema["hasOutputSchema"] is True, (name, schema)
        assert (schema["outputType"], schema["outputAdditional"]) == ("object", False), name
        assert schema["validatorCached"] is True, name
        assert schema["annotations"]["openWorldHint"] is False, name
    assert set(report["everyTool"]) == TOOLS
    for name, seen in report["everyTool"].items():
        good = seen["good"]
        assert "rejected" not in good, (name, good)  # the SDK found it matched its schema
        assert good["isError"] is False, (name, good)
        assert good["structured"], (name, good)
        assert seen["extraKeyValid"] is False, name
        unknown = seen["unknownKey"]
        assert unknown["isError"] is True, (name, unknown)
        assert unknown["text"].startswith("unknown argument 'bogusKey'"), (name, unknown)
        wrong = seen["wrongType"]
        if wrong is not None:
            assert wrong["isError"] is True, (name, wrong)
            assert wrong["text"].startswith("argument '"), (name, wrong)
            assert ": send " in wrong["text"], (name, wrong)
        for refused in filter(None, (unknown, wrong)):
            assert "\n" not in refused["text"], (name, refused)
            for sign in ("Error executing tool", "pydantic", "input_value", "[type="):
                assert sign not in refused["text"], (name, refused)


def test_typescript_sdk_over_stdio(ts_client: Path, tmp_path: Path, data_dir: Path) -> None:
    command = server_command("--data-dir", str(data_dir))
    report = drive(
        ts_client,
        {
            "transport": "stdio",
            "command": command[0],
            "args": command[1:],
            "env": server_env(tmp_path),
            "cwd": str(tmp_path),
        },
    )
    check(report)
    assert "WARNING vestige.server.stdio: refused request" in report["stderr"]  # inherited
    assert "Traceback" not in report["stderr"]


def test_typescript_sdk_over_http(ts_client: Path, tmp_path: Path, data_dir: Path) -> None:
    with HttpServer(data_dir, tmp_path) as srv:
        report = drive(ts_client, {"transport": "http", "url": srv.url, "token": srv.token})
        log = srv.log()
    check(report)
    assert "WARNING vestige.server.http: refused request" in log
    assert "Traceback" not in log
    assert srv.proc.returncode == 0


def _lines(stream: IO[str] | None, into: queue.Queue[str]) -> None:
    assert stream is not None
    for line in stream:
        into.put(line)


def _owner(data_dir: Path, other_than: int | None = None) -> OwnerInfo | None:
    """The live owner that holds ``data_dir``'s lock (and is not ``other_than``), if any."""
    held = [o for o in read_owners(data_dir) if o.verified and o.pid != other_than]
    return held[0] if len(held) == 1 else None


def _stop_owners(data_dir: Path, seen: dict[int, float]) -> None:
    """Let every owner seen end by itself (2 s after its last session left), else kill it.

    Each is named by pid and start time, so a reused pid is never signalled."""
    for found in read_owners(data_dir):
        if found.verified:
            with contextlib.suppress(psutil.Error):
                seen.setdefault(found.pid, psutil.Process(found.pid).create_time())
    for pid, created in seen.items():
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            if proc.create_time() == created:
                try:
                    proc.wait(OWNER_EXIT_WAIT_S)
                except psutil.TimeoutExpired:
                    proc.kill()
                    proc.wait(OWNER_EXIT_WAIT_S)


def test_typescript_sdk_through_attach_survives_owner_kill(
    ts_client: Path, tmp_path: Path, data_dir: Path
) -> None:
    """Two SDK clients behind ``--attach`` proxies; the detached owner is killed with SIGKILL;
    both sessions go on with no error, and every write is stored exactly once.

    The calls after the kill go out at once, while the proxies are still finding the next
    owner: they are answered only if the proxy resends what is in flight, and not refused
    only if it replays ``initialize`` to the new owner first (an SDK server refuses requests
    on a session that was never initialized)."""
    killed = tmp_path / "owner-killed"
    tag = f"attach{uuid.uuid4().hex[:10]}"
    command = server_command("--data-dir", str(data_dir), "--attach")
    config = {
        "command": command[0],
        "args": command[1:],
        "env": server_env(tmp_path),
        "cwd": str(tmp_path),
        "killed": str(killed),
        "tag": tag,
    }
    stderr_path = tmp_path / "node.err"
    seen: dict[int, float] = {}
    with stderr_path.open("w") as stderr:
        node = subprocess.Popen(
            ["node", "attach_kill.mjs", json.dumps(config)],
            cwd=ts_client,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=NPM_ENV,
        )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(node.stdout, lines), daemon=True).start()
    try:
        ready = json.loads(lines.get(timeout=DRIVE_TIMEOUT_S))
        assert ready == {"ready": True}
        victim = _owner(data_dir)
        assert victim is not None, read_owners(data_dir)
        assert "--attach-owner" in victim.cmdline  # the detached owner, no client's process
        seen[victim.pid] = psutil.Process(victim.pid).create_time()
        psutil.Process(victim.pid).kill()
        killed.touch()
        deadline = time.monotonic() + DRIVE_TIMEOUT_S
        while (successor := _owner(data_dir, other_than=victim.pid)) is None:
            assert time.monotonic() < deadline, "no new owner after the kill"
            time.sleep(0.01)
        seen.setdefault(successor.pid, psutil.Process(successor.pid).create_time())
        assert node.wait(DRIVE_TIMEOUT_S) == 0, stderr_path.read_text()
        report = json.loads(lines.get(timeout=5))
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()
        if node.stdout is not None:
            node.stdout.close()
        _stop_owners(data_dir, seen)
    log = stderr_path.read_text()

    assert set(report["tools"]) == TOOLS
    assert set(report["toolsB"]) == TOOLS
    for when in ("before", "after"):
        for name, outcome in report[when].items():
            if name == "pingA":
                assert outcome == "ok", outcome
                continue
            assert "rejected" not in outcome, (when, name, outcome)
            assert outcome["isError"] is False, (when, name, outcome)
    assert report["errors"] == []
    assert report["serverAfter"]["name"] == "vestige"
    after = report["after"]
    assert after["writeA"]["structured"]["id"] in [
        r["id"] for r in after["searchA"]["structured"]["results"]
    ]
    before_ids = {report["before"][w]["structured"]["id"] for w in ("writeA", "writeB")}
    found = {r["id"] for r in after["searchB"]["structured"]["results"]}
    # B searched while A wrote: A's new memory may be found too, nothing else.
    assert before_ids <= found <= before_ids | {after["writeA"]["structured"]["id"]}
    # The kill hit the owner these sessions were using, and a new one served them.
    assert f"the owner (pid {victim.pid}) is gone" in log, log
    assert successor.pid != victim.pid
    assert "--attach-owner" in successor.cmdline
    assert "Traceback" not in log

    exported = subprocess.run(
        [sys.executable, "-m", "vestige", "export", "--no-changelog", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        env=server_env(tmp_path),
        timeout=DRIVE_TIMEOUT_S,
        check=False,
    )
    assert exported.returncode == 0, exported.stderr
    contents = [json.loads(ln)["content"] for ln in exported.stdout.splitlines() if ln.strip()]
    expected = [
        f"{tag} written by {who} {when} the kill" for who in "AB" for when in ("before", "after")
    ]
    assert sorted(contents) == sorted(expected)  # each exactly once, nothing else
    assert after["statsA"]["structured"]["total_memories"] == len(expected)


def test_typescript_sdk_subscriber_hears_a_write_through_another_server(
    ts_client: Path, tmp_path: Path, data_dir: Path
) -> None:
    """Issue 14's done-when, through a client nobody here wrote: a subscribed client of one
    server is told of a write made through another server on the same directory."""
    command = server_command("--data-dir", str(data_dir), "--shared-writers")
    config = {
        "command": command[0],
        "args": command[1:],
        "env": server_env(tmp_path),
        "cwd": str(tmp_path),
    }
    done = subprocess.run(
        ["node", "subscribe.mjs", json.dumps(config)],
        cwd=ts_client,
        capture_output=True,
        text=True,
        env=NPM_ENV,
        timeout=DRIVE_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["errors"] == [], report
    assert report["capabilities"]["resources"]["subscribe"] is True
    made = report["write"]["structured"]["id"]
    assert report["notified"] is not None, done.stderr  # told, not left to poll
    assert report["notified"]["uri"] == "memory://changes"
    [change] = report["page"]["structured"]["changes"]
    assert (change["kind"], change["memory_id"]) == ("created", made)
    assert change["process"] == f"vestige-mcp pid {report['writerPid']}"
    assert "Traceback" not in done.stderr
