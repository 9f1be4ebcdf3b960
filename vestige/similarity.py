"""How smart_ingest decides, without embeddings, whether new content repeats an old memory.

Two measures, both cheap and deterministic:

- *exact*: the texts are equal after normalisation (Unicode NFKC, case folded, whitespace
  collapsed, surrounding punctuation dropped).  Stored as ``content_hash``, so it is one
  index lookup.
- *similar*: cosine similarity of word-count vectors, computed in Python over the top
  full-text candidates.  Word order is ignored; repeated words count.

The thresholds follow the Rust original's embedding thresholds (see ``vestige.store``).
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections import Counter
from typing import Final

_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"\w+", re.UNICODE)

#: New text containing one of these (and the old text not) reads as a correction.
NEGATIONS: Final = (
    "don't", "dont", "never", "avoid", "wrong", "bad", "incorrect", "deprecated",
    "outdated", "instead of", "rather than", "not ",
)  # fmt: skip
#: Any of these in the new text reads as a correction.
CORRECTIONS: Final = (
    "actually", "correction", "update:", "fixed", "was wrong", "should be",
    "better approach", "improved", "the right way",
)  # fmt: skip


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return _SPACE.sub(" ", text).strip().strip(".,;:!?\"'`()[]{} ")


def content_hash(text: str) -> str:
    """Hash of the normalised text: equal hashes mean "the same thing said again"."""
    return hashlib.sha256(normalize(text).encode()).hexdigest()


def cosine(a: str, b: str) -> float:
    va, vb = Counter(_WORD.findall(a.casefold())), Counter(_WORD.findall(b.casefold()))
    if not va or not vb:
        return 0.0
    dot = sum(count * vb[word] for word, count in va.items())
    norm = math.sqrt(sum(c * c for c in va.values())) * math.sqrt(sum(c * c for c in vb.values()))
    return dot / norm


def looks_like_correction(new: str, old: str) -> bool:
    new_l, old_l = new.casefold(), old.casefold()
    if any(p in new_l for p in CORRECTIONS):
        return True
    return any(n in new_l and n not in old_l for n in NEGATIONS)


__all__ = ["content_hash", "cosine", "looks_like_correction", "normalize"]
