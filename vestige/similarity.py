"""How smart_ingest tells, without embeddings, whether new text repeats, extends or corrects.

Everything here is deterministic, linear in the length of the texts, and errs towards
"these say different things": a repeat folds the new text into the old memory, so a wrong
"same" loses what an agent said, while a wrong "different" only stores one memory too many.

A text is *folded*: Unicode NFKC (fullwidth letters, ligatures) except for superscripts,
subscripts, circled numbers and vulgar fractions, which keep what they say ("10⁶" is not
"106", "x²" is not "x2"), and lower case, not case folding ("Maße" is not "Masse").  It is
read as a sequence of *words*: ``'`` for every apostrophe, contractions spelled out
("doesn't" is "does not", French "n'aime" is "ne aime", "l'utilisateur" is "l'" and
"utilisateur"), and then the articles and a few fillers ("also", "still", "actually", ...)
dropped.  A token with a digit keeps its inner separators ("2:30", "1,500", "1.500", "v1.2"
are four different words), a dash or minus sign right before a digit and after no letter is
the number's sign ("-18"), and a run of symbols is a word of its own ("+", "==", "#", "€",
an emoji), so "UTC+2" is not "UTC-2" and "C++" is not "C".  Only sentence punctuation never
counts: a token made of Unicode punctuation alone, except ``# % & @ § / \\ -`` which carry
meaning ("C#", "50%"), and Markdown around the words (a leading list marker or quote, "**"
emphasis, backticks).  A text ending in "?" asks; it never says the same as a statement.
From those words come these judgements (``Text`` holds what they need):

- *same*: the word sequences are equal, and both texts ask or both state.  Nothing left
  out: a text without one word says less, and may say the opposite ("all services except
  billing" / "all services billing").  Order counts: "tabs over spaces" is not "spaces
  over tabs".
- *extends*: the old words appear in the new text in order, as one piece, and the new
  text adds at least two words and no negation.
- *negations*: "not", "no", "never", "without", ... (after spelling out contractions), and
  the common ones of a few other languages ("nicht", "ne", "pas", "nunca", ...).  Two texts
  that differ in them never say the same thing.
- *negates*: the texts differ in negation and in nothing else: the same words in the same
  order once the negations, "do"/"does"/"did" and the "no longer" words ("longer", "mehr",
  "plus", "más", "più", ...) are left out, a plural or third-person "s" aside ("doesn't
  prefer" negates "prefers").
- *changes*: the content words in order differ, or the negations do; "should be" with
  nothing else changed corrects nothing.
- *overlap*: cosine of the counts of *content* words (not function words, fillers,
  negations or correction wording).  Order-blind on purpose: it says whether two texts are
  about the same thing, which is what a correction needs, never that they agree.
- *replaces only*: the new text brings no more content words than it drops (a plural "s"
  aside).  A correction swaps what it corrects ("dark" for "light"); a text that adds a
  subject of its own ("... but not Java") is a new statement, and both are kept.

A *correction marker* ("actually", "correction", "no longer", "should be", "instead", ...)
is matched as whole words, so "prefixed" is not "fixed" and "badge" is not "bad".

The exact repeat is also found by ``content_hash`` (one index lookup) of the folded text.
Rows keep the hash they were stored with (an earlier version folded more), so a hash match
is confirmed by comparing ``normalize`` of both texts.
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
#: Characters NFKC would turn into plain digits or letters, losing what they say: superscripts
#: and subscripts ("10⁶", "x²"), vulgar fractions, number forms, circled and parenthesised
#: numbers.  They are kept as they are (and NFKC applied around them).
_KEEP_AS_IS = re.compile(
    "([\u00b2\u00b3\u00b9\u00bc-\u00be\u2070-\u209f\u2150-\u218f\u2460-\u24ff"
    "\u2776-\u2793\u3251-\u325f\u32b1-\u32bf]+)"
)
#: A token with a digit, with its inner separators and its sign ("-18", "v1.2", "2:30"), a
#: word (hyphens inside it: "on-call"), or a run of symbols.
_TOKEN = re.compile(
    r"(?:(?<!\w)[-\u2013\u2212](?=\d))?\w*\d\w*(?:[.,:/\-]\w*\d\w*|['\-]\w+)*"
    r"|\w+(?:['\-]\w+)*"
    r"|(?:[^\w\s\-\u2013\u2212]|[-\u2013\u2212](?!\d))+"
)
_SIGNS: Final = "-\u2013\u2212"  # hyphen-minus, en dash, minus: "-" before a number
#: Punctuation that carries meaning ("C#", "50%", "R&D", "@user", "§ 5", "a/b", "-rf"): a
#: token of these is a word.  Any other token of punctuation alone only punctuates.
_MEANINGFUL_PUNCTUATION: Final = frozenset("#%&@§/\\-")
#: Punctuation around a run of symbols that belongs to the sentence ("C#." "(50%)"); and
#: "!" or "?" after it ("50%!"), not before ("!=").
_EDGE_PUNCTUATION: Final = "\"'`*.,;:()[]{}\u00ab\u00bb\u201c\u201d\u2018\u2019\u300c\u300d"
#: A Markdown list marker or quote at the start of a line: "- ", "* ", "+ ", "• ", "1. ", "> ".
_LIST_MARKER = re.compile(r"^[ \t]*(?:[-*+\u2022]|\d{1,9}\.|>+)[ \t]+", re.MULTILINE)
#: Underscore emphasis around words ("_as planned_"); not one word ("__init__").
_UNDERSCORES = re.compile(r"(?<!\w)(_{1,3})([^\s_](?:[^_]*[^\s_])?)\1(?!\w)")
_APOSTROPHES: Final = str.maketrans(dict.fromkeys("\u2018\u2019\u02bc\uff07`", "'"))
#: Text stripped from both ends by ``normalize``; "?" stays: a question is not a statement.
_ENDS: Final = ".,;:!\"'`()[]{} "

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
    "ne", "pas", "jamais", "aucun", "aucune", "nunca", "ningún", "ninguna", "ninguno", "non",
    "não", "niet", "geen", "nooit", "inte", "aldrig", "ikke", "aldri", "ej",
))  # fmt: skip
#: What goes with a negation without changing the statement it negates: the auxiliary of
#: "does not", and the "longer" of "no longer" in each language ("nicht mehr", "ne ... plus",
#: "ya no", "non ... più", "não ... mais", "niet meer", "inte längre", "ikke lenger").
_NEGATION_COMPANIONS: Final = frozenset((
    "do", "does", "did", "longer", "anymore", "mehr", "plus", "más", "più", "mais", "meer",
    "ya", "längre", "lenger", "længere",
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
#: French and Italian elisions that are an article, a pronoun or a preposition, not part of
#: the word they lean on ("l'utilisateur", "d'accord", "qu'il"); "n'" is the negation "ne".
_ELISIONS: Final = frozenset(("l'", "d'", "j'", "qu'", "c'", "s'", "m'", "t'"))
_ELIDED = re.compile(r"(l|d|j|qu|c|s|m|t|n)'(?=\w)")

#: The markers that are words, by their first word (longest first); the others are labels.
_WORD_MARKERS: Final = sorted(
    (tuple(m.split()) for m in CORRECTION_MARKERS if m[-1].isalnum()), key=len, reverse=True
)
_PHRASES: Final = {p[0]: [q for q in _WORD_MARKERS if q[0] == p[0]] for p in _WORD_MARKERS}
#: "Update:" opens a correction; the word alone is ordinary ("update the docs").
_LABEL: Final = re.compile(r"\bupdated?:")
_MARKER_WORDS: Final = frozenset(w for m in CORRECTION_MARKERS for w in _WORD.findall(m))
_NOT_CONTENT: Final = ARTICLES | FILLERS | NEGATIONS | FUNCTION_WORDS | _MARKER_WORDS | _ELISIONS
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


def fold(text: str) -> str:
    """NFKC and lower case, but superscripts, circled numbers and the like kept as they are.

    ``lower``, not ``casefold``: case folding turns "ß" into "ss", and "Maße" (dimensions)
    into "Masse" (mass).
    """
    parts = _KEEP_AS_IS.split(text)
    parts[::2] = [unicodedata.normalize("NFKC", part) for part in parts[::2]]
    return "".join(parts).lower()


def normalize(text: str) -> str:
    return _SPACE.sub(" ", fold(text)).strip(_ENDS)


def content_hash(text: str) -> str:
    """Hash of the normalised text: equal hashes mean "the same thing said again"."""
    return hashlib.sha256(normalize(text).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Text:
    """One text as the judgements read it (build it with ``read``)."""

    words: tuple[str, ...]  # in order; no articles, fillers or sentence punctuation
    question: bool  # the text ends in "?"
    negations: tuple[str, ...]  # sorted
    content: Counter[str]
    #: Content words without a plural "s": what a correction swaps, or adds.
    stems: Counter[str]
    #: The same, in order: a correction must change them (or the negations).
    stem_order: tuple[str, ...]
    #: The words without negations and what goes with them, each without a plural "s":
    #: equal for two texts that differ only in negation.
    core: tuple[str, ...]
    bigrams: frozenset[tuple[str, str]]  # of the words, with the text's two edges
    marker: str | None  # the first correction marker in the text, as listed


def read(text: str) -> Text:
    folded = fold(text).translate(_APOSTROPHES)
    unmarked = _UNDERSCORES.sub(_emphasised, _LIST_MARKER.sub("", folded))
    tokens = [w for t in _TOKEN.findall(unmarked) if (w := _token_word(t))]
    spelled: list[str] = []
    for token in tokens:
        if "'" in token or token in _SPELLED:
            spelled.extend(_spell_out(token))
        else:
            spelled.append(token)
    words = tuple(w for w in spelled if w not in ARTICLES and w not in FILLERS)
    edged = (_EDGE, *words, _EDGE)
    in_order = [_stem(w) for w in words if w not in _NOT_CONTENT and w[0].isalnum()]
    return Text(
        words=words,
        question=_SPACE.sub(" ", folded).strip(_ENDS).endswith("?"),
        negations=tuple(sorted(w for w in words if w in NEGATIONS)),
        content=Counter(w for w in words if w not in _NOT_CONTENT and w[0].isalnum()),
        stems=Counter(in_order),
        stem_order=tuple(in_order),
        core=tuple(_stem(w) for w in words if w not in NEGATIONS and w not in _NEGATION_COMPANIONS),
        bigrams=frozenset(pairwise(edged)),
        marker=_marker(tokens, folded),
    )


def _emphasised(match: re.Match[str]) -> str:
    """The words inside underscore emphasis; one word stays as it is ("__init__")."""
    inner = match.group(2)
    return inner if any(c.isspace() for c in inner) else match.group()


def _token_word(token: str) -> str:
    """The word a token is: a number signed with "-", a run of symbols without the sentence
    punctuation around it, nothing for punctuation alone."""
    if token[0] in _SIGNS and token[1:2].isdigit():
        return "-" + token[1:]
    if token[0].isalnum() or token[0] == "_":
        return token
    symbols = token.lstrip(_EDGE_PUNCTUATION).rstrip(_EDGE_PUNCTUATION + "!?")
    return "" if all(map(_punctuation, symbols)) else symbols


def _punctuation(char: str) -> bool:
    """Only punctuates a sentence: Unicode punctuation that carries no meaning.

    A backtick (Markdown's code quote, a symbol to Unicode) was read as an apostrophe.
    """
    if char in _MEANINGFUL_PUNCTUATION:
        return False
    return unicodedata.category(char).startswith("P")


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
    elided = _ELIDED.match(token)
    if elided:
        lead = "ne" if elided.group(1) == "n" else elided.group()
        return lead, token[elided.end() :]
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


def same(new: Text, old: Text) -> bool:
    """``new`` says what ``old`` says: the same words in the same order, asked or stated alike.

    A text with a word left out says less, and may say the opposite ("all services except
    billing"): it is kept on its own, never folded into the memory it shortens.
    """
    return bool(new.words) and new.words == old.words and new.question == old.question


def negates(new: Text, old: Text) -> bool:
    """``new`` is ``old`` negated, or un-negated, and nothing else.

    Only then does a negation correct a memory: "Port 5433 is not open" says nothing about
    whether port 5432 is, and "Bob doesn't report to Alice" nothing about Alice and Bob.
    """
    return new.negations != old.negations and bool(new.core) and new.core == old.core


def changes(new: Text, old: Text) -> bool:
    """``new`` changes something ``old`` says: its content words, their order, or a negation.

    A correction marker on an unchanged statement ("Backups should be encrypted" after
    "Backups are encrypted") corrects nothing: the two say different things, both kept.
    """
    return new.stem_order != old.stem_order or new.negations != old.negations


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


__all__ = [
    "CORRECTION_MARKERS",
    "NEGATIONS",
    "Text",
    "appended",
    "changes",
    "content_hash",
    "extends",
    "fold",
    "negates",
    "normalize",
    "overlap",
    "read",
    "replaces_only",
    "same",
    "sections",
    "similarity",
]
