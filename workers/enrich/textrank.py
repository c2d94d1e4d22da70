"""Extractive summary: the sentences most like the rest, by TextRank, in their original order.

TextRank (sumy's ``TextRankSummarizer``) links every two sentences by the stemmed, non-stop
words they share and ranks them like PageRank: a sentence that many others echo is central.
sumy builds its document from any tokenizer with ``to_sentences`` and ``to_words``; ours is
:class:`workers.enrich.sentences.RegexTokenizer` (NLTK's punkt data cannot be downloaded).
Stop words come from sumy's bundled lists and stems from Snowball (both ship inside the
wheels); a language without either is ranked on plain lower-case words.

``context`` sentences (a slide's text, say) take part in the ranking, so spoken sentences
about what is on screen rank higher, but are never chosen: a summary of bullet fragments
reads badly. Very short sentences ("Okay.") are not chosen while longer ones exist.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Final

from workers.enrich.documents import EnrichUnavailable
from workers.enrich.sentences import RegexTokenizer, split_words

#: Sentences in a summary: a paragraph a reader takes in at a glance.
SUMMARY_SENTENCES: Final = 3
#: Sentences of fewer words are not chosen while longer ones exist ("Okay, so.").
MIN_SENTENCE_WORDS: Final = 4
#: Sentences ranked at most; beyond this only the first ones count. TextRank's matrix is
#: quadratic: 3000 sentences (about five hours of speech) is 9 M cells, under a second.
MAX_SENTENCES: Final = 3000


@lru_cache(maxsize=16)
def _summarizer(language: str) -> Any:
    try:
        from sumy.nlp.stemmers import Stemmer, null_stemmer
        from sumy.summarizers.text_rank import TextRankSummarizer
        from sumy.utils import get_stop_words
    except ImportError as exc:
        raise EnrichUnavailable("sumy is not installed (the enrich extra)") from exc

    try:
        summarizer = TextRankSummarizer(Stemmer(language))
    except LookupError:
        summarizer = TextRankSummarizer(null_stemmer)
    with contextlib.suppress(LookupError):  # else ranked with every word
        summarizer.stop_words = get_stop_words(language)
    return summarizer


def _unique(sentences: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for sentence in sentences:
        sentence = " ".join(sentence.split())
        key = sentence.lower()
        if sentence and split_words(sentence) and key not in seen:
            seen.add(key)
            out.append(sentence)
    return out


def summarize_sentences(
    sentences: Sequence[str],
    *,
    count: int = SUMMARY_SENTENCES,
    language: str = "en",
    context: Sequence[str] = (),
) -> tuple[str, ...]:
    """The ``count`` best of ``sentences`` (white space collapsed, duplicates once), in order.

    Raises EnrichUnavailable without sumy (only when there is something to rank).
    """
    candidates = _unique(sentences)[:MAX_SENTENCES]
    if count <= 0 or not candidates:
        return ()
    long_enough = [s for s in candidates if len(split_words(s)) >= MIN_SENTENCE_WORDS]
    eligible = set(long_enough or candidates)
    if len(eligible) <= count:
        return tuple(s for s in candidates if s in eligible)

    summarizer = _summarizer(language)
    from sumy.models.dom import ObjectDocumentModel, Paragraph, Sentence

    chosen_set = set(candidates)
    extra = [s for s in _unique(context) if s not in chosen_set]
    tokenizer = RegexTokenizer(language)
    every = candidates + extra[: max(0, MAX_SENTENCES - len(candidates))]
    document = ObjectDocumentModel([Paragraph([Sentence(text, tokenizer) for text in every])])
    ratings = summarizer.rate_sentences(document)
    ranked = sorted(
        (i for i, s in enumerate(candidates) if s in eligible),
        key=lambda i: (-ratings[document.sentences[i]], i),
    )
    best = sorted(ranked[:count])
    return tuple(candidates[i] for i in best)
