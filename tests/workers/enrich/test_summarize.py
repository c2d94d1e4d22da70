"""The offline enrichment of the demo lecture: chapter and session keywords, a summary."""

from __future__ import annotations

from dataclasses import replace

from synthetic.lecture import DEMO_LECTURE
from tests.workers.enrich.lecture_docs import lecture_chapters, lecture_transcript
from workers.enrich.documents import Transcript, TranscriptSegment
from workers.enrich.summarize import offline_enrichment, spoken_sentences

NARRATION = [line.text for line in DEMO_LECTURE.narration]
TOPICS = ("migration", "celery", "search")


def test_chapters_get_their_topics_and_the_session_all_of_them() -> None:
    chapters = lecture_chapters()
    summary, enriched = offline_enrichment(lecture_transcript(), chapters)
    assert [c.title for c in enriched] == [c.title for c in chapters]  # nothing else moves
    assert [replace(c, keywords=()) for c in enriched] == chapters
    for chapter, topic in zip(enriched, TOPICS, strict=True):
        assert 1 <= len(chapter.keywords) <= 5
        assert any(topic in k for k in chapter.keywords), chapter.keywords
    joined = " ".join(summary.keywords)
    assert all(topic in joined for topic in TOPICS), summary.keywords
    assert summary.provider == "offline" and summary.provider_error is None


def test_the_summary_is_spoken_sentences_in_order() -> None:
    summary, _ = offline_enrichment(lecture_transcript(), lecture_chapters(), summary_sentences=3)
    chosen = [s for s in NARRATION if s in summary.summary]
    assert len(chosen) == 3
    assert summary.summary == " ".join(chosen)


def test_without_a_transcript_the_screen_text_speaks() -> None:
    summary, enriched = offline_enrichment(None, lecture_chapters())
    assert summary.summary
    slides = {text for s in DEMO_LECTURE.slides for text in (s.title, *s.lines)}
    assert all(sentence.rstrip(".") in slides for sentence in summary.summary.split(". "))
    for chapter, topic in zip(enriched, TOPICS, strict=True):
        assert any(topic in k for k in chapter.keywords), chapter.keywords


def test_without_chapters_the_transcript_alone() -> None:
    summary, enriched = offline_enrichment(lecture_transcript(), [])
    assert enriched == []
    assert summary.summary and summary.keywords


def test_nothing_gives_an_empty_summary() -> None:
    summary, enriched = offline_enrichment(None, [])
    assert (summary.summary, summary.keywords, enriched) == ("", (), [])
    silent = Transcript("en", (TranscriptSegment(0.0, 1.0, " "),))
    chapters = [replace(c, screen_text="") for c in lecture_chapters()]
    summary, enriched = offline_enrichment(silent, chapters)
    assert (summary.summary, summary.keywords) == ("", ())
    assert all(c.keywords == () for c in enriched)


def test_a_transcript_without_punctuation_is_cut_at_its_segments() -> None:
    words = "we talk about the deployment pipeline and the staging servers " * 10
    segments = tuple(
        TranscriptSegment(float(i), i + 1.0, f"{words.strip()} part {i}") for i in range(4)
    )
    sentences = spoken_sentences(segments)
    assert sentences == [s.text for s in segments]
