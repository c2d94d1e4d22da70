"""Where the text on screen changes within a chapter, so that it is read again.

A chapter's representative frame is read once (``workers.enrich.chaptering``), but within a
chapter a person may scroll a document or fill an editor: text they saw that the first
frame never had. The chapters' samples (small grayscale pictures, one every second or two)
are watched on their way to the scene detector (:class:`TextWatch`: nothing is decoded
twice), and a sample is a *candidate* when the screen's content changed in place
(``workers.enrich.scenes.text_change``: scrolling counts, unlike in the scene detector's
score, since moved text is other text on screen) by at least ``TEXT_CHANGE`` since the last
candidate, once the picture holds still again (the next sample differs by under
``STILL``: a scroll or a redraw has finished). Per chapter, candidates after its
representative frame are thinned to one per ``MIN_GAP_S`` and at most ``MAX_PER_CHAPTER``
(:func:`pick_times`), each read at full resolution, and kept when it shows at least
``MIN_NEW_WORDS`` words the chapter's screens had not shown yet. So a static slide costs
no extra OCR at all, and a long scrolled document at most ``MAX_PER_CHAPTER`` frames per
chapter.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final

import numpy as np

from workers.enrich.scenes import text_change

#: Fraction of the screen's content blocks changed in place since the last read that makes
#: a sample a candidate (a scroll of a few lines of text moves most of them; a clock, the
#: pointer or a typed word a few).
TEXT_CHANGE: Final = 0.3
#: Under this change between consecutive samples the picture holds still.
STILL: Final = 0.05
#: Seconds between two reads of one chapter, and after its representative frame.
MIN_GAP_S: Final = 4.0
#: Most extra frames read per chapter.
MAX_PER_CHAPTER: Final = 6
#: Words (tokens) a frame must show that the chapter's earlier screens did not.
MIN_NEW_WORDS: Final = 2
#: A candidate this close to the chapter's end (seconds) is the next chapter's transition.
END_MARGIN_S: Final = 1.0

Sample = tuple[float, np.ndarray]


class TextWatch:
    """Watches samples go by (:meth:`observe`) and notes the candidate times."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def observe(self, samples: Iterable[Sample]) -> Iterator[Sample]:
        ref: np.ndarray | None = None  # the picture at the last candidate
        prev: Sample | None = None
        moving = False
        for t, frame in samples:
            if ref is None:
                ref = frame.copy()
            elif prev is not None and moving:
                if text_change(prev[1], frame) < STILL:
                    self.times.append(prev[0])
                    ref, moving = prev[1], False
            elif text_change(ref, frame) >= TEXT_CHANGE:
                moving = True
            prev = (t, frame.copy())
            yield t, frame


def pick_times(candidates: list[float], start: float, end: float, first: float) -> list[float]:
    """The candidates of the chapter ``[start, end)`` to read, after its representative
    frame at ``first``: one per ``MIN_GAP_S``, at most ``MAX_PER_CHAPTER`` (spread over
    the chapter when there are more)."""
    picked: list[float] = []
    last = first
    for t in sorted(candidates):
        if start <= t < end - END_MARGIN_S and t - last >= MIN_GAP_S:
            picked.append(t)
            last = t
    if len(picked) > MAX_PER_CHAPTER:
        step = len(picked) / MAX_PER_CHAPTER
        picked = [picked[int(k * step)] for k in range(MAX_PER_CHAPTER)]
    return picked
