"""Request keys: a write sent again with its key changes nothing and gets the first answer.

In the store (``vestige.request_keys`` through ``Database.write``), and through a real
``vestige-mcp`` over stdio, where the key rides in ``params._meta`` - also after the server
was restarted on the same data directory, which is what a proxy's retry after a failover
meets.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import apsw
import pytest

from tests.server_helpers import ServerProcess
from vestige import Store, config, request_keys
from vestige.changelog import ChangeKind
from vestige.errors import InvalidInput, MemoryNotFound
from vestige.request_keys import RequestKey, RequestRepeated
from vestige.server.options import REQUEST_KEY_META

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from vestige.models import Memory


def _memory_answer(memory: Memory) -> str:
    return json.dumps(memory.to_dict(), sort_keys=True)


def _key(key: str, call: str, args: dict[str, Any], encode: Callable[[Any], str]) -> RequestKey:
    return RequestKey(key, request_keys.fingerprint(call, args), encode)


def _ingest(store: Store, key: str, content: str) -> Memory:
    with request_keys.guarding(_key(key, "ingest", {"content": content}, _memory_answer)):
        return store.ingest(content)


def _keys(data_dir: Path) -> list[tuple[Any, ...]]:
    conn = apsw.Connection(str(data_dir / "vestige.db"), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute(
            "SELECT key, fingerprint, answer, recorded_at FROM request_keys ORDER BY key"
        ).fetchall()
    finally:
        conn.close()


def _created(store: Store) -> int:
    return len(store.changes(kinds=[ChangeKind.CREATED], limit=100).changes)


# -- the store --------------------------------------------------------------------------------


def test_a_repeat_changes_nothing_and_gets_the_first_answer(store: Store, data_dir: Path) -> None:
    first = _ingest(store, "key-0001", "the build cache lives in /var/cache/ci")
    with pytest.raises(RequestRepeated) as repeat:
        _ingest(store, "key-0001", "the build cache lives in /var/cache/ci")
    assert repeat.value.answer == _memory_answer(first)
    assert [m.id for m in store.iter_memories()] == [first.id]
    assert _created(store) == 1
    [(key, _, answer, _)] = _keys(data_dir)
    assert (key, answer) == ("key-0001", _memory_answer(first))


def test_the_same_key_for_another_call_is_refused_and_writes_nothing(
    store: Store, data_dir: Path
) -> None:
    first = _ingest(store, "key-0002", "deploys go out on Tuesdays")
    before = store.changes(limit=1).newest_seq
    with pytest.raises(InvalidInput, match="already used for a different call; use a new key"):
        _ingest(store, "key-0002", "deploys go out on Thursdays")
    assert [m.id for m in store.iter_memories()] == [first.id]
    assert store.changes(limit=1).newest_seq == before
    assert len(_keys(data_dir)) == 1


def test_an_expired_key_is_forgotten_and_the_call_runs_again(store: Store, data_dir: Path) -> None:
    first = _ingest(store, "key-0003", "the staging database is pg-staging-2")
    _ingest(store, "key-0004", "another keyed write")
    conn = apsw.Connection(str(data_dir / "vestige.db"))
    try:
        conn.execute(
            "UPDATE request_keys SET recorded_at = recorded_at - ?",
            (config.REQUEST_KEY_TTL_S + 60,),
        )
    finally:
        conn.close()
    again = _ingest(store, "key-0003", "the staging database is pg-staging-2")
    assert again.id != first.id  # ran again: a new memory (ingest does not deduplicate)
    assert _created(store) == 3
    # The write that found key-0003 expired also forgot every other expired key.
    assert [row[0] for row in _keys(data_dir)] == ["key-0003"]
    with pytest.raises(RequestRepeated) as repeat:
        _ingest(store, "key-0003", "the staging database is pg-staging-2")
    assert repeat.value.answer == _memory_answer(again)


def test_a_failed_write_records_no_key_so_its_repeat_fails_the_same_way(
    store: Store, data_dir: Path
) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    guard = _key("key-0005", "delete_memory", {"id": missing}, json.dumps)
    for _ in range(2):
        with request_keys.guarding(guard), pytest.raises(MemoryNotFound):
            store.delete(missing)
    assert _keys(data_dir) == []


def test_the_key_and_the_write_commit_together(store: Store, data_dir: Path) -> None:
    """An answer that cannot be recorded undoes the write it was to guard: one transaction."""

    def broken(_result: object) -> str:
        raise RuntimeError("the answer cannot be encoded")

    with (
        request_keys.guarding(_key("key-0006", "ingest", {"content": "x y z"}, broken)),
        pytest.raises(RuntimeError, match="cannot be encoded"),
    ):
        store.ingest("never stored: its key could not be recorded")
    assert list(store.iter_memories()) == []
    assert _created(store) == 0
    assert _keys(data_dir) == []


def test_each_keyed_store_call_records_what_it_returns(store: Store) -> None:
    """The answer is made of the method's own result (its one transaction returns it)."""
    seen: list[object] = []

    def keep(result: object) -> str:
        seen.append(result)
        return "{}"

    def keyed(n: int, call: Callable[[], object]) -> object:
        with request_keys.guarding(_key(f"key-{n:04d}", f"call-{n}", {}, keep)):
            return call()

    made = store.smart_ingest("the primary region is eu-west-1", force_create=True)
    results = [
        keyed(10, lambda: store.ingest("a plain memory")),
        keyed(11, lambda: store.smart_ingest("the backup region is us-east-2")),
        keyed(12, lambda: store.smart_ingest("forced text", force_create=True)),
        keyed(13, lambda: store.promote(made.memory.id)),
        keyed(14, lambda: store.demote(made.memory.id)),
        keyed(15, lambda: store.edit(made.memory.id, tags=["region"])),
    ]
    edit_seq = store.changes(limit=1).newest_seq
    results.append(keyed(16, lambda: store.undo(edit_seq)))
    results.append(keyed(17, lambda: store.delete(made.memory.id)))
    assert seen == results
    assert all(r is not None for r in results)


