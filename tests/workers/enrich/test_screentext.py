"""Where the text on screen changes within a chapter (pure: numpy samples in, times out):
a scroll or a new screenful is a candidate once the picture is still again; a clock, a
pointer or an unchanged screen is not; candidates are thinned per chapter."""

from __future__ import annotations

import numpy as np

from workers.enrich.scenes import text_change
from workers.enrich.screentext import (
    MAX_PER_CHAPTER,
    MIN_GAP_S,
    TextWatch,
    pick_times,
)

H, W = 180, 320
LINE_PX = 12


def page(offset: int = 0, seed: int = 1) -> np.ndarray:
    """A light screen of dark 'text' lines, scrolled up by ``offset`` lines."""
    rng = np.random.default_rng(seed)
    tall = np.full((H + 40 * LINE_PX, W), 235, np.uint8)
    for row in range(0, tall.shape[0] - LINE_PX, LINE_PX):
        ink = rng.random((LINE_PX // 2, W - 40)) < 0.35
        tall[row + 3 : row + 3 + LINE_PX // 2, 20:-20][ink] = 30
    return tall[offset * LINE_PX : offset * LINE_PX + H].copy()


def test_text_change_counts_a_scroll_and_ignores_a_small_change() -> None:
    assert text_change(page(), page()) == 0.0
    assert text_change(page(), page(3)) > 0.6  # every line moved: other text in place
    clock = page()
    clock[2:10, W - 40 : W - 2] = 0
    assert text_change(page(), clock) < 0.05


def test_a_scroll_is_a_candidate_once_the_picture_is_still() -> None:
    samples = [(0.0, page()), (2.0, page()), (4.0, page(1)), (6.0, page(3)), (8.0, page(3)),
               (10.0, page(3)), (12.0, page(3, seed=2)), (14.0, page(3, seed=2))]  # fmt: skip
    watch = TextWatch()
    passed = list(watch.observe(iter(samples)))
    assert [t for t, _ in passed] == [t for t, _ in samples]  # every sample goes on, in order
    # the scroll (4-6 s) settles at 6 s; the new screenful at 12 s
    assert watch.times == [6.0, 12.0]


def test_candidates_are_thinned_per_chapter() -> None:
    start, end, first = 10.0, 60.0, 11.0
    times = [11.5, 14.0, 16.0, 17.0, 22.0, 59.5, 61.0, 5.0]
    assert pick_times(times, start, end, first) == [16.0, 22.0]  # gap, end margin, bounds
    dense = [first + MIN_GAP_S * k for k in range(1, 30)]
    picked = pick_times(dense, 0.0, 1000.0, first)
    assert len(picked) == MAX_PER_CHAPTER and picked == sorted(picked)
    assert picked[0] == dense[0] and picked[-1] > dense[len(dense) // 2]  # spread over it
