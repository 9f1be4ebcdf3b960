"""FSRS-6 curve and the decay pass (the `consolidate` tool), run under a one-process lease."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import apsw
import pytest

from vestige import Store, decay, fsrs
from vestige.models import Lease, LeaseHeld


def fsrs6(stability: float, days: float, w20: float = 0.1542) -> float:
    """The FSRS-6 forgetting curve written out independently of vestige.fsrs."""
    factor = 0.9 ** (-1 / w20) - 1
    return float((1 + factor * days / stability) ** (-w20))


# -- the curve -----------------------------------------------------------------------------------


@pytest.mark.parametrize("stability", [0.1, 1.0, 2.3065, 30.0, 36_500.0])
@pytest.mark.parametrize("w20", [0.1542, 0.5, 1.0])
def test_retrievability_is_090_at_t_equal_s(stability: float, w20: float) -> None:
    assert fsrs.retrievability(stability, stability, w20) == pytest.approx(0.9, abs=1e-12)


@pytest.mark.parametrize("elapsed", [0.0, -1.0, -1e9])
def test_no_elapsed_time_means_full_recall(elapsed: float) -> None:
    assert fsrs.retrievability(2.3065, elapsed) == 1.0


@pytest.mark.parametrize("stability", [0.0, -0.5])
def test_no_stability_means_nothing_recalled(stability: float) -> None:
    assert fsrs.retrievability(stability, 1.0) == 0.0
    assert fsrs.retrievability(stability, 0.0) == 0.0


@pytest.mark.parametrize(("s", "t"), [(2.3065, 1), (2.3065, 10), (10, 365), (1, 10_000)])
def test_retrievability_follows_the_curve_and_falls(s: float, t: float) -> None:
    r = fsrs.retrievability(s, t)
    assert r == pytest.approx(fsrs6(s, t))
    assert 0 < r < fsrs.retrievability(s, t / 2) < 1


@pytest.mark.parametrize(
    ("retrieval", "storage", "expected"),
    [(1.0, 1.0, 0.73), (0.5, 5.0, 0.5), (0.9, 10.0, 0.93), (0.9, 25.0, 0.93), (0.0, 0.0, 0.0)],
)
def test_retention_formula(retrieval: float, storage: float, expected: float) -> None:
    assert fsrs.retention(retrieval, storage) == pytest.approx(expected)
    assert fsrs.retention(retrieval, storage) == pytest.approx(
        0.7 * retrieval + 0.3 * min(storage / 10, 1)
    )


# -- the decay pass ------------------------------------------------------------------------------


def set_columns(store: Store, memory_id: str, **values: Any) -> None:
    assignments = ", ".join(f"{k} = ?" for k in values)
    store._db.write(
        lambda c: c.execute(
            f"UPDATE knowledge_nodes SET {assignments} WHERE id = ?", (*values.values(), memory_id)
        )
    )


def days_ago(days: float) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).isoformat()


def strengths(store: Store) -> dict[str, tuple[float, float, float]]:
    return {
        m.id: (m.retrieval_strength, m.retention_strength, m.stability)
        for m in store.iter_memories()
    }


def test_decay_applies_the_formula(store: Store) -> None:
    plain = store.ingest("three days untouched")
    emotional = store.ingest("ten days untouched, felt strongly")
    strong = store.ingest("thirty days untouched, well stored")
    set_columns(store, plain.id, last_accessed=days_ago(3))
    set_columns(store, emotional.id, last_accessed=days_ago(10), sentiment_magnitude=0.8)
    thirty = days_ago(30)
    set_columns(store, strong.id, last_accessed=thirty, storage_strength=25.0, stability=40.0)
    report = store.decay()
    assert report.ran
    assert (report.nodes_processed, report.decay_applied) == (3, 3)

    r = fsrs6(2.3065, 3)
    got = store.get(plain.id)
    assert got.retrieval_strength == pytest.approx(r, rel=1e-5)
    assert got.retention_strength == pytest.approx(0.7 * r + 0.3 * 0.1, rel=1e-5)
    assert got.stability == pytest.approx(2.3065)

    r = fsrs6(2.3065 * (1 + 0.5 * 0.8), 10)  # emotional memories decay slower
    got = store.get(emotional.id)
    assert got.retrieval_strength == pytest.approx(r, rel=1e-5)
    assert got.retention_strength == pytest.approx(0.7 * r + 0.03, rel=1e-5)

    r = fsrs6(40.0, 30)
    got = store.get(strong.id)
    assert got.retrieval_strength == pytest.approx(r, rel=1e-5)
    assert got.retention_strength == pytest.approx(0.7 * r + 0.3, rel=1e-5)  # storage capped
    assert got.last_accessed == thirty  # decay is not an access


def test_decay_uses_the_databases_w20(store: Store) -> None:
    memory = store.ingest("custom decay exponent")
    set_columns(store, memory.id, last_accessed=days_ago(5))
    store._db.write(lambda c: c.execute("UPDATE fsrs_config SET value = 0.5 WHERE key = 'w20'"))
    store.decay()
    assert store.get(memory.id).retrieval_strength == pytest.approx(
        fsrs6(2.3065, 5, w20=0.5), rel=1e-5
    )
    assert not math.isclose(fsrs6(2.3065, 5, w20=0.5), fsrs6(2.3065, 5), rel_tol=1e-3)


def test_decay_through_a_closed_store_edit(data_dir: Any) -> None:
    """last_accessed set back by a plain connection while no store is open."""
    with Store.open(data_dir) as store:
        memory = store.ingest("edited while closed")
    conn = apsw.Connection(str(data_dir / "vestige.db"))
    conn.execute(
        "UPDATE knowledge_nodes SET last_accessed = ? WHERE id = ?", (days_ago(7), memory.id)
    )
    conn.close()
    with Store.open(data_dir) as store:
        store.decay()
        assert store.get(memory.id).retrieval_strength == pytest.approx(fsrs6(2.3065, 7), rel=1e-5)


def test_decay_in_small_batches_covers_every_row(store: Store) -> None:
    ids = [store.ingest(f"batch row {i}").id for i in range(7)]
    for i, mid in enumerate(ids):
        set_columns(store, mid, last_accessed=days_ago(i + 1))
    report = decay.run(store._db, batch_rows=2)
    assert (report.nodes_processed, report.decay_applied) == (7, 7)
    for i, mid in enumerate(ids):
        assert store.get(mid).retrieval_strength == pytest.approx(fsrs6(2.3065, i + 1), rel=1e-5)


def test_future_last_accessed_is_left_alone(store: Store) -> None:
    memory = store.ingest("clock skew")
    set_columns(store, memory.id, last_accessed=days_ago(-1))
    report = store.decay()
    assert (report.nodes_processed, report.decay_applied) == (1, 0)
    assert store.get(memory.id).retention_strength == 1.0


def test_decay_records_its_runs_and_releases_its_lease(store: Store) -> None:
    store.ingest("x")
    old = store.ingest("y")
    set_columns(store, old.id, last_accessed=days_ago(2))
    assert store.last_decay_at() is None
    before = datetime.now(UTC)
    store.decay()
    first = store.last_decay_at()
    store.decay()
    with store._db.read() as conn:
        history = conn.execute(
            "SELECT nodes_processed, decay_applied, holder FROM decay_runs ORDER BY id"
        ).fetchall()
        held = conn.execute("SELECT * FROM maintenance_claims").fetchall()
    assert [h[:2] for h in history] == [(2, 2), (2, 2)]
    assert history[0][2] != history[1][2]  # each run has its own holder id
    assert held == []
    assert first is not None
    assert before <= first <= datetime.now(UTC)
    last = store.last_decay_at()
    assert last is not None
    assert last >= first


def test_a_held_lease_stops_decay_without_changes(store: Store) -> None:
    memory = store.ingest("must stay as it is")
    set_columns(store, memory.id, last_accessed=days_ago(4))
    held = store.claim_lease(decay.TASK)
    assert isinstance(held, Lease)
    before = strengths(store)

    report = store.decay()
    assert not report.ran
    assert held.holder in report.reason
    assert strengths(store) == before
    with store._db.read() as conn:
        assert conn.execute("SELECT COUNT(*) FROM decay_runs").fetchall() == [(0,)]
        assert conn.execute("SELECT holder FROM maintenance_claims").fetchall() == [(held.holder,)]

    store.release_lease(held)
    report = store.decay()
    assert report.ran
    assert store.get(memory.id).retrieval_strength == pytest.approx(fsrs6(2.3065, 4), rel=1e-5)


def test_an_expired_lease_does_not_block(store: Store) -> None:
    store.ingest("x")
    stale = store.claim_lease(decay.TASK, lease_s=-1.0)  # its holder stopped renewing
    assert isinstance(stale, Lease)
    assert store.decay().ran


def test_a_second_claim_is_refused_while_the_first_is_live(store: Store) -> None:
    first = store.claim_lease("optimize")
    second = store.claim_lease("optimize")
    assert isinstance(first, Lease)
    assert isinstance(second, LeaseHeld)
    assert second.holder == first.holder
    assert 0 < second.expires_in_s <= first.lease_s
    assert isinstance(store.claim_lease("other-task"), Lease)


def test_a_renewed_lease_outlives_its_first_term_and_a_lost_one_says_so(store: Store) -> None:
    lease = store.claim_lease("upkeep", lease_s=0.5)
    assert isinstance(lease, Lease)
    # Renewing extends by the lease's own length: renew this one for a minute.
    assert store.renew_lease(replace(lease, lease_s=60.0))
    time.sleep(0.6)  # past the first term
    assert isinstance(store.claim_lease("upkeep"), LeaseHeld)

    stale = store.claim_lease("stale", lease_s=-1.0)
    assert isinstance(stale, Lease)
    taker = store.claim_lease("stale")  # expired: another holder takes it over
    assert isinstance(taker, Lease)
    assert not store.renew_lease(stale)
    store.release_lease(stale)  # releasing a lost lease leaves the new holder's alone
    assert isinstance(store.claim_lease("stale"), LeaseHeld)
    store.release_lease(taker)
    assert isinstance(store.claim_lease("stale"), Lease)


def test_a_demote_between_compute_and_write_is_not_undone(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Demote keeps last_accessed, so only updated_at tells the batch the row moved on."""
    memory = store.ingest("demoted while the decay batch was being computed")
    set_columns(store, memory.id, last_accessed=days_ago(6))
    demoted: list[Any] = []
    computed: list[Any] = []
    real_decayed = decay._decayed

    def decayed_then_demote(*args: Any) -> Any:
        computed.extend(real_decayed(*args))  # the batch is computed outside a transaction
        demoted.append(store.demote(memory.id))  # ... and another caller writes meanwhile
        return computed

    monkeypatch.setattr(decay, "_decayed", decayed_then_demote)
    report = decay.run(store._db)

    assert (report.nodes_processed, report.decay_applied) == (1, 0)
    got = store.get(memory.id)
    after = demoted[0].after
    assert (got.retrieval_strength, got.retention_strength, got.stability) == pytest.approx(
        (after["retrieval"], after["retention"], after["stability"])
    )
    assert got.retrieval_strength != pytest.approx(computed[0][0])