def test_one_key_guards_the_first_write_of_its_context(store: Store, data_dir: Path) -> None:
    with request_keys.guarding(_key("key-0020", "two", {}, _memory_answer)):
        first = store.ingest("recorded with the key")
        store.ingest("written after it, unguarded")
    assert [(row[0], row[2]) for row in _keys(data_dir)] == [("key-0020", _memory_answer(first))]
    assert _created(store) == 2


def test_a_purge_forgets_the_answers_that_quote_the_memory(store: Store, data_dir: Path) -> None:
    secret = _ingest(store, "key-0030", "the root password is hunter2")
    _ingest(store, "key-0031", "an unrelated memory")
    store.purge(secret.id)
    assert [row[0] for row in _keys(data_dir)] == ["key-0031"]


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("short", "'short' is not a valid request key"),
        ("x" * 129, "is not a valid request key"),
        ("has a space", "'has a space' is not a valid request key"),
        ("naïve-key-1", "is not a valid request key"),
        (12345678, "must be a string, not int"),
    ],
)
def test_a_bad_key_is_refused_with_what_a_key_is(key: object, why: str) -> None:
    with pytest.raises(InvalidInput, match=why) as refused:
        RequestKey(key, "f", str)  # type: ignore[arg-type]
    assert "8 to 128 characters" in (refused.value.hint or "")


def test_good_keys_pass() -> None:
    for key in ("12345678", "a" * 128, "proxy-4242:17", "3f2a.B_c-d:e"):
        assert request_keys.check_key(key) == key


def test_the_fingerprint_names_the_call_and_its_arguments() -> None:
    fp = request_keys.fingerprint
    assert fp("ingest", {"a": 1, "b": [1, 2]}) == fp("ingest", {"b": [1, 2], "a": 1})
    assert fp("ingest", {"a": 1}) != fp("smart_ingest", {"a": 1})
    assert fp("ingest", {"a": 1}) != fp("ingest", {"a": 2})


# -- through vestige-mcp ----------------------------------------------------------------------

#: No decay pass of the server's upkeep during a test: its entry would be one more change.
QUIET = {"VESTIGE_CONSOLIDATION_INTERVAL_HOURS": "1000"}


def _call(srv: ServerProcess, name: str, args: dict[str, Any], key: object) -> dict[str, Any]:
    params = {"name": name, "arguments": args, "_meta": {REQUEST_KEY_META: key}}
    reply = srv.response(srv.send("tools/call", params))
    assert "result" in reply, reply
    return reply["result"]  # type: ignore[no-any-return]


def _ok(srv: ServerProcess, name: str, args: dict[str, Any], key: object) -> dict[str, Any]:
    result = _call(srv, name, args, key)
    assert not result.get("isError"), result
    return result


def _kinds(srv: ServerProcess) -> list[str]:
    page = srv.call_tool("memory_changelog", {"oldest_first": True, "limit": 100})
    assert not page.get("isError"), page
    return [c["kind"] for c in page["structuredContent"]["changes"]]


def _quiet_store(data_dir: Path) -> None:
    """A store whose decay pass just ran, so the server's upkeep runs none meanwhile."""
    with Store.open(data_dir) as store:
        assert store.decay().ran


