"""YAKE keywords, deduplicated: the demo lecture's topics come out, repeats do not."""

from __future__ import annotations

import sys

import pytest

from synthetic.lecture import DEMO_LECTURE
from workers.enrich.documents import EnrichUnavailable
from workers.enrich.keywords import _Candidate, _extractor, choose, keywords, singular

NARRATION = " ".join(line.text for line in DEMO_LECTURE.narration)
SLIDES = "\n".join("\n".join((s.title, *s.lines)) for s in DEMO_LECTURE.slides)


def test_the_lecture_keywords_name_its_topics() -> None:
    found = keywords(NARRATION + "\n" + SLIDES)
    joined = " ".join(found)
    for topic in ("migration", "celery", "search"):
        assert topic in joined, found
    assert 5 <= len(found) <= 10


def test_each_slide_gets_its_own_topic() -> None:
    for slide, topic in zip(DEMO_LECTURE.slides, ("migration", "celery", "search"), strict=True):
        said = " ".join(
            line.text for line in DEMO_LECTURE.narration if slide.title.split()[0] in line.text
        )
        found = keywords("\n".join((slide.title, *slide.lines, said)), top=5)
        assert any(topic in k for k in found), (slide.title, found)
        assert len(found) <= 5


def test_no_repeats_up_to_case_and_plural() -> None:
    found = keywords(NARRATION + "\n" + SLIDES, top=20)
    words = [w for k in found for w in k.split()]
    assert len({singular(w.lower()) for w in found}) == len(found)
    # "migrations" and "migration" are one keyword; "search" does not stand beside a phrase
    # that holds it
    assert sum("migration" in k for k in found) == 1, found
    for k in found:
        for other in found:
            if k != other:
                assert f" {k} " not in f" {other} ", (k, other)
    assert words == [w for w in words if w == w.lower()]  # no capitalised speech words


def test_spoken_filler_and_stop_words_are_not_keywords() -> None:
    found = keywords(NARRATION)
    assert not {"today", "next", "finally", "the", "that"} & set(found)
    assert all(k.split()[0] not in {"the", "a", "and", "of"} for k in found)


def test_acronyms_and_inner_capitals_keep_their_case() -> None:
    text = (
        "We moved the API to PostgreSQL last week. The API now talks to PostgreSQL through "
        "SQLAlchemy. DATABASE MIGRATIONS ran during the move."
    )
    found = keywords(text)
    assert "API" in found
    assert "PostgreSQL" in found
    assert "DATABASE" not in " ".join(found)  # a shouted title is lower-cased


@pytest.mark.parametrize("text", ["", "   ", "hello", "the and of it", "42 17"])
def test_empty_or_tiny_text_has_no_keywords(text: str) -> None:
    assert keywords(text) == ()


def test_lines_end_phrases() -> None:
    # slide bullets: no phrase may run from one line into the next
    found = keywords("Alembic revisions\nReview every migration\nNever edit a landed one", top=10)
    assert "revisions review" not in found
    assert "migration never" not in found


def test_a_phrase_replaces_the_word_it_contains_only_when_nearly_as_good() -> None:
    word = _Candidate(("search",), ("search",), 0.10)
    close = _Candidate(("search", "index"), ("search", "index"), 0.14)
    far = _Candidate(("search", "engine"), ("search", "engin"), 0.30)
    other = _Candidate(("celery",), ("celery",), 0.12)
    assert [c.words for c in choose([word, other, close], 5)] == [
        ("search", "index"),
        ("celery",),
    ]
    assert [c.words for c in choose([word, other, far], 5)] == [("search",), ("celery",)]
    # a word inside a chosen phrase adds nothing
    assert [c.words for c in choose([close, word, other], 5)] == [
        ("search", "index"),
        ("celery",),
    ]


def test_top_bounds_the_answer() -> None:
    assert len(keywords(NARRATION + "\n" + SLIDES, top=3)) == 3
    assert keywords(NARRATION, top=0) == ()


def test_without_yake_the_step_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "yake", None)  # import yake raises ImportError
    _extractor.cache_clear()
    try:
        with pytest.raises(EnrichUnavailable, match="yake"):
            keywords(NARRATION)
    finally:
        _extractor.cache_clear()
