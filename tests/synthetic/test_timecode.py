"""The timecode strip: what the screen paints is what the reader reads."""

from __future__ import annotations

import numpy as np
import pytest

from synthetic.screen import Scene
from synthetic.timecode import (
    TIMECODE_BITS,
    TIMECODE_BLOCK_PX,
    TIMECODE_STRIP_WIDTH_PX,
    TIMECODE_UNIT_SECONDS,
    read_timecode,
    timecode_strip,
)


def test_read_timecode_of_hand_made_bits() -> None:
    value = 0b1011_0010_0111_0101  # 45685 -> 456.85 s
    gray = np.full((20, 200), 100, np.uint8)
    for i in range(TIMECODE_BITS):
        bit = (value >> (TIMECODE_BITS - 1 - i)) & 1
        gray[:TIMECODE_BLOCK_PX, i * TIMECODE_BLOCK_PX : (i + 1) * TIMECODE_BLOCK_PX] = 255 * bit
    assert read_timecode(gray) == pytest.approx(456.85)
    assert read_timecode(np.repeat(gray[..., None], 3, axis=2)) == pytest.approx(456.85)
    with pytest.raises(ValueError, match="timecode strip"):
        read_timecode(np.zeros((8, 100), np.uint8))


@pytest.mark.parametrize("t", [0.0, 0.01, 1.5, 59.99, 123.45, 655.35])
def test_strip_round_trip(t: float) -> None:
    frame = np.zeros((TIMECODE_BLOCK_PX, TIMECODE_STRIP_WIDTH_PX), np.uint8)
    frame[:] = timecode_strip(t)[None, :]
    assert read_timecode(frame) == pytest.approx(t)


def test_counter_wraps() -> None:
    wrap = (1 << TIMECODE_BITS) * TIMECODE_UNIT_SECONDS
    frame = np.repeat(timecode_strip(wrap + 1.0)[None, :], TIMECODE_BLOCK_PX, axis=0)
    assert read_timecode(frame) == pytest.approx(1.0)


def test_scene_frames_carry_their_time() -> None:
    scene = Scene(160, 96, 5.0, seed=3)
    for t in (0.0, 0.5, 2.0, 4.9, 1.0):  # going back in time replays the scene
        frame = scene.render(t)
        assert frame.shape == (96, 160, 3) and frame.dtype == np.uint8
        assert read_timecode(frame) == pytest.approx(t)
