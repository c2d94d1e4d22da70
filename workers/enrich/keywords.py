"""Keywords of a text: YAKE's candidates, then deduplicated the way a reader expects.

YAKE (statistical, one document, no model) scores words and phrases of up to ``max_ngram``
words; lower is better. It is asked for more candidates than wanted, which are then taken in
score order and kept unless they repeat what is already chosen:

- the same words up to case and inflection ("Migrations", "migration"; "review",
  "reviewed": Snowball stems, through sumy's ``Stemmer``) repeat it;
- a phrase inside a chosen phrase ("index" after "search index") repeats it;
- a phrase that *contains* chosen keywords ("search index" after "search") replaces them
  when it is nearly as good (its score at most ``PHRASE_TOLERANCE`` times theirs): it says
  more; otherwise it is dropped;
- a phrase all of whose words are already covered by chosen keywords adds nothing.

Phrases that start or end with a stop word, or hold only stop words, numbers or single
letters, never count. Words are lower-cased unless the text only ever writes them with
inner capitals or as a short all-capitals acronym ("PostgreSQL", "API").

A line break ends a phrase (OCR lines and slide bullets carry no punctuation).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from workers.enrich.documents import EnrichUnavailable
from workers.enrich.sentences import split_sentences, split_words, terminated

#: Keywords of a session (about what a reader scans at a glance).
SESSION_KEYWORDS: Final = 10
#: Keywords of one chapter (a chapter is one topic: fewer say it).
CHAPTER_KEYWORDS: Final = 5
#: Longest phrase, in words. Three-word candidates of speech are mostly phrases around a
#: stop word ("transcripts and screen"); two words keep "search index" and "celery workers".
MAX_NGRAM: Final = 2
#: Fewer words than this is not a text to take keywords from (a stray OCR fragment).
MIN_WORDS: Final = 3
#: YAKE is asked for this many times the wanted number: deduplication drops many.
CANDIDATE_FACTOR: Final = 4
#: A phrase replaces the chosen keywords it contains when its score is at most this many
#: times their best (YAKE: lower is better). A phrase is more specific, so it may score a
#: little worse; 1.5 lets "search index" replace "search" and "celery workers" "workers".
PHRASE_TOLERANCE: Final = 1.5
#: YAKE's own near-duplicate filter (its default 0.9 keeps spelling variants apart too).
YAKE_DEDUP_LIMIT: Final = 0.9
#: Longest all-capitals word kept as an acronym; longer ones are a shouting title.
MAX_ACRONYM: Final = 5

#: Words of speech that YAKE's English list lacks and that name no topic.
SPOKEN_STOP_WORDS: Final = frozenset(
    {
        "today", "tomorrow", "yesterday", "next", "finally", "first", "firstly", "second",
        "secondly", "third", "lastly", "then", "now", "okay", "ok", "yeah", "yes", "um", "uh",
        "hmm", "right", "well", "so", "actually", "basically", "really", "just", "thing",
        "things", "stuff", "lot", "lots", "let", "let's", "gonna", "wanna", "kind", "sort",
        "whole", "look", "see", "say", "said", "talk", "going", "get", "got", "go",
    }
)  # fmt: skip

_DIGITS = re.compile(r"^[\d.,:%-]+$")


@dataclass(frozen=True)
class _Candidate:
    words: tuple[str, ...]  # as written in the text
    key: tuple[str, ...]  # lower case, stemmed
    score: float


def singular(word: str) -> str:
    """A crude English singular of a lower-case word: merges "queues" and "queue" where no
    stemmer is installed."""
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "shes", "ches", "xes", "zzes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


@lru_cache(maxsize=16)
def stemmer(language: str) -> Callable[[str], str]:
    """Snowball's stemmer of ``language`` (no data files), else :func:`singular`."""
    try:
        from sumy.nlp.stemmers import Stemmer

        stem: Callable[[str], str] = Stemmer(language)
        stem("tests")
    except (ImportError, LookupError):
        return singular
    return stem


