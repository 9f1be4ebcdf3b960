"""A process forked from one with an open store: clear errors, never a deadlock.

Each fork runs in a fresh interpreter (``python -c``), so the test worker's own threads are
not part of it.  In one case a thread of the parent is inside a write transaction at the
fork; in the other the store is idle.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.multiprocess

_FORK = r"""
import json, os, sys, threading
from vestige import Store, StoreError

data, report, mid_write = sys.argv[1], sys.argv[2], sys.argv[3] == "mid-write"
store = Store.open(data)
inside, release = threading.Event(), threading.Event()

def slow(conn):
    conn.execute("INSERT INTO fsrs_config(key, value, updated_at) VALUES ('f', 1, 'now')")
    inside.set()
    release.wait(30)

if mid_write:
    writer = threading.Thread(target=store._db.write, args=(slow,))
    writer.start()
    # The writer mutex, the gate and SQLite's write lock are all held from here on.
    assert inside.wait(30), "the writer never got inside its transaction"

def attempt(what, action):
    try:
        seen[what] = action()
    except StoreError as exc:
        seen[what] = {"error": exc.message, "hint": exc.hint}

pid = os.fork()
if pid == 0:
    seen = {}
    attempt("inherited", lambda: store.ingest("through the parent's store").content)
    store.close()  # forgets the inherited connections; must neither hang nor close them

    def own():
        with Store.open(data) as mine:
            return mine.ingest("through the child's own store").content

    attempt("own", own)
    with open(report, "w") as f:
        json.dump(seen, f)
    os._exit(0)
_, status = os.waitpid(pid, 0)
if mid_write:
    release.set()
    writer.join()
store.ingest("the parent after the fork")
contents = sorted(m.content for m in store.iter_memories())
print(json.dumps({"status": status, "contents": contents}))
store.close()
"""


def _fork(tmp_path: Path, mode: str) -> tuple[dict[str, object], dict[str, object]]:
    report = tmp_path / "child.json"
    # -W: Python 3.12+ warns that fork() in a threaded process may deadlock.
    python = [sys.executable, "-W", "ignore::DeprecationWarning"]
    run = subprocess.run(
        [*python, "-c", _FORK, str(tmp_path / "data"), str(report), mode],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout), json.loads(report.read_text())


@pytest.mark.timeout(60)
def test_a_child_forked_mid_write_gets_errors_that_say_why_not_a_deadlock(tmp_path: Path) -> None:
    parent, child = _fork(tmp_path, "mid-write")
    assert child["inherited"] == {
        "error": f"this store of {tmp_path / 'data' / 'vestige.db'} was opened before "
        "os.fork(): a forked process cannot use its parent's SQLite connections",
        "hint": "Open a new Store in the child process (Store.open), or start children with "
        "the 'spawn' method.",
    }
    own = child["own"]
    assert isinstance(own, dict)
    assert "forked while its parent was writing" in own["error"]
    assert "set_start_method('spawn')" in own["hint"]
    # The parent finished its write and goes on; the child changed nothing.
    assert parent == {"status": 0, "contents": ["the parent after the fork"]}


@pytest.mark.timeout(60)
def test_a_child_forked_from_an_idle_store_opens_its_own(tmp_path: Path) -> None:
    parent, child = _fork(tmp_path, "idle")
    inherited = child["inherited"]
    assert isinstance(inherited, dict)
    assert "opened before os.fork()" in inherited["error"]
    assert child["own"] == "through the child's own store"
    assert parent == {
        "status": 0,
        "contents": ["the parent after the fork", "through the child's own store"],
    }
