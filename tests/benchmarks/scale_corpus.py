"""Deterministic English-like memories and queries for the scale benchmark (bench_scale.py).

Word frequencies follow Zipf's law (weight 1/rank) over a fixed vocabulary of
``VOCABULARY_SIZE`` words: the first ones are real English function and domain words in
rank order, so "the" and "user" occur in most memories, as they do in what agents store;
the long tail is made-up pronounceable words, so rare terms are as rare as in real text.
Memories are 10 to 60 words; queries of 1 to 4 words are drawn from the same distribution,
so they include the common words that make a full-text index work hardest.

Everything is a pure function of the seed and ``CORPUS_VERSION``: the benchmark keys its
cached stores by both, so change the version whenever the output of any function here
changes.
"""

from __future__ import annotations

import itertools
import random
from functools import cache
from typing import Final

#: Bump when any generated text changes: cached stores are keyed by it.
CORPUS_VERSION: Final = 1
VOCABULARY_SIZE: Final = 20_000
#: Zipf exponent: weight of the word of rank r is 1 / r ** ZIPF_S.
ZIPF_S: Final = 1.0
MIN_WORDS: Final = 10
MAX_WORDS: Final = 60
#: The vocabulary's made-up tail does not depend on the store's seed.
_VOCABULARY_SEED: Final = 20_261_202

#: The head of the vocabulary, most frequent first ("the" rank 1, "user" rank 2).
_HEAD: Final = (
    "the user a to of and is in for on with that it as at by from this be not or we are was "
    "has have will should when which can but if after before use uses used prefers wants "
    "needs project file server memory data test build code team meeting branch release "
    "config database query search tool agent session error bug fix feature review deadline "
    "python api client request response version update change note decision task plan goal "
    "week day morning evening today tomorrow yesterday always never usually sometimes "
    "about into over under between during while because although so then also only more "
    "most less all any some each every other new old first last next same different "
    "important small large fast slow local remote default main current previous latest "
    "works runs fails starts stops writes reads opens closes sends keeps moves checks "
    "shows asks says likes thinks knows remembers forgets expects decided agreed "
    "repository module function class method value type name path port host key token "
    "cache index table column schema migration backup export import log logs output "
    "input message email chat call document docs readme issue ticket pull merge commit "
    "deploy staging production environment container image cluster node service job "
    "queue worker thread process lock write read timeout retry limit budget cost price "
    "customer company office home laptop phone editor terminal shell script package "
    "library framework language style format dark mode light theme font size color "
    "coffee tea lunch dinner travel flight hotel train car weekend holiday vacation "
    "birthday family friend manager lead engineer designer owner partner vendor "
    "monday tuesday wednesday thursday friday january february march april may june july "
    "august september october november december morning noon night hour minute second"
)

_ONSETS: Final = (
    *("b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s"),
    *("t", "v", "w", "z", "br", "ch", "cl", "dr", "fl", "gr", "pl", "sh", "st", "tr"),
)
_VOWELS: Final = ("a", "e", "i", "o", "u", "a", "e", "i", "o", "ea", "ou", "ai")
_CODAS: Final = ["", "", "", "", "n", "r", "s", "t", "l", "m", "nd", "st"]


@cache
def vocabulary() -> tuple[str, ...]:
    """The ``VOCABULARY_SIZE`` words in rank order: the real head, then made-up words."""
    head = list(dict.fromkeys(_HEAD.split()))
    seen = set(head)
    rng = random.Random(_VOCABULARY_SEED)
    words = head
    while len(words) < VOCABULARY_SIZE:
        syllables = rng.choice((2, 2, 2, 3, 3))
        word = "".join(
            rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables)
        )
        if word not in seen:
            seen.add(word)
            words.append(word)
    return tuple(words)


@cache
def cumulative_weights() -> tuple[float, ...]:
    """Running sums of the Zipf weights, for ``random.choices(cum_weights=...)``."""
    return tuple(itertools.accumulate(1.0 / rank**ZIPF_S for rank in range(1, VOCABULARY_SIZE + 1)))


def probability(word: str) -> float:
    """The chance that one drawn word is ``word`` (0.0 if it is not in the vocabulary)."""
    words = vocabulary()
    try:
        rank = words.index(word) + 1
    except ValueError:
        return 0.0
    return float(1.0 / rank**ZIPF_S) / cumulative_weights()[-1]


def _draw(rng: random.Random, k: int) -> list[str]:
    return rng.choices(vocabulary(), cum_weights=cumulative_weights(), k=k)


def sentence(rng: random.Random) -> str:
    """One memory: 10 to 60 Zipf-drawn words, capitalised, with a comma or two, a full stop."""
    words = _draw(rng, rng.randint(MIN_WORDS, MAX_WORDS))
    for i in range(8, len(words) - 4, rng.randint(9, 16)):
        words[i] += ","
    words[0] = words[0].capitalize()
    return " ".join(words) + "."


def memories(count: int, *, seed: int) -> list[str]:
    """The first ``count`` memories of the store with this seed (a prefix of any longer one)."""
    rng = random.Random(f"memories-{seed}")
    return [sentence(rng) for _ in range(count)]


def new_texts(count: int, *, seed: int) -> list[str]:
    """Texts that are not in the store: what the benchmark smart-ingests."""
    rng = random.Random(f"new-{seed}")
    return [sentence(rng) for _ in range(count)]


def queries(count: int, words: int, *, seed: int) -> list[str]:
    """``count`` queries of ``words`` distinct words each, drawn like the memories' words.

    The one-word set starts with "the" and "user": the terms found in most rows always
    appear, not only when the draw happens to pick them.
    """
    rng = random.Random(f"queries-{words}-{seed}")
    out: list[str] = ["the", "user"][:count] if words == 1 else []
    while len(out) < count:
        picked: dict[str, None] = {}
        while len(picked) < words:
            picked.setdefault(_draw(rng, 1)[0], None)
        out.append(" ".join(picked))
    return out


def mixed_queries(count: int, *, seed: int) -> list[str]:
    """Queries of 1, 2, 3 and 4 words in turn (the ranking-quality set)."""
    per = [queries(-(-count // 4), n, seed=seed + 1000) for n in (1, 2, 3, 4)]
    return [q for group in zip(*per, strict=True) for q in group][:count]


def rows_containing(texts: list[str], word: str) -> float:
    """The share of ``texts`` in which ``word`` occurs as a word (case-insensitive)."""
    target = word.lower()
    hits = sum(1 for t in texts if target in t.lower().replace(",", " ").rstrip(".").split())
    return hits / len(texts) if texts else 0.0


def sample_positions(count: int, fraction: float, *, seed: int, salt: str) -> list[int]:
    """A seeded, sorted sample of row positions (for demotes, promotes and corrections)."""
    rng = random.Random(f"{salt}-{seed}")
    return sorted(rng.sample(range(count), round(count * fraction)))
