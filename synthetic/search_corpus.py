"""Sessions made of text only, for the search index: what enrichment would have written
(transcript, chapters with screen text, summary) for a talk of any length, with no media.

``bench/bench_search.py`` indexes a thousand 30-minute ones, the search tests a few short
ones. Words come from a made-up vocabulary (``VOCABULARY_WORDS`` pronounceable words, the
same for every seed) drawn with Zipf's law, as words of real speech are: a few very common,
most rare. A transcript segment every ``SEGMENT_S`` seconds of ``SEGMENT_WORDS`` words
(with word times), a chapter every ``CHAPTER_S`` seconds with a title, a screenful of text
and ``SCREENS_PER_CHAPTER`` further screens (a scrolled document), keywords, and a summary.
The documents have the JSON form of ``workers.enrich.documents``. Pure data, seeded:
the same seed gives the same session.
"""

from __future__ import annotations

import random
from functools import lru_cache
from typing import Any, Final

VOCABULARY_WORDS: Final = 4000
SEGMENT_S: Final = 4.0  # about one transcript segment per 4 s, as Whisper writes them
SEGMENT_WORDS: Final = 10
CHAPTER_S: Final = 180.0
SCREEN_LINES: Final = 12
SCREEN_LINE_WORDS: Final = 6
SCREENS_PER_CHAPTER: Final = 2
TITLE_WORDS: Final = 3
KEYWORDS: Final = 8
SUMMARY_SENTENCES: Final = 3
_SYLLABLES: Final = tuple(
    c + v for c in "bdfgklmnprstvz" for v in ("a", "e", "i", "o", "u", "ai", "ou")
)


@lru_cache(maxsize=1)
def vocabulary() -> tuple[str, ...]:
    """The made-up words, most common first (the same on every call)."""
    rng = random.Random(20261202)
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < VOCABULARY_WORDS:
        word = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return tuple(words)


@lru_cache(maxsize=1)
def _cumulative_weights() -> tuple[float, ...]:
    total, out = 0.0, []
    for rank in range(1, VOCABULARY_WORDS + 1):
        total += 1.0 / rank
        out.append(total)
    return tuple(out)


def zipf_words(rng: random.Random, n: int) -> list[str]:
    """``n`` words drawn from the vocabulary by Zipf's law."""
    return rng.choices(vocabulary(), cum_weights=_cumulative_weights(), k=n)


def _sentence(rng: random.Random, words: int) -> str:
    chosen = zipf_words(rng, words)
    return " ".join(chosen).capitalize() + "."


def session_documents(seed: int, duration_s: float) -> dict[str, dict[str, Any]]:
    """The transcript, chapters and summary documents of a talk ``duration_s`` long."""
    rng = random.Random(seed)
    segments = []
    t = 0.0
    while t + SEGMENT_S <= duration_s:
        words = zipf_words(rng, SEGMENT_WORDS)
        step = SEGMENT_S / SEGMENT_WORDS
        segments.append(
            {
                "start": round(t, 3),
                "end": round(t + SEGMENT_S, 3),
                "text": " ".join(words).capitalize() + ".",
                "words": [
                    {
                        "start": round(t + k * step, 3),
                        "end": round(t + (k + 1) * step, 3),
                        "word": word,
                    }
                    for k, word in enumerate(words)
                ],  # fmt: skip
            }
        )
        t += SEGMENT_S
    chapters = []
    start = 0.0
    while start < duration_s:
        end = min(duration_s, start + CHAPTER_S)
        screens = []
        for k in range(SCREENS_PER_CHAPTER):
            at = start + (end - start) * (k + 1) / (SCREENS_PER_CHAPTER + 1)
            until = start + (end - start) * (k + 2) / (SCREENS_PER_CHAPTER + 1)
            screens.append({"start": round(at, 3), "end": round(until, 3),
                            "text": _screen(rng)})  # fmt: skip
        chapters.append(
            {
                "start": round(start, 3),
                "end": round(end, 3),
                "title": " ".join(zipf_words(rng, TITLE_WORDS)).title(),
                "title_source": "screen",
                "screen_text": _screen(rng),
                "screens": screens,
                "keywords": zipf_words(rng, KEYWORDS // 2),
            }
        )
        start = end
    summary = {
        "summary": " ".join(_sentence(rng, 15) for _ in range(SUMMARY_SENTENCES)),
        "keywords": zipf_words(rng, KEYWORDS),
        "provider": "offline",
    }
    transcript = {"language": "en", "duration": duration_s, "model": "synthetic",
                  "segments": segments}  # fmt: skip
    return {"transcript": transcript, "chapters": {"chapters": chapters}, "summary": summary}


def _screen(rng: random.Random) -> str:
    return "\n".join(" ".join(zipf_words(rng, SCREEN_LINE_WORDS)) for _ in range(SCREEN_LINES))
