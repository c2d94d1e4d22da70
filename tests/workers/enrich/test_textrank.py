"""TextRank over regex sentences: chosen sentences come from the input, in its order."""

from __future__ import annotations

import sys

import pytest

from synthetic.lecture import DEMO_LECTURE
from workers.enrich.documents import EnrichUnavailable
from workers.enrich.sentences import RegexTokenizer, split_sentences, split_words
from workers.enrich.textrank import _summarizer, summarize_sentences

NARRATION = [line.text for line in DEMO_LECTURE.narration]
SLIDES = [text for s in DEMO_LECTURE.slides for text in (s.title, *s.lines)]


def test_the_summary_is_input_sentences_in_order() -> None:
    summary = summarize_sentences(NARRATION, count=3)
    assert len(summary) == 3
    assert all(s in NARRATION for s in summary)
    positions = [NARRATION.index(s) for s in summary]
    assert positions == sorted(positions)


def test_context_ranks_but_is_never_chosen() -> None:
    summary = summarize_sentences(NARRATION, count=3, context=SLIDES)
    assert all(s in NARRATION for s in summary)
    assert not set(summary) & set(SLIDES)


def test_few_sentences_come_back_whole_and_short_ones_lose() -> None:
    long = "We deploy the service on Fridays."
    assert summarize_sentences(["Okay.", long], count=3) == (long,)
    assert summarize_sentences(["Okay.", "Right."], count=3) == ("Okay.", "Right.")


def test_duplicates_count_once() -> None:
    sentences = ["The cache is warm now.", "The cache is warm now.", "Deploys run at noon."]
    assert summarize_sentences(sentences, count=5) == (
        "The cache is warm now.",
        "Deploys run at noon.",
    )


def test_empty_input() -> None:
    assert summarize_sentences([], count=3) == ()
    assert summarize_sentences(["", "  ", "..."], count=3) == ()
    assert summarize_sentences(NARRATION, count=0) == ()


def test_an_unknown_language_still_ranks() -> None:
    summary = summarize_sentences(NARRATION, count=2, language="xx")
    assert len(summary) == 2 and all(s in NARRATION for s in summary)


def test_regex_sentences_and_words() -> None:
    text = "We use e.g. Celery here. Dr. Smith agreed! Is it done? Yes…\nBullet one\nBullet two"
    assert split_sentences(text) == [
        "We use e.g. Celery here.",
        "Dr. Smith agreed!",
        "Is it done?",
        "Yes…",
        "Bullet one",
        "Bullet two",
    ]
    assert split_words("Don't re-run full-text search, v2.") == [
        "Don't",
        "re-run",
        "full-text",
        "search",
        "v2",
    ]
    tokenizer = RegexTokenizer()
    assert tokenizer.to_sentences("One two. Three four.") == ("One two.", "Three four.")
    assert tokenizer.to_words("One, two.") == ("One", "two")


def test_without_sumy_the_step_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "sumy" or m.startswith("sumy.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "sumy", None)
    _summarizer.cache_clear()
    try:
        with pytest.raises(EnrichUnavailable, match="sumy"):
            summarize_sentences(NARRATION, count=2)
    finally:
        _summarizer.cache_clear()
