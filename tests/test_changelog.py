"""The changelog: one entry per change, in the change's transaction, and undo (issue 9)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vestige import changelog, config
from vestige.changelog import Actor, ChangeKind
from vestige.errors import InvalidInput, MemoryNotFound
from vestige.store import Store

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from vestige.changelog import Change
    from vestige.models import DecayReport


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "data", actor=Actor("library", "tests pid 1")) as s:
        yield s


def trim(store: Store, *, keep: int) -> DecayReport:
    """A decay pass of a store that keeps ``keep`` changelog entries (VESTIGE_CHANGELOG_KEEP)."""
    env = {config.CHANGELOG_KEEP_ENV: str(keep)}
    with Store.open(store.data_dir, environ=env, actor=store.actor) as trimmer:
        return trimmer.decay()


def newest(store: Store) -> Change:
    return store.changes(limit=1).changes[0]


def kinds(store: Store) -> list[str]:
    return [c.kind for c in store.changes(limit=1000, oldest_first=True).changes]


def test_every_write_appends_exactly_one_entry_naming_what_it_changed(store: Store) -> None:
    first = store.ingest("The user prefers dark mode", tags=["ui"])
    assert (newest(store).kind, newest(store).memory_id) == ("created", first.id)

    again = store.smart_ingest("the user prefers dark mode")
    assert again.decision.value == "reinforce"
    entry = newest(store)
    assert (entry.kind, entry.memory_id, entry.detail) == (
        "reinforced",
        first.id,
        {"decision": "reinforce", "similarity": 1.0},
    )
    assert entry.before is not None
    assert entry.before[first.id]["reps"] == 0  # the row as it was, for undo

    fix = store.smart_ingest("Actually, the user now prefers light mode")
    assert fix.decision.value == "supersede"
    entry = newest(store)
    assert (entry.kind, entry.memory_id, entry.other_id) == ("superseded", fix.memory.id, first.id)

    store.promote(fix.memory.id)
    store.demote(fix.memory.id)
    store.edit(fix.memory.id, tags=["ui", "theme"])
    store.delete(fix.memory.id)
    deleted = newest(store)
    assert (deleted.kind, deleted.other_id) == ("deleted", first.id)  # it came back
    assert deleted.before is not None
    assert deleted.before[fix.memory.id]["content"].startswith("Actually")  # the tombstone
    assert deleted.detail == {"brought_back": [first.id]}
    store.decay()
    assert kinds(store) == [
        "created",
        "reinforced",
        "superseded",
        "promoted",
        "demoted",
        "edited",
        "deleted",
        "decayed",
    ]
    assert {(c.transport, c.process) for c in store.changes(limit=100).changes} == {
        ("library", "tests pid 1")
    }


def test_an_mcp_client_is_named_in_the_changes_made_for_it(store: Store) -> None:
    with changelog.acting_for("claude-code"):
        memory = store.ingest("made for a client")
    store.promote(memory.id)
    clients = [c.client for c in store.changes(limit=10, oldest_first=True).changes]
    assert clients == ["claude-code", None]


def test_a_failed_write_records_nothing(store: Store) -> None:
    memory = store.ingest("kept")
    with pytest.raises(MemoryNotFound):
        store.promote("no-such-memory")
    with pytest.raises(InvalidInput):
        store.edit(memory.id)  # nothing to edit
    assert kinds(store) == ["created"]


# -- undo ---------------------------------------------------------------------------------


def test_undo_puts_back_an_update_an_edit_a_promote_and_a_demote(store: Store) -> None:
    memory = store.ingest("The deploy runs on Fridays", tags=["ops"])
    original = store.get(memory.id)
    updated = store.smart_ingest("The deploy runs on Fridays after the standup meeting")
    assert updated.decision.value == "update"
    store.undo(newest(store).seq)
    assert store.get(memory.id).content == original.content
    assert store.search("standup") == []  # the full-text index follows

    store.edit(memory.id, content="The deploy runs on Mondays", tags=["ops", "release"])
    assert [h.memory.id for h in store.search("mondays")] == [memory.id]
    undo = store.undo(newest(store).seq)
    assert undo.kind == "undone"
    assert undo.detail is not None
    assert undo.detail["undone_kind"] == "edited"
    back = store.get(memory.id)
    assert (back.content, back.tags) == (original.content, original.tags)
    assert store.search("mondays") == []

    store.promote(memory.id)
    assert store.get(memory.id).adjustment > 0
    store.undo(newest(store).seq)
    assert store.get(memory.id).adjustment == original.adjustment
    store.demote(memory.id)
    store.undo(newest(store).seq)
    assert store.get(memory.id).stability == original.stability


def test_undo_of_a_supersede_keeps_both_memories_unlinked(store: Store) -> None:
    old = store.ingest("The user prefers dark mode")
    fix = store.smart_ingest("Actually, the user now prefers light mode")
    assert store.get(old.id).superseded_by == fix.memory.id
    store.undo(newest(store).seq)
    back = store.get(old.id)
    assert (back.superseded_by, back.adjustment) == (None, 0.0)
    assert store.get(fix.memory.id).content.startswith("Actually")  # never discarded


def test_undo_of_a_delete_brings_the_memory_back_and_relinks_what_it_superseded(
    store: Store,
) -> None:
    old = store.ingest("The user prefers dark mode")
    fix = store.smart_ingest("Actually, the user now prefers light mode").memory
    store.delete(fix.id)
    assert store.get(old.id).superseded_by is None
    undo = store.undo(newest(store).seq)
    assert undo.detail is not None
    assert undo.detail["brought_back"] == [fix.id]
    assert store.get(fix.id).content == fix.content
    assert store.get(old.id).superseded_by == fix.id
    assert [h.memory.id for h in store.search("light mode")] == [fix.id]
    # An undo is a change of its own: undoing it deletes the memory again.
    redo = store.undo(undo.seq)
    assert redo.detail is not None
    assert redo.detail["removed"] == [fix.id]
    with pytest.raises(MemoryNotFound):
        store.get(fix.id)


def test_undo_is_refused_while_a_later_change_to_the_memory_stands(store: Store) -> None:
    memory = store.ingest("The build uses make")
    store.edit(memory.id, content="The build uses ninja")
    edit = newest(store).seq
    store.promote(memory.id)
    promote = newest(store).seq
    with pytest.raises(InvalidInput, match=rf"later changes touched the same memory: #{promote}"):
        store.undo(edit)
    assert store.get(memory.id).content == "The build uses ninja"  # nothing half done
    store.undo(promote)
    store.undo(edit)  # the later change was undone: now it may be
    assert store.get(memory.id).content == "The build uses make"
    with pytest.raises(InvalidInput, match="already undone"):
        store.undo(edit)


def test_changes_to_other_memories_and_decay_passes_do_not_block_an_undo(store: Store) -> None:
    memory = store.ingest("The build uses make")
    store.promote(memory.id)
    promote = newest(store).seq
    store.ingest("Something else entirely")
    store.decay()
    store.undo(promote)
    assert store.get(memory.id).adjustment == 0.0


@pytest.mark.parametrize(
    ("make", "message"),
    [
        ("create", "cannot be undone: only reinforce"),
        ("decay", "cannot be undone: only reinforce"),
        ("missing", "there is no change #99"),
    ],
)
def test_undo_refuses_what_it_cannot_reverse(store: Store, make: str, message: str) -> None:
    store.ingest("one")
    if make == "decay":
        store.decay()
    seq = 99 if make == "missing" else newest(store).seq
    before = kinds(store)
    with pytest.raises(InvalidInput, match=message) as refused:
        store.undo(seq)
    assert refused.value.hint
    assert kinds(store) == before


# -- edit and purge -----------------------------------------------------------------------


def test_edit_keeps_the_previous_value_and_the_strength(store: Store) -> None:
    memory = store.ingest("Standups are at 9", tags=["team"])
    store.promote(memory.id)
    strong = store.get(memory.id)
    result = store.edit(memory.id, content="Standups are at 10")
    edited = result.memory
    assert result.change_seq == newest(store).seq
    assert (edited.content, edited.tags, edited.adjustment) == (
        "Standups are at 10",
        ("team",),
        strong.adjustment,
    )
    entry = newest(store)
    assert entry.kind == "edited"
    assert entry.detail == {"changed": ["content"]}
    assert entry.before is not None
    assert entry.before[memory.id]["content"] == "Standups are at 9"


SECRET = "hunter2-zebra-PASSWORD-7f3a9c"  # noqa: S105 - a planted secret to look for


def _files_hold(data_dir: Path, needle: bytes) -> list[str]:
    """Read every file of a data directory (call only once no connection is open on it)."""
    return [p.name for p in data_dir.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_purge_leaves_no_copy_anywhere_in_the_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with Store.open(data_dir) as store:
        secret = store.ingest(f"The admin password is {SECRET}")
        store.edit(secret.id, content=f"The admin password is {SECRET} (rotated monthly)")
        other = store.ingest("The staging database is read-only on Fridays")
        for n in range(30):  # the secret's pages are ordinary, shared pages
            store.ingest(f"filler memory number {n} about nothing in particular")
        store.checkpoint()
        report = store.purge(secret.id)
        assert (report.was_live, report.changelog_entries_redacted) == (True, 1)  # the edit
        assert store.search(SECRET.split("-", maxsplit=1)[0]) == []
        purged = newest(store)
        assert (purged.kind, purged.memory_id) == ("purged", secret.id)
        assert purged.before == {secret.id: changelog.PURGED_ROW}  # a mark, no content
        assert SECRET not in json.dumps(store.changes(limit=1000).to_dict())
        assert store.get(other.id).content.startswith("The staging")
        with pytest.raises(InvalidInput, match="a purge removed"):
            store.undo(2)  # the edit's record of the secret is gone
    # No connection is open any more: the files may be read.
    assert _files_hold(data_dir, SECRET.encode()) == []
    assert _files_hold(data_dir, b"staging database") == ["vestige.db"]  # the scan works


def test_a_deleted_memory_can_be_purged_from_its_tombstones(store: Store) -> None:
    memory = store.ingest(f"token {SECRET}")
    store.delete(memory.id)
    report = store.purge(memory.id)
    assert (report.was_live, report.changelog_entries_redacted) == (False, 1)
    assert SECRET not in json.dumps(store.changes(limit=100).to_dict())
    with pytest.raises(MemoryNotFound):
        store.purge("never-existed")


# -- retention, export and import -----------------------------------------------------------


def test_trimmed_entries_are_reported_as_a_gap_never_silently_left_out(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(8):
        store.ingest(f"memory {n}")
    early = store.changes(limit=1, oldest_first=True).changes[0].at
    report = trim(store, keep=3)  # the pass trims, then records itself
    assert report.ran
    page = store.changes(after_seq=0, limit=100, oldest_first=True)
    assert page.gap is not None
    assert page.gap.trimmed_through == 5
    assert "may be missing" in page.gap.message
    assert [c.seq for c in page.changes] == [6, 7, 8, 9]
    summary = newest(store)
    assert summary.kind == "decayed"
    assert summary.detail is not None
    assert (summary.detail["nodes_processed"], summary.detail["changelog_trimmed"]) == (8, 5)
    assert store.changes(after_seq=5, limit=100).gap is None  # nothing it asked for is gone
    assert store.changes(since=early, limit=100).gap is not None
    assert store.changes(limit=2).gap is None  # the newest page reaches back to nothing lost
    assert store.changes(limit=100).gap is not None  # this one reaches the start: #1-#5 lost
    with pytest.raises(InvalidInput, match="was trimmed"):
        store.undo(2)


def test_importing_an_export_twice_adds_its_history_once(store: Store, tmp_path: Path) -> None:
    memory = store.ingest("exported fact")
    store.promote(memory.id)
    out = io.StringIO()
    store.export(out)
    with Store.open(tmp_path / "other", actor=Actor("cli", "import pid 2")) as other:
        first = other.import_jsonl(io.StringIO(out.getvalue()))
        second = other.import_jsonl(io.StringIO(out.getvalue()))
        assert (first.changes_imported, second.changes_imported) == (2, 0)
        history = other.changes(limit=100, oldest_first=True).changes
        assert [(c.kind, c.transport, c.origin is not None) for c in history] == [
            ("created", "library", True),
            ("promoted", "library", True),
            ("imported", "cli", False),
        ]
        with pytest.raises(InvalidInput, match="imported from another database"):
            other.undo(history[1].seq)


# -- the log replays to the live store --------------------------------------------------------

OPS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "ingest",
                "smart",
                "correct",
                "delete",
                "promote",
                "demote",
                "edit",
                "undo",
                "undo",
                "purge",
                "snapshot",
                "reimport",
            ]
        ),
        st.integers(min_value=0, max_value=50),
    ),
    min_size=1,
    max_size=30,
)


def replay(entries: list[Change]) -> set[str]:
    live: set[str] = set()
    for c in entries:
        if c.kind in changelog.ADDS and c.memory_id:
            live.add(c.memory_id)
        elif c.kind in changelog.REMOVES and c.memory_id:
            live.discard(c.memory_id)
        elif c.kind == ChangeKind.UNDONE and c.detail:
            live |= set(c.detail["brought_back"])
            live -= set(c.detail["removed"])
    return live


def _step(store: Store, op: str, pick: int, snapshot: list[str]) -> int:
    """One write of a random run; returns the changelog entries it should have made."""
    ids = sorted(m.id for m in store.iter_memories())
    seqs = [c.seq for c in store.changes(limit=1000).changes]
    target = ids[pick % len(ids)] if ids else None
    topic = f"fact number {pick % 4} about topic {pick % 3}"
    writes: dict[str, Callable[[], object]] = {
        "ingest": lambda: store.ingest(f"fact number {pick} about topic {pick % 3}"),
        "smart": lambda: store.smart_ingest(topic),
        "correct": lambda: store.smart_ingest(f"Actually {topic}"),
    }
    if target is not None:
        writes |= {
            "delete": lambda: store.delete(target),
            "promote": lambda: store.promote(target),
            "demote": lambda: store.demote(target),
            "edit": lambda: store.edit(target, content=f"edited {pick}"),
            "purge": lambda: store.purge(target),
        }
    if seqs:
        writes["undo"] = lambda: store.undo(seqs[pick % len(seqs)])
    if op == "snapshot":
        out = io.StringIO()
        store.export(out, with_changelog=False)
        snapshot[:] = [out.getvalue()]
        return 0
    if op == "reimport":
        return store.import_jsonl(io.StringIO(snapshot[0] if snapshot else "")).imported
    if op not in writes:
        return 0
    try:
        writes[op]()
    except InvalidInput:
        return 0  # a refused undo: it must have written nothing
    return 1


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=OPS)
def test_any_run_of_writes_gives_one_entry_each_and_replays_to_the_live_ids(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, int]]
) -> None:
    with Store.open(tmp_path_factory.mktemp("replay")) as store:
        snapshot: list[str] = []
        writes = sum(_step(store, op, pick, snapshot) for op, pick in ops)
        entries = list(store.changes(limit=1000, oldest_first=True).changes)
        assert len(entries) == writes
        live = {m.id: m for m in store.iter_memories()}
        assert replay(entries) == set(live)
        for memory in live.values():  # nothing hidden behind a successor that is gone
            assert memory.superseded_by is None or memory.superseded_by in live
            found = store.search(memory.content.split()[-1], limit=100, include_superseded=True)
            assert memory.id in {h.memory.id for h in found}


def test_a_gap_by_time_holds_when_imported_history_is_older_than_what_was_trimmed(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Imported entries keep their old times: the oldest time kept cannot tell a gap."""
    with Store.open(tmp_path / "old") as old:
        old.ingest("from long ago")
        history = io.StringIO()
        old.export(history)
    for n in range(4):
        store.ingest(f"memory {n}")
    first = store.changes(limit=1, oldest_first=True).changes[0].at
    trim(store, keep=2)  # trims #1 and #2
    assert store.import_jsonl(io.StringIO(history.getvalue())).changes_imported == 1
    page = store.changes(since=first, limit=100)
    assert page.gap is not None
    assert page.gap.trimmed_through == 2


