"""Chapters of a screen recording: where the picture really changes, titled by its text.

1. Sample the video at a low rate (:mod:`workers.enrich.frames`: keyframes where they are
   dense, else ``sample_fps``) and find the persistent changes of picture
   (:mod:`workers.enrich.scenes`).
2. Place each change to the frame: the frames between the last sample of the old picture
   and the first of the new are decoded and bisected (the first frame that looks like the
   new picture), so a boundary is exact however far apart the samples are.
3. Merge chapters shorter than ``min_chapter_s`` into a neighbour.
4. Title each chapter from a representative frame: once the new picture has settled
   (``REPRESENTATIVE_DELAY_S`` into the chapter, or the first settled sample if later, never
   past the chapter's middle), at full resolution, through OCR (:mod:`workers.enrich.ocr`):
   its largest, top-most line (title_source ``"screen"``). A screen without usable text
   falls back on the transcript: the first sentence spoken in the chapter, cut to
   ``TRANSCRIPT_TITLE_WORDS`` words (``"transcript"``); else ``"Chapter N"`` (``"none"``).
5. Read the screen again where its text changed later in the chapter (a document scrolled,
   an editor filled: :mod:`workers.enrich.screentext`, watching the samples of step 1), so
   the search index has the text a person saw (the chapter's ``screens``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from workers.enrich.documents import Chapter, Screen, Transcript
from workers.enrich.frames import SAMPLE_FPS, Video, VideoIndex, open_video
from workers.enrich.ocr import ScreenText, check_ocr, read_screen
from workers.enrich.scenes import (
    MIN_CHAPTER_S,
    Change,
    Sample,
    chapter_spans,
    detect_changes,
    locate_change,
    merge_short,
)
from workers.enrich.screentext import MIN_NEW_WORDS, TextWatch, pick_times

__all__ = [
    "MIN_CHAPTER_S",
    "REPRESENTATIVE_DELAY_S",
    "Sampled",
    "TRANSCRIPT_TITLE_WORDS",
    "detect_chapters",
    "transcript_title",
]

#: Seconds into a chapter before its representative frame: a slide has finished drawing.
REPRESENTATIVE_DELAY_S = 1.0
#: Longest stretch (seconds) decoded at full rate to place one change: a transition that
#: seems longer (the old picture's last sample is older) is placed within its last seconds.
REFINE_MAX_S = 8.0
#: Words of a title taken from the transcript.
TRANSCRIPT_TITLE_WORDS = 8
#: Shares of the progress bar: sampling, placing the changes, then OCR.
_SAMPLING_SHARE, _REFINE_SHARE = 0.6, 0.1

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Sampled:
    """A video's samples taken elsewhere: (output seconds, HxW uint8 luma) in time order, as
    :meth:`workers.enrich.frames.Video.samples` gives them, with the video's duration and
    full picture size."""

    samples: Iterable[Sample]
    duration: float
    width: int
    height: int
    # change_score of two of them, known already (``detect_changes``' ``scorer``)
    scorer: Callable[[Sample, Sample], float] | None = None


def transcript_title(
    transcript: Transcript, start: float, end: float, words: int = TRANSCRIPT_TITLE_WORDS
) -> str:
    """The first sentence spoken in ``[start, end)``, cut to ``words`` words; "" if none."""
    text = " ".join(s.text.strip() for s in transcript.between(start, end)).strip()
    if not text:
        return ""
    first = _SENTENCE_END.split(text, maxsplit=1)[0]
    kept = first.split()[:words]
    return " ".join(kept).rstrip(".,;:!?-–— ")


def _refine(video: Video, change: Change) -> Change:
    start = max(change.before_t, change.after_t - REFINE_MAX_S)
    frames = [f for f in video.frames(start, change.after_t) if f[0] > change.before_t]
    when = locate_change(change.before, change.after, frames)
    if when is None:
        return change
    return Change(
        time=when,
        score=change.score,
        before_t=change.before_t,
        after_t=change.after_t,
        before=change.before,
        after=change.after,
    )


def _representative_time(start: float, end: float, settled: float | None) -> float:
    t = start + REPRESENTATIVE_DELAY_S
    if settled is not None:
        t = max(t, settled)
    return min(t, (start + end) / 2)


def _read(
    video: Video, start: float, end: float, settled: float | None
) -> tuple[ScreenText, float]:
    """OCR of the chapter's representative frame (of its middle too if that has no title),
    and the time of the frame read."""
    first = _representative_time(start, end, settled)
    text = read_screen(video.frame_at(first))
    middle = (start + end) / 2
    if not text.title and middle - first >= REPRESENTATIVE_DELAY_S:
        later = read_screen(video.frame_at(middle))
        if later.title:
            return later, middle
    return text, first


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"\w+", text.casefold()) if len(w) > 1}


def _more_screens(
    video: Video, start: float, end: float, read_at: float, first: str, candidates: list[float]
) -> tuple[Screen, ...]:
    """The chapter's text read again where it changed (:mod:`workers.enrich.screentext`):
    the frames that show at least ``MIN_NEW_WORDS`` words not shown before in it."""
    seen = _words(first)
    found: list[tuple[float, str]] = []
    for t in pick_times(candidates, start, end, read_at):
        text = read_screen(video.frame_at(t)).text
        new = _words(text) - seen
        if len(new) >= MIN_NEW_WORDS:
            found.append((round(t, 3), text))
            seen |= new
    if not found:
        return ()
    ends = [t for t, _ in found[1:]] + [round(end, 3)]
    return tuple(Screen(t, until, text) for (t, text), until in zip(found, ends, strict=True))


def detect_chapters(
    video: Path,
    *,
    transcript: Transcript | None = None,
    min_chapter_s: float = MIN_CHAPTER_S,
    sample_fps: float = SAMPLE_FPS,
    ocr: bool = True,
    progress: Callable[[float], None] | None = None,
    sampled: Sampled | None = None,
) -> list[Chapter]:
    """The chapters of the screen recording ``video`` (seconds on its clock), covering it.

    ``min_chapter_s``: shortest chapter in seconds (shorter ones merge into a neighbour).
    ``sample_fps``: samples per second where the video's keyframes are sparse.
    ``ocr=False`` skips the screen text (titles from the transcript, or "Chapter N").
    ``progress`` is called with 0..1. ``sampled``: the video's samples taken already (the
    segments' while the session recorded, ``workers.chapterparts``) with its duration and
    picture size; the file is then only read to place the changes and for OCR. Raises
    :class:`EnrichError` naming the file if it cannot be read, :class:`EnrichUnavailable`
    (before decoding anything) if OCR is asked for and tesseract is missing.
    """
    report = progress if progress is not None else (lambda _fraction: None)
    if ocr:
        check_ocr()
    report(0.0)
    index = None
    if sampled is not None:
        index = VideoIndex(duration=sampled.duration, keyframes=(), frames=0,
                           width=sampled.width, height=sampled.height, fps=None)  # fmt: skip
    with open_video(video, index) as clip:
        duration = clip.index.duration
        samples = (
            clip.samples(sample_fps, progress=lambda f: report(_SAMPLING_SHARE * f))
            if sampled is None
            else sampled.samples
        )
        watch = TextWatch()
        found = detect_changes(
            watch.observe(samples), scorer=sampled.scorer if sampled is not None else None
        )
        placed: list[Change] = []
        for k, change in enumerate(found):
            placed.append(_refine(clip, change))
            report(_SAMPLING_SHARE + _REFINE_SHARE * (k + 1) / len(found))
        kept = merge_short(placed, duration, min_chapter_s)
        settled = {c.time: c.after_t for c in kept}
        spans = chapter_spans([c.time for c in kept], duration)
        chapters: list[Chapter] = []
        done = _SAMPLING_SHARE + _REFINE_SHARE
        for n, (start, end) in enumerate(spans, start=1):
            screen, read_at = _read(clip, start, end, settled.get(start)) if ocr else (None, start)
            screens = (
                _more_screens(clip, start, end, read_at, screen.text, watch.times)
                if screen is not None
                else ()
            )
            title, source = "", "none"
            if screen is not None and screen.title:
                title, source = screen.title, "screen"
            elif transcript is not None:
                title = transcript_title(transcript, start, end)
                source = "transcript" if title else "none"
            if not title:
                title, source = f"Chapter {n}", "none"
            chapters.append(
                Chapter(
                    start=round(start, 3),
                    end=round(end, 3),
                    title=title,
                    title_source=source,
                    screen_text=screen.text if screen is not None else "",
                    screens=screens,
                )
            )
            report(done + (1.0 - done) * n / len(spans))
    return chapters
