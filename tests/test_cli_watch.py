"""`vestige watch`, run as a real subprocess while other real processes write.

The writers are other `vestige` runs and a real `vestige-mcp` server.  Every wait is for an
event (a line on the watcher's stdout, a process exiting) with a generous deadline; the
watcher is always stopped by its pid and reaped.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any, Final

import pytest

from tests.cli_helpers import CLI, cli_json, holds, run_cli
from tests.server_helpers import ServerProcess, owner_of, tool_text, wait_for
from vestige import config
from vestige.owner import read_owners

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow, pytest.mark.timeout(180)]

#: How long a change may take to reach the watcher before the test calls it lost: a
#: liveness deadline for a loaded machine (a change normally shows within ~100 ms).
LINE_WAIT_S: Final = 30.0
#: How long a stopped watcher may take to exit (it normally takes milliseconds).
EXIT_WAIT_S: Final = 30.0
#: No decay pass in a server during a test: its entry would be one more change to see.
QUIET: Final = {"VESTIGE_CONSOLIDATION_INTERVAL_HOURS": "1000"}
NOT_FOUND, BAD_INPUT = 6, 5


class Watcher:
    """`vestige watch ARGS` with stdout on a pipe, read line by line as lines come.

    Read with a selector in the test's own thread, not by a reader thread: the test closes
    its end of the pipe (a reader that left), which must not wait on a blocked read.
    """

    def __init__(self, data_dir: Path, err: Path, *args: str) -> None:
        self.data_dir = data_dir
        self.err_path = err
        self._err: IO[bytes] = err.open("wb")
        self.proc = subprocess.Popen(
            [*CLI, "watch", "--data-dir", str(data_dir), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._err,
        )
        self._buffer = b""

    def line(self) -> str:
        """The next line it printed (waiting for it)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + LINE_WAIT_S
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"watch printed nothing within {LINE_WAIT_S:.0f} s")
                if sel.select(remaining):
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        raise AssertionError(f"watch exited ({self.proc.poll()}): {self.stderr()}")
                    self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def change(self) -> dict[str, Any]:
        change: dict[str, Any] = json.loads(self.line())
        return change

    def stderr(self) -> str:
        self._err.flush()
        return self.err_path.read_text(errors="replace")

    def wait_open(self) -> None:
        """Until it has the database open (its feed starts right after, in microseconds)."""
        database = self.data_dir / "vestige.db"

        def opened() -> bool:
            return holds(self.proc.pid, database) or self.proc.poll() is not None

        assert wait_for(opened, LINE_WAIT_S), "watch never opened the database"
        assert self.proc.poll() is None, self.stderr()

    def wait(self) -> int:
        return self.proc.wait(EXIT_WAIT_S)

    def stop(self) -> None:
        """SIGKILL by pid if still running, reap, close the pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(EXIT_WAIT_S)
        if self.proc.stdout is not None:
            with contextlib.suppress(OSError):
                self.proc.stdout.close()
        self._err.close()


@pytest.fixture
def watch(tmp_path: Path, data_dir: Path) -> Any:
    """Start watchers with ``watch(*args)``; each is killed by pid if still running, reaped."""
    started: list[Watcher] = []

    def start(*args: str) -> Watcher:
        w = Watcher(data_dir, tmp_path / f"watch-{len(started)}.err", *args)
        started.append(w)
        return w

    try:
        yield start
    finally:
        for w in started:
            w.stop()


def ingest(data_dir: Path, text: str) -> str:
    made = cli_json("ingest", text, "--force-create", data_dir=data_dir)
    memory_id: str = made["memory"]["id"]
    return memory_id


def newest_seq(data_dir: Path) -> int:
    seq: int = cli_json("log", "-n", "1", data_dir=data_dir)["newest_seq"]
    return seq


# -- what it prints ------------------------------------------------------------------------


def test_a_change_by_another_cli_process_is_printed_and_older_ones_are_not(
    data_dir: Path, watch: Any
) -> None:
    before = ingest(data_dir, "made before the watch started")
    w = watch("--json")
    w.wait_open()
    after = ingest(data_dir, "made while watching")
    change = w.change()
    assert change["memory_id"] == after != before
    assert change["kind"] == "created"
    assert change["transport"] == "cli"
    assert change["process"].startswith("vestige ingest")
    assert "before" not in change


def test_since_a_number_replays_from_there_then_follows(data_dir: Path, watch: Any) -> None:
    ids = [ingest(data_dir, f"memory number {i}") for i in range(3)]
    first = newest_seq(data_dir) - 2
    w = watch("--json", "--since", str(first))
    replayed = [w.change(), w.change()]
    assert [c["seq"] for c in replayed] == [first + 1, first + 2]
    assert [c["memory_id"] for c in replayed] == ids[1:]
    later = ingest(data_dir, "made after the replay")
    assert w.change()["memory_id"] == later


def test_changes_trimmed_before_it_read_them_are_one_warning(data_dir: Path, watch: Any) -> None:
    """Asked to start where the log was trimmed since: one warning, then the oldest kept."""
    for i in range(6):
        ingest(data_dir, f"memory number {i}")
    trimmed = run_cli(
        "consolidate",
        data_dir=data_dir,
        env={**os.environ, config.CHANGELOG_KEEP_ENV: "3"},
    )
    assert trimmed.returncode == 0, trimmed.stderr
    oldest = cli_json("log", "--oldest-first", "-n", "1", data_dir=data_dir)["changes"][0]["seq"]
    assert oldest > 2
    newest = newest_seq(data_dir)
    w = watch("--json", "--since", "1")
    kept = [w.change()["seq"] for _ in range(newest - oldest + 1)]
    assert kept == list(range(oldest, newest + 1))
    later = ingest(data_dir, "made after the trim")
    assert w.change()["memory_id"] == later
    warnings = [line for line in w.stderr().splitlines() if line]
    assert len(warnings) == 1, warnings
    assert "may be missing" in warnings[0]


def test_memory_keeps_only_that_memory(data_dir: Path, watch: Any) -> None:
    mine = ingest(data_dir, "the memory being watched")
    other = ingest(data_dir, "some other memory")
    w = watch("--json", "--since", "0", "--memory", mine)
    assert w.change()["memory_id"] == mine  # its creation; the other's is left out
    cli_json("edit", other, "--content", "other, edited first", data_dir=data_dir)
    cli_json("edit", mine, "--content", "mine, edited second", data_dir=data_dir)
    edited = w.change()  # the other memory's edit came first: a filter that let it through fails
    assert (edited["memory_id"], edited["kind"]) == (mine, "edited")


def test_a_text_line_reads_like_the_log_row_of_the_same_change(data_dir: Path, watch: Any) -> None:
    mine = ingest(data_dir, "shown as text")
    w = watch("--since", "0")
    line = w.line()
    table = run_cli("log", data_dir=data_dir)
    assert table.returncode == 0, table.stderr
    row = next(r for r in table.stdout.splitlines() if mine in r)
    assert line.split() == row.split()
    assert line.split()[0] == "1"
    assert line.split()[3] == "created"


# -- beside a running server ------------------------------------------------------------


def test_a_server_starts_and_writes_beside_a_watcher_which_prints_its_change(
    tmp_path: Path, data_dir: Path, watch: Any
) -> None:
    ingest(data_dir, "so that there is a database to watch")
    w = watch("--json", "--since", str(newest_seq(data_dir)))
    w.wait_open()
    with ServerProcess(data_dir, home=tmp_path, env=QUIET) as server:
        server.initialize()
        assert owner_of(data_dir, server.pid).pid == server.pid  # the owner lock was free
        assert w.proc.pid not in [o.pid for o in read_owners(data_dir)]
        made = server.call_tool("ingest", {"content": "written through the server"})
        assert not made.get("isError"), made
        memory_id = json.loads(tool_text(made))["id"]
        change = w.change()
        assert change["memory_id"] == memory_id
        assert change["transport"] == "stdio"
        assert change["client"] == "vestige-tests"
    assert w.proc.poll() is None  # the server stopping does not end the watch


# -- how it ends ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["SIGINT", "SIGTERM", "SIGHUP"]
)
@pytest.mark.parametrize("mode", [("--json",), ()], ids=["json", "text"])
def test_a_signal_ends_it_with_0_and_nothing_on_stderr(
    data_dir: Path, watch: Any, signum: int, mode: tuple[str, ...]
) -> None:
    ingest(data_dir, "one change to see")
    w = watch(*mode, "--since", "0")
    w.line()  # it is in its loop
    w.proc.send_signal(signum)
    assert w.wait() == 0
    assert w.stderr() == ""


def test_signals_in_quick_succession_end_it_once_quietly(data_dir: Path, watch: Any) -> None:
    """Ctrl-C, Ctrl-C, then SIGTERM while it stops: still exit 0 and nothing on stderr."""
    ingest(data_dir, "one change to see")
    w = watch("--json", "--since", "0")
    w.line()
    for signum in (signal.SIGINT, signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ProcessLookupError):
            w.proc.send_signal(signum)
    assert w.wait() == 0
    assert w.stderr() == ""


def test_a_database_replaced_under_it_is_an_error_not_silence(
    data_dir: Path, watch: Any, tmp_path: Path
) -> None:
    ingest(data_dir, "one change to see")
    w = watch("--json", "--since", "0")
    w.line()
    (data_dir / "vestige.db").rename(tmp_path / "moved-away.db")  # no process writes it now
    assert w.wait() == 1
    assert error_lines(w.stderr()) == [
        f"Error: {data_dir / 'vestige.db'} was deleted or replaced while watching: this watch "
        "followed the old file"
    ]


def test_stdout_closed_is_one_clear_error_and_stderr_closed_still_prints(
    data_dir: Path, tmp_path: Path
) -> None:
    ingest(data_dir, "one change to see")
    base = [*CLI, "watch", "--json", "--since", "0", "--data-dir", str(data_dir)]
    closed_out = subprocess.run(
        _closed(1, base), stderr=subprocess.PIPE, text=True, check=False, timeout=EXIT_WAIT_S
    )
    assert closed_out.returncode == 2
    assert error_lines(closed_out.stderr) == [
        "Error: standard output is closed: there is nowhere to print the changes"
    ]
    out = tmp_path / "changes.jsonl"
    with out.open("wb") as sink:
        proc = subprocess.Popen(_closed(2, base), stdout=sink)
        try:
            assert wait_for(lambda: out.stat().st_size > 0, LINE_WAIT_S)
        finally:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(EXIT_WAIT_S) == 0
    assert json.loads(out.read_text().splitlines()[0])["seq"] == 1
    assert (data_dir / "vestige.gate.lock").stat().st_size == 0  # nothing written into a lock


def _closed(fd: int, argv: list[str]) -> list[str]:
    """``argv`` started with ``fd`` closed, as a shell's ``N>&-`` does."""
    return ["sh", "-c", f'exec "$@" {fd}>&-', "sh", *argv]


