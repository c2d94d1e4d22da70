"""Is a decoded frame a duplicate of the last kept one? FFmpeg's mpdecimate rule, in numpy.

Screen recordings repeat the same picture for seconds at a time, but a lossy recorder never
repeats it bit for bit: every frame carries a little re-quantisation noise. mpdecimate's rule
tells noise from change: compare 8x8 blocks of luma, taken every 4 pixels (so a small change
that straddles a block edge still falls whole into one block); the frame is new if one block's
sum of absolute differences (SAD) exceeds ``DUP_HI``, or if more than ``DUP_FRAC`` of
``(w/16)*(h/16)`` blocks exceed ``DUP_LO``. A blinking 2-pixel text caret is a change; coding
noise over a whole still frame is not.

This runs on every decoded frame of a session (54,000 for 30 minutes at 30 fps), so it works
at full resolution with no rescaling and no allocation per frame: three byte-wide passes for
the absolute difference, three for the 4-row sums, one multiply that adds four 16-bit lanes
of a 64-bit word at once (the 4-column sums), and four adds of 4x4 cells into 8x8 blocks.
About 0.5 ms per 1080p frame on one core; swscale's area downscale alone costs twice that.
Only luma is compared (mpdecimate also compares chroma): on a screen a change of colour
without a change of brightness is rare, and it is caught as soon as anything else changes.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DUP_FRAC", "DUP_HI", "DUP_LO", "FrameDiff", "is_duplicate"]

#: mpdecimate's default thresholds: SAD of one 8x8 block of 8-bit luma (64 pixels).
DUP_HI = 64 * 12  # one block changed this much: the frame is new
DUP_LO = 64 * 5  # a block changed "a little"
DUP_FRAC = 0.33  # ...and this fraction of (w/16)*(h/16) such blocks make the frame new
CELL_PX = 4  # blocks are 2x2 cells of 4x4 pixels: 8x8 pixels at a 4-pixel stride

_LANES = np.uint64(0x0001_0001_0001_0001)  # multiplier that sums four 16-bit lanes into the top
_TOP_LANE_SHIFT = np.uint64(48)


class FrameDiff:
    """The duplicate test for one picture size, with its buffers reused frame after frame."""

    def __init__(self, height: int, width: int) -> None:
        if height < 1 or width < 1:
            raise ValueError(f"picture size must be positive, got {width}x{height}")
        # whole 4x4 cells only; the width also has to fill whole 64-bit words of 16-bit sums
        self.height = height - height % CELL_PX
        self.width = width - width % CELL_PX
        rows, cols = self.height // CELL_PX, self.width // CELL_PX
        self._high = np.empty((self.height, self.width), np.uint8)
        self._low = np.empty((self.height, self.width), np.uint8)
        self._row_sums = np.empty((rows, self.width), np.uint16)
        self._lanes = np.empty((rows, cols), np.uint64)
        self._cells = np.empty((rows, cols), np.uint16)
        self._blocks = np.empty((max(0, rows - 1), max(0, cols - 1)), np.uint16)
        self.max_small_changes = (width // 16) * (height // 16) * DUP_FRAC

    def block_sads(self, ref: np.ndarray, cur: np.ndarray) -> np.ndarray:
        """SAD of every 8x8 block at a 4-pixel stride (a view into a reused buffer)."""
        if ref.shape != cur.shape:
            raise ValueError(f"planes differ in size: {ref.shape} and {cur.shape}")
        a = ref[: self.height, : self.width]
        b = cur[: self.height, : self.width]
        diff = self._high
        # |a - b| in uint8 without widening: max - min never wraps
        np.maximum(a, b, out=diff)
        np.minimum(a, b, out=self._low)
        np.subtract(diff, self._low, out=diff)
        sums = self._row_sums
        np.add(diff[0::4], diff[1::4], out=sums, dtype=np.uint16)
        np.add(sums, diff[2::4], out=sums)
        np.add(sums, diff[3::4], out=sums)
        # each uint64 holds four neighbouring column sums (<= 1020 each); multiplying by
        # 1+2^16+2^32+2^48 puts their total in the top 16 bits, with no carry from below
        np.multiply(sums.view(np.uint64), _LANES, out=self._lanes)
        # 4x4 cell sums are <= 4080 and 8x8 block sums <= 16320: 16 bits hold them
        np.right_shift(self._lanes, _TOP_LANE_SHIFT, out=self._cells, casting="unsafe")
        cells, blocks = self._cells, self._blocks
        if blocks.size:
            np.add(cells[:-1, :-1], cells[1:, :-1], out=blocks)
            np.add(blocks, cells[:-1, 1:], out=blocks)
            np.add(blocks, cells[1:, 1:], out=blocks)
        return blocks

    def is_duplicate(self, ref: np.ndarray, cur: np.ndarray) -> bool:
        """Whether luma plane ``cur`` shows nothing new next to ``ref`` (the last kept frame)."""
        blocks = self.block_sads(ref, cur)
        if blocks.size == 0:  # smaller than one block: only an exact repeat is a duplicate
            return bool(np.array_equal(ref, cur))
        if int(blocks.max()) > DUP_HI:
            return False
        return int(np.count_nonzero(blocks > DUP_LO)) <= self.max_small_changes


def is_duplicate(ref: np.ndarray, cur: np.ndarray) -> bool:
    """One-off form of :meth:`FrameDiff.is_duplicate` for two 8-bit luma planes."""
    return FrameDiff(*cur.shape).is_duplicate(ref, cur)
