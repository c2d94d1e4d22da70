"""The offline summary and keywords of a session: YAKE keywords and a TextRank summary.

What is said and what is shown both count. A chapter's keywords come from its stretch of the
transcript (the segments whose middle lies in it) and its screen text; the session's from
the whole transcript and every chapter's screen text. The summary is made of spoken
sentences, ranked with the screen text as context (a sentence about what is on screen is
central); with no transcript, or nothing spoken, it is made of the screen text itself.
With neither, the summary is empty and there are no keywords: the stage says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Final

from workers.enrich.documents import Chapter, Summary, Transcript, TranscriptSegment
from workers.enrich.keywords import CHAPTER_KEYWORDS, SESSION_KEYWORDS, keywords
from workers.enrich.sentences import split_sentences, split_words, terminated
from workers.enrich.textrank import SUMMARY_SENTENCES, summarize_sentences

#: A "sentence" of more words than this has no punctuation around it (a recogniser that
#: writes none): the transcript's own segments are the sentences then.
MAX_SENTENCE_WORDS: Final = 60


def spoken_sentences(segments: Sequence[TranscriptSegment]) -> list[str]:
    """The sentences of ``segments``: their joined text split at punctuation, or the
    segments themselves when the text has none."""
    text = " ".join(s.text.strip() for s in segments if s.text.strip())
    sentences = split_sentences(text)
    if any(len(split_words(s)) > MAX_SENTENCE_WORDS for s in sentences):
        return [s.text.strip() for s in segments if split_words(s.text)]
    return sentences


def _text(*parts: Sequence[str]) -> str:
    return "\n".join(line for part in parts for line in part)


def offline_enrichment(
    transcript: Transcript | None,
    chapters: Sequence[Chapter],
    *,
    language: str = "en",
    summary_sentences: int = SUMMARY_SENTENCES,
    keywords_per_chapter: int = CHAPTER_KEYWORDS,
    session_keywords: int = SESSION_KEYWORDS,
) -> tuple[Summary, list[Chapter]]:
    """The session's summary and keywords, and ``chapters`` with their keywords set.

    Raises EnrichUnavailable when YAKE or sumy is not installed.
    """
    segments = transcript.segments if transcript is not None else ()
    spoken = spoken_sentences(segments)
    screen = [split_sentences(c.screen_text) for c in chapters]

    with_keywords = []
    for chapter, shown in zip(chapters, screen, strict=True):
        stretch = transcript.between(chapter.start, chapter.end) if transcript else ()
        said = spoken_sentences(stretch)
        words = keywords(_text(said, shown), language=language, top=keywords_per_chapter)
        with_keywords.append(replace(chapter, keywords=words))

    every_screen = [line for shown in screen for line in shown]
    if spoken:
        summary = summarize_sentences(
            spoken, count=summary_sentences, language=language, context=every_screen
        )
    else:
        summary = summarize_sentences(every_screen, count=summary_sentences, language=language)
    session = keywords(_text(spoken, every_screen), language=language, top=session_keywords)
    return Summary(summary=terminated(summary), keywords=session), with_keywords