def test_a_reader_that_left_ends_it_quietly_at_the_next_write(
    data_dir: Path, tmp_path: Path
) -> None:
    """The reader closes its end after one line; the next change's write fails (EPIPE).

    Stdout is a socket here, not a pipe, so the watcher cannot notice the reader leaving
    before it writes (the next test covers that): this one covers the failed write.
    """
    ingest(data_dir, "the line the reader takes")
    ours, theirs = socket.socketpair()
    err = tmp_path / "watch.err"
    try:
        with err.open("wb") as ferr:
            watcher = subprocess.Popen(
                [*CLI, "watch", "--json", "--since", "0", "--data-dir", str(data_dir)],
                stdout=theirs.fileno(),
                stderr=ferr,
                stdin=subprocess.DEVNULL,
            )
        theirs.close()
        try:
            ours.settimeout(LINE_WAIT_S)
            first = b""
            while not first.endswith(b"\n"):
                chunk = ours.recv(65536)
                assert chunk, err.read_text()
                first += chunk
            assert json.loads(first)["seq"] == 1
            ours.close()  # the reader leaves
            ingest(data_dir, "a change to write to the reader that left")
            assert watcher.wait(EXIT_WAIT_S) == 0
        finally:
            if watcher.poll() is None:
                watcher.kill()
            watcher.wait(EXIT_WAIT_S)
    finally:
        ours.close()
        theirs.close()
    assert err.read_text() == ""


