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

import os
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
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
#: Frames OCR'd at once: tesseract runs as one single-threaded process per frame (about a
#: second per 1080p frame here), so the chapters' frames are read side by side, one per
#: core; at most 4, since an enrich worker runs several stages at once.
OCR_THREADS = max(1, min(4, os.cpu_count() or 1))
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


class _Reader:
    """OCR of many frames of one video: decoded one after another (the video is read by one
    thread), read by tesseract ``threads`` at a time (each read is a tesseract process of
    its own, about a second per 1080p frame, and the chapters' frames are independent), at
    most ``2 * threads`` decoded frames held at once. The answers are those of reading the
    frames one by one, in the order asked."""

    def __init__(self, video: Video, threads: int) -> None:
        self.video = video
        self.threads = max(1, threads)
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="ocr")

    def read(self, times: list[float]) -> list[ScreenText]:
        texts: list[ScreenText] = []
        batch = 2 * self.threads
        for at in range(0, len(times), batch):
            frames = [self.video.frame_at(t) for t in times[at : at + batch]]
            texts.extend(self._pool.map(read_screen, frames))
        return texts

    def close(self) -> None:
        self._pool.shutdown()


def _read_all(
    reader: _Reader, spans: list[tuple[float, float]], settled: dict[float, float]
) -> list[tuple[ScreenText, float]]:
    """Each chapter's OCR of its representative frame (of its middle too if that has no
    title), and the time of the frame read."""
    firsts = [_representative_time(start, end, settled.get(start)) for start, end in spans]
    read = list(zip(reader.read(firsts), firsts, strict=True))
    middles = {
        k: (start + end) / 2
        for k, ((start, end), (text, first)) in enumerate(zip(spans, read, strict=True))
        if not text.title and (start + end) / 2 - first >= REPRESENTATIVE_DELAY_S
    }
    for k, later in zip(middles, reader.read(list(middles.values())), strict=True):
        if later.title:
            read[k] = (later, middles[k])
    return read


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"\w+", text.casefold()) if len(w) > 1}


def _more_screens_all(
    reader: _Reader,
    spans: list[tuple[float, float]],
    read: list[tuple[ScreenText, float]],
    candidates: list[float],
) -> list[tuple[Screen, ...]]:
    """Each chapter's text read again where it changed (:mod:`workers.enrich.screentext`):
    the frames that show at least ``MIN_NEW_WORDS`` words not shown before in it."""
    picked = [
        pick_times(candidates, start, end, read_at)
        for (start, end), (_, read_at) in zip(spans, read, strict=True)
    ]
    texts = iter(reader.read([t for times in picked for t in times]))
    screens: list[tuple[Screen, ...]] = []
    for (_, end), (first, _), times in zip(spans, read, picked, strict=True):
        seen = _words(first.text)
        found: list[tuple[float, str]] = []
        for t in times:
            text = next(texts).text
            new = _words(text) - seen
            if len(new) >= MIN_NEW_WORDS:
                found.append((round(t, 3), text))
                seen |= new
        ends = [t for t, _ in found[1:]] + [round(end, 3)] if found else []
        screens.append(
            tuple(Screen(t, until, text) for (t, text), until in zip(found, ends, strict=True))
        )
    return screens


def detect_chapters(
    video: Path,
    *,
    transcript: Transcript | None = None,
    min_chapter_s: float = MIN_CHAPTER_S,
    sample_fps: float = SAMPLE_FPS,
    ocr: bool = True,
    progress: Callable[[float], None] | None = None,
    sampled: Sampled | None = None,
    ocr_threads: int = OCR_THREADS,
) -> list[Chapter]:
    """The chapters of the screen recording ``video`` (seconds on its clock), covering it.

    ``min_chapter_s``: shortest chapter in seconds (shorter ones merge into a neighbour).
    ``sample_fps``: samples per second where the video's keyframes are sparse.
    ``ocr=False`` skips the screen text (titles from the transcript, or "Chapter N").
    ``progress`` is called with 0..1. ``sampled``: the video's samples taken already (the
    segments' while the session recorded, ``workers.chapterparts``) with its duration and
    picture size; the file is then only read to place the changes and for OCR.
    ``ocr_threads``: frames read by tesseract at once (the same answers for any number). Raises
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
        done = _SAMPLING_SHARE + _REFINE_SHARE
        read: list[tuple[ScreenText, float]] | None = None
        screens: list[tuple[Screen, ...]] = [()] * len(spans)
        if ocr:
            reader = _Reader(clip, ocr_threads)
            try:
                read = _read_all(reader, spans, settled)
                report(done + (1.0 - done) / 2)
                screens = _more_screens_all(reader, spans, read, watch.times)
            finally:
                reader.close()
        chapters: list[Chapter] = []
        for n, (start, end) in enumerate(spans, start=1):
            screen = read[n - 1][0] if read is not None else None
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
                    screens=screens[n - 1],
                )
            )
        report(1.0)
    return chapters
