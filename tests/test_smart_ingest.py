"""smart_ingest decisions at and around each threshold, with cosines computed in the test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vestige import Decision, Store
from vestige.similarity import cosine, looks_like_correction
from vestige.store import REINFORCE_AT, SUPERSEDE_CORRECTION_AT, UPDATE_AT

# Ten distinct words, each once: cosine = shared / sqrt(10 * len(new)).
BASE = "staging database runs on port 5433 behind bastion host firewall"


def count(store: Store) -> int:
    return store.stats().total_memories


def words(spec: dict[str, int]) -> str:
    return " ".join(w for w, n in spec.items() for _ in range(n))


def test_thresholds_are_the_documented_ones() -> None:
    assert (REINFORCE_AT, UPDATE_AT, SUPERSEDE_CORRECTION_AT) == (0.92, 0.75, 0.70)


# -- reinforce -------------------------------------------------------------------------------


def test_exact_repeat_reinforces(store: Store) -> None:
    old = store.ingest(BASE, tags=["infra"])
    store.demote(old.id)  # retrieval 0.7, retention 0.85, stability 1.15325
    result = store.smart_ingest(BASE, tags=["ports"])
    assert result.decision is Decision.REINFORCE
    assert result.memory.id == old.id
    assert result.similarity == 1.0
    m = store.get(old.id)
    assert m.reps == 1
    assert m.retrieval_strength == 1.0
    assert m.retention_strength == pytest.approx(0.90)
    assert m.stability == pytest.approx(1.15325 * 1.2)
    assert m.storage_strength == pytest.approx(1.1)
    assert m.tags == ("infra", "ports")
    assert m.content == BASE
    assert count(store) == 1


def test_normalised_repeat_reinforces(store: Store) -> None:
    old = store.ingest("the staging DB runs on port 5433")
    result = store.smart_ingest("  The   Staging db runs on PORT 5433!  ")
    assert result.decision is Decision.REINFORCE
    assert result.memory.id == old.id
    assert count(store) == 1


def test_repeat_with_another_node_type_is_a_new_memory(store: Store) -> None:
    store.ingest(BASE, node_type="fact")
    result = store.smart_ingest(BASE, node_type="decision")
    assert result.decision is Decision.CREATE
    assert count(store) == 2


def test_near_repeat_reinforces(store: Store) -> None:
    new = BASE + " today"
    assert cosine(BASE, new) == pytest.approx(10 / 110**0.5)
    assert cosine(BASE, new) >= REINFORCE_AT
    old = store.ingest(BASE)
    result = store.smart_ingest(new)
    assert result.decision is Decision.REINFORCE
    assert result.memory.id == old.id
    assert result.similarity == pytest.approx(cosine(BASE, new))
    assert store.get(old.id).content == BASE  # reinforcing does not rewrite the text


def test_reinforce_boundary_is_inclusive(store: Store) -> None:
    old_text = words({"kafka": 6, "broker": 8})
    new_text = words({"kafka": 6, "broker": 7, "replica": 3, "leader": 2, "topic": 1, "log": 1})
    assert cosine(old_text, new_text) == REINFORCE_AT  # 92 / (10 * 10), exactly
    old = store.ingest(old_text)
    result = store.smart_ingest(new_text)
    assert result.decision is Decision.REINFORCE
    assert result.memory.id == old.id


# -- update ----------------------------------------------------------------------------------


def test_similar_content_updates_with_a_dated_note(store: Store) -> None:
    new = "staging database runs on port 5433 behind bastion gateway proxy"
    assert cosine(BASE, new) == pytest.approx(0.8)
    assert not looks_like_correction(new, BASE)
    old = store.ingest(BASE, tags=["infra"])
    result = store.smart_ingest(new, tags=["network"])
    assert result.decision is Decision.UPDATE
    assert result.memory.id == old.id
    day = result.memory.updated_at[:10]
    assert result.memory.content == f"{BASE}\n\n[Updated {day}]\n{new}"
    assert store.get(old.id) == result.memory
    assert result.memory.tags == ("infra", "network")
    assert result.memory.reps == 1
    assert count(store) == 1
    assert [h.memory.id for h in store.search("gateway")] == [old.id]


def test_update_boundary_is_inclusive(store: Store) -> None:
    old_text, new_text = "alpha bravo charlie delta", "alpha bravo charlie echo"
    assert cosine(old_text, new_text) == UPDATE_AT  # 3 / 4, exactly
    old = store.ingest(old_text)
    result = store.smart_ingest(new_text)
    assert result.decision is Decision.UPDATE
    assert result.memory.id == old.id


def test_just_below_update_creates(store: Store) -> None:
    new = "so staging database runs on port 5433 behind tunnel"
    assert cosine(BASE, new) == pytest.approx(7 / 90**0.5)  # 0.738
    assert not looks_like_correction(new, BASE)
    store.ingest(BASE)
    result = store.smart_ingest(new)
    assert result.decision is Decision.CREATE
    assert result.similarity == pytest.approx(cosine(BASE, new))
    assert count(store) == 2


# -- supersede ---------------------------------------------------------------------------


def assert_superseded(store: Store, old_id: str, result: object, before: int) -> None:
    from vestige.models import IngestResult  # noqa: PLC0415

    assert isinstance(result, IngestResult)
    assert result.decision is Decision.SUPERSEDE
    assert result.superseded_id == old_id
    assert result.memory.id != old_id
    assert store.get(result.memory.id) == result.memory
    old = store.get(old_id)
    assert old.superseded_by == result.memory.id
    assert count(store) == before + 1


def test_correction_wording_in_the_070_band_supersedes(store: Store) -> None:
    new = "actually staging database runs on port 5433 behind tunnel"
    assert SUPERSEDE_CORRECTION_AT <= cosine(BASE, new) < UPDATE_AT
    assert looks_like_correction(new, BASE)
    old = store.ingest(BASE)
    result = store.smart_ingest(new)
    assert_superseded(store, old.id, result, before=1)
    demoted = store.get(old.id)
    assert (demoted.retrieval_strength, demoted.retention_strength) == pytest.approx((0.7, 0.85))
    assert demoted.stability == pytest.approx(2.3065 * 0.5)
    assert demoted.content == BASE


def test_correction_boundary_is_inclusive(store: Store) -> None:
    old_text = words({"port": 6, "host": 8})
    new_text = words({"port": 5, "host": 5, "actually": 7, "tunnel": 1})
    assert cosine(old_text, new_text) == SUPERSEDE_CORRECTION_AT  # 70 / (10 * 10), exactly
    old = store.ingest(old_text)
    assert_superseded(store, old.id, store.smart_ingest(new_text), before=1)


def test_negation_reads_as_correction(store: Store) -> None:
    old_text = "use the staging database on port 5433 behind bastion host"
    new_text = "never use the staging database on port 5433 behind bastion"
    assert SUPERSEDE_CORRECTION_AT <= cosine(old_text, new_text) < REINFORCE_AT
    old = store.ingest(old_text)
    assert_superseded(store, old.id, store.smart_ingest(new_text), before=1)


def test_correction_wording_wins_over_update(store: Store) -> None:
    new = "actually staging database runs on port 5433 behind bastion proxy"
    assert cosine(BASE, new) == pytest.approx(0.8)
    old = store.ingest(BASE)
    assert_superseded(store, old.id, store.smart_ingest(new), before=1)


def test_correction_wording_below_070_creates(store: Store) -> None:
    new = "actually staging database runs on port behind tunnel today"
    assert cosine(BASE, new) == pytest.approx(6 / 90**0.5)  # 0.632
    assert looks_like_correction(new, BASE)
    old = store.ingest(BASE)
    result = store.smart_ingest(new)
    assert result.decision is Decision.CREATE
    assert store.get(old.id).superseded_by is None
    assert count(store) == 2


def test_demoted_target_at_075_is_superseded(store: Store) -> None:
    new = "staging database runs on port 5433 behind bastion gateway proxy"
    assert cosine(BASE, new) == pytest.approx(0.8)
    assert not looks_like_correction(new, BASE)
    old = store.ingest(BASE)
    for _ in range(3):
        store.demote(old.id)  # retrieval 0.1: demoted
    result = store.smart_ingest(new)
    assert_superseded(store, old.id, result, before=1)
    assert store.get(old.id).retrieval_strength == pytest.approx(0.05)


def test_lightly_demoted_target_is_updated(store: Store) -> None:
    new = "staging database runs on port 5433 behind bastion gateway proxy"
    old = store.ingest(BASE)
    store.demote(old.id)  # retrieval 0.7: not under 0.3
    result = store.smart_ingest(new)
    assert result.decision is Decision.UPDATE
    assert result.memory.id == old.id


def test_superseded_memory_is_no_longer_a_candidate(store: Store) -> None:
    old = store.ingest(BASE)
    correction = store.smart_ingest("actually staging database runs on port 5433 behind tunnel")
    assert correction.decision is Decision.SUPERSEDE
    again = store.smart_ingest(BASE)  # the old text again: its memory is superseded
    assert again.memory.id != old.id
    assert store.get(old.id).reps == 0


# -- create ------------------------------------------------------------------------------------


def test_unrelated_content_creates(store: Store) -> None:
    store.ingest(BASE)
    new = "my cat prefers salmon over chicken"
    assert cosine(BASE, new) == 0.0
    result = store.smart_ingest(new)
    assert result.decision is Decision.CREATE
    assert result.superseded_id is None
    assert store.get(result.memory.id).content == new
    assert count(store) == 2


def test_first_memory_creates(store: Store) -> None:
    result = store.smart_ingest(BASE)
    assert result.decision is Decision.CREATE
    assert result.similarity == 0.0
    assert store.get(result.memory.id).content == BASE


def test_force_create_skips_the_checks(store: Store) -> None:
    old = store.ingest(BASE)
    result = store.smart_ingest(BASE, force_create=True)
    assert result.decision is Decision.CREATE
    assert result.memory.id != old.id
    assert count(store) == 2
    assert store.get(old.id).reps == 0


# -- another writer between the decision and the write -----------------------------------------


def test_the_same_text_stored_at_once_by_two_handles_is_one_memory(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Store.open(data_dir) as first, Store.open(data_dir) as second:
        decide = first._decide
        stored_by_second = []

        def second_writes_after_first_decided(new: Any) -> Any:
            decided = decide(new)
            stored_by_second.append(second.smart_ingest(BASE, tags=["second"]))
            return decided

        monkeypatch.setattr(first, "_decide", second_writes_after_first_decided)
        result = first.smart_ingest(BASE, tags=["first"])
        [other] = stored_by_second
        assert other.decision is Decision.CREATE
        assert result.decision is Decision.REINFORCE
        assert result.memory.id == other.memory.id
        m = second.get(other.memory.id)
        assert (m.reps, m.tags) == (1, ("second", "first"))
        assert count(first) == 1


def test_a_target_superseded_meanwhile_is_not_updated(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    update = "staging database runs on port 5433 behind bastion gateway proxy"
    with Store.open(data_dir) as first, Store.open(data_dir) as second:
        old = first.ingest(BASE)
        decide = first._decide
        corrections = []

        def second_supersedes_after_first_decided(new: Any) -> Any:
            decided = decide(new)
            assert decided[0] is Decision.UPDATE
            fix = "actually staging database runs on port 5433 behind tunnel"
            corrections.append(second.smart_ingest(fix))
            return decided

        monkeypatch.setattr(first, "_decide", second_supersedes_after_first_decided)
        result = first.smart_ingest(update)
        [correction] = corrections
        assert correction.decision is Decision.SUPERSEDE
        assert result.decision is Decision.CREATE
        assert "superseded meanwhile" in result.reason
        assert first.get(old.id).content == BASE  # the superseded memory was left alone
        assert first.get(result.memory.id).content == update
        assert count(first) == 3
