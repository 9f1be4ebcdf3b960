"""``vestige-mcp --attach`` with real processes: windows share one owner and outlive it.

Every test starts real proxies (``ServerProcess(..., "--attach")``) on a temp data directory.
The detached owner they start is found by its published metadata and killed by pid, -9
where the test is about failover; whatever is left is killed by pid at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pytest

from tests.server_helpers import (
    CALL_TIMEOUT_S,
    START_TIMEOUT_S,
    ServerProcess,
    launch,
    server_env,
    tool_text,
    wait_for,
)
from vestige.owner import YOUNG_HOLDER_WINDOW_S, read_owners
from vestige.server import EXIT_CONFIG, EXIT_OWNER_LOCKED
from vestige.server import endpoint as attach_endpoint

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(180)]

ATTACH: Final = "--attach"
KILLS: Final = 3
#: An interpreter another user can run (the venv's may sit under root's home).
SYSTEM_PYTHON: Final = "/usr/bin/python3"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def reap_owners(data_dir: Path) -> Iterator[None]:
    """Kill, by pid, every owner still alive on ``data_dir`` when the test ends."""
    yield
    for info in read_owners(data_dir):
        if info.alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(info.pid, signal.SIGKILL)


def owner_pid(data_dir: Path, *, other_than: int | None = None) -> int:
    """The live owner's pid (waiting for a new one when ``other_than`` is given)."""
    found: list[int] = []

    def live() -> bool:
        found[:] = [o.pid for o in read_owners(data_dir) if o.alive and o.pid != other_than]
        return len(found) == 1

    assert wait_for(live, START_TIMEOUT_S), f"no single live owner: {read_owners(data_dir)}"
    return found[0]


def attach(data_dir: Path, home: Path, **env: str) -> ServerProcess:
    proxy = ServerProcess(data_dir, ATTACH, home=home, env=env or None)
    proxy.initialize()
    return proxy


def ingest(proxy: ServerProcess, content: str) -> str:
    result = proxy.call_tool("ingest", {"content": content})
    assert not result.get("isError"), tool_text(result)
    return str(result["structuredContent"]["id"])


def search_ids(proxy: ServerProcess, query: str) -> list[str]:
    result = proxy.call_tool("search", {"query": query, "limit": 50})
    assert not result.get("isError"), tool_text(result)
    return [r["id"] for r in result["structuredContent"]["results"]]


def vestige_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The ``vestige`` CLI (a face of its own), with the tests' environment."""
    return subprocess.run(
        [str(Path(sys.executable).with_name("vestige")), *args],
        capture_output=True,
        text=True,
        env=server_env(home),
        timeout=CALL_TIMEOUT_S,
        check=False,
    )


