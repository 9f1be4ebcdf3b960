"""search: BM25 blended with retention, filters, and any text a person types as a safe query."""

from __future__ import annotations

import itertools
import math
import random
from typing import TYPE_CHECKING, Any

import pytest

from vestige import Store
from vestige import search as search_module
from vestige import store as store_module
from vestige.errors import InvalidInput
from vestige.search import KEYWORD_WEIGHT, RETENTION_WEIGHT, below_successors

if TYPE_CHECKING:
    from pathlib import Path

CORPUS = {
    "fruit": "apple banana smoothie recipe",
    "column": "content column filter syntax",
    "river": "a walk near the river",
    "logic": "and or not are logic words",
    "paren": "unbalanced paren in a query",
    "emoji": "emoji party 🎉 tonight",
    "cafe": "naïve café on the corner",
    "japan": "日本語 の テキスト",
    "running": "running every morning",
}


@pytest.fixture
def corpus(store: Store) -> dict[str, str]:
    return {key: store.ingest(text).id for key, text in CORPUS.items()}


def found(store: Store, query: str, **kwargs: Any) -> list[str]:
    return [h.memory.id for h in store.search(query, **kwargs)]


# -- ranking -----------------------------------------------------------------------------------


def test_higher_retention_wins_a_keyword_tie(store: Store) -> None:
    weaker = store.ingest("deploy with the blue green strategy")  # inserted first
    stronger = store.ingest("deploy with the blue green strategy")
    store.demote(weaker.id)
    hits = store.search("blue green")
    assert [h.memory.id for h in hits] == [stronger.id, weaker.id]
    assert hits[0].keyword_score == hits[1].keyword_score == 1.0
    assert hits[0].combined_score > hits[1].combined_score


def test_scores_blend_bm25_and_retention(store: Store) -> None:
    both = store.ingest("postgres vacuum tuning guide")
    one = store.ingest("postgres install notes and other unrelated words here")
    store.demote(both.id)  # retention 0.57 vs 0.73: keyword relevance still wins
    hits = store.search("postgres vacuum")
    assert [h.memory.id for h in hits] == [both.id, one.id]
    assert hits[0].keyword_score == 1.0
    assert 0.0 <= hits[1].keyword_score < 1.0
    for h in hits:
        expected = KEYWORD_WEIGHT * h.keyword_score + RETENTION_WEIGHT * h.memory.retention_strength
        assert h.combined_score == pytest.approx(expected)
    assert [h.combined_score for h in hits] == sorted(
        (h.combined_score for h in hits), reverse=True
    )


def test_any_word_matches_and_stemming_and_diacritics_apply(
    store: Store, corpus: dict[str, str]
) -> None:
    assert found(store, "cafe") == [corpus["cafe"]]  # remove_diacritics
    assert found(store, "run") == [corpus["running"]]  # porter stemmer
    assert set(found(store, "apple river")) == {corpus["fruit"], corpus["river"]}


def test_filters(store: Store) -> None:
    a = store.ingest("shared topic alpha", node_type="decision", tags=["x", "y"])
    b = store.ingest("shared topic beta", node_type="fact", tags=["x"])
    c = store.ingest("shared topic gamma", node_type="fact")
    for _ in range(4):
        store.demote(c.id)  # odds of retention / 16: 0.73 -> 0.145
    weak = store.get(c.id).retention_strength
    assert weak == pytest.approx(0.145, abs=1e-3)
    assert set(found(store, "shared")) == {a.id, b.id, c.id}
    assert set(found(store, "shared", min_retention=0.5)) == {a.id, b.id}
    assert set(found(store, "shared", min_retention=weak + 1e-9)) == {a.id, b.id}
    assert set(found(store, "shared", min_retention=weak)) == {a.id, b.id, c.id}
    assert found(store, "shared", node_type="decision") == [a.id]
    assert set(found(store, "shared", tags=["x"])) == {a.id, b.id}
    assert found(store, "shared", tags=["x", "y"]) == [a.id]
    assert found(store, "shared", min_retention=1) == found(store, "shared", min_retention=1.0)


def test_limit(store: Store) -> None:
    for i in range(25):
        store.ingest(f"common word number {i}")
    assert len(store.search("common", limit=5)) == 5
    assert len(store.search("common", limit=1)) == 1
    assert len(store.search("common", limit=1000)) == 25


