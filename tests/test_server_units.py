"""The server's pure parts, in process: options, token, memory states, the fresh cache."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from vestige import Store, fsrs
from vestige.config import DataDirSource
from vestige.errors import ConfigError
from vestige.local_access import HostRules, host_names, load_token
from vestige.server import argument_errors, options, results
from vestige.server.app import VersionedCache
from vestige.server.http import security


def test_defaults_and_flags(tmp_path: Path) -> None:
    opts = options.parse(["--data-dir", str(tmp_path)], environ={})
    assert (opts.transport, opts.host, opts.port) == ("stdio", "127.0.0.1", 3928)
    assert opts.shared_writers is False
    assert opts.consolidation_interval_s == 6 * 3600
    assert opts.data_dir.source is DataDirSource.ARGUMENT
    assert opts.endpoint is None
    http = options.parse(
        ["--transport", "http", "--host", "::1", "--port", "9000", "--shared-writers"], environ={}
    )
    assert http.endpoint == "http://[::1]:9000/mcp"
    assert http.shared_writers is True


def test_environment(tmp_path: Path) -> None:
    env = {
        "VESTIGE_DATA_DIR": str(tmp_path),
        "VESTIGE_SHARED_WRITERS": "Yes",
        "VESTIGE_CONSOLIDATION_INTERVAL_HOURS": "0.5",
        "VESTIGE_LOG_LEVEL": "debug",
    }
    opts = options.parse([], environ=env)
    assert opts.data_dir.path == tmp_path
    assert opts.data_dir.source is DataDirSource.ENVIRONMENT
    assert opts.shared_writers is True
    assert opts.consolidation_interval_s == 1800
    assert opts.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("VESTIGE_SHARED_WRITERS", "sometimes", "is not a yes/no value"),
        ("VESTIGE_CONSOLIDATION_INTERVAL_HOURS", "0", "not a positive number of hours"),
        ("VESTIGE_CONSOLIDATION_INTERVAL_HOURS", "nan", "not a positive number of hours"),
        ("VESTIGE_CONSOLIDATION_INTERVAL_HOURS", "inf", "not a positive number of hours"),
        ("VESTIGE_LOG_LEVEL", "loud", "is not a log level"),
    ],
)
def test_bad_environment_is_a_config_error(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        options.parse(["--data-dir", "x"], environ={name: value})
    assert caught.value.hint


def test_token_file_is_created_private_once_and_env_wins(tmp_path: Path) -> None:
    first = load_token(tmp_path, environ={})
    path = tmp_path / "auth_token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 32
    assert load_token(tmp_path, environ={}) == first  # reused, not regenerated
    path.chmod(0o644)
    assert load_token(tmp_path, environ={}) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # tightened again
    env_token = "env-token-" + "x" * 22  # 32 characters: the shortest accepted
    assert load_token(tmp_path, environ={"VESTIGE_AUTH_TOKEN": f"  {env_token}  "}) == env_token


def test_dns_rebinding_allows_only_loopback_and_the_given_host(tmp_path: Path) -> None:
    opts = options.parse(["--data-dir", str(tmp_path), "--host", "10.0.0.5"], environ={})
    assert host_names(opts.host) == ["127.0.0.1", "localhost", "[::1]", "10.0.0.5"]
    # The gate checks Host and Origin (tests/test_server_http_guards.py); the SDK does not.
    assert not security().enable_dns_rebinding_protection


@pytest.mark.parametrize(
    ("retention", "retrieval", "storage", "state"),
    [
        (1.0, 1.0, 1.0, "active"),  # fully retained: 0.5 + 0.3 + 0.02 = 0.82
        (0.5, 0.5, 5.0, "dormant"),  # 0.25 + 0.15 + 0.1 = 0.5
        (0.2, 0.2, 1.0, "silent"),  # 0.1 + 0.06 + 0.02 = 0.18
        (0.05, 0.05, 1.0, "unavailable"),  # 0.025 + 0.015 + 0.02 = 0.06
        (0.0, 0.0, 10.0, "silent"),  # storage counts, scaled to 1 at most: 0.2
        (0.0, 0.0, 50.0, "silent"),
    ],
)
def test_memory_states(retention: float, retrieval: float, storage: float, state: str) -> None:
    score = fsrs.accessibility(retention, retrieval, storage)
    assert score == pytest.approx(0.5 * retention + 0.3 * retrieval + 0.2 * min(storage / 10, 1))
    assert fsrs.memory_state(score) == state


def test_band_edges() -> None:
    assert [fsrs.memory_state(x) for x in (0.65, 0.6499, 0.4, 0.3999, 0.1, 0.0999)] == [
        "active",
        "dormant",
        "dormant",
        "silent",
        "silent",
        "unavailable",
    ]


def test_cache_recomputes_only_when_the_version_moves() -> None:
    version = [1]
    computed: list[int] = []

    def compute() -> int:
        computed.append(version[0])
        return version[0] * 10

    cache = VersionedCache(lambda: version[0])
    assert [cache.get("k", compute) for _ in range(3)] == [10, 10, 10]
    version[0] = 2  # someone committed
    assert cache.get("k", compute) == 20
    assert cache.get("other", lambda: 7) == 7
    assert computed == [1, 2]
    assert (cache.hits, cache.misses) == (2, 3)


@pytest.mark.parametrize("detail", ["brief", "summary", "full"])
def test_every_search_result_says_what_superseded_it(store: Store, detail: str) -> None:
    """Issue 9: the default detail level hid superseded_by, so an outdated fact read as current."""
    old = store.smart_ingest("The user prefers dark mode")
    new = store.smart_ingest("Actually, the user prefers light mode")
    assert new.superseded_id == old.memory.id
    shown = {
        r["id"]: r
        for r in (
            results.hit(h, detail).model_dump()
            for h in store.search("user prefers", include_superseded=True)
        )
    }
    assert shown[old.memory.id]["superseded_by"] == new.memory.id
    assert shown[new.memory.id]["superseded_by"] is None


@pytest.mark.parametrize(
    ("key", "said"),
    [
        ("forceCreate", "did you mean 'force_create'?"),
        ("force-create", "did you mean 'force_create'?"),
        ("tag", "did you mean 'tags'?"),
        ("nodetype", "did you mean 'node_type'?"),
        ("colour", "this tool takes content, force_create, node_type, source, tags"),
    ],
)
def test_an_unknown_argument_names_the_likely_one(key: str, said: str) -> None:
    valid = ["content", "node_type", "tags", "source", "force_create"]
    assert argument_errors.unknown(key, valid) == f"unknown argument {key!r}; {said}"


def test_what_to_send_is_read_from_the_schema() -> None:
    tags = {
        "anyOf": [
            {"type": "array", "maxItems": 50, "items": {"type": "string", "minLength": 1}},
            {"type": "null"},
        ]
    }
    assert argument_errors.expected(tags, {}) == (
        "a list of at most 50 items, each a string of at least 1 character (or null)"
    )
    limit = {"type": "integer", "minimum": 1, "maximum": 100}
    assert argument_errors.expected(limit, {}) == "a whole number from 1 to 100"
    assert argument_errors.expected({"enum": ["a", "b"]}, {}) == "one of 'a', 'b'"
    assert argument_errors.expected({"type": "number", "minimum": 0}, {}) == (
        "a number of at least 0"
    )


def test_a_list_is_cut_at_its_byte_budget_and_keeps_its_first_item() -> None:
    built: list[int] = []

    def items() -> Iterator[str]:
        for i in range(10):
            built.append(i)
            yield "x" * 400_000  # 400 kB of JSON each: two fit in 1 MiB

    kept, cut = results.fit(items())
    assert (len(kept), cut) == (2, True)
    assert built == [0, 1, 2]  # the third was measured, nothing after it was built
    huge = "y" * (2 * results.RESPONSE_BUDGET_BYTES)
    assert results.fit([huge, "z"]) == ([huge], True)  # one item is never cut
    assert results.fit(["a", "b"]) == (["a", "b"], False)


def test_every_host_and_origin_header_must_name_this_machine() -> None:
    """A repeated header is judged in full: a proxy or framework may believe either one."""
    rules = HostRules(host_names("127.0.0.1"))
    assert rules.refusal([(b"host", b"127.0.0.1:3928")]) is None
    assert rules.refusal([(b"Host", b"127.0.0.1:3928"), (b"host", b"evil.example")]) == "host"
    assert rules.refusal([(b"origin", b"http://localhost")]) == "host"  # no Host at all
    two_origins = [(b"origin", b"http://localhost"), (b"origin", b"http://evil.example")]
    assert rules.refusal([(b"host", b"localhost"), *two_origins]) == "origin"
