"""The slide scene: deterministic, the timecode strip in its corner, activity confined to a
small part of the screen (a scroll to the body), slides told apart by their words."""

from __future__ import annotations

import time

import numpy as np
import pytest

from synthetic.lecture import DEMO_LECTURE, Lecture, Slide
from synthetic.slides import (
    BACKGROUND,
    BODY_TOP,
    SlideScene,
    random_lecture,
)
from synthetic.timecode import read_timecode

W, H = 640, 360


def changed_fraction(a: np.ndarray, b: np.ndarray) -> float:
    return float((np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2) > 24).mean())


def rows_changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.flatnonzero((np.abs(a.astype(np.int16) - b.astype(np.int16)) > 24).any(axis=(1, 2)))


def without_pointer(lecture: Lecture, t: float) -> np.ndarray:
    """The frame at ``t`` with the pointer parked in a corner."""
    scene = SlideScene(lecture, W, H, seed=1)
    scene.cursor.draw = lambda out, t: None  # type: ignore[method-assign]
    return scene.render(t).copy()


def test_deterministic_and_seeded() -> None:
    a, b = SlideScene(DEMO_LECTURE, W, H, 3), SlideScene(DEMO_LECTURE, W, H, 3)
    c = SlideScene(DEMO_LECTURE, W, H, 4)
    for t in (0.5, 9.3, 17.0, 41.2, 59.9):
        fa = a.render(t).copy()
        assert np.array_equal(fa, b.render(t))
        assert fa.shape == (H, W, 3) and fa.dtype == np.uint8
    assert any(
        not np.array_equal(a.render(t), c.render(t)) for t in (5.0, 12.0, 25.0, 50.0)
    )  # the pointer wanders elsewhere


def test_timecode_strip_reads_back_and_time_may_go_backwards() -> None:
    scene = SlideScene(DEMO_LECTURE, W, H, 0)
    for t in (0.0, 12.34, 55.5, 3.0):
        assert read_timecode(scene.render(t)) == pytest.approx(t, abs=0.006)


def test_each_slide_shows_its_title_in_its_own_words() -> None:
    first, second = without_pointer(DEMO_LECTURE, 8.0), without_pointer(DEMO_LECTURE, 20.0)
    # same template (background), different words: title and body rows change
    assert tuple(first[H - 2, W // 2]) == BACKGROUND
    assert tuple(second[H - 2, W // 2]) == BACKGROUND
    title_rows = slice(round(0.08 * H), round(0.2 * H))
    assert changed_fraction(first[title_rows], second[title_rows]) > 0.02


@pytest.mark.parametrize(
    ("activity", "t0", "t1", "at_most"),
    [
        ("typing", 4.0, 6.0, 0.01),
        ("clock", 20.0, 21.0, 0.01),
        ("pointer", 26.0, 29.0, 0.01),
    ],
)
def test_activity_changes_a_small_area(activity: str, t0: float, t1: float, at_most: float) -> None:
    scene = SlideScene(DEMO_LECTURE, W, H, seed=7)
    a = scene.render(t0).copy()
    b = scene.render(t1).copy()
    assert 0.0 < changed_fraction(a[8:], b[8:]) <= at_most  # below the timecode strip


def test_typing_reveals_characters_over_time() -> None:
    counts = [
        int((np.abs(without_pointer(DEMO_LECTURE, t).astype(int) - BACKGROUND).sum(2) > 60).sum())
        for t in (1.0, 3.0, 5.0, 8.0)
    ]
    assert counts == sorted(counts) and counts[0] < counts[-1]


def test_scroll_moves_only_the_body() -> None:
    before, after = without_pointer(DEMO_LECTURE, 39.0), without_pointer(DEMO_LECTURE, 44.0)
    rows = rows_changed(before[8:], after[8:]) + 8
    assert rows.size > 0 and rows.min() >= round(BODY_TOP * H)  # the title stayed


def test_transition_cross_fades() -> None:
    lecture = Lecture(
        20.0, (Slide(0.0, "First Slide", ("one",)), Slide(10.0, "Second Slide", ("two",))), ()
    )
    scene = SlideScene(lecture, W, H, 0, transition_s=2.0)
    scene.cursor.draw = lambda out, t: None  # type: ignore[method-assign]
    old, mid, new = (scene.render(t).astype(np.int16).copy() for t in (9.9, 11.0, 12.5))
    region = (slice(30, 70), slice(30, 300))
    assert np.abs(mid - (old + new) / 2)[region].max() <= 2


def test_random_lecture_is_varied_and_covers_its_duration() -> None:
    lecture = random_lecture(600.0, 3, mean_slide_s=30.0)
    titles = [s.title for s in lecture.slides]
    assert len(set(titles)) == len(titles) >= 10
    assert lecture.slides[0].start == 0.0 and lecture.slides[-1].start < 600.0
    assert {a for s in lecture.slides for a in s.activity} == {"typing", "clock", "scroll"}
    gaps = np.diff([s.start for s in lecture.slides])
    assert gaps.min() >= 0.4 * 30.0 - 1e-6
    assert random_lecture(600.0, 3, mean_slide_s=30.0) == lecture


def test_render_is_cheap_at_1080p() -> None:
    scene = SlideScene(random_lecture(60.0, 1, mean_slide_s=20.0), 1920, 1080, 0)
    scene.render(0.0)
    start = time.perf_counter()
    for n in range(60):
        scene.render(n / 1.0)
    per_frame = (time.perf_counter() - start) / 60
    assert per_frame < 0.05  # measured about 2 ms (a slide is drawn once, then copied)
