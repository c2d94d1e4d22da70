"""The duplicate-frame test: mpdecimate's rule on full-resolution luma (pure numpy)."""

from __future__ import annotations

import numpy as np
import pytest

from workers.media.framediff import DUP_HI, DUP_LO, FrameDiff, is_duplicate

RNG_SEED = 11
FULL_HD = (1080, 1920)


def reference_block_sads(ref: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """SAD of every 8x8 block at a 4-pixel stride, the slow and obvious way."""
    diff = np.abs(ref.astype(np.int64) - cur.astype(np.int64))
    height, width = diff.shape
    rows = range(0, height - height % 4 - 7, 4)
    cols = range(0, width - width % 4 - 7, 4)
    return np.array([[diff[y : y + 8, x : x + 8].sum() for x in cols] for y in rows])


def screen(shape: tuple[int, int], seed: int = RNG_SEED) -> np.ndarray:
    """A still "screen": flat background with text-like rows of random glyph pixels."""
    rng = np.random.default_rng(seed)
    plane = np.full(shape, 235, np.uint8)
    for top in range(8, shape[0] - 12, 22):
        plane[top : top + 10] = rng.choice(np.array([16, 235], np.uint8), (10, shape[1]))
    return plane


def with_noise(plane: np.ndarray, amplitude: int, seed: int) -> np.ndarray:
    """``plane`` plus zero-mean coding noise of at most ``amplitude`` levels per pixel."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(-amplitude, amplitude + 1, plane.shape)
    return np.clip(plane.astype(np.int16) + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("shape", [(16, 16), (37, 61), (90, 160), (120, 203)])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_block_sads_match_the_definition(shape: tuple[int, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, 256, shape, dtype=np.uint8)
    cur = rng.integers(0, 256, shape, dtype=np.uint8)  # extremes: sums up to 64 * 255
    expected = reference_block_sads(ref, cur)
    got = FrameDiff(*shape).block_sads(ref, cur)
    assert got.shape == expected.shape
    assert np.array_equal(got, expected)
    assert int(got.max()) > DUP_HI  # random pictures are, of course, different


def test_block_sads_of_a_strided_view_like_a_decoded_plane() -> None:
    # decoded planes are views with padded rows (line size > width)
    rng = np.random.default_rng(5)
    padded_ref = rng.integers(0, 256, (48, 96), dtype=np.uint8)
    padded_cur = rng.integers(0, 256, (48, 96), dtype=np.uint8)
    ref, cur = padded_ref[:, :70], padded_cur[:, :70]
    assert np.array_equal(FrameDiff(48, 70).block_sads(ref, cur), reference_block_sads(ref, cur))


def test_buffers_are_reused_without_leaking_one_frame_into_the_next() -> None:
    diff = FrameDiff(*FULL_HD)
    still = screen(FULL_HD)
    changed = still.copy()
    changed[500:518, 900:902] = 16  # a caret
    assert not diff.is_duplicate(still, changed)
    assert diff.is_duplicate(still, still)
    assert not diff.is_duplicate(changed, still)


def test_coding_noise_is_not_a_change() -> None:
    still = screen(FULL_HD)
    # +-2 levels everywhere: mean |noise| is 1.2, about 77 per 8x8 block, under DUP_LO
    assert is_duplicate(still, with_noise(still, 2, seed=1))


@pytest.mark.parametrize("x", [900, 901, 902, 903])  # every phase against the 4-pixel grid
def test_a_two_pixel_caret_is_a_change(x: int) -> None:
    still = screen(FULL_HD)
    noisy = with_noise(still, 1, seed=2)
    caret = noisy.copy()
    caret[500:518, x : x + 2] = 16  # 2 x 18 pixels, white to near-black
    assert not is_duplicate(noisy, caret)
    assert not is_duplicate(caret, noisy)  # and disappearing again


def test_a_faint_change_counts_only_when_it_covers_enough_blocks() -> None:
    still = np.full(FULL_HD, 128, np.uint8)
    faint = still.copy()
    faint[:64, :64] += 6  # 6 levels over 64 pixels = 384 per block: above DUP_LO, under DUP_HI
    assert DUP_LO < 6 * 64 <= DUP_HI
    assert is_duplicate(still, faint)  # a few faintly changed blocks: noise
    dimmed = still + np.uint8(6)  # the whole screen fades a little: a change
    assert not is_duplicate(still, dimmed)


def test_a_picture_smaller_than_one_block_compares_exactly() -> None:
    tiny = np.zeros((6, 6), np.uint8)
    other = tiny.copy()
    other[3, 3] = 1
    assert is_duplicate(tiny, tiny.copy())
    assert not is_duplicate(tiny, other)


def test_planes_of_different_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="differ in size"):
        FrameDiff(16, 16).block_sads(np.zeros((16, 16), np.uint8), np.zeros((16, 20), np.uint8))
