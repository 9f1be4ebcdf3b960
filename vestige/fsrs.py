"""FSRS-6 forgetting curve and the strength changes Vestige applies (pure functions, no I/O).

The numbers are the Rust original's (vestige-core ``fsrs/algorithm.rs`` and ``lifecycle.rs``),
so a memory decays, promotes and demotes here exactly as it did there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

#: FSRS-6 decay exponent; overridable per database through ``fsrs_config`` (key "w20").
W20_DEFAULT: Final = 0.1542
#: Initial stability of a new memory (FSRS w2), in days.
INITIAL_STABILITY_DAYS: Final = 2.3065
#: Initial difficulty: w4 - e^(w5 * 2) + 1 with FSRS-6's default weights (about 2.118).
INITIAL_DIFFICULTY: Final = 6.4133 - math.exp(0.8334 * 2) + 1
MAX_STABILITY_DAYS: Final = 36_500.0
MAX_STORAGE_STRENGTH: Final = 10.0
SECONDS_PER_DAY: Final = 86_400.0

#: Weight of retrieval vs storage in retention (SleepConsolidation::calculate_retention).
RETENTION_RETRIEVAL_WEIGHT: Final = 0.7
RETENTION_STORAGE_WEIGHT: Final = 0.3


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


def retention(retrieval_strength: float, storage_strength: float) -> float:
    storage = min(storage_strength / MAX_STORAGE_STRENGTH, 1.0)
    return RETENTION_RETRIEVAL_WEIGHT * retrieval_strength + RETENTION_STORAGE_WEIGHT * storage


def effective_stability(stability_days: float, sentiment_magnitude: float) -> float:
    """Emotional memories decay slower: S * (1 + 0.5 * |sentiment|)."""
    return min(stability_days, MAX_STABILITY_DAYS) * (1.0 + 0.5 * sentiment_magnitude)


@dataclass(frozen=True, slots=True)
class Strengths:
    retrieval: float
    retention: float
    stability: float


def promoted(s: Strengths) -> Strengths:
    """A memory proved useful: retrieval +0.20, retention +0.10 (capped at 1), stability x1.5."""
    return Strengths(
        retrieval=min(1.0, s.retrieval + 0.20),
        retention=min(1.0, s.retention + 0.10),
        stability=min(MAX_STABILITY_DAYS, s.stability * 1.5),
    )


def demoted(s: Strengths) -> Strengths:
    """A memory misled: retrieval -0.30, retention -0.15 (floored at 0.05), stability x0.5."""
    return Strengths(
        retrieval=max(0.05, s.retrieval - 0.30),
        retention=max(0.05, s.retention - 0.15),
        stability=s.stability * 0.5,
    )


def reinforced(s: Strengths) -> Strengths:
    """The same fact was told again: fully retrievable, retention +0.05, stability x1.2."""
    return Strengths(
        retrieval=1.0,
        retention=min(1.0, s.retention + 0.05),
        stability=min(MAX_STABILITY_DAYS, s.stability * 1.2),
    )


#: Memory states by accessibility, highest band first (the Rust original's thresholds).
ACCESSIBILITY_ACTIVE: Final = 0.7
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
    """active >= 0.7 > dormant >= 0.4 > silent >= 0.1 > unavailable."""
    if accessibility_score >= ACCESSIBILITY_ACTIVE:
        return "active"
    if accessibility_score >= ACCESSIBILITY_DORMANT:
        return "dormant"
    if accessibility_score >= ACCESSIBILITY_SILENT:
        return "silent"
    return "unavailable"
