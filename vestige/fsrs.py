"""The one FSRS model: how strong a memory is, computed from what is stored about it.

Pure functions, no I/O.  Ingest, promote, demote, reinforce, update and the decay pass all go
through them, so a memory's strengths mean the same whichever of them wrote it last, and
depend only on the memory's persistent state and the clock:

- ``MemoryState`` is what is kept: stability S (days until recall falls to 0.9), when the
  memory was last accessed, storage strength (grows as the same fact is told again), the
  sentiment magnitude (emotional memories fade slower), and the promote/demote adjustment.
- ``strengths(state, now)`` derives the rest: retrievability R on the FSRS-6 curve, retention
  (R and storage blended as the Rust original did, then the adjustment), and next_review.
  These are stored too, as a cache that search ranks and filters by; the decay pass refreshes
  it, and every write recomputes it for the row it writes.

Promote and demote are persistent state, not edits of the cached numbers: each moves
``adjustment``, an offset to the log-odds of retention (promote multiplies the odds by 1.8,
demote halves them).  The Rust original added and subtracted fixed amounts to the cached
retention, and its next decay pass recomputed the cache from the curve and erased them
(issue 9).  Odds rather than a plain offset, because a plain offset saturates at 0 and 1: a
promote of a memory already at 1.0 changed nothing.  On the odds scale a promoted memory always
ranks above an otherwise identical untouched one, and a demoted one below, at any clock.

The curve, the initial values and the retention blend are the Rust original's (vestige-core
``fsrs/algorithm.rs`` and ``lifecycle.rs``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Final

#: FSRS-6 decay exponent; overridable per database through ``fsrs_config`` (key "w20").
W20_DEFAULT: Final = 0.1542
#: Initial stability of a new memory (FSRS w2), in days.
INITIAL_STABILITY_DAYS: Final = 2.3065
#: Initial difficulty: w4 - e^(w5 * 2) + 1 with FSRS-6's default weights (about 2.118).
INITIAL_DIFFICULTY: Final = 6.4133 - math.exp(0.8334 * 2) + 1
#: FSRS-6's bounds on stability, in days (a demote halves it, down to the floor).
MIN_STABILITY_DAYS: Final = 0.01
MAX_STABILITY_DAYS: Final = 36_500.0
INITIAL_STORAGE_STRENGTH: Final = 1.0
MAX_STORAGE_STRENGTH: Final = 10.0
SECONDS_PER_DAY: Final = 86_400.0

#: Weight of retrieval vs storage in retention (SleepConsolidation::calculate_retention).
RETENTION_RETRIEVAL_WEIGHT: Final = 0.7
RETENTION_STORAGE_WEIGHT: Final = 0.3

#: A review is due when recall probability falls to this (FSRS's default desired retention).
#: FSRS-6 defines stability as the time that takes, so next_review = last access + S days.
REVIEW_TARGET: Final = 0.9

#: Promote multiplies the odds of retention by this, demote by DEMOTE_ODDS (it halves them):
#: from a new memory's 0.73, one promote gives 0.83 and one demote 0.57, about the Rust
#: original's +0.10 and -0.15.
PROMOTE_ODDS: Final = 1.8
DEMOTE_ODDS: Final = 0.5
#: The adjustment stays within odds x64 either way: six demotes bury a memory, and one
#: promote still lifts it back at once.
MAX_ADJUSTMENT: Final = math.log(64.0)
#: Stability grows by these factors when a memory is promoted or told again.
PROMOTE_STABILITY: Final = 1.5
DEMOTE_STABILITY: Final = 0.5
REINFORCE_STABILITY: Final = 1.2
REINFORCE_STORAGE: Final = 0.1

#: The blend is kept inside (EPSILON, 1 - EPSILON) before the adjustment applies, so that a
#: promote or demote moves even a memory at exactly 0 or 1.
_EPSILON: Final = 1e-9


@dataclass(frozen=True, slots=True)
class MemoryState:
    """What the model keeps about one memory; everything else is derived from it."""

    stability: float  # days until recall probability falls to REVIEW_TARGET
    storage: float  # storage strength, 1 .. MAX_STORAGE_STRENGTH
    adjustment: float  # log-odds that promotes and demotes added to retention
    sentiment_magnitude: float  # 0 .. 1; emotional memories decay slower
    last_accessed: datetime


@dataclass(frozen=True, slots=True)
class Strengths:
    """What a state means at one moment (stored as a cache; see the module docstring)."""

    retrieval: float
    retention: float
    next_review: datetime | None  # None when it lies beyond the calendar


def new_state(now: datetime, sentiment_magnitude: float = 0.0) -> MemoryState:
    return MemoryState(
        stability=INITIAL_STABILITY_DAYS,
        storage=INITIAL_STORAGE_STRENGTH,
        adjustment=0.0,
        sentiment_magnitude=sentiment_magnitude,
        last_accessed=now,
    )


def strengths(state: MemoryState, now: datetime, w20: float = W20_DEFAULT) -> Strengths:
    """The memory's strengths at ``now``; a clock before its last access counts as no time."""
    s_eff = effective_stability(state.stability, state.sentiment_magnitude)
    elapsed = (now - state.last_accessed).total_seconds() / SECONDS_PER_DAY
    r = retrievability(s_eff, elapsed, w20)
    return Strengths(
        retrieval=r,
        retention=retention(r, state.storage, state.adjustment),
        next_review=next_review(state),
    )