# -- any text is a query ----------------------------------------------------------------------

NASTY = [
    '"', '""', '"unbalanced', "apple*", "*", "**", "*apple", "ap*ple",
    "apple AND", "AND", "OR", "NOT", "AND OR NOT", "NOT apple", "apple AND zzzunknown",
    "NEAR", "NEAR(apple banana)", "NEAR(apple banana, 2)", "apple NEAR/3 banana", "NEAR/",
    "-apple", "- -", "^apple", "^", ":", "content:apple", "content:", "id:x", "tags:identity",
    "{content tags}: apple", "-content:apple", "rank:1", "rowid:1", "knowledge_fts:apple",
    "(", ")", "((apple", "apple)", "apple OR (banana", "(((", ")))(((",
    "'", "'; DROP TABLE knowledge_nodes; --", "\\", "\x00", "apple\x00banana",
    "🎉", "🎉 party", "+", "apple + banana", '"apple" "banana', "%", "_", "?", "?1",
    ":name", "@x", "$x", "\u200b", "\ufeffapple", "\ud800", "apple\udfff", "e\u0301",
    "日本語", "İstanbul", "\u202eapple", "a" * 10_000, ("apple " * 2000)[:10_000],
    "x" * 10_000, " ".join(f"w{i}" for i in range(2000))[:10_000], "\t apple \n",
]  # fmt: skip


@pytest.mark.parametrize("query", NASTY, ids=[f"nasty{i}" for i in range(len(NASTY))])
def test_nasty_queries_never_raise(store: Store, corpus: dict[str, str], query: str) -> None:
    hits = store.search(query, limit=50)
    assert isinstance(hits, list)
    assert {h.memory.id for h in hits} <= set(corpus.values())


@pytest.mark.parametrize(
    ("query", "key"),
    [
        ('"unbalanced', "paren"),
        ("((apple", "fruit"),
        ("NEAR(apple banana)", "fruit"),
        ("-apple", "fruit"),
        ("NOT apple", "fruit"),  # NOT is a word here, not an operator that excludes apple
        ("apple AND zzzunknown", "fruit"),
        ("content:zzz", "column"),  # no column filter: "content" is just a word
        ("^river", "river"),
        ("🎉 party", "emoji"),
        ("日本語", "japan"),
        ("apple\x00banana", "fruit"),
        ("\ufeffapple", "fruit"),
    ],
)
def test_operators_are_taken_as_words(
    store: Store, corpus: dict[str, str], query: str, key: str
) -> None:
    assert corpus[key] in found(store, query)


def test_only_punctuation_finds_nothing(store: Store, corpus: dict[str, str]) -> None:
    assert store.search("!!! ??? ***") == []
    assert store.search("🎉") == []  # an emoji alone is no word


def test_random_fuzz_queries_never_raise(store: Store, corpus: dict[str, str]) -> None:
    alphabet = [
        '"', "'", "*", "(", ")", ":", "-", "^", "+", " ", " ", "AND", "OR", "NOT", "NEAR",
        "NEAR/2", "NEAR(", "{", "}", ",", ".", "/", "\\", ";", "--", "%", "_", "\x00", "\t",
        "\n", "apple", "banana", "content", "tags", "id", "rank", "MATCH", "🎉", "é", "日本",
        "\u0301", "\ud800",
    ]  # fmt: skip
    rng = random.Random(20261124)
    ids = set(corpus.values())
    for _ in range(300):
        query = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 16)))
        if not query.strip():
            with pytest.raises(InvalidInput):
                store.search(query)
            continue
        hits = store.search(query, limit=rng.choice([1, 10, 1000]))
        assert {h.memory.id for h in hits} <= ids, query