def test_a_reader_that_left_ends_it_without_waiting_for_a_change(
    data_dir: Path, tmp_path: Path
) -> None:
    """Unlike ``tail -f | head -1``, it does not linger until the next change."""
    ingest(data_dir, "the line head takes")
    err = tmp_path / "pipeline.err"
    with err.open("wb") as ferr:
        watcher = subprocess.Popen(
            [*CLI, "watch", "--json", "--since", "0", "--data-dir", str(data_dir)],
            stdout=subprocess.PIPE,
            stderr=ferr,
            stdin=subprocess.DEVNULL,
        )
        assert watcher.stdout is not None
        head = subprocess.Popen(["head", "-n", "1"], stdin=watcher.stdout, stdout=subprocess.PIPE)
        watcher.stdout.close()  # only head reads it now
        try:
            out, _ = head.communicate(timeout=EXIT_WAIT_S)
            rc = watcher.wait(EXIT_WAIT_S)
        finally:
            for proc in (head, watcher):
                if proc.poll() is None:
                    proc.kill()
                proc.wait(EXIT_WAIT_S)
    assert json.loads(out)["seq"] == 1
    assert rc == 0
    assert err.read_text() == ""


# -- refusals ------------------------------------------------------------------------------


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


@pytest.mark.parametrize(
    "since",
    # Past the newest change, or in the future: not an endless silence, an error.
    ["yesterday", "2025-13-45", "-3", "1000", "2999-01-01", "2999-01-01T00:00:00+00:00"],
)
def test_a_bad_since_is_one_clear_error(data_dir: Path, since: str) -> None:
    ingest(data_dir, "a database to watch")
    result = run_cli("watch", "--since", since, data_dir=data_dir)
    assert result.returncode == BAD_INPUT, result.stderr
    assert len(error_lines(result.stderr)) == 1, result.stderr
    assert result.stdout == ""


