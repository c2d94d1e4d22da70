"""The timecode strip burnt into every synthetic screen frame: its format and its reader.

The top-left corner of a frame holds ``TIMECODE_BITS`` (16) blocks of ``TIMECODE_BLOCK_PX``
(8x8) pixels, black = 0, white = 1, encoding the frame's session time in units of
``TIMECODE_UNIT_SECONDS`` (10 ms) as an unsigned binary integer, most significant bit first
(leftmost block). The counter wraps after 655.36 s (65536 x 10 ms). :func:`read_timecode`
decodes it back, robustly after H.264 compression.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "TIMECODE_BITS",
    "TIMECODE_BLOCK_PX",
    "TIMECODE_STRIP_WIDTH_PX",
    "TIMECODE_UNIT_SECONDS",
    "read_timecode",
    "timecode_strip",
]

#: Number of blocks in the strip (bits of the counter).
TIMECODE_BITS = 16
#: Side of one block in pixels; the strip is 8 px high.
TIMECODE_BLOCK_PX = 8
#: Width of the whole strip in pixels (128).
TIMECODE_STRIP_WIDTH_PX = TIMECODE_BITS * TIMECODE_BLOCK_PX
#: Seconds per timecode count (10 ms).
TIMECODE_UNIT_SECONDS = 0.01
#: Gray level (0-255) above which a block reads as a 1.
_BIT_THRESHOLD = 128.0

_SHIFTS = np.arange(TIMECODE_BITS - 1, -1, -1)


def timecode_strip(t: float) -> np.ndarray:
    """One row of the strip for session time ``t`` seconds: uint8 0/255, strip width long.

    Paint it into rows ``[0, TIMECODE_BLOCK_PX)`` of a frame (every channel).
    """
    value = round(t / TIMECODE_UNIT_SECONDS) % (1 << TIMECODE_BITS)
    bits = ((value >> _SHIFTS) & 1).astype(np.uint8) * 255
    return np.repeat(bits, TIMECODE_BLOCK_PX)


def read_timecode(frame: np.ndarray) -> float:
    """Decode the timecode strip of a frame to session seconds.

    Accepts an RGB(A) ``HxWx3``/``HxWx4`` or gray ``HxW`` array (any numeric dtype on a 0-255
    scale). Each bit is decided by thresholding the mean of its block at 128.
    """
    arr = np.asarray(frame)
    if arr.ndim == 3:
        arr = arr[..., :3].mean(axis=2) if arr.shape[2] >= 3 else arr[..., 0]
    if arr.ndim != 2:
        raise ValueError(f"expected an HxW or HxWx3 frame, got shape {np.shape(frame)}")
    if arr.shape[0] < TIMECODE_BLOCK_PX or arr.shape[1] < TIMECODE_STRIP_WIDTH_PX:
        raise ValueError(
            f"frame {arr.shape[1]}x{arr.shape[0]} is smaller than the "
            f"{TIMECODE_STRIP_WIDTH_PX}x{TIMECODE_BLOCK_PX} timecode strip"
        )
    strip = arr[:TIMECODE_BLOCK_PX, :TIMECODE_STRIP_WIDTH_PX].astype(np.float64)
    means = strip.reshape(TIMECODE_BLOCK_PX, TIMECODE_BITS, TIMECODE_BLOCK_PX).mean(axis=(0, 2))
    value = 0
    for bit in means >= _BIT_THRESHOLD:
        value = (value << 1) | int(bit)
    return round(value * TIMECODE_UNIT_SECONDS, 6)
