"""Scene changes of screen content, on synthetic sample sequences (pure: no video here).

Samples are 180x320 grayscale pictures like the sampler's: lines of text-like marks on a
light background. A new slide of the same template must be one change; typing, a ticking
clock, a wandering pointer and scrolling must be none; a fade is one change; a blip is none.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workers.enrich.scenes import (
    CHANGE_SCORE,
    Change,
    change_score,
    chapter_spans,
    detect_changes,
    locate_change,
    merge_short,
    scroll_shift,
)

H, W = 180, 320
BG = 240
LINE_PITCH = 15  # rows
BODY_TOP = 50


def text_line(rng: np.random.Generator, width: int, height: int = 7) -> np.ndarray:
    """One line of text-like marks: words of glyph stripes, dark on the background."""
    line = np.full((height, width), BG, np.uint8)
    x = 0
    while x < width - 12:
        word = int(rng.integers(3, 9))
        for _ in range(word):
            glyph = int(rng.integers(2, 4))
            top = int(rng.integers(0, 3))
            if x + glyph >= width:
                break
            line[top:height, x : x + glyph] = int(rng.integers(30, 90))
            x += glyph + 1
        x += 4
        if rng.random() < 0.15:
            break
    return line


def page(seed: int, lines: int = 25) -> np.ndarray:
    """A tall body of ``lines`` text lines (to scroll through)."""
    rng = np.random.default_rng(seed)
    body = np.full((lines * LINE_PITCH, W - 40), BG, np.uint8)
    for k in range(lines):
        width = int(rng.integers(120, W - 40))
        body[k * LINE_PITCH : k * LINE_PITCH + 7, :width] = text_line(rng, width)
    return body


def slide(seed: int, scroll: int = 0) -> np.ndarray:
    """A slide of one template: a large title line and a body, scrolled by ``scroll`` rows."""
    rng = np.random.default_rng(seed + 10_000)
    out = np.full((H, W), BG, np.uint8)
    title = text_line(rng, 200, 14)
    out[15:29, 20:220] = title
    out[38:40, 20 : W - 20] = 150  # the rule under the title
    body = page(seed)
    view = body[scroll : scroll + H - BODY_TOP - 10]
    out[BODY_TOP : BODY_TOP + view.shape[0], 20 : W - 20] = view
    return out


def noisy(frame: np.ndarray, seed: int) -> np.ndarray:
    """Coding noise of a few gray levels, as after H.264."""
    rng = np.random.default_rng(seed)
    return np.clip(frame.astype(np.int16) + rng.integers(-3, 4, frame.shape), 0, 255).astype(
        np.uint8
    )


def pointer(frame: np.ndarray, t: float) -> np.ndarray:
    out = frame.copy()
    x = int(40 + 110 * (1 + np.sin(t / 3.0)))
    y = int(60 + 50 * (1 + np.cos(t / 2.0)))
    for r in range(8):
        out[y + r, x : x + max(1, r // 2 + 1)] = 255
    return out


def sequence(picture, duration: float, fps: float = 1.0) -> list[tuple[float, np.ndarray]]:
    """Samples of ``picture(t)`` every ``1/fps`` seconds, with noise and a pointer."""
    n = int(duration * fps)
    return [(k / fps, pointer(noisy(picture(k / fps), k), k / fps)) for k in range(n)]


def times(changes: list[Change]) -> list[float]:
    return [round(c.time, 3) for c in changes]


def test_slide_change_is_one_change_and_scores_high() -> None:
    assert change_score(slide(1), slide(2)) >= 0.7
    assert change_score(slide(1), noisy(slide(1), 0)) == 0.0
    seq = sequence(lambda t: slide(1) if t < 12 else slide(2), 30)
    assert times(detect_changes(seq)) == [12.0]


def test_typing_is_no_change() -> None:
    typed = text_line(np.random.default_rng(5), W - 60)

    def picture(t: float) -> np.ndarray:
        out = slide(3)
        shown = min(W - 60, int(t * 12))  # about 2 characters a second at this scale
        out[150:157, 20 : 20 + shown] = typed[:, :shown]
        return out

    seq = sequence(picture, 40)
    assert max(change_score(a, b) for (_, a), (_, b) in zip(seq, seq[1:], strict=False)) < 0.3
    assert detect_changes(seq) == []


def test_ticking_clock_and_pointer_are_no_change() -> None:
    rng = np.random.default_rng(7)
    digits = [text_line(rng, 40, 9) for _ in range(10)]

    def picture(t: float) -> np.ndarray:
        out = slide(4)
        out[165:174, 270:310] = digits[int(t) % 10]
        return out

    assert detect_changes(sequence(picture, 30)) == []


def test_scroll_is_no_change() -> None:
    # three lines every few seconds, smoothly, with sub-row positions as downscaling gives
    def picture(t: float) -> np.ndarray:
        rows = 0.0
        for start in (5.0, 15.0, 25.0):
            u = min(max((t - start) / 3.0, 0.0), 1.0)
            rows += 3 * LINE_PITCH * u * u * (3 - 2 * u)
        lo = int(rows)
        frac = rows - lo
        a = slide(5, lo).astype(np.float32)
        b = slide(5, lo + 1).astype(np.float32)
        return ((1 - frac) * a + frac * b).astype(np.uint8)

    seq = sequence(picture, 35, fps=0.5)  # keyframe sampling: 2 s apart, the worst case
    assert detect_changes(seq) == []
    shift, explained = scroll_shift(picture(6.0), picture(8.0))
    assert shift > 0 and explained > 0.5


def test_fade_is_one_change_placed_in_its_middle() -> None:
    a, b = slide(6).astype(np.float32), slide(7).astype(np.float32)

    def picture(t: float) -> np.ndarray:
        u = min(max((t - 10.0) / 4.0, 0.0), 1.0)  # a 4-second cross-fade from 10 s
        return ((1 - u) * a + u * b).astype(np.uint8)

    found = detect_changes(sequence(picture, 30))
    assert len(found) == 1
    assert 11.0 <= found[0].time <= 13.0
    frames = [(10.0 + k / 10, picture(10.0 + k / 10)) for k in range(1, 40)]
    middle = locate_change(found[0].before, found[0].after, frames)
    assert middle is not None and abs(middle - 12.0) <= 0.3


def test_a_blip_is_no_change() -> None:
    seq = sequence(lambda t: slide(9) if 10 <= t < 11 else slide(8), 30)
    assert detect_changes(seq) == []


def test_locate_change_finds_the_cut() -> None:
    frames = [(k / 15, slide(1) if k < 23 else slide(2)) for k in range(30)]
    assert locate_change(slide(1), slide(2), frames) == pytest.approx(23 / 15)
    assert locate_change(slide(1), slide(2), frames[:20]) is None


def test_glance_at_another_window_and_back_is_merged_away() -> None:
    seq = sequence(lambda t: slide(11) if 20 <= t < 26 else slide(10), 50)
    found = detect_changes(seq)
    assert times(found) == [20.0, 26.0]
    assert merge_short(found, 50.0, 10.0) == []


def test_short_chapter_loses_its_weaker_boundary() -> None:
    a, b, c = slide(1), slide(2), slide(3)
    strong = Change(20.0, 0.9, 19.0, 20.0, a, b)
    weak = Change(25.0, 0.6, 24.0, 25.0, b, c)
    assert merge_short([strong, weak], 60.0, 10.0) == [strong]
    assert merge_short([strong, weak], 60.0, 4.0) == [strong, weak]


def test_samples_must_be_in_order_and_one_size() -> None:
    with pytest.raises(ValueError, match="order"):
        detect_changes([(1.0, slide(1)), (0.5, slide(1))])
    with pytest.raises(ValueError, match="size"):
        detect_changes([(0.0, slide(1)), (1.0, slide(1)[:100])])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=6, max_value=25), min_size=1, max_size=5))
def test_every_slide_change_is_found_at_its_sample(lengths: list[int]) -> None:
    starts = np.cumsum([0, *lengths[:-1]])
    duration = int(sum(lengths))

    def picture(t: float) -> np.ndarray:
        return slide(100 + int(np.searchsorted(starts, t, side="right")))

    found = detect_changes(sequence(picture, duration))
    assert times(found) == [float(s) for s in starts[1:]]


change_lists = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=200.0, allow_nan=False),
        st.floats(min_value=0.0, max_value=1.0, allow_nan=False),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(
    change_lists,
    st.floats(min_value=0.0, max_value=200.0, allow_nan=False),
    st.floats(min_value=0.0, max_value=60.0, allow_nan=False),
)
def test_merged_chapters_cover_the_video_and_none_is_short(
    raw: list[tuple[float, float]], duration: float, min_s: float
) -> None:
    pictures = [slide(1), slide(2)]
    changes = [
        Change(t, s, t, t, pictures[k % 2], pictures[(k + 1) % 2]) for k, (t, s) in enumerate(raw)
    ]
    kept = merge_short(changes, duration, min_s)
    spans = chapter_spans([c.time for c in kept], duration)
    assert spans[0][0] == 0.0 and spans[-1][1] == max(duration, 0.0)
    assert all(spans[k][1] == spans[k + 1][0] for k in range(len(spans) - 1))
    assert all(start < end for start, end in spans) or len(spans) == 1
    if len(spans) > 1:
        assert all(end - start >= min_s for start, end in spans)
    assert CHANGE_SCORE > 0


@given(
    st.lists(st.floats(min_value=-10, max_value=110, allow_nan=False), max_size=20),
    st.floats(min_value=0.0, max_value=100.0, allow_nan=False),
)
def test_spans_cover_zero_to_duration(boundaries: list[float], duration: float) -> None:
    spans = chapter_spans(boundaries, duration)
    assert spans[0][0] == 0.0 and spans[-1][1] == duration
    assert all(a < b for a, b in spans) or spans == [(0.0, 0.0)]
    assert all(spans[k][1] == spans[k + 1][0] for k in range(len(spans) - 1))