def retrievability(stability_days: float, elapsed_days: float, w20: float = W20_DEFAULT) -> float:
    """FSRS-6: R = (1 + factor * t / S) ** -w20, with factor = 0.9 ** (-1 / w20) - 1.

    R is 0.9 when t equals S (stability is the 90 % recall horizon).
    """
    if stability_days <= 0:
        return 0.0
    if elapsed_days <= 0:
        return 1.0
    # math.pow, not **: it is typed as returning float (float ** float may be complex).
    factor = math.pow(0.9, -1.0 / w20) - 1.0
    r = math.pow(1.0 + factor * elapsed_days / stability_days, -w20)
    return min(1.0, max(0.0, r))


def retention(retrieval: float, storage_strength: float, adjustment: float = 0.0) -> float:
    """0.7 R + 0.3 min(storage / 10, 1), its odds then multiplied by e^adjustment.

    With no adjustment this is the Rust original's blend (to within 1e-9: the blend is kept
    off exactly 0 and 1).
    """
    storage = min(max(storage_strength, 0.0) / MAX_STORAGE_STRENGTH, 1.0)
    blend = RETENTION_RETRIEVAL_WEIGHT * retrieval + RETENTION_STORAGE_WEIGHT * storage
    p = min(max(blend, _EPSILON), 1.0 - _EPSILON)
    return _sigmoid(math.log(p / (1.0 - p)) + adjustment)


def next_review(state: MemoryState) -> datetime | None:
    """When recall probability falls to REVIEW_TARGET: S days after the last access."""
    days = effective_stability(state.stability, state.sentiment_magnitude)
    try:
        return state.last_accessed + timedelta(days=days)
    except OverflowError:  # past the year 9999: never due
        return None


def effective_stability(stability_days: float, sentiment_magnitude: float) -> float:
    """Emotional memories decay slower: S * (1 + 0.5 * |sentiment|)."""
    return min(stability_days, MAX_STABILITY_DAYS) * (1.0 + 0.5 * sentiment_magnitude)


def promoted(state: MemoryState, now: datetime) -> MemoryState:
    """It helped: an access now, stability x1.5, and the odds of retention x1.8 for good."""
    return replace(
        state,
        stability=_bounded_stability(state.stability * PROMOTE_STABILITY),
        adjustment=_bounded_adjustment(state.adjustment + math.log(PROMOTE_ODDS)),
        last_accessed=now,
    )


def demoted(state: MemoryState) -> MemoryState:
    """It misled: stability halved and the odds of retention halved, for good.

    Not an access: last_accessed stays, so it keeps fading from where it was.
    """
    return replace(
        state,
        stability=_bounded_stability(state.stability * DEMOTE_STABILITY),
        adjustment=_bounded_adjustment(state.adjustment + math.log(DEMOTE_ODDS)),
    )


def undemoted(state: MemoryState) -> MemoryState:
    """A demote taken back (a superseding memory was deleted): the exact inverse of demoted."""
    return replace(
        state,
        stability=_bounded_stability(state.stability / DEMOTE_STABILITY),
        adjustment=_bounded_adjustment(state.adjustment - math.log(DEMOTE_ODDS)),
    )


def reinforced(state: MemoryState, now: datetime) -> MemoryState:
    """The same fact was told again: an access now, stability x1.2, storage +0.1."""
    return replace(
        state,
        stability=_bounded_stability(state.stability * REINFORCE_STABILITY),
        storage=min(state.storage + REINFORCE_STORAGE, MAX_STORAGE_STRENGTH),
        last_accessed=now,
    )


def accessed(state: MemoryState, now: datetime) -> MemoryState:
    """Used now (e.g. updated with new text): recall starts again from full."""
    return replace(state, last_accessed=now)


def _bounded_stability(days: float) -> float:
    return min(max(days, MIN_STABILITY_DAYS), MAX_STABILITY_DAYS)


def _bounded_adjustment(adjustment: float) -> float:
    return min(max(adjustment, -MAX_ADJUSTMENT), MAX_ADJUSTMENT)


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


#: Memory states by accessibility, highest band first.  The Rust original put "active" at
#: 0.7, with retention 1.0 at ingest that its own first decay pass took back to 0.73.  With
#: one formula a fresh, untouched memory scores 0.685 (0.5 x 0.73 + 0.3 x 1 + 0.2 x 0.1), so
#: active starts at 0.65: a new memory is active, and stays so for about a day unused
#: (longer once promoted or used again).
ACCESSIBILITY_ACTIVE: Final = 0.65
ACCESSIBILITY_DORMANT: Final = 0.4
ACCESSIBILITY_SILENT: Final = 0.1


def accessibility(retention_strength: float, retrieval_strength: float, storage: float) -> float:
    """How readily a memory comes back: 0.5 retention + 0.3 retrieval + 0.2 storage.

    Storage strength runs up to MAX_STORAGE_STRENGTH (10), so it is scaled to 0..1 first,
    as ``retention`` does.  The Rust original added it unscaled, which kept any memory with
    storage >= 3.5 Active however faded it was.
    """
    scaled = min(max(storage, 0.0) / MAX_STORAGE_STRENGTH, 1.0)
    return 0.5 * retention_strength + 0.3 * retrieval_strength + 0.2 * scaled


def memory_state(accessibility_score: float) -> str:
    """active >= 0.65 > dormant >= 0.4 > silent >= 0.1 > unavailable."""
    if accessibility_score >= ACCESSIBILITY_ACTIVE:
        return "active"
    if accessibility_score >= ACCESSIBILITY_DORMANT:
        return "dormant"
    if accessibility_score >= ACCESSIBILITY_SILENT:
        return "silent"
    return "unavailable"