# -- bad parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("", "empty"),
        ("   \n\t", "empty"),
        ("x" * 10_001, "longer than 10000"),
        (None, "must be text"),
        (5, "must be text"),
        (b"apple", "must be text"),
    ],
)
def test_bad_query(store: Store, query: Any, fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        store.search(query)


@pytest.mark.parametrize("limit", [0, -1, 1001, 10**9, True, 1.5, "10", None])
def test_bad_limit(store: Store, limit: Any) -> None:
    with pytest.raises(InvalidInput, match="limit"):
        store.search("apple", limit=limit)


@pytest.mark.parametrize(
    "value", [-0.01, 1.01, -1, 2, math.nan, math.inf, -math.inf, "0.5", None, True]
)
def test_bad_min_retention(store: Store, value: Any) -> None:
    with pytest.raises(InvalidInput, match="min_retention"):
        store.search("apple", min_retention=value)


@pytest.mark.parametrize(
    ("kwargs", "fragment"), [({"node_type": "two words"}, "node_type"), ({"tags": "x"}, "tags")]
)
def test_bad_filters(store: Store, kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        store.search("apple", **kwargs)


# -- superseded memories (issue 9) ----------------------------------------------------------------


def test_a_superseded_memory_never_outranks_its_correction(store: Store) -> None:
    """Reproduction 4: after a pass the superseded memory ranked first (0.932 vs 0.517)."""
    old = store.smart_ingest("The user prefers dark mode")
    new = store.smart_ingest("Actually, the user prefers light mode")
    assert (new.decision.value, new.superseded_id) == ("supersede", old.memory.id)
    store.decay()
    assert found(store, "user prefers dark mode") == [new.memory.id]
    hits = store.search("user prefers dark mode", include_superseded=True)
    assert [h.memory.id for h in hits] == [new.memory.id, old.memory.id]
    assert hits[1].memory.superseded_by == new.memory.id
    assert hits[0].combined_score < hits[1].combined_score  # it ranks first all the same


def supersede(store: Store, old: str, new: str) -> None:
    """Link two memories as smart_ingest's supersede does (without its text rules)."""
    store._db.write(
        lambda c: c.execute("UPDATE knowledge_nodes SET superseded_by = ? WHERE id = ?", (new, old))
    )


def test_a_superseded_memory_ranks_below_its_successor_whatever_its_score(store: Store) -> None:
    chain = [store.ingest(f"release train {'schedule ' * k}notes") for k in (3, 2, 1)]
    other = store.ingest("release notes")
    supersede(store, chain[0].id, chain[1].id)  # the best keyword match, twice outdated
    supersede(store, chain[1].id, chain[2].id)
    assert found(store, "train schedule") == [chain[2].id]
    hits = store.search("train schedule", include_superseded=True)
    plain = sorted(hits, key=lambda h: h.combined_score, reverse=True)
    assert plain[0].memory.id == chain[0].id  # by score alone the oldest would come first
    assert [h.memory.id for h in hits] == [chain[2].id, chain[1].id, chain[0].id]
    assert [h.memory.superseded_by for h in hits] == [None, chain[2].id, chain[1].id]
    assert other.id not in {h.memory.id for h in hits}  # "notes" alone is not a match
    assert found(store, "release notes", include_superseded=True)[-2:] == [
        chain[1].id,
        chain[0].id,
    ]


def test_superseded_memories_do_not_crowd_out_the_live_ones(store: Store) -> None:
    live = store.ingest("kubernetes ingress")
    for i in range(40):
        stale = store.ingest(f"kubernetes ingress kubernetes ingress {i}")
        supersede(store, stale.id, live.id)
    assert found(store, "kubernetes ingress", limit=1) == [live.id]
    assert found(store, "kubernetes ingress", limit=3, include_superseded=True)[0] == live.id


@pytest.mark.parametrize(
    ("ranked", "links", "expected"),
    [
        ("abc", {}, "abc"),
        ("abc", {"a": "c"}, "bca"),  # a waits for c, then comes right after it
        ("abcd", {"a": "b", "b": "d"}, "cdba"),  # a chain keeps its order, newest first
        ("abc", {"a": "c", "b": "c"}, "cab"),  # two followers keep their rank order
        ("abc", {"c": "a"}, "abc"),  # already below its successor
        ("abc", {"a": "zz"}, "abc"),  # the successor did not match the query
        ("abc", {"a": "b", "b": "a"}, "cab"),  # a cycle (edited by hand) comes last
        ("ab", {"a": "a"}, "ab"),
    ],
)
def test_below_successors(ranked: str, links: dict[str, str], expected: str) -> None:
    out = below_successors(list(ranked), key=str, successor=links.get)
    assert "".join(out) == expected


# -- rare terms first (issue 12) -----------------------------------------------------------------
# The split is absolute (COMMON_ROWS rows), so a small test store lowers it to make its words
# common; the exhaustive ranking to compare with is the same store with the bound out of reach.


def _ranked(store: Store, query: str, **kwargs: Any) -> list[tuple[str, float]]:
    return [(h.memory.id, h.keyword_score) for h in store.search(query, **kwargs)]


@pytest.fixture
def common_store(store: Store) -> Store:
    """40 rows where "alpha" and "beta" are common, and a few rows with rare words."""
    rng = random.Random(12)
    fillers = ["alpha", "beta", "gamma", "delta", "epsilon"]
    for i in range(40):
        words = ["alpha", "beta", *rng.choices(fillers, k=rng.randint(2, 12))]
        if i % 7 == 0:
            words.append("zircon")
        if i % 11 == 0:
            words += ["quartz", "quartz"]
        store.ingest(" ".join(words), tags=["kept"] if i < 3 else None)
    return store


@pytest.mark.parametrize(
    "query", ["zircon alpha", "quartz beta alpha", "zircon quartz gamma", "alpha zircon"]
)
def test_rare_terms_first_ranks_exactly_as_exhaustive(
    common_store: Store, query: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    exhaustive = _ranked(common_store, query, limit=40)
    monkeypatch.setattr("vestige.search.COMMON_ROWS", 10)  # alpha, beta, gamma ... are common
    ranked = _ranked(common_store, query, limit=8)
    # A term in most rows is left out of the scoring: FTS5 floors its idf at 1e-6, so it
    # weighs ~nothing, and only rows within that of each other may swap places.
    every = dict(exhaustive)
    assert [k for _, k in ranked] == pytest.approx([k for _, k in exhaustive[:8]], abs=1e-5)
    assert [every[i] for i, _ in ranked] == pytest.approx([k for _, k in ranked], abs=1e-5)


def test_only_common_terms_still_return_as_many_as_asked(
    common_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("vestige.search.COMMON_ROWS", 10)
    monkeypatch.setattr("vestige.search.COMMON_WINDOW", 5)
    assert len(common_store.search("alpha beta", limit=20)) == 20
    assert len(common_store.search("alpha", limit=50)) == 40


def test_a_filter_finds_old_rows_beyond_the_common_window(
    common_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The three tagged rows are the oldest: outside the newest window, but not lost."""
    monkeypatch.setattr("vestige.search.COMMON_ROWS", 10)
    monkeypatch.setattr("vestige.search.COMMON_WINDOW", 5)
    kept = found(common_store, "alpha", tags=["kept"], limit=10)
    assert len(kept) == 3
    # A rare term that no tagged row has leaves the common terms to find them.
    assert sorted(found(common_store, "quartz alpha", tags=["kept"], limit=10)) == sorted(kept)
    old = common_store.ingest("alpha beta", node_type="note")
    for _ in range(30):
        common_store.ingest("alpha beta gamma")
    assert found(common_store, "alpha beta", node_type="note") == [old.id]


def test_superseded_rules_hold_for_common_terms(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("vestige.search.COMMON_ROWS", 3)
    old = store.ingest("the deploy target is staging east")
    new = store.smart_ingest("actually the deploy target is staging west")
    assert new.superseded_id == old.id
    for _ in range(10):
        store.ingest("deploy target notes")
    assert old.id not in found(store, "deploy target", limit=50)
    with_old = found(store, "deploy target", limit=50, include_superseded=True)
    assert with_old.index(old.id) == with_old.index(new.memory.id) + 1


@pytest.fixture
def two_thirds_store(store: Store) -> Store:
    """8,000 rows (the real ``COMMON_ROWS``): "postgres" in 2,667, "mysql" in 2,667, none in
    both; "zeppelin" in 40 of them.  Either word alone is rare, the two together are not."""
    rng = random.Random(12)
    fillers = ["replica", "lag", "index", "vacuum", "query", "plan", "pool", "latency"]
    for i in range(8_000):
        words = rng.choices(fillers, k=rng.randint(3, 25))
        if i % 3 < 2:
            words.insert(rng.randrange(len(words) + 1), ("postgres", "mysql")[i % 3])
        if i % 200 == 0:
            words.append("zeppelin")
        store.ingest(" ".join(words))
    return store


@pytest.mark.parametrize(
    "queries",
    [
        ("postgres mysql", "mysql postgres", "MySQL, postgres"),
        ("postgres mysql zeppelin", "zeppelin mysql postgres", "mysql zeppelin postgres"),
        ("postgres mysql vacuum", "vacuum mysql postgres", "mysql vacuum postgres"),
    ],
)
def test_word_order_never_changes_what_a_search_finds(
    two_thirds_store: Store, queries: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two words in equally many rows, together past ``COMMON_ROWS``: the one listed first
    was rare and the other common, so each order found only its first word's rows."""
    results = {q: _ranked(two_thirds_store, q, limit=10) for q in queries}
    first = results[queries[0]]
    assert all(r == first for r in results.values()), results
    # And what they find is the exhaustive top: both words' rows compete ("vacuum", in most
    # rows, weighs ~nothing: FTS5 floors its idf at 1e-6).
    monkeypatch.setattr("vestige.search.COMMON_ROWS", 1_000_000)
    exhaustive = _ranked(two_thirds_store, queries[0], limit=10)
    assert [k for _, k in first] == pytest.approx([k for _, k in exhaustive], abs=1e-5)


def test_term_counts_are_kept_until_a_commit(
    common_store: Store, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A search counts a word's rows once; any commit, this handle's or another's, makes
    the next search count again and rank as a fresh handle would."""
    monkeypatch.setattr("vestige.search.COMMON_ROWS", 10)
    counted: list[str] = []
    real_scalar = store_module.scalar

    def scalar(conn: Any, sql: str, *args: Any) -> Any:
        if sql == store_module._ROWS_WITH:
            counted.append(args[0][0])  # the word, quoted
        return real_scalar(conn, sql, *args)

    monkeypatch.setattr(store_module, "scalar", scalar)
    common_store.search("zircon alpha")
    assert counted
    counted.clear()
    common_store.search("alpha zircon quartz")
    assert counted == ['"quartz"']

    def fresh(query: str) -> list[tuple[str, float]]:
        with Store.open(data_dir) as other:
            return _ranked(other, query)

    for write in ("this handle", "another handle"):
        if write == "this handle":
            common_store.ingest("zircon " * 3)
        else:
            with Store.open(data_dir) as other:
                for _ in range(10):
                    other.ingest("zircon beta")  # zircon is common now
        counted.clear()
        ranked = _ranked(common_store, "zircon alpha")
        assert counted, write
        assert ranked == fresh("zircon alpha"), write


@pytest.mark.parametrize("query", ["zeppelin postgres", "zeppelin mysql postgres lag"])
def test_rows_with_a_rare_and_a_common_word_rank_as_fts5_ranks_them(
    two_thirds_store: Store, query: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scored by the store's own bm25 on the counts it keeps, not FTS5's: the same ranks."""
    monkeypatch.setattr("vestige.search.COMMON_ROWS", 1_000)  # postgres, mysql are common
    calls: list[int] = []
    real = store_module._bm25

    def counted(api: Any, *rows_with: Any) -> float:
        calls.append(1)
        return real(api, *rows_with)

    monkeypatch.setattr(store_module, "_bm25", counted)
    ours = _ranked(two_thirds_store, query, limit=10)
    assert calls  # the rows with zeppelin and postgres were scored here
    monkeypatch.setattr("vestige.search.SCORED_HERE_ROWS", 0)  # FTS5's bm25 for all
    calls.clear()
    theirs = _ranked(two_thirds_store, query, limit=10)
    assert not calls
    assert [i for i, _ in ours] == [i for i, _ in theirs]
    assert [k for _, k in ours] == pytest.approx([k for _, k in theirs], abs=1e-12)


def test_the_stores_bm25_gives_fts5s_scores_bit_for_bit(
    two_thirds_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every query ``_search_rows`` makes, scored by FTS5 (no kept counts) and by the store's
    own bm25 on the counts it keeps: the same rows, the same scores, to the last bit."""
    monkeypatch.setattr("vestige.search.COMMON_ROWS", 1_000)  # postgres, mysql are common
    monkeypatch.setattr("vestige.search.COMMON_WINDOW", 40)
    filters = (0.0, None, None, "[]")
    queries = ["postgres mysql", "mysql", "zeppelin postgres", "zeppelin mysql postgres lag"]
    for query, include_superseded in itertools.product(queries, [False, True]):
        words = search_module.query_terms(query)
        with two_thirds_store._db.read() as conn:
            theirs = store_module._search_rows(conn, words, filters, 30, include_superseded)
            terms = store_module._TermRows().on(conn)
            ours = store_module._search_rows(
                conn, words, filters, 30, include_superseded, terms=terms
            )
        assert len(ours) == 30, query
        assert ours == theirs, query