def test_pages_back_newest_first_with_before_seq(store: Store) -> None:
    for n in range(5):
        store.ingest(f"memory {n}")
    first = store.changes(limit=2)
    assert ([c.seq for c in first.changes], first.more) == ([5, 4], True)
    second = store.changes(limit=2, before_seq=first.changes[-1].seq)
    assert [c.seq for c in second.changes] == [3, 2]
    last = store.changes(limit=2, before_seq=2)
    assert ([c.seq for c in last.changes], last.more) == ([1], False)


def test_delete_returns_its_changelog_entry(store: Store) -> None:
    memory = store.ingest("short lived")
    seq = store.delete(memory.id)
    assert store.change(seq).kind == "deleted"
    store.undo(seq)
    assert store.get(memory.id).content == "short lived"


# -- undo against later history (found by a hostile review) -------------------------------------


def test_a_redone_change_blocks_undoing_what_came_before_it(store: Store) -> None:
    memory = store.ingest("Version one of the note")
    store.edit(memory.id, content="Version two of the note")  # 2
    store.edit(memory.id, content="Version three of the note")  # 3
    store.undo(3)  # 4
    store.undo(4)  # 5: a redo, "Version three" stands again
    with pytest.raises(InvalidInput, match=r"later changes touched the same memory: #3"):
        store.undo(2)
    assert store.get(memory.id).content == "Version three of the note"