def test_an_unknown_memory_is_one_clear_error(data_dir: Path) -> None:
    ingest(data_dir, "a database to watch")
    unknown = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
    result = run_cli("watch", "--memory", unknown, data_dir=data_dir)
    assert result.returncode == NOT_FOUND, result.stderr
    assert error_lines(result.stderr) == [f"Error: no memory with id '{unknown}'"]


def test_a_deleted_memory_can_be_watched(data_dir: Path, watch: Any) -> None:
    """Its history still grows: undoing the delete brings it back, a change to it."""
    mine = ingest(data_dir, "deleted, then brought back")
    deleted = cli_json("delete", mine, data_dir=data_dir)["change_seq"]
    w = watch("--json", "--since", str(deleted), "--memory", mine)
    w.wait_open()
    cli_json("undo", str(deleted), data_dir=data_dir)
    change = w.change()
    assert (change["memory_id"], change["kind"], change["undoes"]) == (mine, "undone", deleted)


def test_a_missing_database_is_the_usual_error(tmp_path: Path) -> None:
    result = run_cli("watch", data_dir=tmp_path / "nothing here")
    assert result.returncode == NOT_FOUND
    assert len(error_lines(result.stderr)) == 1, result.stderr
    assert not (tmp_path / "nothing here").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_on_a_terminal_the_text_mode_says_what_it_watches(data_dir: Path, as_json: bool) -> None:
    """One line on stderr when a person watches; never in --json (a script's stream)."""
    ingest(data_dir, "seen on a terminal")
    main, child = pty.openpty()
    try:
        proc = subprocess.Popen(
            [*CLI, "watch", "--since", "0", "--data-dir", str(data_dir)]
            + (["--json"] if as_json else []),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=child,
        )
        os.close(child)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline()  # past its start: the line, if any, was written
            proc.send_signal(signal.SIGINT)
            assert proc.wait(EXIT_WAIT_S) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(EXIT_WAIT_S)
            if proc.stdout is not None:
                proc.stdout.close()
        seen = b""
        while select.select([main], [], [], 0)[0]:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # the child side is closed: everything was read
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(main)
    banner = f"Watching {data_dir / 'vestige.db'} for changes (Ctrl-C to stop)".encode()
    assert seen.strip() == (b"" if as_json else banner)
