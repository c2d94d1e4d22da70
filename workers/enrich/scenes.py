"""Where the picture of a screen recording really changes: slide changes and window switches.

General scene detectors score colour and brightness, which hardly move when one slide of a
deck follows another (same template, different words), while typing, a ticking clock, a
moving pointer and scrolling move them all the time. This module compares small grayscale
samples (a few hundred pixels wide, one every second or two) the way a person would:

* **What changed, relative to what is there.** Both pictures are cut into ``BLOCK_PX``
  blocks; a block *changed* when enough of its pixels moved by more than ``PIXEL_DELTA``
  gray levels, and it *has content* when its pixels span more than ``CONTENT_RANGE`` levels
  (text, icons, edges). The score is the fraction of relevant blocks (content in either
  picture, or changed) that changed, with at least ``MIN_RELEVANT_FRACTION`` of all blocks
  as the denominator so a pointer on an empty screen stays small. A new slide rewrites
  nearly all of its text (score near 1); typing, a clock or a pointer rewrite a few blocks.
* **Scrolling is a shift, not a change.** The vertical shift between the pictures is
  found from their row profiles (the mean of each row), and a pixel counts as changed only
  if it differs both in place and under that shift: a scrolled body matches its shifted
  self, a fixed title matches in place, and only the band of newly exposed lines changes.
* **A change persists.** A sample is compared against the picture ``WINDOW_S`` seconds
  before it (never before the last change), so a fade or a transition spread over several
  samples adds up to one change. Once the score passes ``CHANGE_SCORE``, the change ends at
  the first sample after which the picture holds still (next score under ``STILL_SCORE``),
  and it counts only if the new picture stays different from the old one for ``PERSIST_S``
  seconds: a flash or a popup that goes away is not a chapter.

Everything here is pure (numpy arrays in, numbers out) so the rules can be property-tested;
:mod:`workers.enrich.frames` samples the video, :mod:`workers.enrich.chaptering` puts the
two together.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "CHANGE_SCORE",
    "COMPARED_SPAN_S",
    "MIN_CHAPTER_S",
    "STILL_SCORE",
    "Change",
    "change_score",
    "chapter_spans",
    "detect_changes",
    "locate_change",
    "merge_short",
    "scroll_shift",
    "text_change",
]

#: Side of a comparison block, in pixels of the sample (8 px of a 320-px-wide sample is
#: about 50 px of a 1080p screen: a few characters of text).
BLOCK_PX = 8
#: Gray levels (0-255) a pixel must move by to count as changed: above H.264 noise on a
#: downscaled sample (2-4 levels), below the contrast of downscaled text (40-150).
PIXEL_DELTA = 24
#: Changed pixels that make a block changed (of 64): a pointer tip or a noisy edge is less.
BLOCK_MIN_CHANGED_PX = 4
#: Gray levels the mean of a flat block (no content in either picture) must move by to count
#: as changed: one background replacing another of another brightness (block means
#: average the coding noise away, so this can be lower than ``PIXEL_DELTA``).
FLAT_DELTA = 8
#: A block whose pixels span more gray levels than this has content (text, edges).
CONTENT_RANGE = 40
#: The score's denominator is never below this fraction of all blocks, so a change of a few
#: blocks on an almost empty screen (a pointer, a timecode) does not look like a new screen.
MIN_RELEVANT_FRACTION = 0.10
#: A score at or above this is a new picture (measured: slide changes of one template score
#: 0.75-1.0; typing, a clock, a pointer or a compensated scroll between samples 0.0-0.25).
CHANGE_SCORE = 0.5
#: Below this, two consecutive samples show the same settled picture.
STILL_SCORE = 0.3
#: A sample is compared with the picture up to this many seconds earlier: a fade or
#: transition shorter than this is one change.
WINDOW_S = 4.0
#: A transition is over within this many seconds of its first changed sample.
MAX_TRANSITION_S = 6.0
#: The new picture must stay different from the old one for this long (seconds).
PERSIST_S = 3.0
#: Largest vertical shift tried for scrolling, as a fraction of the sample's height.
MAX_SHIFT_FRACTION = 0.5
#: Gray levels from its block's background that make a pixel the core of a stroke: the ink
#: a scroll must explain (faint anti-aliased edges match the background under any shift).
INK_DELTA = 60
#: Pixels of new ink tried against every shift when looking for a scroll (evenly picked).
SHIFT_PROBE_PX = 600
#: Whole shifts (the best of the loose test) then tried at every fraction of a row.
SHIFT_CANDIDATES = 4
SHIFT_FRACTIONS = (0.0, 0.25, 0.5, 0.75)
#: A shift that explains at least this fraction of the changed rows of text is a scroll:
#: those rows, and the lines it brings into view, do not count as changed (measured on
#: 640x360 slides: slide changes 0-0.12, 0.26 where two slides share a line; scrolls
#: between samples 2 s apart, mid-scroll included, 0.5-0.7).
SCROLL_EXPLAINED = 0.4
#: A row is explained by a shift when at most this fraction of the pixels that differ in
#: place still differ after the shift (downscaled text moved by a fraction of a row never
#: matches exactly: 2-20 % of a row's pixels stay off).
ROW_RATIO = 0.5
#: A row of text: this many pixels of ink, and this fraction of the row changed in place.
ROW_MIN_INK_PX = 6
ROW_MIN_CHANGE = 0.05
#: Scores under this are returned as they are, without looking for a scroll (which can
#: only lower them): far under anything the decisions compare with.
SCROLL_CHECK_ABOVE = 0.15
#: Longest time between two samples :func:`detect_changes` compares with the default
#: windows (blips aside): the comparison window, the transition and the persistence check.
COMPARED_SPAN_S = WINDOW_S + MAX_TRANSITION_S + PERSIST_S
#: Default shortest chapter, seconds: shorter ones are merged into a neighbour.
MIN_CHAPTER_S = 10.0

Sample = tuple[float, np.ndarray]  # (seconds, HxW uint8 grayscale)


@dataclass(frozen=True, eq=False)  # pictures inside: equal only to itself
class Change:
    """One change of picture, found between two samples.

    ``time`` is the first sample that shows the new picture (or, once refined against the
    full frame rate, the first frame that does); ``before_t``/``after_t`` bound the
    transition: the last sample of the old picture and the first of the settled new one,
    which are kept as ``before``/``after``.
    """

    time: float
    score: float
    before_t: float
    after_t: float
    before: np.ndarray
    after: np.ndarray


def _unmatched_shifted(a16: np.ndarray, b16: np.ndarray, shift: float) -> np.ndarray:
    """Pixels of ``b`` more than ``PIXEL_DELTA`` away from ``a`` moved up by ``shift`` rows
    (a fractional shift interpolates between rows, as downscaling a scrolled screen does);
    rows with nothing to match are unmatched (newly exposed content)."""
    h = a16.shape[0]
    r = int(np.floor(shift))
    f = shift - r
    out = np.ones(a16.shape, bool)
    lo_y, hi_y = max(0, -r), min(h, h - r - 1)  # rows y of b with y+r and y+r+1 inside a
    if hi_y <= lo_y:
        return out
    upper = a16[lo_y + r : hi_y + r].astype(np.float32)
    lower = a16[lo_y + r + 1 : hi_y + r + 1]
    moved = upper * (1.0 - f) + lower * f
    out[lo_y:hi_y] = np.abs(b16[lo_y:hi_y] - moved) > PIXEL_DELTA
    return out


def _scrolled_rows(
    a16: np.ndarray, b16: np.ndarray, shift: float, in_place: np.ndarray
) -> np.ndarray:
    """Rows of ``b`` that ``a`` moved up by ``shift`` rows explains: at most
    ``ROW_RATIO`` as many of their pixels differ from the moved ``a`` as from ``a`` in
    place (``in_place``: that fraction per row)."""
    moved = _unmatched_shifted(a16, b16, shift).mean(axis=1)
    return moved <= ROW_RATIO * in_place


def _vblur(x: np.ndarray) -> np.ndarray:
    """``x`` (int16) blurred vertically by [1, 2, 1] / 4: text moved by a fraction of a row
    then matches its shifted self far better (downscaling is not linear interpolation)."""
    padded = np.concatenate((x[:1], x, x[-1:]))
    return (padded[:-2] + 2 * padded[1:-1] + padded[2:]) // 4


def scroll_shift(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """The vertical shift (rows, content moved up; never 0; in quarter rows) that best
    explains the change from ``a`` to ``b`` as a scroll, and the fraction it explains: of
    the rows of text of ``b`` that changed in place (``ROW_MIN_INK_PX`` pixels of ink,
    ``ROW_MIN_CHANGE`` of the row changed), those that the moved ``a`` matches much better
    (:func:`_scrolled_rows`). Whole rows of text rarely match another by coincidence;
    single pixels and blank rows match under any shift.

    Candidates: every whole shift up to ``MAX_SHIFT_FRACTION`` of the height is tried on at
    most ``SHIFT_PROBE_PX`` pixels of changed ink, loosely (a pixel between rows ``y+r`` and
    ``y+r+1`` of ``a`` matches); the ``SHIFT_CANDIDATES`` best are tried row by row at
    quarter-row steps, since a scroll rarely moves a whole number of sample rows. Rows are
    compared blurred vertically (:func:`_vblur`)."""
    a16 = _vblur(a.astype(np.int16))
    b16 = _vblur(b.astype(np.int16))
    h = a.shape[0]
    ink = _ink(b, INK_DELTA)
    changed = np.abs(a16 - b16) > PIXEL_DELTA
    in_place = changed.mean(axis=1)
    text_rows = (ink.sum(axis=1) >= ROW_MIN_INK_PX) & (in_place >= ROW_MIN_CHANGE)
    ys, xs = np.nonzero(changed & ink & text_rows[:, None])
    max_shift = min(int(h * MAX_SHIFT_FRACTION), h - 2)
    if ys.size == 0 or max_shift < 1:
        return 0.0, 0.0
    if ys.size > SHIFT_PROBE_PX:
        pick = np.linspace(0, ys.size - 1, SHIFT_PROBE_PX).astype(np.intp)
        ys, xs = ys[pick], xs[pick]
    whole = np.arange(-max_shift, max_shift + 1)
    rows = ys[None, :] + whole[:, None]
    inside = (rows >= 0) & (rows + 1 < h)
    rows = np.clip(rows, 0, h - 2)
    upper = a16[rows, xs[None, :]]
    lower = a16[rows + 1, xs[None, :]]
    value = b16[ys, xs][None, :]
    loose = inside & (value >= np.minimum(upper, lower) - PIXEL_DELTA)
    loose &= value <= np.maximum(upper, lower) + PIXEL_DELTA
    order = np.argsort(-loose.mean(axis=1), kind="stable")[:SHIFT_CANDIDATES]
    total = int(text_rows.sum())
    best_shift, best = 0.0, 0.0
    for r in whole[order]:
        for f in SHIFT_FRACTIONS:
            shift = float(r) + f
            if shift == 0.0:
                continue
            explained = _scrolled_rows(a16, b16, shift, in_place) & text_rows
            fraction = float(explained.sum()) / total
            if fraction > best:
                best_shift, best = shift, fraction
    return best_shift, best


def _ink(x: np.ndarray, delta: int = PIXEL_DELTA) -> np.ndarray:
    """Pixels that stand out (by more than ``delta``) from their block's median: text, lines,
    icons; the background of a block is not ink whatever its colour."""
    blocks = _blocks(x)
    median = np.median(blocks, axis=(1, 3)).astype(np.int16)
    ink = np.abs(blocks.astype(np.int16) - median[:, None, :, None]) > delta
    out = np.zeros(x.shape, bool)  # a partial block at the edge is no ink
    h, w = ink.shape[0] * BLOCK_PX, ink.shape[2] * BLOCK_PX
    out[:h, :w] = ink.reshape(h, w)
    return out


def _changed_pixels(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pixels that changed from ``a`` to ``b`` (bool HxW, both whole blocks in size), a scroll
    compensated: when one vertical shift explains most of the new ink (``SCROLL_EXPLAINED``),
    a pixel changed only if it differs both in place and under that shift, and the lines the
    scroll brings into view (next to the moved rows, one shift high) do not count."""
    a16 = a.astype(np.int16)
    b16 = b.astype(np.int16)
    changed = np.abs(a16 - b16) > PIXEL_DELTA
    if not changed.any():
        return changed
    shift, explained = scroll_shift(a, b)
    if explained < SCROLL_EXPLAINED:
        return changed
    a_soft, b_soft = _vblur(a16), _vblur(b16)
    in_place = (np.abs(a_soft - b_soft) > PIXEL_DELTA).mean(axis=1)
    scrolled = _scrolled_rows(a_soft, b_soft, shift, in_place)
    changed[scrolled] = False
    rows = np.flatnonzero(scrolled)
    if rows.size:
        margin = 2  # rows: the part of a row and the blur of downscaling
        span = int(np.ceil(abs(shift)))
        if shift > 0:  # content moved up: new lines appear below the moved ones
            lo, hi = int(rows.max()) + 1, int(rows.max()) + 1 + span + margin
        else:
            lo, hi = int(rows.min()) - span - margin, int(rows.min())
        changed[max(lo, 0) : max(hi, 0)] = False
    return changed