def test_a_deleted_memory_redeleted_by_a_redo_is_not_brought_back(store: Store) -> None:
    memory = store.ingest("A fact that was deleted")
    store.edit(memory.id, content="A fact that was deleted, edited")  # 2
    store.delete(memory.id)  # 3
    store.undo(3)  # 4: back
    store.undo(4)  # 5: deleted again
    with pytest.raises(InvalidInput, match="later changes touched the same memory"):
        store.undo(2)
    with pytest.raises(MemoryNotFound):
        store.get(memory.id)


def test_undo_redo_and_undo_again_each_name_the_right_change(store: Store) -> None:
    memory = store.ingest("one")
    store.edit(memory.id, content="two")  # 2
    store.undo(2)  # 3
    with pytest.raises(InvalidInput, match="already undone by change #3") as refused:
        store.undo(2)
    assert refused.value.hint == "To redo it, undo change #3."
    store.undo(3)  # 4: redo, "two" again
    store.undo(2)  # 5: the change stands again, so it may be undone again
    assert store.get(memory.id).content == "one"
    with pytest.raises(InvalidInput, match="already undone by change #5"):
        store.undo(2)
    store.undo(5)  # redo once more
    assert store.get(memory.id).content == "two"


def test_undo_never_links_a_memory_to_a_successor_that_is_gone(store: Store) -> None:
    old = store.ingest("The user prefers dark mode")
    new = store.smart_ingest("Actually, the user prefers light mode").memory
    store.delete(old.id)  # 3
    store.delete(new.id)  # 4
    store.undo(3)
    back = store.get(old.id)
    assert (back.superseded_by, back.adjustment) == (None, 0.0)  # unlinked, undemoted
    assert [h.memory.id for h in store.search("dark mode")] == [old.id]


