"""Reads that cost the memory of what they return, not of every row they looked at.

``search`` ranks candidates on their scores and reads only the rows it returns;
``content_chars`` (search, timeline) reads only the start of each text; ``memory_states``
counts states from the strengths alone.  The answers are the same as reading whole rows.
The memory figures themselves are in tests/benchmarks/bench_server_memory.py.
"""

from __future__ import annotations

from vestige import Store, fsrs


def test_search_reads_the_start_of_each_text_when_asked(store: Store) -> None:
    for i in range(12):
        store.ingest(f"needle {i} " + "x" * (1000 + i), tags=["t"])
    whole = store.search("needle", limit=5)
    cut = store.search("needle", limit=5, content_chars=20)
    none = store.search("needle", limit=5, content_chars=0)
    assert [h.memory.id for h in cut] == [h.memory.id for h in whole]
    assert [h.combined_score for h in none] == [h.combined_score for h in whole]
    assert [h.memory.content for h in cut] == [h.memory.content[:20] for h in whole]
    assert {h.memory.content for h in none} == {""}
    assert [h.memory.tags for h in cut] == [h.memory.tags for h in whole]
    assert all(len(h.memory.content) > 1000 for h in whole)


def test_search_still_ranks_a_superseded_memory_below_its_correction(store: Store) -> None:
    old = store.smart_ingest("The user prefers dark mode")
    new = store.smart_ingest("Actually, the user prefers light mode")
    assert (new.decision.value, new.superseded_id) == ("supersede", old.memory.id)
    store.decay()
    hits = store.search("user prefers dark mode", include_superseded=True, content_chars=0)
    assert [h.memory.id for h in hits] == [new.memory.id, old.memory.id]
    assert hits[1].memory.superseded_by == new.memory.id


def test_timeline_reads_the_start_of_each_text_when_asked(store: Store) -> None:
    store.ingest("a" * 700)
    (day,) = store.timeline(content_chars=501)
    assert day.memories[0].content == "a" * 501
    (whole,) = store.timeline()
    assert whole.memories[0].content == "a" * 700


def test_memory_states_count_what_whole_rows_would(store: Store) -> None:
    for i in range(7):
        memory = store.ingest(f"memory {i}")
        if i % 2:
            store.demote(memory.id)
    expected = dict.fromkeys(("active", "dormant", "silent", "unavailable"), 0)
    for m in list(store.iter_memories())[:5]:
        score = fsrs.accessibility(m.retention_strength, m.retrieval_strength, m.storage_strength)
        expected[fsrs.memory_state(score)] += 1
    assert store.memory_states(5) == expected
    assert sum(store.memory_states().values()) == 7
    assert store.memory_states(0) == dict.fromkeys(expected, 0)
