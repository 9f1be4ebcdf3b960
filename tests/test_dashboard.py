"""`vestige dashboard`, from outside: a real dashboard process, real servers writing to the
same data directory, a real browser (Debian's Chromium, driven by Playwright) and raw HTTP.

The browser tests skip on a machine without /usr/bin/chromium, except in CI (``CI`` set),
where a missing browser fails them: .ci/run installs it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

import pytest

from tests.cli_helpers import CLI, run_cli
from tests.http_helpers import LIMITED
from tests.server_helpers import PROTOCOL_VERSION, ServerProcess
from vestige import Store, config

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

CHROMIUM: Final = "/usr/bin/chromium"
#: Headless Chromium as root on a machine with no network beyond loopback.
CHROMIUM_ARGS: Final = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Generous waits for events that take milliseconds (a start-up imports uvicorn: seconds
#: on a loaded 2-core machine); never a bound on how fast anything is.
START_TIMEOUT_S: Final = 60.0
EVENT_TIMEOUT_S: Final = 30.0
QUIET: Final = {"VESTIGE_LOG_LEVEL": "WARNING"}
#: A client name that is markup: the page must show it as text and never run it.
HOSTILE_NAME: Final = '<img src=x onerror="window.pwned=1">agent<b>bold</b>'


needs_browser = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("CI"),
    reason=f"{CHROMIUM} is not installed (apt-get install chromium); CI installs it",
)


class Dashboard:
    """A running `vestige dashboard --port 0`, its address read from its first line."""

    def __init__(
        self, data_dir: Path, home: Path, *extra: str, limit_files: int | None = None
    ) -> None:
        self.err_path = home / f"dashboard-{time.monotonic_ns()}.err"
        self._err = self.err_path.open("wb")
        env = {**os.environ, "HOME": str(home), "PYTHONDONTWRITEBYTECODE": "1"}
        env.pop("VESTIGE_AUTH_TOKEN", None)
        # As a shell's `ulimit -n` would: a Python that lowers it and execs the dashboard.
        limited = [] if limit_files is None else [sys.executable, "-c", LIMITED, str(limit_files)]
        self.proc = subprocess.Popen(
            [*limited, *CLI, "--data-dir", str(data_dir), "dashboard", "--port", "0", *extra],
            stdout=subprocess.PIPE,
            stderr=self._err,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=home,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        out = self.proc.stdout
        self._reader = threading.Thread(target=lambda: [lines.put(x) for x in out], daemon=True)
        self._reader.start()
        try:
            first = lines.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            self.stop()
            pytest.fail(f"the dashboard printed no address: {self.stderr()}")
        self.url = first.split(": ", 1)[1].strip()
        parts = urlsplit(self.url)
        self.port = parts.port or 0
        self.token = parts.fragment.removeprefix("token=")

    def stderr(self) -> str:
        if not self._err.closed:
            self._err.flush()
        return self.err_path.read_text(errors="replace")

    def request(
        self, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=EVENT_TIMEOUT_S)
        try:
            conn.request("GET", path, headers=headers or {})
            answer = conn.getresponse()
            return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
        finally:
            conn.close()

    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(EVENT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(EVENT_TIMEOUT_S)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._err.close()
        return self.proc.returncode


@pytest.fixture
def dashboard(data_dir: Path, tmp_path: Path) -> Iterator[Dashboard]:
    run_cli("ingest", "the dashboard's first memory", data_dir=data_dir)
    board = Dashboard(data_dir, tmp_path)
    try:
        yield board
    finally:
        board.stop()


def _server(data_dir: Path, home: Path, client_name: str = "vestige-tests") -> ServerProcess:
    server = ServerProcess(data_dir, "--shared-writers", home=home, env=QUIET)
    reply = server.response(
        server.send(
            "initialize",
            {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": client_name, "version": "0"},
            },
        ),
        START_TIMEOUT_S,
    )
    assert "result" in reply, reply
    server.notify("notifications/initialized")
    return server


def _ingest(server: ServerProcess, content: str) -> str:
    result = server.call_tool("smart_ingest", {"content": content})
    return str(json.loads(result["content"][0]["text"])["id"])


class EventStream:
    """``GET /events`` read line by line in a thread: the events as they arrive."""

    def __init__(self, board: Dashboard, headers: dict[str, str] | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", board.port), timeout=EVENT_TIMEOUT_S)
        head = {"Host": f"127.0.0.1:{board.port}", **board.bearer(), **(headers or {})}
        request = "GET /events HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items())
        self.sock.sendall((request + "\r\n").encode())
        self.events: queue.Queue[dict[str, str]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        event: dict[str, str] = {}
        with contextlib.suppress(OSError), self.sock.makefile("rb") as lines:
            for raw in lines:
                line = raw.decode().rstrip("\r\n")
                if not line and event:
                    self.events.put(event)
                    event = {}
                elif ":" in line and not line.startswith(":"):
                    name, _, value = line.partition(":")
                    event[name] = value.strip()

    def next(self, kind: str) -> dict[str, str]:
        """The next event of this kind (others before it are passed over)."""
        deadline = time.monotonic() + EVENT_TIMEOUT_S
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                break
            if event.get("event") == kind:
                return event
        pytest.fail(f"no {kind!r} event within {EVENT_TIMEOUT_S} s")

    def until(self, done: Callable[[list[dict[str, str]]], bool]) -> list[dict[str, str]]:
        """Every event until ``done`` is true of those seen."""
        seen: list[dict[str, str]] = []
        deadline = time.monotonic() + EVENT_TIMEOUT_S
        while not done(seen):
            left = deadline - time.monotonic()
            try:
                seen.append(self.events.get(timeout=max(0.0, left)))
            except queue.Empty:
                pytest.fail(f"only these events within {EVENT_TIMEOUT_S} s: {seen}")
        return seen

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


# -- the browser ------------------------------------------------------------------------


@needs_browser
def test_the_page_shows_a_write_through_another_server_as_it_happens(
    data_dir: Path, tmp_path: Path, dashboard: Dashboard
) -> None:
    """Two servers on one data directory: the page, opened before, shows A's write live,
    names the client as text (markup in its name is not run), and lists both servers."""
    from playwright.sync_api import expect, sync_playwright  # noqa: PLC0415 - optional

    with (
        _server(data_dir, tmp_path, HOSTILE_NAME) as a,
        _server(data_dir, tmp_path) as b,
        sync_playwright() as pw,
    ):
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(dashboard.url)
            assert "token" not in page.url  # kept by the tab, gone from the address
            expect(page.locator("#feed-state")).to_have_text("live", timeout=EVENT_TIMEOUT_S * 1000)

            memory_id = _ingest(a, "the deploy key moved to the vault on Tuesday")

            row = page.locator(f'#feed tbody tr[data-memory="{memory_id}"]')
            expect(row).to_have_count(1, timeout=EVENT_TIMEOUT_S * 1000)
            expect(row.locator("td").nth(2)).to_have_text("created")
            expect(row.locator("td").nth(4)).to_have_text(f"{HOSTILE_NAME} via stdio")
            assert page.locator("#feed img, #feed b").count() == 0
            assert page.evaluate("window.pwned") is None

            for server in (a, b):
                expect(page.locator(f'#holders [data-pid="{server.pid}"]')).to_have_count(
                    1, timeout=EVENT_TIMEOUT_S * 1000
                )
            expect(page.locator('#checks [data-check="owner-lock"]')).to_contain_text("ok")
            expect(page.locator('#stats [data-stat="memories"]')).to_have_text("2")
        finally:
            browser.close()


@needs_browser
def test_the_page_catches_up_after_the_dashboard_restarts(data_dir: Path, tmp_path: Path) -> None:
    """A dashboard that stops and starts again: the open page reconnects by itself and shows
    what was written while it was away (the browser sends the last change it saw)."""
    from playwright.sync_api import expect, sync_playwright  # noqa: PLC0415 - optional

    run_cli("ingest", "before the page opened", data_dir=data_dir)
    first = Dashboard(data_dir, tmp_path)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(first.url)
            expect(page.locator("#feed-state")).to_have_text("live", timeout=EVENT_TIMEOUT_S * 1000)
            assert first.stop() == 0
            expect(page.locator("#feed-state")).to_have_text("reconnecting…")
            missed = json.loads(
                run_cli(
                    "ingest", "written while the dashboard was down", "--json", data_dir=data_dir
                ).stdout
            )["memory"]["id"]
            second = Dashboard(data_dir, tmp_path, "--port", str(first.port))
            try:
                row = page.locator(f'#feed tbody tr[data-memory="{missed}"]')
                expect(row).to_have_count(1, timeout=EVENT_TIMEOUT_S * 1000)
                seqs = page.locator("#feed tbody tr").evaluate_all(
                    "rows => rows.map(r => r.dataset.seq)"
                )
                assert len(seqs) == len(set(seqs)) >= 2  # nothing shown twice
            finally:
                second.stop()
        finally:
            browser.close()


# -- the event stream -------------------------------------------------------------------


def test_a_stream_resumes_after_the_last_change_it_saw(
    dashboard: Dashboard, data_dir: Path
) -> None:
    for n in range(3):
        run_cli("ingest", f"fact number {n} about the build", data_dir=data_dir)
    stream = EventStream(dashboard, {"Last-Event-ID": "2"})
    try:
        # The feed may have found #4 before the stream joined or after: live comes before
        # or after it, and #4 comes once either way.
        got = stream.until(
            lambda seen: (
                any(e.get("id") == "4" for e in seen)
                and any(e.get("event") == "live" for e in seen)
            )
        )
        assert [e["id"] for e in got if e.get("event") == "change"] == ["3", "4"]
        made = json.loads(run_cli("ingest", "one more", "--json", data_dir=data_dir).stdout)
        live = stream.next("change")
        assert live["id"] == "5"
        assert json.loads(live["data"])["memory_id"] == made["memory"]["id"]
    finally:
        stream.close()


def test_a_fresh_stream_starts_with_the_newest_changes(
    dashboard: Dashboard, data_dir: Path
) -> None:
    stream = EventStream(dashboard)
    try:
        assert stream.next("change")["id"] == "1"
        assert stream.next("live")["data"] == '{"seq":1}'
    finally:
        stream.close()


def test_a_stream_told_of_trimmed_changes_gets_a_gap(dashboard: Dashboard, data_dir: Path) -> None:
    """A page that saw change 1 of a log that now starts later is told some are gone."""
    with Store.open(data_dir) as store:
        for n in range(5):
            store.ingest(f"filler {n}")
    with Store.open(data_dir, environ={config.CHANGELOG_KEEP_ENV: "3"}) as trimmer:
        assert trimmer.decay().ran
        oldest_kept = trimmer.changes(limit=1, oldest_first=True).changes[0].seq
    assert oldest_kept > 2
    stream = EventStream(dashboard, {"Last-Event-ID": "1"})
    try:
        assert "may be missing" in json.loads(stream.next("gap")["data"])["message"]
        assert stream.next("change")["id"] == str(oldest_kept)
    finally:
        stream.close()


def test_a_page_ahead_of_the_changelog_is_told_and_then_shown_new_changes(
    dashboard: Dashboard, data_dir: Path
) -> None:
    """A page that saw #1000 of another database behind the same address (the dashboard
    restarted on a new one): a gap, then the changes of this one, never silence."""
    stream = EventStream(dashboard, {"Last-Event-ID": "1000"})
    try:
        assert "the database was replaced" in json.loads(stream.next("gap")["data"])["message"]
        assert stream.next("live")["data"] == '{"seq":1}'
        made = json.loads(run_cli("ingest", "after the switch", "--json", data_dir=data_dir).stdout)
        assert json.loads(stream.next("change")["data"])["memory_id"] == made["memory"]["id"]
    finally:
        stream.close()


def test_idle_connections_cannot_lock_a_page_out(data_dir: Path, tmp_path: Path) -> None:
    """Under a low descriptor limit, hundreds of connections that never send a request:
    the oldest idle ones are closed to make room, and a real request is answered."""
    run_cli("ingest", "a memory", data_dir=data_dir)
    board = Dashboard(data_dir, tmp_path, limit_files=256)
    idle: list[socket.socket] = []
    try:
        for _ in range(400):
            with contextlib.suppress(OSError):
                idle.append(socket.create_connection(("127.0.0.1", board.port), timeout=5))
        host = {"Host": f"127.0.0.1:{board.port}", **board.bearer()}
        status, _, body = board.request("/api/report", host)
        assert status == 200, body
        assert board.proc.poll() is None
    finally:
        for sock in idle:
            sock.close()
        board.stop()
    err = board.stderr()
    assert "Traceback" not in err
    assert len(err.splitlines()) < 20, err[:2000]  # throttled: a line per kind, with counts


def test_stopping_ends_open_streams_quietly(dashboard: Dashboard) -> None:
    streams = [EventStream(dashboard) for _ in range(2)]
    try:
        for stream in streams:
            stream.next("live")
        dashboard.proc.send_signal(signal.SIGINT)
        assert dashboard.proc.wait(EVENT_TIMEOUT_S) == 0
    finally:
        for stream in streams:
            stream.close()
    assert dashboard.stderr().strip() == "Open it in a browser; Ctrl-C stops the dashboard."


# -- who may ask ------------------------------------------------------------------------


def test_data_needs_the_token_and_the_page_holds_none(dashboard: Dashboard) -> None:
    host = {"Host": f"127.0.0.1:{dashboard.port}"}
    for path in ("/events", "/api/status", "/api/report", "/report"):
        status, _, body = dashboard.request(path, host)
        assert status == 401, path
        assert b"open the address `vestige dashboard` printed" in body
        wrong = {**host, "Authorization": "Bearer " + "x" * 43}
        assert dashboard.request(path, wrong)[0] == 401
        assert dashboard.request(f"{path}?token={'x' * 43}", host)[0] == 401
        twice = f"{path}?token={dashboard.token}&token={dashboard.token}"
        assert dashboard.request(twice, host)[0] == 401  # one token, said once
    for path in ("/", "/page.js", "/page.css"):  # no data in them: served to anyone local
        status, headers, _ = dashboard.request(path, host)
        assert status == 200, path
        assert "set-cookie" not in headers
        assert "script-src 'self'" in headers["content-security-policy"]
    status, _, _ = dashboard.request(f"/api/status?token={dashboard.token}", host)
    assert status == 200


def test_the_printed_address_keeps_the_token_out_of_every_request(dashboard: Dashboard) -> None:
    """The token is in the fragment, which browsers never send: not in a request line, a
    log or a Referer, and no cookie that every port of 127.0.0.1 would receive."""
    parts = urlsplit(dashboard.url)
    assert (parts.path, parts.query) == ("/", "")
    assert parts.fragment == f"token={dashboard.token}"
    assert len(dashboard.token) >= 32


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Host": "evil.example"}, 421),
        ({"Host": "localhost.evil.example"}, 421),
        ({"Host": "127.0.0.1:1@evil.example"}, 421),
        ({"Origin": "http://evil.example"}, 403),
        ({"Origin": "http://localhost.evil.example"}, 403),
        ({"Host": "127.0.0.1", "host": "evil.example"}, 400),  # h11 refuses a second Host
        ({"Host": "LOCALHOST"}, 200),
        ({"Origin": "http://localhost:1"}, 200),
    ],
)
def test_host_and_origin_must_name_this_machine(
    dashboard: Dashboard, headers: dict[str, str], expected: int
) -> None:
    """A web page cannot reach the dashboard through DNS rebinding, even with the token."""
    sent = {"Host": f"127.0.0.1:{dashboard.port}", **dashboard.bearer(), **headers}
    status, _, _ = dashboard.request("/api/report", sent)
    assert status == expected


# -- the panels -------------------------------------------------------------------------


def test_status_names_the_servers_that_hold_the_data_directory(
    dashboard: Dashboard, data_dir: Path, tmp_path: Path
) -> None:
    host = {"Host": f"127.0.0.1:{dashboard.port}", **dashboard.bearer()}
    with _server(data_dir, tmp_path) as a:
        status, _, body = dashboard.request("/api/status", host)
        assert status == 200
        data = json.loads(body)
        owners = data["doctor"]["owner_lock"]["holders"]
        assert [o["pid"] for o in owners if o["alive"]] == [a.pid]
        assert data["stats"]["total_memories"] == 1
        assert {c["name"] for c in data["doctor"]["checks"]} >= {"owner-lock", "schema"}


def test_the_report_panel_reads_the_newest_load_test_report(data_dir: Path, tmp_path: Path) -> None:
    run_cli("ingest", "a memory", data_dir=data_dir)
    out = tmp_path / "loadtest-out"
    for name, ok in (("20261201-100000", False), ("20261202-100000", True)):
        folder = out / name
        folder.mkdir(parents=True)
        (folder / "report.json").write_text(json.dumps({"ok": ok, "finished": name, "runs": []}))
        (folder / "summary.txt").write_text(f"RESULT: {'PASS' if ok else 'FAIL'} <b>{name}</b>\n")
        (folder / "report.html").write_text(f"<html><body>{name}</body></html>")
        os.utime(folder / "report.json", (0, 1_000_000 if not ok else 2_000_000))
    board = Dashboard(data_dir, tmp_path)
    try:
        host = {"Host": f"127.0.0.1:{board.port}", **board.bearer()}
        status, _, body = board.request("/api/report", host)
        report = json.loads(body)
        assert (status, report["found"], report["ok"]) == (200, True, True)
        assert report["summary"] == "RESULT: PASS <b>20261202-100000</b>\n"
        status, headers, page = board.request("/report", host)
        assert (status, page) == (200, b"<html><body>20261202-100000</body></html>")
        assert "script-src" not in headers["content-security-policy"]  # no script may run
    finally:
        board.stop()
    board = Dashboard(data_dir, tmp_path, "--report", str(out / "20261201-100000"))
    try:
        host = {"Host": f"127.0.0.1:{board.port}", **board.bearer()}
        report = json.loads(board.request("/api/report", host)[2])
        assert (report["found"], report["ok"]) == (True, False)
    finally:
        board.stop()


def test_without_a_report_the_panel_says_how_to_make_one(dashboard: Dashboard) -> None:
    host = {"Host": f"127.0.0.1:{dashboard.port}", **dashboard.bearer()}
    report = json.loads(dashboard.request("/api/report", host)[2])
    assert report["found"] is False
    assert "python -m loadtest" in report["hint"]


# -- refusals at start ------------------------------------------------------------------


def test_a_missing_database_is_one_clear_error(tmp_path: Path) -> None:
    done = run_cli("dashboard", "--port", "0", data_dir=tmp_path / "nothing-here")
    assert done.returncode == 6
    assert done.stderr.startswith("Error: ")
    assert "Hint: " in done.stderr


def test_a_port_in_use_is_one_clear_error(data_dir: Path) -> None:
    run_cli("ingest", "a memory", data_dir=data_dir)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli("dashboard", "--port", str(port), data_dir=data_dir)
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "--port 0" in done.stderr


def test_the_dashboard_never_imports_the_mcp_sdk() -> None:
    """It is a face over the library, like the CLI that starts it."""
    probe = (
        "import sys\n"
        "import vestige.cli.dashboard, vestige.dashboard.app\n"
        "print(sorted(m for m in sys.modules if m == 'mcp' or m.startswith(('mcp.', "
        "'vestige.server'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
