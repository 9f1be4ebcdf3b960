"""How smart_ingest tells, without embeddings, whether new text repeats, extends or corrects.

Everything here is deterministic, linear in the length of the texts, and errs towards
"these say different things": a repeat folds the new text into the old memory, so a wrong
"same" loses what an agent said, while a wrong "different" only stores one memory too many.

A text is read as a sequence of *words*: Unicode NFKC, case folded, ``'`` for every
apostrophe, contractions spelled out ("doesn't" is "does not"), and then the articles and a
few fillers ("also", "still", "actually", ...) dropped.  A number keeps its inner
separators ("2:30", "1,500" and "1.500" are three different words), and a run of symbols is
a word of its own ("+", "==", "#", "€", an emoji), so "UTC+2" is not "UTC-2" and "C++" is
not "C".  Only sentence punctuation (". , ; : ! ? quotes, brackets, dashes") never counts.
From those words come these judgements (``Text`` holds what they need):

- *same*: the word sequences are equal, or the new one is the old one with a few words
  left out (word-bigram similarity >= the reinforce threshold), with no number or symbol
  among them, and no negation lost.  Order counts: "tabs over spaces" is not "spaces over
  tabs".
- *extends*: the old words appear in the new text in order, as one piece, and the new
  text adds at least two words and no negation.
- *negations*: "not", "no", "never", "without", ... (after spelling out contractions), and
  the common ones of a few other languages ("nicht", "pas", "nunca", ...).  Two texts that
  differ in them never say the same thing.
- *overlap*: cosine of the counts of *content* words (not function words, fillers,
  negations or correction wording).  Order-blind on purpose: it says whether two texts are
  about the same thing, which is what a correction needs, never that they agree.
- *replaces only*: the new text brings no more content words than it drops (a plural "s"
  aside).  A correction swaps what it corrects ("dark" for "light"); a text that adds a
  subject of its own ("... but not Java") is a new statement, and both are kept.

A *correction marker* ("actually", "correction", "no longer", "should be", "instead", ...)
is matched as whole words, so "prefixed" is not "fixed" and "badge" is not "bad".

The exact repeat is also found by ``content_hash`` (one index lookup), which keeps the
original's weaker normalisation: it is stored in every row and in exports.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from itertools import pairwise
from math import sqrt
from typing import Final

_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"\w+(?:'\w+)*")
#: A number with its inner separators, a word (hyphens inside it: "on-call"), or a run of
#: symbols.
_TOKEN = re.compile(r"\d+(?:[.,:/\-]\d+)*|\w+(?:['\-]\w+)*|[^\w\s]+")
#: Symbols that only punctuate a sentence: a run of nothing else is no word.
_SENTENCE_PUNCTUATION: Final = frozenset(
    ".,;:!?\"'`()[]{}\u2026\u2014\u2013\u00ab\u00bb\u00bf\u00a1\u201c\u201d\u2018\u2019"
)
_APOSTROPHES: Final = str.maketrans(dict.fromkeys("\u2018\u2019\u02bc\uff07`", "'"))

ARTICLES: Final = frozenset({"a", "an", "the"})
#: Words that add emphasis or time but do not change what a statement says.  "now" and
#: "actually" are also correction markers: they make a changed statement a correction, but
#: an unchanged one is still a repeat.
FILLERS: Final = frozenset(
    {"actually", "also", "currently", "indeed", "just", "now", "please", "really", "still"}
)
#: A difference in these (after spelling out contractions) is a difference in meaning.
#: English, and the common negations of German, French, Spanish, Italian, Portuguese, Dutch
#: and the Scandinavian languages: an agent may store a fact in the user's language.
NEGATIONS: Final = frozenset((
    "neither", "never", "no", "nobody", "none", "nor", "not", "nothing", "nowhere", "without",
    "nicht", "kein", "keine", "keinen", "keinem", "keiner", "keines", "nie", "niemals",
    "pas", "jamais", "aucun", "aucune", "nunca", "ningún", "ninguna", "ninguno", "non",
    "não", "niet", "geen", "nooit", "inte", "aldrig", "ikke", "aldri", "ej",
))  # fmt: skip
#: Words new text uses to say that an earlier statement no longer holds.  Matched as whole
#: words; an old text containing one does not matter.
#: "now" alone is no marker: "the API now supports pagination" may add to "the API supports
#: filtering" as well as replace it, and in doubt both are kept.
CORRECTION_MARKERS: Final = (
    "actually", "correction", "corrected", "update:", "updated:", "no longer",
    "anymore", "any more", "instead", "rather than", "should be", "should have been",
    "was wrong", "is wrong", "were wrong", "are wrong", "was incorrect", "is incorrect",
    "was mistaken", "changed to", "switched to", "deprecated", "outdated", "obsolete",
)  # fmt: skip
#: Words that carry grammar, not topic: left out of the overlap, kept in the word sequence.
FUNCTION_WORDS: Final = frozenset((
    "about", "am", "and", "are", "as", "at", "be", "been", "being", "but", "by", "can",
    "could", "did", "do", "does", "done", "for", "from", "had", "has", "have", "having", "he",
    "her", "him", "his", "how", "i", "if", "in", "into", "is", "it", "its", "may", "me",
    "might", "must", "my", "of", "on", "onto", "or", "our", "over", "shall", "she", "should",
    "so", "than", "that", "their", "them", "then", "there", "these", "they", "this", "those",
    "to", "us", "under", "was", "we", "were", "what", "when", "where", "which", "who", "whom",
    "whose", "why", "will", "with", "would", "you", "your",
))  # fmt: skip

#: The markers that are words, by their first word (longest first); the others are labels.
_WORD_MARKERS: Final = sorted(
    (tuple(m.split()) for m in CORRECTION_MARKERS if m[-1].isalnum()), key=len, reverse=True
)
_PHRASES: Final = {p[0]: [q for q in _WORD_MARKERS if q[0] == p[0]] for p in _WORD_MARKERS}
#: "Update:" opens a correction; the word alone is ordinary ("update the docs").
_LABEL: Final = re.compile(r"\bupdated?:")
_MARKER_WORDS: Final = frozenset(w for m in CORRECTION_MARKERS for w in _WORD.findall(m))
_NOT_CONTENT: Final = ARTICLES | FILLERS | NEGATIONS | FUNCTION_WORDS | _MARKER_WORDS
#: Contractions whose first part is not simply the word before "n't".
_IRREGULAR: Final = {
    "can't": ("can", "not"), "cannot": ("can", "not"), "won't": ("will", "not"),
    "shan't": ("shall", "not"), "ain't": ("is", "not"), "cant": ("can", "not"),
    "wont": ("will", "not"),
}  # fmt: skip
#: Contractions typed without the apostrophe ("dont"): the ones that are not other words.
_BARE_NT: Final = frozenset((
    "arent", "couldnt", "didnt", "doesnt", "dont", "hadnt", "hasnt", "havent", "isnt",
    "mustnt", "neednt", "shouldnt", "wasnt", "werent", "wouldnt",
))  # fmt: skip
_SUFFIXES: Final = {"'re": "are", "'ve": "have", "'ll": "will", "'m": "am"}
_SPELLED: Final = _BARE_NT | _IRREGULAR.keys()
#: The header ``_append`` puts before each text added to a memory by an update.
_UPDATE_HEADER: Final = re.compile(r"\n\n\[Updated \d{4}-\d{2}-\d{2}\]\n")
_EDGE: Final = ""  # marks the start and end of a text in its bigrams; never a word


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return _SPACE.sub(" ", text).strip().strip(".,;:!?\"'`()[]{} ")


def content_hash(text: str) -> str:
    """Hash of the normalised text: equal hashes mean "the same thing said again"."""
    return hashlib.sha256(normalize(text).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Text:
    """One text as the judgements read it (build it with ``read``)."""

    words: tuple[str, ...]  # in order; no articles, fillers or sentence punctuation
    negations: tuple[str, ...]  # sorted
    content: Counter[str]
    #: Content words without a plural "s": what a correction swaps, or adds.
    stems: Counter[str]
    #: Numbers and symbols: a repeat may leave out words, never one of these.
    values: Counter[str]
    bigrams: frozenset[tuple[str, str]]  # of the words, with the text's two edges
    marker: str | None  # the first correction marker in the text, as listed


def read(text: str) -> Text:
    folded = unicodedata.normalize("NFKC", text).casefold().translate(_APOSTROPHES)
    tokens = [t for t in _TOKEN.findall(folded) if not _SENTENCE_PUNCTUATION.issuperset(t)]
    spelled: list[str] = []
    for token in tokens:
        if "'" in token or token in _SPELLED:
            spelled.extend(_spell_out(token))
        else:
            spelled.append(token)
    words = tuple(w for w in spelled if w not in ARTICLES and w not in FILLERS)
    edged = (_EDGE, *words, _EDGE)
    content = Counter(w for w in words if w not in _NOT_CONTENT and w[0].isalnum())
    return Text(
        words=words,
        negations=tuple(sorted(w for w in words if w in NEGATIONS)),
        content=content,
        stems=Counter(_stem(w) for w in content.elements()),
        values=Counter(w for w in words if not w.isalpha()),
        bigrams=frozenset(pairwise(edged)),
        marker=_marker(tokens, folded),
    )


def _stem(word: str) -> str:
    """The word without a plural or third-person "s" ("prefers" is "prefer")."""
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def _marker(tokens: list[str], folded: str) -> str | None:
    """The first correction marker among the words (as whole words), else an "Update:" label."""
    for i, token in enumerate(tokens):
        for phrase in _PHRASES.get(token, ()):
            if tuple(tokens[i : i + len(phrase)]) == phrase:
                return " ".join(phrase)
    label = _LABEL.search(folded)
    return label.group() if label else None


def _spell_out(token: str) -> tuple[str, ...]:
    if token in _IRREGULAR:
        return _IRREGULAR[token]
    if token.endswith("n't"):
        return token[:-3], "not"
    if token in _BARE_NT:
        return token[:-2], "not"
    for suffix, word in _SUFFIXES.items():
        if token.endswith(suffix):
            return token[: -len(suffix)], word
    return (token,)


def sections(content: str) -> list[str]:
    """A memory's original text and each text an update added to it."""
    return _UPDATE_HEADER.split(content)


