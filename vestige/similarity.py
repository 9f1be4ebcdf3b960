"""How smart_ingest tells, without embeddings, whether new text repeats, extends or corrects.

Everything here is deterministic, linear in the length of the texts, and errs towards
"these say different things": a repeat folds the new text into the old memory, so a wrong
"same" loses what an agent said, while a wrong "different" only stores one memory too many.

A text is *folded*: Unicode NFKC (fullwidth letters, ligatures) except for superscripts,
subscripts, circled numbers and vulgar fractions, which keep what they say ("10⁶" is not
"106", "x²" is not "x2"); format characters that no one sees dropped (a byte order mark,
zero-width spaces, a soft hyphen); and the case of each word folded, unless it says
something.  A word keeps its case when it has a digit ("Tr0ub4dor"), follows a number (a
unit: "5 mW" is not "5 MW"), starts with a dash (a flag: "-R" is not "-r"), or mixes cases
other than a capital first letter ("MBps", "iOS"); a capital "A", "An" or "The" inside a
sentence is a name ("option A"), not an article.  Words in capitals or with a capital
first letter fold ("READ-ONLY", "DB", "Staging"), to lower case, not by case folding
("Maße" is not "Masse").  It is read as a sequence of *words*: ``'`` for every apostrophe
(and for an acute accent used as one), contractions spelled out ("doesn't" is "does not",
French "n'aime" is "ne aime", "l'utilisateur" is "l'" and "utilisateur"), and then the
articles and a few fillers ("also", "still", "actually", ...; not "just", which means
"only") dropped.  A token with a digit keeps its inner separators ("2:30", "1,500", "1.500",
"v1.2" are four different words), its leading decimal point (".5") and a quote right after
it (a unit: "8'" is not '8"', unless the quote closes a quotation: "'8'"); a dash or minus
sign right before a digit and after no letter is the number's sign ("-18"); a dot between
word characters joins them ("config.yaml"); and a run of symbols is a word of its own ("+",
"==", "#", "€", an emoji), so "UTC+2" is not "UTC-2" and "C++" is not "C".  Only
sentence punctuation never counts: a token made of Unicode punctuation alone, except
``# % & @ § / \\ -`` and the primes of feet and inches, which carry meaning ("C#", "50%"),
except between two letters or digits ("2**10", "f(x)"; a comma, colon or quote there
still only punctuates), and except a "*" between spaces ("2 * 10"); and Markdown around
the words (at the start of a line a list marker "- ", "1. ", "1) ", a quote "> " or a
heading "## ", but not a "-" or "+" before a number, its sign; "**", "*" or "__" emphasis
at the edges of words and "_" around several, not inside a code span; backticks).  A text ending
in "?" asks; it never says the same as a statement.

From those words come these judgements (``Text`` holds what they need):

- *same*: the word sequences are equal, and both texts ask or both state.  Nothing left
  out: a text without one word says less, and may say the opposite ("all services except
  billing" / "all services billing").  Order counts: "tabs over spaces" is not "spaces
  over tabs".
- *extends*: the old words appear in the new text in order, as one piece, and the new
  text adds at least two words and no negation.
- *negations*: "not", "no", "never", "without", ... (after spelling out contractions), and
  the common ones of a few other languages ("nicht", "pas", "nunca", ...; French "ne" only
  with its second half: "pas", "plus", "jamais", "rien", ...).  Two texts that differ in
  them never say the same thing.
- *negates*: the texts differ in negation and in nothing else: the same words in the same
  order once the negations and what goes with them in the negated text are left out, a
  plural or third-person "s" aside ("doesn't prefer" negates "prefers").  What goes with
  a negation: "do"/"does"/"did", "ya" and "já" right before it, and the "no longer" words
  ("longer", "mehr", "länger", "plus", "más", "più", "langer", ...) up to 3 words after it;
  elsewhere they are words ("the Starter Plus plan").
- *changes*: the content words in order differ, or the negations do; "should be" with
  nothing else changed corrects nothing.
- *overlap*: cosine of the counts of *content* words (not function words, fillers,
  negations or correction wording).  Order-blind on purpose: it says whether two texts are
  about the same thing, which is what a correction needs, never that they agree.
- *replaces only*: the new text brings at most one content word of its own, and no more
  than it drops (a plural "s" aside).  A correction swaps the one value it corrects
  ("dark" for "light"); a text that adds a subject of its own ("... but not Java") or
  swaps two words ("the staging cluster runs on ARM" after "the prod cluster runs on
  x86") is a new statement, and both are kept.

A *correction marker* ("actually", "correction", "no longer", "any longer", "should be",
"instead", ...; not "no more", which also means "at most")
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
_RUN = re.compile(r"\w+")
#: Characters NFKC would turn into plain digits or letters, losing what they say: superscripts
#: and subscripts ("10⁶", "x²"), vulgar fractions, number forms, circled and parenthesised
#: numbers.  They are kept as they are (and NFKC applied around them).
_KEEP_AS_IS = re.compile(
    "([\u00b2\u00b3\u00b9\u00bc-\u00be\u2070-\u209f\u2150-\u218f\u2460-\u24ff"
    "\u2776-\u2793\u3251-\u325f\u32b1-\u32bf]+)"
)
#: A token with a digit, with its inner separators, its sign, its leading decimal point and
#: a unit quote after it ("-18", ".5", "v1.2", "2:30", "8'"), a word (hyphens and dots inside
#: it: "on-call", "config.yaml"), or a run of symbols (a dash after a letter is one).
_TOKEN = re.compile(
    r"(?:(?<!\w)[-\u2013\u2212](?=\.?\d))?(?:(?<!\w)\.(?=\d))?"
    r"\w*\d\w*(?:[.,:/\-]\w*\d\w*|['\-]\w+)*(?:['\"\u201d](?!\w))?"
    r"|\w+(?:['\-.]\w+)*"
    r"|(?:[^\w\s\-\u2013\u2212]|[-\u2013\u2212](?!\d)|(?<=\w)[-\u2013\u2212])+"
)
_SIGNS: Final = "-\u2013\u2212"  # hyphen-minus, en dash, minus: "-" before a number
#: Quotes that open a quotation: a quote after a number that one of them opened closes it,
#: and is no unit.
_QUOTES: Final = "'\"\u201c\u201d"
#: Punctuation that carries meaning ("C#", "50%", "R&D", "@user", "§ 5", "a/b", "-rf", the
#: primes of feet and inches): a token of these is a word.  Any other token of punctuation
#: alone only punctuates, unless it stands between two letters or digits ("2**10", "f(x)").
_MEANINGFUL_PUNCTUATION: Final = frozenset("#%&@§/\\-\u2032\u2033\u2034\u2035\u2036\u2037\u2057")
#: Punctuation around a run of symbols that belongs to the sentence ("C#." "(50%)"); and
#: "!" or "?" after it ("50%!"), not before ("!=").
_EDGE_PUNCTUATION: Final = "\"'`*.,;:()[]{}\u00ab\u00bb\u201c\u201d\u2018\u2019\u300c\u300d"
#: Markdown at the start of a line: a list marker ("- ", "* ", "+ ", "• ", "1. ", "1) "), a
#: quote ("> ") or a heading ("## ").  A "-" or "+" before a number is its sign ("- 500 EUR").
_LIST_MARKER = re.compile(
    r"^[ \t]*(?:[-+](?![ \t]*\.?\d)|[*\u2022]|\d{1,9}[.)]|>+|#{1,6})[ \t]+", re.MULTILINE
)
#: Underscore emphasis: "__dark__", "___dark___", or "_" around more than one word ("_as
#: planned_"; "_id_" is a name), between spaces or punctuation ("__init__.py" is a file name).
_UNDERSCORES = re.compile(
    r"(?<![^\s(\[\"'])(_{1,3})([^\s_](?:[^_]*[^\s_])?)\1(?=$|\s|[.,;:!?)\]\"']+(?:$|\s))"
)
#: A Markdown code span: no emphasis inside it ("`__init__`").
_CODE_SPAN = re.compile(r"(`[^`\n]*`)")
_APOSTROPHES: Final = str.maketrans(dict.fromkeys("\u2018\u2019\u02bc\uff07`", "'"))
#: Unicode format characters (category Cf), which no one sees: a byte order mark, zero-width
#: spaces and joiners, a soft hyphen, direction marks.  The test suite checks the list
#: against ``unicodedata``; 13439-1343F are Unicode 15's.
_INVISIBLE = re.compile(
    "[\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f"
    "\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd"
    "\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001"
    "\U000e0020-\U000e007f]"
)
#: Text stripped from both ends by ``normalize``; "?" stays: a question is not a statement.
_ENDS: Final = ".,;:!\"'`()[]{} "
#: Punctuation that only punctuates, even between two words without a space ("Python,Go",
#: and Chinese text, which has no spaces, once NFKC made its fullwidth commas ASCII).
_SENTENCE_MARKS: Final = ",;:!?\"'\u3001\u3002\u300c\u300d\u300e\u300f"
#: Punctuation after which a capital "A" or "The" starts a sentence: an article.
_SENTENCE_ENDS: Final = ".!?:;\n"

ARTICLES: Final = frozenset({"a", "an", "the"})
#: Words that add emphasis or time but do not change what a statement says.  "now" and
#: "actually" are also correction markers: they make a changed statement a correction, but
#: an unchanged one is still a repeat.
#: Not "just": "Deploy just the API" is "deploy only the API".
FILLERS: Final = frozenset(
    {"actually", "also", "currently", "indeed", "now", "please", "really", "still"}
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
#: French "ne" negates only with its second half ("ne ... pas", "n'aime plus"): alone it may
#: be a word of another language, or north-east.
_FRENCH_COMPLEMENTS: Final = frozenset(
    ("pas", "plus", "jamais", "rien", "personne", "aucun", "aucune", "guère")
)
#: What goes with a negation without changing the statement it negates, in the negated
#: text only.  Right before it: the auxiliary of "does not", and "ya no", "já não".
_BEFORE_NEGATION: Final = frozenset(("do", "does", "did", "ya", "já"))
#: Up to ``_COMPLEMENT_REACH`` words after it: the "longer" of "no longer" in each language
#: ("nicht mehr", "nicht länger", "ne ... plus", "non ... più", "não ... mais", "niet meer",
#: "niet langer", "inte längre", "ikke lenger").  Elsewhere these are words ("Starter Plus").
_COMPLEMENTS: Final = frozenset((
    "longer", "anymore", "mehr", "länger", "plus", "más", "più", "mais", "meer", "langer",
    "längre", "lenger", "længere",
))  # fmt: skip
_COMPLEMENT_REACH: Final = 3
#: Words new text uses to say that an earlier statement no longer holds.  Matched as whole
#: words; an old text containing one does not matter.
#: "now" alone is no marker: "the API now supports pagination" may add to "the API supports
#: filtering" as well as replace it, and in doubt both are kept.
CORRECTION_MARKERS: Final = (
    "actually", "correction", "corrected", "update:", "updated:", "no longer", "any longer",
    "anymore", "any more", "instead", "rather than", "should be", "should have been",
    "was wrong", "is wrong", "were wrong", "are wrong", "was incorrect", "is incorrect",
    "was mistaken", "changed to", "switched to", "deprecated", "outdated", "obsolete",
)  # fmt: skip
#: The most content words a correction brings of its own: the one value it corrects.
CORRECTION_MAX_ADDED: Final = 1
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
    """The text as its words are compared: ``visible``, and each word's case folded unless
    its case says something (``_keeps_case``)."""
    return _fold_case(visible(text))


def visible(text: str) -> str:
    """NFKC, but superscripts, circled numbers and the like kept as they are; format
    characters dropped; an acute accent used as an apostrophe ("doesn\u00b4t") is one.

    The accent is replaced before NFKC, which would make it a space and a combining accent.
    """
    parts = _KEEP_AS_IS.split(_INVISIBLE.sub("", text).replace("\u00b4", "'"))
    parts[::2] = [unicodedata.normalize("NFKC", part) for part in parts[::2]]
    return "".join(parts)


def _fold_case(text: str) -> str:
    """Each run of letters and digits in lower case, unless ``_keeps_case`` says otherwise.

    ``lower``, not ``casefold``: case folding turns "ß" into "ss", and "Maße" (dimensions)
    into "Masse" (mass).
    """
    lowered = text.lower()
    if lowered == text:
        return text  # nothing to fold
    runs = list(_RUN.finditer(text))
    if len(lowered) != len(text):  # "İ" lowers to two characters: fold word by word
        return _fold_runs(text, runs)
    out: list[str] = []
    last = 0
    for i, run in enumerate(runs):
        start, end = run.span()
        if lowered[start:end] != text[start:end] and _keeps_case(text, runs, i):
            out.append(lowered[last:start])
            out.append(text[start:end])
            last = end
    out.append(lowered[last:])
    return "".join(out)


def _fold_runs(text: str, runs: list[re.Match[str]]) -> str:
    out: list[str] = []
    last = 0
    for i, run in enumerate(runs):
        out.append(text[last : run.start()].lower())
        word = run.group()
        out.append(word if _keeps_case(text, runs, i) else word.lower())
        last = run.end()
    out.append(text[last:].lower())
    return "".join(out)


def _keeps_case(text: str, runs: list[re.Match[str]], i: int) -> bool:
    """Whether a run keeps its case: its case is part of what it says.

    A run with a digit ("Tr0ub4dor"), a unit after a number ("5 MW" is not "5 mW"), a flag
    ("-R" is not "-r"), mixed case other than a capital first letter ("mW", "MBps", "iOS"),
    and "A", "An" or "The" inside a sentence, which is a name ("option A"), not an article.
    A word in capitals ("READ-ONLY", "DB") or with a capital first letter is folded.
    """
    word = runs[i].group()
    if word.lower() == word:
        return False
    start = runs[i].start()
    gap = text[runs[i - 1].end() : start] if i else text[:start]
    dashes = len(gap) - len(gap.rstrip("-"))
    unit = i > 0 and gap.isspace() and "\n" not in gap and runs[i - 1].group().isdigit()
    # a flag: the dash starts the word, it does not join it to another
    flag = 1 <= dashes <= 2 and (
        not _is_word_char(gap[-dashes - 1]) if dashes < len(gap) else i == 0
    )
    mixed = not (word.isupper() or word[1:].lower() == word[1:])
    if unit or flag or mixed or any(c.isdigit() for c in word):
        return True
    if word.lower() in ARTICLES:
        return not (i == 0 or any(c in _SENTENCE_ENDS for c in gap) or _shouted(runs, i))
    return False


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


def _shouted(runs: list[re.Match[str]], i: int) -> bool:
    """The words on both sides are in capitals too: "WHEN A COPY FAILS"."""
    around = [runs[j].group() for j in (i - 1, i + 1) if 0 <= j < len(runs)]
    return len(around) == 2 and all(w.isupper() and len(w) > 1 for w in around)


def normalize(text: str) -> str:
    """The folded text, its spaces collapsed and the punctuation at its ends stripped, but
    not a decimal point that starts it (".5 mg") or a unit quote that ends it ("8'")."""
    folded = _SPACE.sub(" ", fold(text))
    start, end = 0, len(folded)
    while start < end and folded[start] in _ENDS and not _starts_number(folded, start):
        start += 1
    while end > start and folded[end - 1] in _ENDS and not _ends_number(folded, end - 1):
        end -= 1
    return folded[start:end]


def _starts_number(text: str, i: int) -> bool:
    return text[i] == "." and text[i + 1 : i + 2].isdigit()


def _ends_number(text: str, i: int) -> bool:
    return text[i] in _QUOTES and i > 0 and text[i - 1].isdigit()


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
    plain = _fold_case(_unmarked(visible(text)).translate(_APOSTROPHES))
    tokens = [w for t in _TOKEN.finditer(plain) if (w := _token_word(t))]
    spelled: list[str] = []
    for token in tokens:
        if "'" in token or token in _SPELLED:
            spelled.extend(_spell_out(token))
        else:
            spelled.append(token)
    words = tuple(w for w in spelled if w not in ARTICLES and w not in FILLERS)
    negating = _negating(words)
    edged = (_EDGE, *words, _EDGE)
    in_order = [_stem(w) for w in words if w not in _NOT_CONTENT and w[0].isalnum()]
    return Text(
        words=words,
        question=_SPACE.sub(" ", plain).strip(_ENDS).endswith("?"),
        negations=tuple(sorted(words[i] for i in negating)),
        content=Counter(w for w in words if w not in _NOT_CONTENT and w[0].isalnum()),
        stems=Counter(in_order),
        stem_order=tuple(in_order),
        core=_core(words, negating),
        bigrams=frozenset(pairwise(edged)),
        marker=_marker(tokens, plain),
    )


def _unmarked(text: str) -> str:
    """The text without Markdown markup at line starts or underscore emphasis (outside code
    spans); "*" emphasis is punctuation at the edge of a word, and goes with it."""
    parts = _CODE_SPAN.split(_LIST_MARKER.sub("", text))
    parts[::2] = [_UNDERSCORES.sub(_emphasised, part) for part in parts[::2]]
    return "".join(parts)


def _emphasised(match: re.Match[str]) -> str:
    """The words inside underscore emphasis; one word inside one "_" stays ("_id_")."""
    inner = match.group(2)
    if len(match.group(1)) > 1 or any(c.isspace() for c in inner):
        return inner
    return match.group()


def _negating(words: tuple[str, ...]) -> list[int]:
    """Where the negations are: every listed word, but "ne" only with its second half."""
    french = not _FRENCH_COMPLEMENTS.isdisjoint(words)
    return [i for i, w in enumerate(words) if w in NEGATIONS and (w != "ne" or french)]


def _core(words: tuple[str, ...], negating: list[int]) -> tuple[str, ...]:
    """The words without the negations and what goes with them, each stemmed."""
    left_out = set(negating)
    for i in negating:
        if i > 0 and words[i - 1] in _BEFORE_NEGATION:
            left_out.add(i - 1)
        after = range(i + 1, min(i + 1 + _COMPLEMENT_REACH, len(words)))
        left_out.update(j for j in after if words[j] in _COMPLEMENTS)
    return tuple(_stem(w) for i, w in enumerate(words) if i not in left_out)


def _token_word(match: re.Match[str]) -> str:
    """The word a token is: a number as it is, signed with "-" (with its unit quote, unless
    the quote closes a quotation); a run of symbols without the sentence punctuation around
    it, or all of it between two letters or digits ("2**10", "f(x") or, for "*", between
    two spaces; nothing for punctuation alone."""
    token, text = match.group(), match.string
    start, end = match.span()
    before = text[start - 1] if start else " "
    if _has_digit(token):  # only the first two kinds of token hold digits
        if token[0] in _SIGNS:
            token = "-" + token[1:]
        if token[-1] in _QUOTES and before in _QUOTES:
            token = token[:-1]
        return token.replace("\u201d", '"')
    if _is_word_char(token[0]):
        return token
    after = text[end : end + 1] or " "
    if _is_word_char(before) and _is_word_char(after) and token.strip(_SENTENCE_MARKS):
        return token  # an operator or a joint: "2**10", "f(x", a range
    if token.strip("*") == "" and before.isspace() and after.isspace():
        return token  # a "*" that touches no word is no emphasis: "2 * 10"
    symbols = token.lstrip(_EDGE_PUNCTUATION).rstrip(_EDGE_PUNCTUATION + "!?")
    return "" if all(map(_punctuation, symbols)) else symbols


def _has_digit(token: str) -> bool:
    # Letters are never digits (isalpha and isdigit are disjoint in Unicode): most tokens
    # are words, and this spares them a look at each character.
    return not token.isalpha() and any(c.isdigit() for c in token)


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
    """``new`` brings at most one content word of its own, and no more than it drops of
    ``old``'s: it can correct it.

    A correction swaps the value it corrects ("light" for "dark").  Two words swapped are
    another subject: "the staging cluster runs on ARM" says nothing about what "the prod
    cluster runs on x86" said.
    """
    added = sum((new.stems - old.stems).values())
    return added <= min(CORRECTION_MAX_ADDED, sum((old.stems - new.stems).values()))


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
    "CORRECTION_MAX_ADDED",
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
    "visible",
]
