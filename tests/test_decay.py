"""FSRS-6 curve and the decay pass (the `consolidate` tool), run under a one-process lease."""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import apsw
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    """With no promote or demote, the Rust original's blend (kept 1e-9 off 0 and 1)."""
    assert fsrs.retention(retrieval, storage) == pytest.approx(expected, abs=2e-9)
    assert fsrs.retention(retrieval, storage) == pytest.approx(
        0.7 * retrieval + 0.3 * min(storage / 10, 1), abs=2e-9
    )


@pytest.mark.parametrize(("retrieval", "storage"), [(0, 0), (0, 1), (0.5, 3), (1, 1), (1, 10)])
@pytest.mark.parametrize("factor", [1 / 64, 0.5, 1.8, 64])
def test_the_adjustment_multiplies_the_odds(
    retrieval: float, storage: float, factor: float
) -> None:
    plain = fsrs.retention(retrieval, storage)
    moved = fsrs.retention(retrieval, storage, math.log(factor))
    assert moved / (1 - moved) == pytest.approx(plain / (1 - plain) * factor, rel=1e-4)
    # even a memory at 0 or 1 moves: a promote or demote always changes its rank
    assert (moved > plain) == (factor > 1)
    assert moved != plain


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


def test_future_last_accessed_counts_as_no_time(store: Store) -> None:
    memory = store.ingest("clock skew")
    tomorrow = days_ago(-1)
    set_columns(store, memory.id, last_accessed=tomorrow)
    report = store.decay()
    assert (report.nodes_processed, report.decay_applied) == (1, 1)  # only the schedule moved
    got = store.get(memory.id)
    assert (got.retrieval_strength, got.retention_strength) == (1.0, memory.retention_strength)
    assert (
        got.next_review == (datetime.fromisoformat(tomorrow) + timedelta(days=2.3065)).isoformat()
    )
    assert store.decay().decay_applied == 0


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


# -- issue 9: one model, and a decay pass that keeps promote and demote ---------------------------


def test_a_decay_pass_keeps_demote_and_promote(store: Store) -> None:
    """Reproduction 3: one pass used to put a demoted and a promoted memory back to 0.730."""
    untouched, demoted, promoted = (
        store.ingest("deploy with the blue green strategy") for _ in range(3)
    )
    store.demote(demoted.id)
    store.promote(promoted.id)
    for _ in range(2):
        assert store.decay().ran
        got = {m.id: m.retention_strength for m in store.iter_memories()}
        # Apart by a margin that ranks them, not by the microseconds between the ingests.
        assert got[demoted.id] + 0.1 < got[untouched.id] < got[promoted.id] - 0.05, got
        hits = store.search("blue green")
        assert [h.memory.id for h in hits] == [promoted.id, untouched.id, demoted.id]


def test_a_fresh_memory_keeps_its_retention_through_a_pass(store: Store) -> None:
    """Reproduction 5: retention was 1.0 at ingest and 0.73 after a pass, no time passing."""
    memory = store.ingest("just learned")
    store.decay()  # microseconds later
    assert store.get(memory.id).retention_strength == pytest.approx(
        memory.retention_strength, abs=1e-6
    )


# -- invariants, for any state and any clock (hypothesis) ------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PROPERTY = settings(max_examples=300, deadline=None, database=None)
STORE_PROPERTY = settings(max_examples=25, deadline=None, database=None)

states = st.builds(
    fsrs.MemoryState,
    stability=st.floats(fsrs.MIN_STABILITY_DAYS, fsrs.MAX_STABILITY_DAYS),
    storage=st.floats(0.0, fsrs.MAX_STORAGE_STRENGTH),
    adjustment=st.floats(-fsrs.MAX_ADJUSTMENT, fsrs.MAX_ADJUSTMENT),
    sentiment_magnitude=st.floats(0.0, 1.0),
    last_accessed=st.just(T0),
)
#: Clock offsets from T0, in days: before the last access (a skewed clock) up to 100 years on.
offsets = st.floats(-30.0, 36_500.0)


def at(days: float) -> datetime:
    return T0 + timedelta(days=days)


@PROPERTY
@given(state=states, a=offsets, b=offsets)
def test_retention_never_increases_between_accesses(
    state: fsrs.MemoryState, a: float, b: float
) -> None:
    early, late = sorted((a, b))
    before, after = fsrs.strengths(state, at(early)), fsrs.strengths(state, at(late))
    assert after.retention <= before.retention
    assert after.retrieval <= before.retrieval
    assert after.next_review == before.next_review  # a schedule, not a function of the clock


