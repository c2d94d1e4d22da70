"""The enrichment documents: transcript, chapters and summary, and their JSON form.

Times are seconds on the *output timeline*: the playable MP4's clock, after pause cuts and
gap fills. The JSON form is what ``sessionpipe show --json`` prints and what the database
keeps, so it is a contract: change it only by adding fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

#: Where a chapter's title came from.
TITLE_SOURCES: Final = ("screen", "transcript", "llm", "none")
#: Who wrote a summary.
SUMMARY_PROVIDERS: Final = ("offline", "anthropic", "openai")


class EnrichError(Exception):
    """Bad input to an enrichment step (the job fails with this reason)."""


class EnrichUnavailable(Exception):
    """An engine this step needs is not installed here: the stage is skipped with this reason."""


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    word: str  # as the recogniser wrote it, leading space stripped
    probability: float = 1.0

    def to_json(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "word": self.word}


@dataclass(frozen=True)
class TranscriptSegment:
    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "text": self.text,
            "words": [w.to_json() for w in self.words],
        }


@dataclass(frozen=True)
class Transcript:
    language: str
    segments: tuple[TranscriptSegment, ...]
    duration: float = 0.0  # seconds of audio transcribed
    model: str = ""  # which model wrote it (a name or folder)

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments).strip()

    def between(self, start: float, end: float) -> tuple[TranscriptSegment, ...]:
        """The segments whose middle lies in [start, end)."""
        return tuple(s for s in self.segments if start <= (s.start + s.end) / 2 < end)

    def to_json(self) -> dict[str, Any]:
        return {
            "language": self.language,
            "duration": self.duration,
            "model": self.model,
            "segments": [s.to_json() for s in self.segments],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Transcript:
        return cls(
            language=str(data.get("language", "")),
            duration=float(data.get("duration", 0.0)),
            model=str(data.get("model", "")),
            segments=tuple(
                TranscriptSegment(
                    start=float(s["start"]),
                    end=float(s["end"]),
                    text=str(s["text"]),
                    words=tuple(
                        Word(float(w["start"]), float(w["end"]), str(w["word"]))
                        for w in s.get("words", ())
                    ),
                )
                for s in data.get("segments", ())
            ),
        )


@dataclass(frozen=True)
class Screen:
    """Text on screen within a chapter after its representative frame (a document scrolled,
    an editor filled), shown from ``start`` to ``end`` (the next screen, or the chapter's
    end)."""

    start: float
    end: float
    text: str

    def to_json(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "text": self.text}


@dataclass(frozen=True)
class Chapter:
    start: float
    end: float
    title: str
    title_source: str = "none"  # one of TITLE_SOURCES
    screen_text: str = ""  # OCR of the representative frame
    keywords: tuple[str, ...] = ()
    screens: tuple[Screen, ...] = ()  # where the screen's text changed later in the chapter

    def to_json(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "title": self.title,
            "title_source": self.title_source,
            "screen_text": self.screen_text,
            "keywords": list(self.keywords),
            "screens": [s.to_json() for s in self.screens],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Chapter:
        return cls(
            start=float(data["start"]),
            end=float(data["end"]),
            title=str(data.get("title", "")),
            title_source=str(data.get("title_source", "none")),
            screen_text=str(data.get("screen_text", "")),
            keywords=tuple(str(k) for k in data.get("keywords", ())),
            screens=tuple(
                Screen(float(s["start"]), float(s["end"]), str(s["text"]))
                for s in data.get("screens", ())
            ),
        )


@dataclass(frozen=True)
class Summary:
    summary: str
    keywords: tuple[str, ...]
    provider: str = "offline"  # one of SUMMARY_PROVIDERS
    # Set when an LLM provider was asked and failed: the offline result was kept.
    provider_error: str | None = None
    chapter_titles: tuple[str, ...] = field(default=())  # from the LLM, when it gave them

    def to_json(self) -> dict[str, Any]:
        return {
            "summary": self.summary,
            "keywords": list(self.keywords),
            "provider": self.provider,
            "provider_error": self.provider_error,
            "chapter_titles": list(self.chapter_titles),
        }