def test_a_purge_that_brought_a_memory_back_blocks_older_undos_and_is_in_its_history(
    store: Store,
) -> None:
    old = store.ingest("The user prefers dark mode")
    new = store.smart_ingest("Actually, the user prefers light mode").memory
    store.edit(old.id, tags=["ui"])  # 3
    store.purge(new.id)  # 4: brings old back
    assert store.get(old.id).superseded_by is None
    assert [c.kind for c in store.changes(memory_id=old.id).changes][:1] == ["purged"]
    with pytest.raises(InvalidInput, match=r"#4 \(purged\)") as refused:
        store.undo(3)
    assert "cannot be undone" in refused.value.hint
    assert store.get(old.id).superseded_by is None


def test_every_page_that_reaches_back_into_trimmed_entries_says_so(store: Store) -> None:
    early = store.ingest("an early memory")
    for n in range(5):
        store.ingest(f"memory {n}")
    trim(store, keep=3)  # trims #1 to #3, then records the pass as #7
    assert store.changes(oldest_first=True).gap is not None
    assert store.changes(before_seq=5).gap is not None  # paging back ends in the trimmed part
    assert store.changes(memory_id=early.id).gap is not None  # its "created" is gone
    late = store.ingest("a memory made after the trim")
    assert store.changes(memory_id=late.id).gap is None  # all of its history is kept


