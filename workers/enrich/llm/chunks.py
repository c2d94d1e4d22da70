"""The session as lines of text, and those lines packed into parts that fit one request.

The model reads the session as chapters, each a header (number, times on the output
timeline, the text on screen with its lines joined by " / ") followed by its transcript
segments, one line each with its time: ``[02:15] what was said``. A segment belongs to the
chapter whose start is the last one at or before its middle (chapters are in time order).
Without chapters the lines are the segments alone.

Tokens are estimated as characters / ``CHARS_PER_TOKEN`` (about right for English prose;
``SAFETY`` leaves room for text that tokenises worse). Parts are packed greedily in order;
a chapter that runs on into the next part has its header repeated there, marked
"continued", and a chapter's title is asked of the part where it starts. A line longer than
a whole part (a wall of screen text) is cut.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from workers.enrich.documents import Chapter, Transcript

#: Characters per token, roughly, for English text (the usual rule of thumb).
CHARS_PER_TOKEN: Final = 4
#: Share of the context window a request plans to fill: the estimate is rough.
SAFETY: Final = 0.85
#: Screen text of one chapter shown to the model, characters (OCR of a slide is short;
#: of a code editor it can be pages, which the transcript explains better).
MAX_SCREEN_CHARS: Final = 600


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def usable_tokens(context_tokens: int) -> int:
    """Tokens a request may plan for, prompt and answer together."""
    return int(context_tokens * SAFETY)


def clock(seconds: float) -> str:
    """``mm:ss``, or ``h:mm:ss`` from an hour on."""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def one_line(text: str, limit: int | None = None) -> str:
    """``text`` on one line, white space collapsed, cut to ``limit`` characters; a closing
    ``</session>`` tag is defused (the prompt fences the session's text with it)."""
    flat = " ".join(text.split()).replace("</session>", "</ session>")
    if limit is not None and len(flat) > limit:
        flat = flat[: max(0, limit - 1)].rstrip() + "…"
    return flat


def chapter_header(number: int, chapter: Chapter, *, continued: bool = False) -> str:
    head = f"## Chapter {number} [{clock(chapter.start)}-{clock(chapter.end)}]"
    if continued:
        return head + " (continued)"
    shown = " / ".join(line.strip() for line in chapter.screen_text.splitlines() if line.strip())
    screen = one_line(shown, MAX_SCREEN_CHARS)
    return f"{head} screen text: {screen}" if screen else head


@dataclass(frozen=True)
class Line:
    chapter: int | None  # index into the chapters; None without chapters
    text: str
    at: float  # output seconds: the chapter's start for a header, else the segment's
    header: bool = False


def session_lines(transcript: Transcript | None, chapters: Sequence[Chapter]) -> list[Line]:
    """Every chapter header and transcript segment as one line each, in order."""
    segments = [s for s in (transcript.segments if transcript else ()) if s.text.strip()]
    said = [Line(None, f"[{clock(s.start)}] {one_line(s.text)}", s.start) for s in segments]
    if not chapters:
        return said
    starts = [c.start for c in chapters]
    owned: list[list[Line]] = [[] for _ in chapters]
    for segment, line in zip(segments, said, strict=True):
        middle = (segment.start + segment.end) / 2
        index = max(0, bisect.bisect_right(starts, middle) - 1)
        owned[index].append(Line(index, line.text, line.at))
    lines = []
    for index, chapter in enumerate(chapters):
        lines.append(Line(index, chapter_header(index + 1, chapter), chapter.start, header=True))
        lines.extend(owned[index])
    return lines


@dataclass(frozen=True)
class Part:
    lines: tuple[str, ...]
    starting: tuple[int, ...]  # indexes of the chapters that start in this part
    start: float  # output seconds covered: from the first line's time
    end: float  # to the next part's start (the session's end for the last)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def pack(
    lines: Sequence[Line], chapters: Sequence[Chapter], budget_chars: int, duration: float
) -> list[Part]:
    """``lines`` in parts of at most ``budget_chars`` characters (newlines counted)."""
    if budget_chars <= 0:
        raise ValueError("no room for any text in a request")
    groups: list[tuple[list[str], list[int], float]] = []
    size = 0
    open_chapter: int | None = None
    for line in lines:
        text = one_line(line.text, budget_chars)
        if not groups or size + len(text) + 1 > budget_chars:
            groups.append(([], [], line.at))
            size = 0
            if not line.header and line.chapter is not None and line.chapter == open_chapter:
                head = chapter_header(line.chapter + 1, chapters[line.chapter], continued=True)
                if len(head) + len(text) + 2 <= budget_chars:
                    groups[-1][0].append(head)
                    size = len(head) + 1
        texts, starting, _ = groups[-1]
        if line.header and line.chapter is not None:
            starting.append(line.chapter)
            open_chapter = line.chapter
        texts.append(text)
        size += len(text) + 1
    ends = [at for _, _, at in groups[1:]] + [max(duration, groups[-1][2] if groups else 0.0)]
    return [
        Part(tuple(texts), tuple(starting), at, end)
        for (texts, starting, at), end in zip(groups, ends, strict=True)
    ]
