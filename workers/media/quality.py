"""Measure how close an encoded video is to its source: PSNR and SSIM of the luma plane.

Used by the compression tests and the bench to show that a smaller file still looks right.
Frames are compared *as shown*: at each sampled time the frame on screen in each file (the
latest one at or before it), so a variable-frame-rate copy with dropped duplicates compares
fairly with its constant-rate source.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import av
import av.container
import numpy as np

from .errors import MediaError
from .probe import open_input

__all__ = ["QualityReport", "compare", "luma", "psnr", "ssim"]

#: Frames sampled per comparison unless asked otherwise.
DEFAULT_SAMPLES = 24
#: PSNR reported for identical frames (the formula gives infinity).
PSNR_IDENTICAL_DB = 100.0
_PEAK = 255.0  # 8-bit samples
_SSIM_WINDOW = 7  # pixels; uniform window as in scikit-image's default
_SSIM_C1 = (0.01 * _PEAK) ** 2
_SSIM_C2 = (0.03 * _PEAK) ** 2
# Pixel formats whose first plane is 8-bit luma that can be read without conversion.
_PLANAR_8BIT = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "nv12", "gray"})


@dataclass(frozen=True)
class QualityReport:
    """Luma quality of ``distorted`` against ``reference`` over the sampled frames."""

    frames: int  # frames compared
    psnr: float  # mean dB
    psnr_min: float  # worst frame, dB
    ssim: float  # mean, 1.0 = identical
    ssim_min: float


def luma(frame: av.VideoFrame) -> np.ndarray:
    """The frame's 8-bit luma plane as an (height, width) array (a view when possible)."""
    if frame.format.name not in _PLANAR_8BIT:
        frame = frame.reformat(format="yuv420p")
    plane = frame.planes[0]
    rows = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(-1, plane.line_size)
    return rows[: frame.height, : frame.width]


def psnr(reference: np.ndarray, distorted: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two 8-bit planes."""
    diff = reference.astype(np.float64) - distorted.astype(np.float64)
    mse = float(np.mean(diff * diff))
    if mse == 0.0:
        return PSNR_IDENTICAL_DB
    return min(PSNR_IDENTICAL_DB, 10.0 * math.log10(_PEAK * _PEAK / mse))


def _box_mean(image: np.ndarray, size: int) -> np.ndarray:
    """Mean over every size x size window (valid positions only), via an integral image."""
    integral = np.zeros((image.shape[0] + 1, image.shape[1] + 1), dtype=np.float64)
    np.cumsum(np.cumsum(image, axis=0), axis=1, out=integral[1:, 1:])
    total = (
        integral[size:, size:]
        - integral[:-size, size:]
        - integral[size:, :-size]
        + integral[:-size, :-size]
    )
    return total / (size * size)


def ssim(reference: np.ndarray, distorted: np.ndarray) -> float:
    """Mean structural similarity (Wang et al. 2004) of two 8-bit planes, 7x7 uniform window."""
    x = reference.astype(np.float64)
    y = distorted.astype(np.float64)
    if min(x.shape) < _SSIM_WINDOW:
        return 1.0 if np.array_equal(x, y) else 0.0
    n = _SSIM_WINDOW * _SSIM_WINDOW
    cov_norm = n / (n - 1)  # sample (co)variances, as scikit-image does
    mx, my = _box_mean(x, _SSIM_WINDOW), _box_mean(y, _SSIM_WINDOW)
    vx = cov_norm * (_box_mean(x * x, _SSIM_WINDOW) - mx * mx)
    vy = cov_norm * (_box_mean(y * y, _SSIM_WINDOW) - my * my)
    vxy = cov_norm * (_box_mean(x * y, _SSIM_WINDOW) - mx * my)
    num = (2 * mx * my + _SSIM_C1) * (2 * vxy + _SSIM_C2)
    den = (mx * mx + my * my + _SSIM_C1) * (vx + vy + _SSIM_C2)
    return float(np.mean(num / den))


class _ShownFrames:
    """The frame on screen at a given time, found by seeking to the keyframe before it."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self._container = open_input(path)
        if not self._container.streams.video:
            self._container.close()
            raise MediaError(f"no video stream in {self.path}", path=self.path)
        self._stream = self._container.streams.video[0]
        self._stream.codec_context.thread_type = "AUTO"
        tb = self._stream.time_base
        self._tick = float(tb) if tb is not None else 1.0
        start = self._stream.start_time
        self.start = start * self._tick if start is not None else 0.0

    def duration(self) -> float:
        container, stream = self._container, self._stream
        if stream.duration is not None:
            return stream.duration * self._tick
        return (container.duration or 0) / av.time_base

    def at(self, seconds: float) -> av.VideoFrame | None:
        """The latest frame whose time is at or before ``seconds`` (None before the first)."""
        self._container.seek(
            round(seconds / self._tick), stream=self._stream, backward=True, any_frame=False
        )
        shown: av.VideoFrame | None = None
        for frame in self._container.decode(self._stream):
            t = frame.time
            if t is not None and t > seconds + 1e-6:
                break
            shown = frame
        return shown

    def close(self) -> None:
        self._container.close()


def compare(reference: Path, distorted: Path, *, samples: int = DEFAULT_SAMPLES) -> QualityReport:
    """PSNR and SSIM of ``distorted`` against ``reference`` at evenly spaced times.

    Both files are sampled at the same times: the middle of ``samples`` equal slices of the
    reference's duration. A distorted frame of another size is scaled to the reference's.
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    ref = _ShownFrames(reference)
    try:
        dist = _ShownFrames(distorted)
        try:
            duration = ref.duration()
            psnrs: list[float] = []
            ssims: list[float] = []
            for i in range(samples):
                t = ref.start + (i + 0.5) * duration / samples
                a, b = ref.at(t), dist.at(t)
                if a is None or b is None:
                    continue
                if (b.width, b.height) != (a.width, a.height):
                    b = b.reformat(width=a.width, height=a.height, format="yuv420p")
                ya, yb = luma(a), luma(b)
                psnrs.append(psnr(ya, yb))
                ssims.append(ssim(ya, yb))
        finally:
            dist.close()
    except av.error.FFmpegError as exc:
        raise MediaError(f"cannot compare {reference} and {distorted}: {exc}") from exc
    finally:
        ref.close()
    if not psnrs:
        raise MediaError(f"no frames to compare in {reference} and {distorted}")
    return QualityReport(
        frames=len(psnrs),
        psnr=float(np.mean(psnrs)),
        psnr_min=min(psnrs),
        ssim=float(np.mean(ssims)),
        ssim_min=min(ssims),
    )