def appended(content: str, new: str, day: str) -> str:
    """The memory's content after an update adds ``new`` on ``day`` (YYYY-MM-DD)."""
    return f"{content}\n\n[Updated {day}]\n{new}"


def similarity(a: Text, b: Text) -> float:
    """Jaccard similarity of word bigrams: 1.0 only for the same words in the same order."""
    return len(a.bigrams & b.bigrams) / len(a.bigrams | b.bigrams)


def overlap(a: Text, b: Text) -> float:
    """Cosine of content-word counts: are the two texts about the same thing?"""
    if not a.content or not b.content:
        return 0.0
    dot = sum(n * b.content[w] for w, n in a.content.items())
    norm_a = sqrt(sum(n * n for n in a.content.values()))
    norm_b = sqrt(sum(n * n for n in b.content.values()))
    return dot / (norm_a * norm_b)


def same(new: Text, old: Text, *, near: float) -> bool:
    """``new`` says what ``old`` says: the same words, or old's with a few left out.

    Leaving words out of a near-identical text loses nothing the old memory does not keep;
    adding or replacing one would (that is an update, or a different statement).
    """
    if not new.words or new.negations != old.negations:
        return False
    if new.words == old.words:
        return True
    return (
        new.values == old.values
        and _is_subsequence(new.words, old.words)
        and similarity(new, old) >= near
    )