def exported(data_dir: Path, home: Path) -> list[dict[str, Any]]:
    """Every memory, through the CLI."""
    done = vestige_cli(home, "export", "--no-changelog", "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def maps_of(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.usefixtures("reap_owners")
def test_windows_share_one_detached_owner(data_dir: Path, home: Path) -> None:
    with attach(data_dir, home) as first, attach(data_dir, home) as second:
        owner = owner_pid(data_dir)
        assert owner not in (first.pid, second.pid)
        memory = ingest(first, "the staging database moved to eu-west-2")
        assert memory in search_ids(second, "staging database")
        if sys.platform.startswith("linux"):
            # Small: a proxy never loads the SDK's pydantic core, the owner does.
            assert "pydantic_core" not in maps_of(first.pid)
            assert "pydantic_core" in maps_of(owner)
            assert "vestige.db" not in maps_of(first.pid)


@pytest.mark.usefixtures("reap_owners")
def test_a_killed_owner_costs_no_window_its_session(data_dir: Path, home: Path) -> None:
    proxies = [attach(data_dir, home) for _ in range(3)]
    try:
        owners = [owner_pid(data_dir)]
        for kill in range(KILLS):
            os.kill(owners[-1], signal.SIGKILL)
            ids = [ingest(p, f"after kill {kill} through proxy {i}") for i, p in enumerate(proxies)]
            owners.append(owner_pid(data_dir, other_than=owners[-1]))
            for proxy in proxies:
                assert set(ids) <= set(search_ids(proxy, f"kill {kill}"))
        assert len(set(owners)) == KILLS + 1
        # The session went on with each owner: initialize was replayed, so the changelog
        # still names the client that made the last change.
        change = proxies[0].call_tool("memory_changelog", {"limit": 1})
        assert "vestige-tests" in tool_text(change)
        for proxy in proxies:
            assert proxy.proc.poll() is None, proxy.stderr()
    finally:
        for proxy in proxies:
            proxy.stop()
    contents = [m["content"] for m in exported(data_dir, home)]
    assert len(contents) == KILLS * len(proxies) == len(set(contents))


@pytest.mark.usefixtures("reap_owners")
def test_a_write_in_flight_when_the_owner_dies_is_applied_once(data_dir: Path, home: Path) -> None:
    # Each write waits 800 ms inside its transaction: the kill lands while it is open.
    with attach(data_dir, home, VESTIGE_FAULT_WRITE_DELAY_MS="800") as proxy:
        owner = owner_pid(data_dir)
        rid = proxy.send(
            "tools/call", {"name": "ingest", "arguments": {"content": "written while dying"}}
        )
        time.sleep(0.3)
        os.kill(owner, signal.SIGKILL)
        answer = proxy.response(rid)
        assert "error" not in answer, answer
        assert not answer["result"].get("isError"), answer
        assert owner_pid(data_dir) != owner
    contents = [m["content"] for m in exported(data_dir, home)]
    assert contents == ["written while dying"]


@pytest.mark.usefixtures("reap_owners")
def test_duplicate_spawn_and_probe_end_with_one_owner(data_dir: Path, home: Path) -> None:
    # A probe: started, initialized, killed at once (qwen-code's client does this).
    probe = attach(data_dir, home)
    probe.proc.kill()
    probe.stop()
    # Two launches within milliseconds (Claude Code starts stdio servers twice).
    pair = [ServerProcess(data_dir, ATTACH, home=home) for _ in range(2)]
    try:
        for proxy in pair:
            proxy.initialize()
        memory = ingest(pair[0], "duplicate launches share one memory")
        assert memory in search_ids(pair[1], "duplicate launches")
        assert len([o for o in read_owners(data_dir) if o.alive]) == 1
    finally:
        for proxy in pair:
            proxy.stop()


@pytest.mark.usefixtures("reap_owners")
def test_the_owner_leaves_after_its_last_session(data_dir: Path, home: Path) -> None:
    with attach(data_dir, home) as proxy:
        owner = owner_pid(data_dir)
        proxy.close_stdin()
        assert proxy.wait(CALL_TIMEOUT_S) == 0
    assert wait_for(lambda: not _alive(owner), CALL_TIMEOUT_S), "the owner outlived its sessions"
    assert not (data_dir / attach_endpoint.ENDPOINT_FILE).exists()
    assert not read_owners(data_dir)


def test_a_plain_owner_serves_attached_windows_after_its_own_client_left(
    data_dir: Path, home: Path
) -> None:
    with ServerProcess(data_dir, home=home) as plain:
        plain.initialize()
        with attach(data_dir, home) as proxy:
            assert owner_pid(data_dir) == plain.pid  # attached to it: no second owner
            plain.close_stdin()
            time.sleep(0.5)
            assert plain.proc.poll() is None, "the owner left while a window was attached"
            memory = ingest(proxy, "kept after the first window closed")
            assert memory in search_ids(proxy, "first window closed")
        assert plain.wait(CALL_TIMEOUT_S) == 0
    assert "and the last attached session left" in plain.stderr()


def test_attach_refuses_shared_writers_with_the_way_out(data_dir: Path, home: Path) -> None:
    with ServerProcess(data_dir, "--shared-writers", home=home) as shared:
        shared.initialize()
        done, _ = launch(data_dir, ATTACH, home=home)
    assert done.returncode == EXIT_OWNER_LOCKED, done.stderr
    assert "--shared-writers" in done.stderr
    assert "Traceback" not in done.stderr


def test_attach_and_shared_writers_together_is_a_usage_error(data_dir: Path, home: Path) -> None:
    done, _ = launch(data_dir, ATTACH, "--shared-writers", home=home)
    assert done.returncode == EXIT_CONFIG
    assert "--attach and --shared-writers" in done.stderr


@pytest.mark.usefixtures("reap_owners")
def test_a_long_data_dir_path_attaches_over_loopback_tcp(tmp_path: Path, home: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True, mode=0o700)
    with attach(deep, home) as first, attach(deep, home) as second:
        where = attach_endpoint.read(deep)
        assert where is not None
        assert where.unix is None
        assert where.port
        owner = owner_pid(deep)
        memory = ingest(first, "long paths fall back to loopback")
        os.kill(owner, signal.SIGKILL)
        assert memory in search_ids(second, "loopback")
    for info in read_owners(deep):
        if info.alive:
            os.kill(info.pid, signal.SIGKILL)


@pytest.mark.usefixtures("reap_owners")
def test_the_endpoint_lets_in_only_its_user_with_the_token(data_dir: Path, home: Path) -> None:
    with attach(data_dir, home):
        where = attach_endpoint.read(data_dir)
        assert where is not None
        assert where.unix is not None
        assert (os.stat(where.unix).st_mode & 0o777) == 0o600
        assert (os.stat(data_dir / attach_endpoint.ENDPOINT_FILE).st_mode & 0o777) == 0o600
        # The owner proves it knows the token first; a proxy that does not is then let
        # go without an answer to anything.
        _, after_wrong = _hello(where.unix, token="0" * 64)
        assert after_wrong == b""
        _, after_right = _hello(where.unix, token=where.token)
        assert json.loads(after_right)["id"] == 1
        if os.geteuid() == 0 and Path(SYSTEM_PYTHON).exists():
            # Another, unprivileged user: cannot even reach the socket or read the token.
            probe = (
                "import socket, sys\n"
                "s = socket.socket(socket.AF_UNIX)\n"
                "try:\n    s.connect(sys.argv[1])\nexcept PermissionError:\n"
                "    print('refused')\nelse:\n    print('connected')\n"
            )
            done = subprocess.run(
                [SYSTEM_PYTHON, "-c", probe, where.unix],
                capture_output=True,
                text=True,
                user=65534,
                timeout=CALL_TIMEOUT_S,
                check=False,
            )
            assert done.stdout.strip() == "refused", done.stderr


def test_a_proxy_names_both_versions_when_the_owner_speaks_another_protocol(
    data_dir: Path, home: Path
) -> None:
    path = str(data_dir / attach_endpoint.SOCKET_FILE)
    data_dir.mkdir(mode=0o700, exist_ok=True)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(4)
    future = {"vestige_attach": 99, "ok": True, "pid": 1, "version": "9.0.0"}

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                with conn:
                    hello = json.loads(conn.recv(4096))
                    proof = attach_endpoint.proof("t" * 64, "owner", hello["nonce"])
                    conn.sendall(json.dumps({**future, "proof": proof}).encode() + b"\n")

    threading.Thread(target=serve, daemon=True).start()
    attach_endpoint.publish(
        data_dir,
        attach_endpoint.Endpoint(
            pid=os.getpid(), version="9.0.0", protocol=99, token="t" * 64, unix=path, port=None
        ),
    )
    try:
        with ServerProcess(data_dir, ATTACH, home=home) as proxy:
            # The client's initialize may come after the proxy found the mismatch (a quick
            # refusal, a loaded machine): it must still be answered with the reason.
            assert wait_for(lambda: "cannot share a session" in proxy.stderr(), CALL_TIMEOUT_S)
            rid = proxy.send("initialize", {"protocolVersion": "2025-11-25", "capabilities": {}})
            answer = proxy.response(rid)
            code = proxy.wait(CALL_TIMEOUT_S)
    finally:
        listener.close()
    assert code == EXIT_CONFIG
    assert "vestige 9.0.0 (attach protocol 99)" in answer["error"]["message"]
    assert "attach protocol 1" in proxy.stderr()
    assert "Traceback" not in proxy.stderr()


IMPOSTOR_ANSWERS: Final = {
    # An owner's welcome without the proof.
    "welcome": {"vestige_attach": 1, "ok": True, "pid": 1, "version": "0", "nonce": "x"},
    # A refusal meant to end the window with words of the impostor's choosing.
    "refusal": {"vestige_attach": 1, "ok": False, "error": "EVIL: run this", "hint": "EVIL"},
    # A protocol mismatch, as an owner of a newer vestige would say it.
    "mismatch": {"vestige_attach": 7, "ok": False, "version": "EVIL", "error": "EVIL"},
    # A proof that cannot even be encoded (a lone surrogate).
    "surrogate": {"vestige_attach": 1, "ok": True, "pid": 1, "nonce": "ab", "proof": "\ud800"},
}


@pytest.mark.usefixtures("reap_owners")
@pytest.mark.parametrize("answer", sorted(IMPOSTOR_ANSWERS))
def test_a_proxy_believes_nothing_until_the_owner_proved_it_knows_the_token(
    data_dir: Path, home: Path, answer: str
) -> None:
    # An impostor on loopback (another user that took a dead owner's port, say) answers
    # the hello; the proxy must neither tell it anything nor believe what it says.
    data_dir.mkdir(mode=0o700)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    heard: list[bytes] = []

    def impostor() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                with conn:
                    heard.append(conn.recv(4096))
                    conn.sendall(json.dumps(IMPOSTOR_ANSWERS[answer]).encode() + b"\n")
                    heard.append(conn.recv(4096))

    threading.Thread(target=impostor, daemon=True).start()
    attach_endpoint.publish(
        data_dir,
        attach_endpoint.Endpoint(
            pid=os.getpid(),
            version="0",
            protocol=1,
            token="t" * 64,
            unix=None,
            port=listener.getsockname()[1],
        ),
    )
    try:
        with attach(data_dir, home) as proxy:  # served by the real owner it starts instead
            ingest(proxy, "my secret password is hunter2")
    finally:
        listener.close()
    assert heard, "the proxy never tried the published endpoint"
    assert "EVIL" not in proxy.stderr()
    everything = b"".join(heard)
    assert b"hunter2" not in everything
    assert b"initialize" not in everything
    assert b"t" * 64 not in everything


@pytest.mark.usefixtures("reap_owners")
def test_an_owner_refuses_a_proxy_of_another_protocol(data_dir: Path, home: Path) -> None:
    with attach(data_dir, home):
        where = attach_endpoint.read(data_dir)
        assert where is not None
        assert where.unix is not None
        answer, _ = _hello(where.unix, token=where.token, protocol=2, version="2.0.0")
    assert answer["ok"] is False
    assert "vestige 2.0.0 (attach protocol 2)" in answer["error"]
    assert "restart every client" in answer["hint"]


def _hello(
    path: str, *, token: str, protocol: int = 1, version: str = "0"
) -> tuple[dict[str, Any], bytes]:
    """Handshake as a proxy that knows ``token``: the owner's answer, and what the owner
    sent after our proof (b"" when it closed the connection)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(CALL_TIMEOUT_S)
        s.connect(path)
        nonce = "ab" * 16
        hello = {"vestige_attach": protocol, "pid": os.getpid(), "nonce": nonce}
        s.sendall(json.dumps({**hello, "version": version}).encode() + b"\n")
        reader = s.makefile("rb")
        answer = dict(json.loads(reader.readline()))
        if not answer.get("ok"):
            return answer, b""
        assert attach_endpoint.proves(token, "owner", nonce, answer["proof"]) == (
            token == attach_endpoint.read(Path(path).parent).token  # type: ignore[union-attr]
        )
        proof = attach_endpoint.proof(token, "proxy", answer["nonce"])
        s.sendall(json.dumps({"proof": proof}).encode() + b"\n")
        ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        with contextlib.suppress(OSError):
            s.sendall(json.dumps(ping).encode() + b"\n")
        return answer, reader.readline()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return state != "Z"
    return True


@pytest.mark.usefixtures("reap_owners")
def test_doctor_and_the_refusal_name_every_attached_window(data_dir: Path, home: Path) -> None:
    with attach(data_dir, home) as first, attach(data_dir, home) as second:
        owner = owner_pid(data_dir)
        old_from = time.monotonic() + YOUNG_HOLDER_WINDOW_S  # it started before this
        proxies = {first.pid, second.pid}

        def both_published() -> bool:
            infos = [o for o in read_owners(data_dir) if o.pid == owner]
            return bool(infos) and {s.pid for s in infos[0].sessions} == proxies

        assert wait_for(both_published, START_TIMEOUT_S), read_owners(data_dir)
        done = vestige_cli(home, "doctor", "--json", "--data-dir", str(data_dir))
        report = json.loads(done.stdout)
        holders = report["owner_lock"]["holders"]
        sessions = [s for h in holders if h["pid"] == owner for s in h["sessions"]]
        assert {s["pid"] for s in sessions} == proxies
        assert {s["client"] for s in sessions} == {"vestige-tests"}
        # A plain launch beside them is refused, with --attach as the way in.
        time.sleep(max(0.0, old_from - time.monotonic()))
        refused, _ = launch(data_dir, home=home)
    assert refused.returncode == EXIT_OWNER_LOCKED, refused.stderr
    assert "--attach" in refused.stderr
    assert "2 attached sessions" in refused.stderr


@pytest.mark.usefixtures("reap_owners")
def test_an_owner_killed_before_it_could_serve_is_replaced_quietly(
    data_dir: Path, home: Path
) -> None:
    with ServerProcess(data_dir, ATTACH, home=home) as proxy:
        rid = proxy.send(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "vestige-tests", "version": "0"},
            },
        )
        first = owner_pid(data_dir)  # it holds the lock, but is still loading
        published = attach_endpoint.read(data_dir)
        os.kill(first, signal.SIGKILL)
        answer = proxy.response(rid)
        assert "result" in answer, answer
        assert published is None or published.pid != first, "killed too late to test this"
        proxy.notify("notifications/initialized")
        ingest(proxy, "served by the second owner")
        assert proxy.proc.poll() is None


@pytest.mark.usefixtures("reap_owners")
def test_a_request_escaped_by_nobody_keeps_its_size_through_the_proxy(
    data_dir: Path, home: Path
) -> None:
    # 12 MB of UTF-8, 36 MB if the proxy escaped it: over the 32 MiB line limit.
    content = "\U0001f600" * 3_000_000
    call = {
        "jsonrpc": "2.0",
        "id": "emoji",
        "method": "tools/call",
        "params": {"name": "ingest", "arguments": {"content": content}},
    }
    with attach(data_dir, home) as proxy:
        assert proxy.proc.stdin is not None
        proxy.proc.stdin.write(json.dumps(call, ensure_ascii=False).encode() + b"\n")
        proxy.proc.stdin.flush()
        result = proxy.response("emoji")["result"]  # type: ignore[arg-type]
    assert result.get("isError"), result
    assert "12,000,000 bytes" in tool_text(result)


@pytest.mark.usefixtures("reap_owners")
def test_a_line_sent_while_no_owner_is_there_is_still_answered(data_dir: Path, home: Path) -> None:
    with attach(data_dir, home) as proxy:
        os.kill(owner_pid(data_dir), signal.SIGKILL)
        assert proxy.proc.stdin is not None
        proxy.proc.stdin.write(b"not json at all\n")
        proxy.proc.stdin.flush()
        ingest(proxy, "after the line that was not json")
        null_id = proxy.response(None)  # type: ignore[arg-type]
    assert null_id["error"]["code"] == -32700


@pytest.mark.usefixtures("reap_owners")
def test_bad_handshakes_neither_stop_the_owner_nor_fill_its_log(data_dir: Path, home: Path) -> None:
    bad_lines = [
        b'{"vestige_attach": 1, "pid": 1, "nonce": "\\ud800"}\n',  # a lone surrogate
        b"[" * 3000 + b"\n",  # nested too deeply
        b'{"vestige_attach": 1, "pid": 1, "nonce": "' + b"a" * 32 + b'"}\n',  # then gone
    ]
    log_file = data_dir / attach_endpoint.OWNER_LOG_FILE
    with attach(data_dir, home) as proxy:
        owner = owner_pid(data_dir)
        where = attach_endpoint.read(data_dir)
        assert where is not None
        assert where.unix is not None
        before = log_file.stat().st_size
        for _ in range(20):
            for line in bad_lines:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(where.unix)
                    s.sendall(line)
        ingest(proxy, "still served after sixty bad handshakes")
        assert owner_pid(data_dir) == owner
        logged = log_file.read_bytes()[before:].decode(errors="replace")
    assert logged.count("Traceback") <= 1, logged
    assert len(logged.splitlines()) < 40, logged