@pytest.mark.multiprocess
@pytest.mark.slow
def test_repeats_over_mcp_get_the_first_answer_even_from_a_new_server(
    tmp_path: Path, data_dir: Path
) -> None:
    _quiet_store(data_dir)
    text = "the release train leaves every second Monday"
    with ServerProcess(data_dir, home=tmp_path, env=QUIET) as srv:
        srv.initialize()
        made = _ok(srv, "smart_ingest", {"content": text}, "mcp-key-ingest-1")
        assert _ok(srv, "smart_ingest", {"content": text}, "mcp-key-ingest-1") == made
        mid = made["structuredContent"]["id"]
        promoted = _ok(srv, "promote_memory", {"id": mid}, "mcp-key-promote-1")
        assert _ok(srv, "promote_memory", {"id": mid}, "mcp-key-promote-1") == promoted
        assert _kinds(srv)[1:] == ["created", "promoted"]
        # Another promote with a key of its own is another call: it runs.
        _ok(srv, "promote_memory", {"id": mid}, "mcp-key-promote-2")
        # A read ignores a key, even one a write used.
        found = _ok(srv, "search", {"query": "release train"}, "mcp-key-ingest-1")
        assert [r["id"] for r in found["structuredContent"]["results"]] == [mid]
    with ServerProcess(data_dir, home=tmp_path, env=QUIET) as srv:  # the failover case
        srv.initialize()
        assert _ok(srv, "smart_ingest", {"content": text}, "mcp-key-ingest-1") == made
        assert _ok(srv, "promote_memory", {"id": mid}, "mcp-key-promote-1") == promoted
        deleted = _ok(srv, "delete_memory", {"id": mid}, "mcp-key-delete-1")
        assert _ok(srv, "delete_memory", {"id": mid}, "mcp-key-delete-1") == deleted
        assert deleted["structuredContent"]["deleted"] is True
        assert _kinds(srv)[1:] == ["created", "promoted", "promoted", "deleted"]


@pytest.mark.multiprocess
@pytest.mark.slow
def test_bad_and_reused_keys_over_mcp_are_one_clear_tool_error(
    tmp_path: Path, data_dir: Path
) -> None:
    _quiet_store(data_dir)
    with ServerProcess(data_dir, home=tmp_path, env=QUIET) as srv:
        srv.initialize()
        for key, why in (
            ("bad key!", "'bad key!' is not a valid request key"),
            ("short", "'short' is not a valid request key"),
            (42, "the request key must be a string, not int"),
        ):
            result = _call(srv, "ingest", {"content": "never written"}, key)
            assert result.get("isError"), result
            message = result["content"][0]["text"]
            assert why in message
            assert "8 to 128 characters" in message
            assert "Traceback" not in message
        _ok(srv, "ingest", {"content": "the first call"}, "mcp-key-reused-1")
        reused = _call(srv, "ingest", {"content": "another call"}, "mcp-key-reused-1")
        assert reused.get("isError"), reused
        assert "already used for a different call; use a new key" in reused["content"][0]["text"]
        assert _kinds(srv)[1:] == ["created"]


@pytest.mark.multiprocess
@pytest.mark.slow
def test_every_keyed_tool_answers_its_repeat_with_the_first_answer(
    tmp_path: Path, data_dir: Path
) -> None:
    _quiet_store(data_dir)
    with ServerProcess(data_dir, home=tmp_path, env=QUIET) as srv:
        srv.initialize()

        def twice(name: str, args: dict[str, Any], key: str) -> dict[str, Any]:
            first = _ok(srv, name, args, key)
            assert _ok(srv, name, args, key) == first
            return first["structuredContent"]  # type: ignore[no-any-return]

        mid = twice("ingest", {"content": "the on-call rota is in the wiki"}, "k-ingest-01")["id"]
        twice("demote_memory", {"id": mid, "reason": "stale"}, "k-demote-01")
        edited = twice("edit_memory", {"id": mid, "tags": ["ops"]}, "k-edit-0001")
        twice("memory_undo", {"change_seq": edited["change_seq"]}, "k-undo-0001")
        assert _kinds(srv)[1:] == ["created", "demoted", "edited", "undone"]
        # consolidate ignores a key: it runs the pass again (not a repeat of its answer).
        runs = [_ok(srv, "consolidate", {}, "k-consolidate")["structuredContent"] for _ in "ab"]
        assert [r["ran"] for r in runs] == [True, True]
        assert _kinds(srv)[5:] == ["decayed", "decayed"]