def test_a_client_names_itself_within_bounds(store: Store) -> None:
    with changelog.acting_for("evil\x1b]0;title\x07" + "x" * 500):
        store.ingest("made for a loud client")
    client = newest(store).client
    assert client is not None
    assert len(client) == changelog.MAX_CLIENT_CHARS
    assert "\x1b" not in client
    assert client.startswith("evil\\x1b]0;title\\x07")


def test_an_oversized_imported_change_is_refused_naming_its_line(store: Store) -> None:
    line = {
        "change": {
            "at": "2026-01-01T00:00:00+00:00",
            "kind": "edited",
            "memory_id": "m-1",
            "process": "p",
            "transport": "cli",
            "detail": {"padding": "x" * 10_000},
            "origin": "other:1",
        }
    }
    with pytest.raises(InvalidInput, match=r"detail is 10,0\d\d bytes") as refused:
        store.import_jsonl(io.StringIO(json.dumps(line)))
    assert "line 1" in str(refused.value)
    assert store.changes().changes == ()


# -- second hostile round ------------------------------------------------------------------------


def test_an_undo_that_removes_a_memory_brings_back_what_it_superseded(store: Store) -> None:
    old = store.ingest("The user prefers dark mode")
    new = store.smart_ingest("Actually, the user now prefers light mode").memory  # 2
    store.undo(2)  # 3: unlinked
    store.delete(new.id)  # 4
    store.undo(4)  # 5: the new memory is back
    store.undo(3)  # 6: the supersede redone, old linked to new again
    assert store.get(old.id).superseded_by == new.id
    removal = store.undo(5)  # 7: new deleted again; old must come back, not point at nothing
    assert removal.detail is not None
    assert (removal.detail["removed"], removal.detail["unlinked"]) == ([new.id], [old.id])
    assert store.get(old.id).superseded_by is None
    assert [h.memory.id for h in store.search("dark mode")] == [old.id]
    store.undo(7)  # and back again: new re-inserted, old linked to it as before
    assert store.get(old.id).superseded_by == new.id