@PROPERTY
@given(state=states, clock=offsets, later=st.floats(0.0, 36_500.0))
def test_demoted_ranks_below_and_promoted_above_an_untouched_twin(
    state: fsrs.MemoryState, clock: float, later: float
) -> None:
    """At the time of the change and at any clock after it (below the caps, MAX_ADJUSTMENT)."""
    demoted = fsrs.demoted(state)
    promoted = fsrs.promoted(state, at(max(clock, 0.0)))  # promoted at or after its last access
    for now in (at(clock), at(clock + later)):
        untouched = fsrs.strengths(state, now).retention
        if state.adjustment + math.log(fsrs.DEMOTE_ODDS) >= -fsrs.MAX_ADJUSTMENT:
            assert fsrs.strengths(demoted, now).retention < untouched
        if state.adjustment + math.log(fsrs.PROMOTE_ODDS) <= fsrs.MAX_ADJUSTMENT:
            assert fsrs.strengths(promoted, now).retention > untouched


@PROPERTY
@given(state=states, before=st.floats(0.0, 30.0))
def test_no_elapsed_time_is_the_state_at_its_last_access(
    state: fsrs.MemoryState, before: float
) -> None:
    fresh = fsrs.strengths(state, state.last_accessed)
    assert fresh.retrieval == 1.0
    assert fsrs.strengths(state, state.last_accessed - timedelta(days=before)) == fresh


def retentions(store: Store) -> dict[str, float]:
    return {m.id: m.retention_strength for m in store.iter_memories()}


@STORE_PROPERTY
@given(
    demotes=st.integers(1, 4),
    promotes=st.integers(1, 4),
    clocks=st.lists(offsets, min_size=1, max_size=4),
)
def test_decay_passes_keep_promote_and_demote_in_rank(
    demotes: int, promotes: int, clocks: list[float]
) -> None:
    """Any number of passes at any clocks: demoted < untouched < promoted, in score and rank."""
    with tempfile.TemporaryDirectory() as tmp, Store.open(tmp) as store:
        twins = [store.ingest("deploy with the blue green strategy") for _ in range(3)]
        untouched, demoted, promoted = (m.id for m in twins)
        for memory in twins:  # identical but for what is done to them next
            set_columns(store, memory.id, last_accessed=twins[0].last_accessed)
        for _ in range(demotes):
            store.demote(demoted)
        for _ in range(promotes):
            store.promote(promoted)
        for offset in clocks:
            now = datetime.fromisoformat(twins[0].last_accessed) + timedelta(days=offset)
            decay.run(store._db, now=now)
            got = retentions(store)
            assert got[demoted] < got[untouched] < got[promoted], got
            assert [h.memory.id for h in store.search("blue green")] == [
                promoted,
                untouched,
                demoted,
            ]
            again = decay.run(store._db, now=now)  # the same clock again: nothing to change
            assert again.decay_applied == 0
            assert retentions(store) == got


@STORE_PROPERTY
@given(clocks=st.lists(st.floats(0.0, 36_500.0), min_size=2, max_size=5), demotes=st.integers(0, 2))
def test_passes_at_later_clocks_only_lower_retention(clocks: list[float], demotes: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, Store.open(tmp) as store:
        memories = [store.ingest(f"memory {i}") for i in range(3)]
        for _ in range(demotes):
            store.demote(memories[0].id)
        start = max(datetime.fromisoformat(m.updated_at) for m in store.iter_memories())
        previous = retentions(store)
        for offset in sorted(clocks):  # the clock moves on from the last write
            decay.run(store._db, now=start + timedelta(days=offset))
            got = retentions(store)
            assert all(got[k] <= previous[k] for k in got), (previous, got)
            previous = got


@pytest.mark.parametrize("change", ["ingest", "promote", "demote"])
def test_a_pass_with_no_elapsed_time_changes_nothing(store: Store, change: str) -> None:
    """Reproduction 5, exactly: at the clock of the row's last write, a pass writes nothing."""
    memory = store.ingest(f"{change} a moment ago")
    if change != "ingest":
        getattr(store, change)(memory.id)
    before = store.get(memory.id)
    report = decay.run(store._db, now=datetime.fromisoformat(before.updated_at))
    assert (report.nodes_processed, report.decay_applied) == (1, 0)
    assert store.get(memory.id) == before
