"""`vestige log | undo | edit | delete | purge`, run as real subprocesses on temp data dirs.

Promote and demote have no CLI command; the test process makes them through the library's
``Store`` (closed again before the CLI runs), as another agent on the same file would.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.cli_helpers import CLI, cli_json, run_cli
from vestige import Store, config

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]

USAGE, BAD_INPUT, NOT_FOUND = 2, 5, 6
#: UTC+05:30 as a POSIX TZ rule (no tz database needed): a UTC time cannot pass for it.
IST = "IST-05:30"


def ingest(data_dir: Path, text: str, *args: str) -> str:
    made = cli_json("ingest", text, "--force-create", *args, data_dir=data_dir)
    memory_id: str = made["memory"]["id"]
    return memory_id


def log(data_dir: Path, *args: str) -> dict[str, Any]:
    page: dict[str, Any] = cli_json("log", *args, data_dir=data_dir)
    return page


def seqs(page: dict[str, Any]) -> list[int]:
    return [c["seq"] for c in page["changes"]]


def memory(data_dir: Path, memory_id: str) -> dict[str, Any]:
    """The memory's row, read through the library (nothing else has the store open then)."""
    with Store.open(data_dir, create=False) as store:
        return store.get(memory_id).to_dict()


def live_ids(data_dir: Path) -> set[str]:
    with Store.open(data_dir, create=False) as store:
        return {m.id for m in store.iter_memories()}


def undo(data_dir: Path, seq: int) -> dict[str, Any]:
    done: dict[str, Any] = cli_json("undo", str(seq), data_dir=data_dir)
    return done