@lru_cache(maxsize=16)
def _extractor(language: str, top: int, max_ngram: int) -> Any:
    try:
        import yake  # the enrich extra; imported here so the module loads without it
    except ImportError as exc:
        raise EnrichUnavailable("yake is not installed (the enrich extra)") from exc

    extractor = yake.KeywordExtractor(
        lan=language, n=max_ngram, top=top, dedup_lim=YAKE_DEDUP_LIMIT
    )
    if language[:2].lower() == "en":
        extractor.stopword_set = set(extractor.stopword_set) | SPOKEN_STOP_WORDS
    return extractor


def _display(word: str, forms: dict[str, set[str]]) -> str:
    """How to write ``word``: lower case unless the text treats it as a name or acronym."""
    lower = word.lower()
    seen = forms.get(lower, {word})
    if any(f == lower or (f[:1].isupper() and f[1:] == f[1:].lower()) for f in seen):
        return lower
    if word.isupper():
        return word if len(word) <= MAX_ACRONYM else lower
    return word  # inner capitals: "PostgreSQL", "macOS"


def _contains(outer: tuple[str, ...], inner: tuple[str, ...]) -> bool:
    n = len(inner)
    return any(outer[i : i + n] == inner for i in range(len(outer) - n + 1))


def _meaningful(words: tuple[str, ...], stop_words: set[str]) -> bool:
    lowered = [w.lower() for w in words]

    def content(w: str) -> bool:
        return w not in stop_words and len(w) > 1 and not _DIGITS.match(w)

    return bool(lowered) and content(lowered[0]) and content(lowered[-1])


def choose(candidates: Sequence[_Candidate], top: int) -> list[_Candidate]:
    """The deduplication rules of the module docstring, over candidates in score order."""
    chosen: list[_Candidate] = []
    for cand in sorted(candidates, key=lambda c: c.score):
        if any(c.key == cand.key or _contains(c.key, cand.key) for c in chosen):
            continue
        inside = [c for c in chosen if _contains(cand.key, c.key)]
        if inside:
            if cand.score > PHRASE_TOLERANCE * min(c.score for c in inside):
                continue
            at = chosen.index(inside[0])
            chosen = [c for c in chosen if c not in inside]
            chosen.insert(min(at, len(chosen)), cand)
            continue
        covered = {w for c in chosen for w in c.key}
        if len(cand.key) > 1 and set(cand.key) <= covered:
            continue
        if len(chosen) < top:
            chosen.append(cand)
    return chosen[:top]


def keywords(
    text: str,
    *,
    language: str = "en",
    top: int = SESSION_KEYWORDS,
    max_ngram: int = MAX_NGRAM,
) -> tuple[str, ...]:
    """The ``top`` keywords of ``text``, best first; () for an empty or tiny text.

    ``language`` is an ISO 639-1 code (YAKE's stop words; an unknown one uses YAKE's
    language-neutral list). Raises EnrichUnavailable without YAKE.
    """
    if top <= 0 or max_ngram <= 0:
        return ()
    prepared = terminated(split_sentences(text))
    words = split_words(prepared)
    if len(words) < MIN_WORDS:
        return ()
    forms: dict[str, set[str]] = {}
    for word in words:
        forms.setdefault(word.lower(), set()).add(word)
    extractor = _extractor(language, top * CANDIDATE_FACTOR, max_ngram)
    stop_words: set[str] = extractor.stopword_set
    stem = stemmer(language)
    candidates = []
    for phrase, score in extractor.extract_keywords(prepared):
        phrase_words = tuple(split_words(phrase))
        if not _meaningful(phrase_words, stop_words):
            continue
        key = tuple(stem(w.lower()) for w in phrase_words)
        candidates.append(_Candidate(phrase_words, key, float(score)))
    return tuple(" ".join(_display(w, forms) for w in c.words) for c in choose(candidates, top))