def test_a_memory_imported_again_blocks_undoing_its_older_changes(
    store: Store, tmp_path: Path
) -> None:
    memory = store.ingest("The deploy key is in vault path alpha")
    exported = io.StringIO()
    store.export(exported)
    store.edit(memory.id, content="The deploy key is in vault path beta")  # 2
    store.delete(memory.id)  # 3
    store.import_jsonl(io.StringIO(exported.getvalue()))  # 4: alpha is back
    with pytest.raises(InvalidInput, match=r"#4 \(imported\)"):
        store.undo(3)
    assert store.get(memory.id).content == "The deploy key is in vault path alpha"


def test_purge_redacts_every_memory_an_earlier_purge_brought_back(store: Store) -> None:
    rows = [
        {"id": "x-1", "content": "The successor"},
        {"id": "a-1", "content": "first replaced", "superseded_by": "x-1"},
        {"id": "b-1", "content": f"second replaced {SECRET}", "superseded_by": "x-1"},
    ]
    store.import_jsonl(io.StringIO("\n".join(json.dumps(r) for r in rows)))
    store.purge("x-1")  # brings back a-1 and b-1, keeping their rows
    store.purge("b-1")
    assert SECRET not in json.dumps(store.changes(limit=100).to_dict())


def test_an_undo_after_a_purge_of_its_memory_is_refused(store: Store) -> None:
    memory = store.ingest("short lived")
    store.delete(memory.id)  # 2
    store.undo(2)  # 3: back
    store.purge(memory.id)  # 4
    with pytest.raises(InvalidInput, match=r"#4 \(purged\)"):
        store.undo(3)


def test_already_undone_is_said_only_when_it_is_so(store: Store) -> None:
    memory = store.ingest("one")
    seq = store.delete(memory.id)  # 2
    store.undo(seq)  # 3: back
    store.undo(3)  # 4: deleted again
    store.undo(4)  # 5: back (a redo of 3)
    store.delete(memory.id)  # 6
    with pytest.raises(InvalidInput, match=r"later changes touched the same memory: #6") as no:
        store.undo(3)
    assert "already undone" not in str(no.value)


def test_a_page_of_a_memory_imported_again_says_its_older_history_was_trimmed(
    store: Store,
) -> None:
    memory = store.ingest("kept then re-imported")
    exported = io.StringIO()
    store.export(exported, with_changelog=False)
    store.delete(memory.id)
    for n in range(4):
        store.ingest(f"filler {n}")
    store.import_jsonl(io.StringIO(exported.getvalue()))
    trim(store, keep=2)
    assert store.changes(memory_id=memory.id).gap is not None