def replaces_only(new: Text, old: Text) -> bool:
    """``new`` brings no more content words than it drops of ``old``'s: it can correct it."""
    added = sum((new.stems - old.stems).values())
    return added <= sum((old.stems - new.stems).values())


def extends(new: Text, old: Text, *, min_words: int, min_added: int) -> bool:
    """``new`` repeats ``old`` word for word, as one piece, and adds at least ``min_added``.

    One piece: words put inside the old statement change what it says ("prefers Vim over
    dark mode"); words before or after it add a detail ("in the terminal", "before 5pm").
    One added word is too little to tell a detail from a qualifier ("less", "nicht").
    """
    if (
        len(old.words) < min_words
        or len(new.words) < len(old.words) + min_added
        or new.negations != old.negations
    ):
        return False
    return _joined(old.words) in _joined(new.words)


def _joined(words: tuple[str, ...]) -> str:
    return "\0" + "\0".join(words) + "\0"  # no word contains NUL: matches whole words only


def _is_subsequence(short: tuple[str, ...], long: tuple[str, ...]) -> bool:
    rest = iter(long)
    return all(word in rest for word in short)


__all__ = [
    "CORRECTION_MARKERS",
    "NEGATIONS",
    "Text",
    "appended",
    "content_hash",
    "extends",
    "normalize",
    "overlap",
    "read",
    "replaces_only",
    "same",
    "sections",
    "similarity",
]