def _blocks(x: np.ndarray) -> np.ndarray:
    """``x`` (cropped to whole blocks) as (rows, BLOCK_PX, cols, BLOCK_PX)."""
    h = x.shape[0] - x.shape[0] % BLOCK_PX
    w = x.shape[1] - x.shape[1] % BLOCK_PX
    return x[:h, :w].reshape(h // BLOCK_PX, BLOCK_PX, w // BLOCK_PX, BLOCK_PX)


def _content(x: np.ndarray) -> np.ndarray:
    blocks = _blocks(x)
    span = blocks.max(axis=(1, 3)).astype(np.int16) - blocks.min(axis=(1, 3))
    return span > CONTENT_RANGE


def change_score(a: np.ndarray, b: np.ndarray) -> float:
    """How much of what is on screen changed from ``a`` to ``b`` (two HxW uint8 grayscale
    samples of one size), 0 (same picture) to 1 (all of it), scrolling compensated."""
    if a.shape != b.shape:
        raise ValueError(f"samples differ in size: {a.shape} and {b.shape}")
    h, w = a.shape[0] - a.shape[0] % BLOCK_PX, a.shape[1] - a.shape[1] % BLOCK_PX
    if h == 0 or w == 0:
        return 0.0 if np.array_equal(a, b) else 1.0
    a, b = a[:h, :w], b[:h, :w]
    content = _content(a) | _content(b)
    floor = MIN_RELEVANT_FRACTION * content.size
    # flat blocks (no content in either picture) whose level moved: a new background
    shade = np.abs(_blocks(a).mean(axis=(1, 3)) - _blocks(b).mean(axis=(1, 3))) > FLAT_DELTA
    shaded = shade & ~content

    def score(changed_px: np.ndarray) -> float:
        changed = _blocks(changed_px).sum(axis=(1, 3)) >= BLOCK_MIN_CHANGED_PX
        changed |= shaded
        return float(changed.sum()) / max(float((changed | content).sum()), floor, 1.0)

    in_place = np.abs(a.astype(np.int16) - b.astype(np.int16)) > PIXEL_DELTA
    raw = score(in_place)
    if raw < SCROLL_CHECK_ABOVE:
        return raw  # compensating a scroll can only lower it: not worth the search
    return score(_changed_pixels(a, b))


def text_change(a: np.ndarray, b: np.ndarray) -> float:
    """How much of the content of two samples (HxW uint8, one size) changed in place, 0..1:
    the share of blocks with content (in either) where enough pixels moved. Unlike
    :func:`change_score`, a scroll counts (``workers.enrich.screentext``: text that moved is
    other text on screen), and so does nothing on an empty screen."""
    moved = np.abs(a.astype(np.int16) - b.astype(np.int16)) > PIXEL_DELTA
    if not moved.any():
        return 0.0
    changed = _blocks(moved).sum(axis=(1, 3)) >= BLOCK_MIN_CHANGED_PX
    content = _content(a) | _content(b)
    return float((changed & content).sum()) / max(float(content.sum()), 1.0)


def _change_score(a: Sample, b: Sample) -> float:
    return change_score(a[1], b[1])


def locate_change(before: np.ndarray, after: np.ndarray, frames: Sequence[Sample]) -> float | None:
    """Time of the first of ``frames`` (in time order, all between the two pictures) that
    is closer to ``after`` than to ``before`` (mean absolute difference): the cut of a cut,
    the middle of a cross-fade. Bisection, so a transition of a hundred frames costs seven
    comparisons (frames before the change look like ``before``, frames after it like
    ``after``). None if no frame does."""
    b16 = before.astype(np.int16)
    a16 = after.astype(np.int16)

    def is_after(k: int) -> bool:
        frame = frames[k][1].astype(np.int16)
        return float(np.abs(frame - a16).mean()) < float(np.abs(frame - b16).mean())

    lo, hi = 0, len(frames)  # the answer is in [lo, hi]; hi = none of them
    while lo < hi:
        mid = (lo + hi) // 2
        if is_after(mid):
            hi = mid
        else:
            lo = mid + 1
    return frames[lo][0] if lo < len(frames) else None


class _Buffer:
    """Random access to a stream of samples, keeping only those still needed."""

    def __init__(self, samples: Iterable[Sample]) -> None:
        self._it: Iterator[Sample] = iter(samples)
        self._items: list[Sample] = []
        self._base = 0  # absolute index of self._items[0]
        self._done = False
        self._shape: tuple[int, ...] | None = None
        self._last_t = -np.inf

    def has(self, k: int) -> bool:
        while not self._done and k >= self._base + len(self._items):
            try:
                t, frame = next(self._it)
            except StopIteration:
                self._done = True
                break
            if self._shape is None:
                self._shape = frame.shape
            elif frame.shape != self._shape:
                raise ValueError(
                    f"sample at {t} s differs in size: {frame.shape}, earlier {self._shape}"
                )
            if t < self._last_t:
                raise ValueError(f"samples out of time order: {t} s after {self._last_t} s")
            self._last_t = t
            self._items.append((float(t), frame))
        return k < self._base + len(self._items)

    def __getitem__(self, k: int) -> Sample:
        if not self.has(k) or k < self._base:
            raise IndexError(k)
        return self._items[k - self._base]

    def drop_before(self, k: int) -> None:
        if k > self._base:
            del self._items[: k - self._base]
            self._base = k


def detect_changes(
    samples: Iterable[Sample],
    *,
    change_at: float = CHANGE_SCORE,
    still_below: float = STILL_SCORE,
    window_s: float = WINDOW_S,
    persist_s: float = PERSIST_S,
    max_transition_s: float = MAX_TRANSITION_S,
    scorer: Callable[[Sample, Sample], float] | None = None,
) -> list[Change]:
    """The persistent changes of picture in ``samples`` ((seconds, HxW uint8) in time order,
    all one size). Reads the samples once and keeps only a few seconds of them.

    ``scorer(earlier, later)``: :func:`change_score` of two samples' pictures, or the same
    number known already (scores computed while the session recorded). Every pair it is
    asked for lies within ``COMPARED_SPAN_S`` seconds of each other, but after a change that
    went away (a blip), whose samples are skipped."""
    scored = scorer if scorer is not None else _change_score
    buf = _Buffer(samples)
    changes: list[Change] = []
    last = 0  # first sample of the current picture: nothing before it is compared
    a = 0  # the sample compared with sample i
    blips: set[int] = set()  # samples of a picture that went away: never compared with
    i = 1
    while buf.has(i):
        t_i, f_i = buf[i]
        a = max(a, last)
        nxt = a + 1
        while nxt in blips:
            nxt += 1
        while nxt < i and t_i - buf[a][0] > window_s:
            a = nxt
            nxt += 1
            while nxt in blips:
                nxt += 1
        buf.drop_before(a)
        t_a, f_a = buf[a]
        score = scored(buf[a], buf[i])
        if score < change_at:
            i += 1
            continue
        j = i  # the transition lasts while consecutive samples still differ
        while buf.has(j + 1) and buf[j + 1][0] - t_i <= max_transition_s:
            if scored(buf[j], buf[j + 1]) < still_below:
                break
            j += 1
        t_j, f_j = buf[j]
        k = j + 1
        persists = True
        while buf.has(k) and buf[k][0] - t_j <= persist_s:
            if scored(buf[a], buf[k]) < change_at:
                persists = False
                break
            k += 1
        if not persists:
            blips.update(range(i, j + 1))
            i += 1
            continue
        between = [buf[m] for m in range(a + 1, j + 1)]
        when = locate_change(f_a, f_j, between)
        changes.append(
            Change(
                time=t_i if when is None else when,
                score=score,
                before_t=t_a,
                after_t=t_j,
                before=f_a.copy(),
                after=f_j.copy(),
            )
        )
        last = j
        i = j + 1
    return changes


def merge_short(
    changes: Sequence[Change], duration: float, min_chapter_s: float = MIN_CHAPTER_S
) -> list[Change]:
    """``changes`` (inside (0, duration)) with those that would make a chapter shorter than
    ``min_chapter_s`` removed, shortest chapter first.

    A short chapter loses the weaker of its two boundaries (lower score); when the picture
    after it is the picture before it (a glance at another window and back), it loses both.
    A video shorter than ``min_chapter_s`` is one chapter.
    """
    kept = sorted((c for c in changes if 0.0 < c.time < duration), key=lambda c: c.time)
    while kept:
        edges = [0.0, *(c.time for c in kept), duration]
        lengths = [edges[k + 1] - edges[k] for k in range(len(edges) - 1)]
        k = int(np.argmin(lengths))
        if lengths[k] >= min_chapter_s:
            break
        # chapter k starts with change k - 1 (none for the first) and ends with change k
        # (none for the last)
        if 0 < k < len(kept):
            left, right = kept[k - 1], kept[k]
            if change_score(left.before, right.after) < CHANGE_SCORE:
                del kept[k - 1 : k + 1]
                continue
            del kept[k - 1 if left.score < right.score else k]
        else:
            del kept[k - 1 if k > 0 else k]
    return kept


def chapter_spans(boundaries: Sequence[float], duration: float) -> list[tuple[float, float]]:
    """Consecutive spans ``[(start, end)]`` covering ``[0, duration]``, cut at
    ``boundaries`` (those outside ``(0, duration)`` and repeats are ignored)."""
    cuts = sorted({b for b in boundaries if 0.0 < b < duration})
    edges = [0.0, *cuts, max(duration, 0.0)]
    return [(edges[k], edges[k + 1]) for k in range(len(edges) - 1)]
