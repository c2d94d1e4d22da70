"""A session's moments, made from its enrichment documents (pure: JSON in, moments out).

A moment is a span of the output timeline (the playable MP4's clock) and the text a person
could search it by, of one *kind*:

- ``spoken``: a transcript segment, with its words' times (a hit starts at its word);
- ``screen``: the text on screen from one time to another: the OCR of a chapter's
  representative frame, from the chapter's start until the screen's text changed within
  the chapter (a document scrolled, an editor typed in: the chapter's ``screens``, from
  ``workers.enrich.chaptering``), each of those until the next or the chapter's end;
- ``chapter``: a chapter's title (not the "Chapter N" made up when there was none);
- ``keyword``: a chapter's keywords over the chapter; a session's keywords at the first
  moment said or shown that contains them (else over the whole session);
- ``summary``: the summary, over the whole session.

Texts longer than ``MAX_MOMENT_CHARS`` are cut (a screenful is far less).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from workers.search.text import terms, tokens

KIND_SPOKEN: Final = "spoken"
KIND_SCREEN: Final = "screen"
KIND_CHAPTER: Final = "chapter"
KIND_KEYWORD: Final = "keyword"
KIND_SUMMARY: Final = "summary"
KINDS: Final = (KIND_SPOKEN, KIND_SCREEN, KIND_CHAPTER, KIND_KEYWORD, KIND_SUMMARY)
#: Longest text of one moment, in characters.
MAX_MOMENT_CHARS: Final = 20_000
#: Decimal places of a time kept (milliseconds).
TIME_DECIMALS: Final = 3


@dataclass(frozen=True)
class Moment:
    kind: str  # one of KINDS
    start: float  # seconds on the output timeline
    end: float
    text: str
    words: tuple[tuple[float, str], ...] | None = None  # spoken: (start, word) of each word
    terms: str = ""  # the text as the index sees it (workers.search.text.terms)

    def __post_init__(self) -> None:
        if not self.terms:
            object.__setattr__(self, "terms", terms(self.text))

    def row(self, session_id: str) -> dict[str, Any]:
        """The ``search_moments`` row of this moment."""
        return {
            "session_id": session_id,
            "kind": self.kind,
            "start_s": self.start,
            "end_s": self.end,
            "text": self.text,
            "terms": self.terms,
            "words": self.words,  # (seconds, word) pairs: JSON arrays
        }


def _moment(
    kind: str, start: Any, end: Any, text: Any, words: tuple[tuple[float, str], ...] | None = None
) -> Moment | None:
    body = " ".join(str(text or "").split()) if kind != KIND_SCREEN else str(text or "").strip()
    body = body[:MAX_MOMENT_CHARS]
    indexed = terms(body)
    if not indexed:
        return None
    a = round(max(0.0, float(start)), TIME_DECIMALS)
    b = round(max(a, float(end)), TIME_DECIMALS)
    return Moment(kind, a, b, body, words, indexed)


def _spoken(transcript: dict[str, Any]) -> list[Moment]:
    out = []
    for segment in transcript.get("segments", ()):
        words = tuple(
            (round(float(w["start"]), TIME_DECIMALS), str(w["word"]).strip())
            for w in segment.get("words", ())
        )
        moment = _moment(KIND_SPOKEN, segment["start"], segment["end"], segment["text"], words)
        if moment is not None:
            out.append(moment)
    return out


def _from_chapter(chapter: dict[str, Any]) -> list[Moment]:
    start, end = float(chapter["start"]), float(chapter["end"])
    out: list[Moment | None] = []
    if chapter.get("title_source", "none") != "none":
        out.append(_moment(KIND_CHAPTER, start, end, chapter.get("title", "")))
    screens = sorted(chapter.get("screens", ()), key=lambda s: float(s["start"]))
    first_change = float(screens[0]["start"]) if screens else end
    out.append(_moment(KIND_SCREEN, start, first_change, chapter.get("screen_text", "")))
    for screen in screens:
        out.append(_moment(KIND_SCREEN, screen["start"], screen["end"], screen["text"]))
    keywords = [str(k) for k in chapter.get("keywords", ())]
    if keywords:
        out.append(_moment(KIND_KEYWORD, start, end, ", ".join(keywords)))
    return [m for m in out if m is not None]


def _first_mention(keyword: str, said: list[tuple[Moment, list[str]]]) -> Moment | None:
    """The first of ``said`` (spoken and screen moments in time order, with their tokens)
    whose tokens contain ``keyword``'s in order."""
    wanted = tokens(keyword)
    n = len(wanted)
    if not n:
        return None
    for moment, have in said:
        if wanted[0] in have and any(have[k : k + n] == wanted for k in range(len(have) - n + 1)):
            return moment
    return None


def build_moments(
    *,
    transcript: dict[str, Any] | None,
    chapters: dict[str, Any] | None,
    summary: dict[str, Any] | None,
    duration: float | None,
) -> list[Moment]:
    """Every moment of a session from its documents (``workers.enrichment`` kinds), in time
    order; ``duration`` (seconds, when known) is the span of the session-wide ones."""
    moments = _spoken(transcript or {})
    for chapter in (chapters or {}).get("chapters", ()):
        moments += _from_chapter(chapter)
    end = max([float(duration or 0.0), *(m.end for m in moments)])
    if summary:
        whole = _moment(KIND_SUMMARY, 0.0, end, summary.get("summary", ""))
        said = [
            (m, m.terms.split())
            for m in sorted(moments, key=lambda m: m.start)
            if m.kind in (KIND_SPOKEN, KIND_SCREEN)
        ]
        for keyword in summary.get("keywords", ()):
            seen = _first_mention(str(keyword), said)
            span = (seen.start, seen.end) if seen is not None else (0.0, end)
            found = _moment(KIND_KEYWORD, *span, keyword)
            if found is not None:
                moments.append(found)
        if whole is not None:
            moments.append(whole)
    return sorted(moments, key=lambda m: (m.start, KINDS.index(m.kind), m.end))