def refused(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = run_cli(*args, data_dir=data_dir)
    assert result.returncode == BAD_INPUT, (result.stdout, result.stderr)
    assert result.stderr.startswith("Error: "), result.stderr
    assert "\nHint: " in result.stderr, result.stderr
    return result


# -- vestige log ----------------------------------------------------------------------------


def test_log_lists_every_change_newest_first_naming_the_cli_command(data_dir: Path) -> None:
    a = ingest(data_dir, "The staging database is read-only on Fridays")
    b = ingest(data_dir, "Deploys go out on Tuesdays")
    run_cli("edit", a, "--tags", "ops", data_dir=data_dir)
    page = log(data_dir)
    assert [(c["kind"], c["memory_id"]) for c in page["changes"]] == [
        ("edited", a),
        ("created", b),
        ("created", a),
    ]
    assert seqs(page) == [3, 2, 1]
    assert (page["newest_seq"], page["gap"], page["more"]) == (3, None, False)
    edit = page["changes"][0]
    assert edit["transport"] == "cli"
    assert re.fullmatch(r"vestige edit pid \d+", edit["process"]), edit
    assert edit["detail"] == {"changed": ["tags"]}
    assert "before" not in edit  # whole rows only when asked for
    full = log(data_dir, "--with-before")
    assert full["changes"][0]["before"][a]["tags"] == []
    assert full["changes"][0]["before"][a]["content"].startswith("The staging database")


def test_log_text_is_a_table_with_local_times(data_dir: Path) -> None:
    a = ingest(data_dir, "The staging database is read-only on Fridays")
    at = log(data_dir)["changes"][0]["at"]
    env = {**os.environ, "TZ": IST}
    result = run_cli("log", data_dir=data_dir, env=env)
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()
    assert header.split() == ["SEQ", "WHEN", "KIND", "MEMORY", "WHO", "DETAIL"]
    local = datetime.fromisoformat(at) + timedelta(hours=5, minutes=30)
    assert row.split()[:5] == ["1", *local.strftime("%Y-%m-%d %H:%M:%S").split(), "created", a]
    assert re.search(r"cli/vestige ingest pid \d+", row), row
    assert result.stderr == ""


def test_log_filters_by_memory_and_kind_and_pages(data_dir: Path) -> None:
    a = ingest(data_dir, "The staging database is read-only on Fridays")
    b = ingest(data_dir, "Deploys go out on Tuesdays")
    run_cli("edit", a, "--tags", "ops", data_dir=data_dir)
    run_cli("edit", b, "--tags", "ci", data_dir=data_dir)
    run_cli("delete", b, data_dir=data_dir)
    assert seqs(log(data_dir, "--memory", a)) == [3, 1]
    assert seqs(log(data_dir, "--kind", "edited")) == [4, 3]
    assert seqs(log(data_dir, "--kind", "deleted", "--kind", "created")) == [5, 2, 1]
    assert seqs(log(data_dir, "--kind", "deleted,created", "--memory", b)) == [5, 2]
    assert seqs(log(data_dir, "--oldest-first")) == [1, 2, 3, 4, 5]
    first = log(data_dir, "--limit", "2")
    assert (seqs(first), first["more"]) == ([5, 4], True)
    text = run_cli("log", "--limit", "2", "--oldest-first", data_dir=data_dir)
    assert text.returncode == 0
    assert "Next page: add --since 2" in text.stderr, text.stderr
    following = log(data_dir, "--limit", "2", "--oldest-first", "--since", "2")
    assert (seqs(following), following["more"]) == ([3, 4], True)
    last = log(data_dir, "--limit", "2", "--oldest-first", "--since", "4")
    assert (seqs(last), last["more"]) == ([5], False)


def test_log_since_a_change_number_or_a_time(data_dir: Path) -> None:
    for text in ("one fact about staging", "two facts about deploys", "three about backups"):
        ingest(data_dir, text)
    assert seqs(log(data_dir, "--since", "1")) == [3, 2]
    assert seqs(log(data_dir, "--since", "#2")) == [3]
    assert seqs(log(data_dir, "--since", "3")) == []
    second = datetime.fromisoformat(
        log(data_dir, "--since", "1", "--oldest-first")["changes"][0]["at"]
    )
    assert seqs(log(data_dir, "--since", second.isoformat())) == [3]
    # A time without a zone is local time, as `log` shows it.
    env = {**os.environ, "TZ": IST}
    naive = (second + timedelta(hours=5, minutes=30)).replace(tzinfo=None).isoformat()
    result = run_cli("log", "--since", naive, "--json", data_dir=data_dir, env=env)
    assert result.returncode == 0, result.stderr
    assert seqs(json.loads(result.stdout)) == [3]
    assert seqs(log(data_dir, "--since", "2000-01-01")) == [3, 2, 1]


def test_log_bad_input_is_one_clear_error(data_dir: Path, tmp_path: Path) -> None:
    missing = run_cli("log", data_dir=tmp_path / "nowhere")
    assert missing.returncode == NOT_FOUND
    ingest(data_dir, "a fact to have a database")
    kind = refused(data_dir, "log", "--kind", "bogus")
    assert "unknown change kind 'bogus'" in kind.stderr
    assert "created, reinforced" in kind.stderr
    when = refused(data_dir, "log", "--since", "yesterday")
    assert "since 'yesterday' is not a date" in when.stderr
    for limit in ("0", str(config.CHANGELOG_MAX_LIMIT + 1)):
        assert run_cli("log", "--limit", limit, data_dir=data_dir).returncode == USAGE
    empty = run_cli("log", "--memory", str(uuid.uuid4()), data_dir=data_dir)
    assert (empty.returncode, empty.stdout) == (0, "No changes match.\n")


# -- vestige edit and undo ---------------------------------------------------------------


def test_edit_from_stdin_then_undo_and_redo(data_dir: Path) -> None:
    a = ingest(data_dir, "Deploys go out on Tuesdays", "--tags", "ops")
    new = "Deploys go out on Mondays\nafter the standup"
    edited = run_cli("edit", a, "--content", "-", "--json", data_dir=data_dir, input=new)
    assert edited.returncode == 0, edited.stderr
    out = json.loads(edited.stdout)
    assert (out["memory"]["content"], out["memory"]["tags"]) == (new, ["ops"])
    assert out["change_seq"] == log(data_dir)["newest_seq"] == 2
    text = run_cli("edit", a, "--tags", "ops, release", data_dir=data_dir)
    assert text.returncode == 0, text.stderr
    assert "Content:        Deploys go out on Mondays\n" in text.stdout
    assert "Tags:           ops, release\n" in text.stdout
    assert "vestige undo 3" in text.stdout
    cleared = cli_json("edit", a, "--tags", "", data_dir=data_dir)
    assert (cleared["memory"]["tags"], cleared["change_seq"]) == ([], 4)

    undo(data_dir, 4)
    assert memory(data_dir, a)["tags"] == ["ops", "release"]
    done = run_cli("undo", "3", data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Undid change #3 (edited) as change #6.\n")
    assert f"Put back as it was:  {a}" in done.stdout
    assert "vestige undo 6" in done.stdout
    undone = undo(data_dir, 2)
    assert (undone["kind"], undone["undoes"], undone["memory_id"]) == ("undone", 2, a)
    assert undone["detail"] == {
        "undone_kind": "edited",
        "brought_back": [],
        "removed": [],
        "unlinked": [],
    }
    back = memory(data_dir, a)
    assert (back["content"], back["tags"]) == ("Deploys go out on Tuesdays", ["ops"])

    again = refused(data_dir, "undo", "2")
    assert "change #2 (edited) was already undone by change #7" in again.stderr
    assert "To redo it, undo change #7." in again.stderr
    undo(data_dir, 7)  # undoing the undo is a redo
    assert memory(data_dir, a)["content"] == new


def test_edit_refuses_what_it_cannot_do(data_dir: Path) -> None:
    a = ingest(data_dir, "Deploys go out on Tuesdays")
    nothing = refused(data_dir, "edit", a)
    assert "nothing to edit" in nothing.stderr
    empty = refused(data_dir, "edit", a, "--content", "   ")
    assert "Error: " in empty.stderr
    gone = run_cli("edit", str(uuid.uuid4()), "--content", "x", data_dir=data_dir)
    assert gone.returncode == NOT_FOUND, gone.stderr
    assert memory(data_dir, a)["content"] == "Deploys go out on Tuesdays"
    assert log(data_dir)["newest_seq"] == 1  # nothing half written, nothing recorded


def test_undo_of_promote_and_demote_puts_the_strength_back(data_dir: Path) -> None:
    a = ingest(data_dir, "Deploys go out on Tuesdays")
    b = ingest(data_dir, "The staging database is read-only on Fridays")
    untouched = {m: memory(data_dir, m) for m in (a, b)}
    with Store.open(data_dir, create=False) as store:
        store.promote(a)
        store.demote(b)
    promoted, demoted = memory(data_dir, a), memory(data_dir, b)
    assert promoted["adjustment"] > 0 > demoted["adjustment"]
    kinds = {c["seq"]: c["kind"] for c in log(data_dir)["changes"]}
    assert (kinds[3], kinds[4]) == ("promoted", "demoted")
    assert undo(data_dir, 3)["detail"]["undone_kind"] == "promoted"
    assert undo(data_dir, 4)["detail"]["undone_kind"] == "demoted"
    for m in (a, b):
        now = memory(data_dir, m)
        for field in ("stability", "difficulty", "adjustment", "reps", "lapses"):
            assert now[field] == untouched[m][field], (m, field)


def test_undo_of_a_supersede_makes_the_old_memory_current_again(data_dir: Path) -> None:
    old = cli_json("ingest", "The user prefers dark mode", data_dir=data_dir)["memory"]["id"]
    fix = cli_json("ingest", "Actually, the user now prefers light mode", data_dir=data_dir)
    assert fix["decision"] == "supersede"
    assert memory(data_dir, old)["superseded_by"] == fix["memory"]["id"]
    change = log(data_dir, "--kind", "superseded")["changes"][0]
    assert (change["memory_id"], change["other_id"]) == (fix["memory"]["id"], old)
    undo(data_dir, change["seq"])
    assert memory(data_dir, old)["superseded_by"] is None
    hits = cli_json("search", "user prefers mode", data_dir=data_dir)["results"]
    assert old in {h["memory"]["id"] for h in hits}


def test_delete_then_undo_brings_the_memory_back(data_dir: Path) -> None:
    old = cli_json("ingest", "The user prefers dark mode", data_dir=data_dir)["memory"]["id"]
    new = cli_json("ingest", "Actually, the user now prefers light mode", data_dir=data_dir)
    newer = new["memory"]["id"]
    deleted = run_cli("delete", newer, data_dir=data_dir)
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.splitlines() == [
        f"Deleted memory {newer} (change #3).",
        f"Brought back what it had superseded: {old}",
        "To bring it back: vestige undo 3",
    ]
    assert live_ids(data_dir) == {old}
    assert memory(data_dir, old)["superseded_by"] is None
    again = run_cli("delete", newer, data_dir=data_dir)
    assert again.returncode == NOT_FOUND
    undone = undo(data_dir, 3)
    assert undone["detail"]["brought_back"] == [newer]
    assert live_ids(data_dir) == {old, newer}
    assert memory(data_dir, old)["superseded_by"] == newer
    other = ingest(data_dir, "Backups run nightly at two")
    out = cli_json("delete", other, data_dir=data_dir)
    assert out == {"id": other, "deleted": True, "change_seq": 6, "brought_back": []}


def test_undo_is_refused_while_a_later_change_touched_the_memory(data_dir: Path) -> None:
    a = ingest(data_dir, "Deploys go out on Tuesdays")
    cli_json("edit", a, "--content", "Deploys go out on Mondays", data_dir=data_dir)  # 2
    cli_json("edit", a, "--tags", "ops", data_dir=data_dir)  # 3
    blocked = refused(data_dir, "undo", "2")
    assert "later changes touched the same memory: #3 (edited)" in blocked.stderr
    assert "change #3 first" in blocked.stderr
    assert memory(data_dir, a)["content"] == "Deploys go out on Mondays"
    undo(data_dir, 3)  # 4
    undo(data_dir, 2)  # allowed now: #3 was undone by #4
    assert memory(data_dir, a)["content"] == "Deploys go out on Tuesdays"
    assert memory(data_dir, a)["tags"] == []


def test_undo_refuses_what_cannot_be_undone(data_dir: Path) -> None:
    ingest(data_dir, "Deploys go out on Tuesdays")
    created = refused(data_dir, "undo", "1")
    assert "change #1 (created) cannot be undone" in created.stderr
    assert "delete it" in created.stderr
    missing = refused(data_dir, "undo", "99")
    assert "there is no change #99 (the newest is #1)" in missing.stderr
    bad = run_cli("undo", "last", data_dir=data_dir)
    assert bad.returncode == USAGE
    assert "'last' is not a change number" in bad.stderr
    assert log(data_dir)["newest_seq"] == 1


# -- vestige purge ----------------------------------------------------------------------------

MISTAKE = "zqmistake7f3a9c"  # lowercase: the full-text index keeps terms lowercased


def files_holding(data_dir: Path, needle: str) -> list[str]:
    """Every file under the data directory whose bytes contain ``needle``.

    Only called when every CLI process has exited and the test holds no connection.
    """
    return [
        str(p.relative_to(data_dir))
        for p in sorted(data_dir.rglob("*"))
        if p.is_file() and needle.encode() in p.read_bytes()
    ]


def test_purge_leaves_no_copy_in_any_file(data_dir: Path) -> None:
    live = ingest(data_dir, f"The deploy token is {MISTAKE} until June")
    cli_json(
        "edit", live, "--content", f"The deploy token is {MISTAKE} (rotated)", data_dir=data_dir
    )
    gone = ingest(data_dir, f"Backup key {MISTAKE} for the old server")
    cli_json("edit", gone, "--tags", "keys", data_dir=data_dir)
    cli_json("delete", gone, data_dir=data_dir)
    keep = ingest(data_dir, "Backups run nightly at two")
    assert files_holding(data_dir, MISTAKE)  # the check can see a copy when there is one

    report = cli_json("purge", live, "--yes", data_dir=data_dir)
    assert report == {
        "id": live,
        "was_live": True,
        "brought_back": [],
        "changelog_entries_redacted": 1,  # the edit's previous row
        "checkpointed": True,
    }
    text = run_cli("purge", gone, "--yes", data_dir=data_dir)
    assert text.returncode == 0, text.stderr
    assert f"Purged memory {gone}." in text.stdout
    assert "deleted already" in text.stdout
    assert "Changelog entries redacted:  2" in text.stdout  # the edit's and the delete's rows
    assert "Backups made before now still hold copies" in text.stdout

    assert files_holding(data_dir, MISTAKE) == []
    wal = data_dir / "vestige.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    assert live_ids(data_dir) == {keep}
    purges = log(data_dir, "--kind", "purged", "--with-before")["changes"]
    marks = [(c["memory_id"], c["before"]) for c in purges]
    assert marks == [(gone, {gone: {"purged": True}}), (live, {live: {"purged": True}})]
    assert purges[0]["detail"]["was_live"] is False
    redacted = refused(data_dir, "undo", "2")  # the edit of the purged memory
    assert "a purge removed what it would put back" in redacted.stderr
    assert run_cli("purge", live, "--yes", data_dir=data_dir).returncode == NOT_FOUND


def test_purge_without_a_terminal_needs_yes(data_dir: Path) -> None:
    a = ingest(data_dir, f"The deploy token is {MISTAKE}")
    result = run_cli("purge", a, data_dir=data_dir, input="y\n")
    assert result.returncode == USAGE, result.stderr
    assert "stdin is not a terminal" in result.stderr
    assert f"vestige purge {a} --yes" in result.stderr
    assert live_ids(data_dir) == {a}
    assert log(data_dir)["newest_seq"] == 1


def on_terminal(data_dir: Path, answer: str, *args: str) -> tuple[int, str]:
    """Run `vestige ARGS` with stdin and stderr on a pseudo-terminal, typing ``answer``."""
    main, child = pty.openpty()
    try:
        proc = subprocess.Popen(
            [*CLI, *args, "--data-dir", str(data_dir)],
            stdin=child,
            stdout=subprocess.PIPE,
            stderr=child,
        )
        os.close(child)
        os.write(main, answer.encode())  # the terminal keeps it until the prompt reads
        seen = b""
        end = time.monotonic() + 60
        while time.monotonic() < end:
            ready, _, _ = select.select([main], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(main, 4096)
                except OSError:  # the child side is closed: everything was read
                    break
                if not chunk:
                    break
                seen += chunk
            elif proc.poll() is not None:
                break
        proc.communicate(timeout=60)
    finally:
        os.close(main)
    return proc.returncode, seen.decode(errors="replace")


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_purge_on_a_terminal_asks_first(data_dir: Path) -> None:
    a = ingest(data_dir, "The deploy token is abc123")
    code, screen = on_terminal(data_dir, "n\n", "purge", a)
    assert code == 1, screen
    assert f"This removes memory {a}: 'The deploy token is abc123' for good" in screen
    assert "Purge it? [y/N]" in screen
    assert "Aborted" in screen
    assert live_ids(data_dir) == {a}
    code, screen = on_terminal(data_dir, "y\n", "purge", a)
    assert code == 0, screen
    assert live_ids(data_dir) == set()
    assert [c["kind"] for c in log(data_dir)["changes"]] == ["purged", "created"]


# -- the gap after trimming ----------------------------------------------------------------


def test_log_says_when_trimmed_changes_are_missing(data_dir: Path, tmp_path: Path) -> None:
    """Only the decay pass trims, to the newest VESTIGE_CHANGELOG_KEEP entries."""
    extra, keep = 10, 5
    rows = tmp_path / "many.jsonl"
    with rows.open("w", encoding="utf-8") as f:
        for i in range(extra + keep):
            f.write(json.dumps({"id": str(uuid.UUID(int=i + 1)), "content": f"fact {i}"}) + "\n")
    assert run_cli("import", rows, data_dir=data_dir).returncode == 0
    first_at = log(data_dir, "--oldest-first", "--limit", "1")["changes"][0]["at"]
    env = {**os.environ, "VESTIGE_CHANGELOG_KEEP": str(keep)}
    assert run_cli("consolidate", data_dir=data_dir, env=env).returncode == 0
    assert log(data_dir, "--oldest-first", "--limit", "1")["changes"][0]["seq"] == extra + 1

    result = run_cli("log", "--since", "1", "--limit", "3", "--json", data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    page = json.loads(result.stdout)
    assert page["gap"]["trimmed_through"] == extra
    assert result.stderr.startswith(f"Warning: changes up to #{extra} may be missing")
    by_time = run_cli("log", "--since", first_at, "--limit", "3", data_dir=data_dir)
    assert by_time.returncode == 0
    assert "Warning: changes up to" in by_time.stderr
    kept = run_cli("log", "--since", str(extra), "--limit", "3", data_dir=data_dir)
    assert "Warning" not in kept.stderr
    trimmed = refused(data_dir, "undo", "3")
    assert "change #3 was trimmed from the changelog" in trimmed.stderr
