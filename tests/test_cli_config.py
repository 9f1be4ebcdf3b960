"""`vestige config`: every snippet parses, and the server it names starts as a client starts it.

A stdio snippet's command and arguments are run exactly as written, from ``/`` with nothing
but ``PATH=/usr/bin:/bin`` and a temp ``HOME`` (as Claude Desktop launches a server), and
must answer an MCP ``initialize``; the HTTP form's start command must serve ``initialize`` to
the URL and token header its client entries name.  Every process is stopped by pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shlex
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

import httpx2
import pytest

from tests.cli_helpers import CLI, run_cli
from tests.http_helpers import ACCEPT, INIT
from tests.server_helpers import (
    CALL_TIMEOUT_S,
    START_TIMEOUT_S,
    free_port,
    stop_detached_owners,
    wait_for,
)
from vestige import client_config
from vestige.owner import read_owners

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow, pytest.mark.timeout(180)]

#: What Claude Desktop gives a server it launches: no shell, a bare PATH, from "/".
BARE_PATH: Final = "/usr/bin:/bin"
USAGE: Final = 2
BAD_INPUT: Final = 5
STDIO_CLIENTS: Final = ("claude-code", "claude-desktop", "cursor", "vscode")
#: An --attach owner ends this long after its last window leaves; waited for generously.
ATTACH_OWNER_EXIT_S: Final = 30.0


def config(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """`vestige config ARGS`'s stdout; it must succeed and say on stderr where it goes."""
    result = subprocess.run(
        [*CLI, "config", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=dict(os.environ if env is None else env),
        timeout=CALL_TIMEOUT_S * 3,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip(), "no line on stderr saying where the snippet goes"
    return result.stdout


def server_argv(client: str, text: str, *, name: str = "vestige") -> list[str]:
    """The command and arguments a stdio snippet names, checked against its client's format."""
    if client == "claude-code":
        assert text.count("\n") == 1, text  # one command line
        assert text.endswith("\n"), text
        words = shlex.split(text)
        assert words[:3] == ["claude", "mcp", "add"], words
        split = words.index("--")
        assert words[split - 1] == name  # options, then the name, then -- and the server
        return words[split + 1 :]
    document = json.loads(text)
    if client == "vscode":
        assert list(document) == ["servers"]  # VS Code's key, not mcpServers
        entry = document["servers"][name]
        assert entry["type"] == "stdio"
    else:
        assert list(document) == ["mcpServers"]
        entry = document["mcpServers"][name]
        assert "type" not in entry
    assert set(entry) <= {"type", "command", "args"}
    return [entry["command"], *entry["args"]]


def scope_of(text: str) -> str:
    words = shlex.split(text)
    return words[words.index("--scope") + 1]


def data_dir_of(argv: list[str]) -> str:
    return argv[argv.index("--data-dir") + 1]


def bare_env(home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    return {"PATH": BARE_PATH, "HOME": str(home)}


@contextlib.contextmanager
def launched(argv: list[str], home: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` started as a client starts a stdio server; stopped by pid if still running."""
    with log.open("wb") as err:
        proc = subprocess.Popen(
            argv, cwd="/", env=bare_env(home), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=err,
        )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()  # by its pid; the test failed before it could end it
        proc.wait(CALL_TIMEOUT_S)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def read_line(stream: IO[bytes], timeout: float) -> bytes:
    """One line from ``stream``, or b"" if none came within ``timeout`` (a generous bound)."""
    lines: queue.Queue[bytes] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return b""


def assert_serves_initialize(argv: list[str], home: Path, log: Path) -> None:
    """The server ``argv`` starts answers ``initialize`` over stdio, and exits 0 at EOF."""
    with launched(argv, home, log) as proc:
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.write(json.dumps(INIT).encode() + b"\n")
        proc.stdin.flush()
        line = read_line(proc.stdout, START_TIMEOUT_S * 2)
        assert line, f"no answer to initialize: {log.read_text(errors='replace')}"
        answer = json.loads(line)
        assert answer["id"] == INIT["id"]
        assert answer["result"]["serverInfo"]["name"], answer
        proc.stdin.close()
        assert proc.wait(CALL_TIMEOUT_S) == 0, log.read_text(errors="replace")


@pytest.mark.parametrize("client", STDIO_CLIENTS)
def test_each_stdio_snippet_starts_a_server_from_slash_with_a_bare_path(
    client: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "memory"
    text = config(client, "--data-dir", str(data_dir))
    argv = server_argv(client, text)
    assert Path(argv[0]).is_absolute(), argv
    assert argv[0] == client_config.server_command()[0]
    assert data_dir_of(argv) == str(data_dir)
    assert "--attach" not in argv
    assert_serves_initialize(argv, tmp_path / "client-home", tmp_path / "server.err")
    assert (data_dir / "vestige.db").exists()  # the memory is where the snippet said


def test_an_attach_snippet_starts_a_proxy_that_shares_one_owner(tmp_path: Path) -> None:
    data_dir = tmp_path / "memory"
    argv = server_argv(
        "claude-desktop", config("claude-desktop", "--attach", "--data-dir", str(data_dir))
    )
    assert argv[1:] == ["--attach", "--data-dir", str(data_dir)]
    try:
        assert_serves_initialize(argv, tmp_path / "client-home", tmp_path / "proxy.err")
        owners = [o for o in read_owners(data_dir) if o.alive]
        assert [o.transport for o in owners] == ["attach"], owners
    finally:
        # The detached owner the proxy started ends by itself after its last window left.
        stop_detached_owners(data_dir, ATTACH_OWNER_EXIT_S)


@pytest.mark.parametrize("scope", ["user", "project", "local"])
def test_claude_code_takes_its_scope_before_the_server_name(scope: str, tmp_path: Path) -> None:
    text = config("claude-code", "--scope", scope, "--attach", "--data-dir", str(tmp_path))
    assert scope_of(text) == scope
    argv = server_argv("claude-code", text)
    assert argv == [*client_config.server_command(), "--attach", "--data-dir", str(tmp_path)]


def test_the_default_is_user_scope_and_the_name_can_be_chosen(tmp_path: Path) -> None:
    text = config("claude-code", "--name", "work-memory", "--data-dir", str(tmp_path))
    assert scope_of(text) == "user"
    server_argv("claude-code", text, name="work-memory")
    document = json.loads(config("vscode", "--name", "work-memory", "--data-dir", str(tmp_path)))
    assert list(document["servers"]) == ["work-memory"]
    bad = run_cli("config", "cursor", "--name", "my memory")
    assert bad.returncode == USAGE
    assert "letters, digits" in bad.stderr


def test_the_data_dir_is_made_absolute_whichever_rule_chose_it(tmp_path: Path) -> None:
    work = tmp_path / "project"
    work.mkdir()
    relative = server_argv("cursor", config("cursor", "--data-dir", ".vestige", cwd=work))
    assert data_dir_of(relative) == str(work / ".vestige")
    # No flag: VESTIGE_DATA_DIR, then the platform default (here under the test's HOME).
    env = {**os.environ, "VESTIGE_DATA_DIR": "from-env"}
    from_env = server_argv("claude-desktop", config("claude-desktop", cwd=work, env=env))
    assert data_dir_of(from_env) == str(work / "from-env")
    env.pop("VESTIGE_DATA_DIR")
    default = server_argv("claude-desktop", config("claude-desktop", cwd=work, env=env))
    assert data_dir_of(default) == str(Path(os.environ["XDG_DATA_HOME"]) / "vestige" / "core")
    assert not Path(data_dir_of(default)).exists()  # a stdio snippet creates nothing


def test_the_server_command_falls_back_to_this_interpreter(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With no console script installed, the command is ``python -m vestige.server`` by the
    interpreter's absolute path (never a bare name looked up in PATH)."""
    monkeypatch.setattr(client_config.sysconfig, "get_path", lambda *_: str(tmp_path))
    assert client_config.server_command() == [
        str(Path(sys.executable).absolute()),
        "-m",
        "vestige.server",
    ]


def http_parts(text: str) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """The start command, the ``claude`` command and the JSON entries of the HTTP form."""
    commands = [shlex.split(line) for line in text.splitlines() if line and line[0] != "#"]
    documents = [json.loads(line[1:]) for line in text.splitlines() if line.startswith("#   {")]
    start, claude = commands
    return start, claude, documents


def test_the_http_snippet_starts_a_server_its_entries_reach_with_the_token(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "memory"
    port = free_port()
    text = config("http", "--port", str(port), "--data-dir", str(data_dir))
    start, claude, (cursor, vscode) = http_parts(text)
    assert Path(start[0]).is_absolute()
    assert start[1:] == ["--transport", "http", "--data-dir", str(data_dir), "--port", str(port)]
    url = f"http://127.0.0.1:{port}/mcp"
    token = (data_dir / "auth_token").read_text().strip()  # created by `vestige config http`
    header = f"Authorization: Bearer {token}"
    assert claude == [
        "claude", "mcp", "add", "--transport", "http", "--scope", "user", "vestige", url,
        "--header", header,
    ]  # fmt: skip
    assert cursor == {
        "mcpServers": {"vestige": {"url": url, "headers": {"Authorization": f"Bearer {token}"}}}
    }
    assert vscode == {
        "servers": {
            "vestige": {"type": "http", "url": url, "headers": {"Authorization": f"Bearer {token}"}}
        }
    }
    log = tmp_path / "http.err"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            start, cwd="/", env=bare_env(tmp_path / "home"), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    try:
        assert wait_for(lambda: "listening on" in log.read_text(errors="replace"), START_TIMEOUT_S)
        name, _, value = claude[-1].partition(": ")
        reply = httpx2.post(url, json=INIT, headers={**ACCEPT, name: value}, timeout=CALL_TIMEOUT_S)
        assert reply.status_code == 200, reply.text
        for entry in (cursor["mcpServers"]["vestige"], vscode["servers"]["vestige"]):
            reply = httpx2.post(
                entry["url"],
                json=INIT,
                headers={**ACCEPT, **entry["headers"]},
                timeout=CALL_TIMEOUT_S,
            )
            assert reply.status_code == 200, reply.text
        refused = httpx2.post(url, json=INIT, headers=ACCEPT, timeout=CALL_TIMEOUT_S)
        assert refused.status_code == 401  # the token in the snippet is what lets it in
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(CALL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(CALL_TIMEOUT_S)
    assert code == 0, log.read_text(errors="replace")


def test_output_writes_a_new_file_and_never_overwrites_one(tmp_path: Path) -> None:
    target = tmp_path / "mcp.json"
    result = run_cli("config", "vscode", "-o", target, "--data-dir", tmp_path / "memory")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert f"Wrote {target}." in result.stderr
    written = target.read_text()
    assert written == config("vscode", "--data-dir", str(tmp_path / "memory"))
    again = run_cli("config", "cursor", "--output", target, "--data-dir", tmp_path)
    assert again.returncode == BAD_INPUT
    assert f"Error: the output file {target} already exists" in again.stderr
    assert "Hint: " in again.stderr
    assert target.read_text() == written  # untouched
    secret = tmp_path / "http.txt"
    made = run_cli("config", "http", "-o", secret, "--data-dir", tmp_path / "memory")
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600  # it holds the bearer token
    assert "Bearer " in secret.read_text()


def test_an_unknown_client_or_a_misplaced_option_is_one_clear_error(tmp_path: Path) -> None:
    unknown = run_cli("config", "claude", "--data-dir", tmp_path)
    assert unknown.returncode == USAGE
    for name in client_config.CLIENTS:
        assert f"'{name}'" in unknown.stderr
    for args, words in [
        (["http", "--attach"], "--attach relays a stdio client"),
        (["cursor", "--port", "4000"], "--port is for the http form only"),
        (["vscode", "--scope", "project"], "--scope is Claude Code's"),
        (["http", "--scope", "project"], "would write the bearer token into .mcp.json"),
        (["claude-code", "--name=--help"], "starting with a letter or digit"),
    ]:
        result = run_cli("config", *args, "--data-dir", tmp_path / "memory")
        assert result.returncode == USAGE, result
        assert words in result.stderr
        assert result.stdout == ""
    assert not (tmp_path / "memory").exists()  # a refused http form created nothing


def test_a_data_dir_that_cannot_be_one_gets_no_snippet(tmp_path: Path) -> None:
    # A snippet naming a file would only fail later, inside the client.
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a directory", "utf-8")
    for client in client_config.CLIENTS:
        result = run_cli("config", client, "--data-dir", a_file)
        assert result.returncode == USAGE, (client, result)
        assert "exists but is not a directory" in result.stderr
        assert result.stdout == ""
