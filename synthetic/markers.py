"""THE audio onset marker of every synthetic session, and the detector that finds it.

Every generator in this package starts each audio segment (or each lavfi run) with
``MARKER_SECONDS`` of a ``MARKER_HZ`` sine at ``MARKER_AMPLITUDE``; everything it puts between
markers (speech, test tones, noise) stays at or under ``BACKGROUND_MAX_AMPLITUDE``. A marker
onset is therefore the first sample whose magnitude exceeds ``MARKER_THRESHOLD`` after at
least ``MARKER_MIN_GAP_SECONDS`` without one. Finding the onsets in a pipeline's output tells
where each segment was placed, to the sample (a few milliseconds of drift is obvious).

The threshold sits well inside the gap between background and marker, so it survives lossy
codecs (AAC overshoot) and a mono marker upmixed to stereo (-3 dB, peak about 0.64).
The video side of an A/V sync marker is a white frame (:mod:`synthetic.lavfi`'s
``sync_period_s``): a frame whose mean luma is at least ``FLASH_MIN_LUMA`` where the frame
before it was darker; :func:`flash_onsets` finds their times.

Pure numpy: decoding files is :mod:`synthetic.decode`'s job.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "BACKGROUND_MAX_AMPLITUDE",
    "MARKER_AMPLITUDE",
    "MARKER_HZ",
    "MARKER_MIN_GAP_SECONDS",
    "MARKER_SECONDS",
    "MARKER_THRESHOLD",
    "FLASH_MIN_LUMA",
    "OnsetDetector",
    "find_onsets",
    "flash_onsets",
    "marker_samples",
    "marker_tone",
    "with_marker",
]

#: Frequency of the marker tone, in Hz.
MARKER_HZ = 1000.0
#: Length of the marker at the start of every audio segment, in seconds (30 ms).
MARKER_SECONDS = 0.030
#: Peak amplitude of the marker (float samples, full scale = 1.0).
MARKER_AMPLITUDE = 0.9
#: Peak amplitude every generator keeps the sound between markers at or under (full scale 1.0).
BACKGROUND_MAX_AMPLITUDE = 0.25
#: A sample louder than this (magnitude, full scale 1.0) belongs to a marker.
MARKER_THRESHOLD = MARKER_AMPLITUDE * 0.55
#: A new onset needs at least this many seconds since the previous loud sample.
MARKER_MIN_GAP_SECONDS = 0.25
#: A frame this bright (mean 8-bit luma: a white frame reads 235 or more, testsrc2's
#: pattern about 120-125) is a sync flash.
FLASH_MIN_LUMA = 200.0


def marker_samples(rate: int) -> int:
    """Number of samples of one marker at ``rate`` Hz."""
    return round(MARKER_SECONDS * rate)


def marker_tone(rate: int, n_samples: int | None = None) -> np.ndarray:
    """The marker as float32 samples at ``rate`` Hz (cut to ``n_samples`` when shorter)."""
    n = marker_samples(rate) if n_samples is None else min(n_samples, marker_samples(rate))
    t = np.arange(n, dtype=np.float64) / rate
    return (MARKER_AMPLITUDE * np.sin(2 * math.pi * MARKER_HZ * t)).astype(np.float32)


def with_marker(signal: np.ndarray, rate: int) -> np.ndarray:
    """A float32 copy of mono ``signal`` whose first samples are replaced by the marker."""
    out = np.array(signal, dtype=np.float32, copy=True)
    tone = marker_tone(rate, out.shape[-1])
    out[..., : tone.shape[0]] = tone
    return out


class OnsetDetector:
    """Finds marker onsets in audio fed block by block (so long files need no full decode).

    ``feed`` takes consecutive blocks of mono samples (or ``(channels, n)`` arrays: the
    loudest channel counts) and returns the onsets found in that block, as sample indices
    counted from the first sample ever fed.
    """

    def __init__(
        self,
        rate: int,
        *,
        threshold: float = MARKER_THRESHOLD,
        min_gap_seconds: float = MARKER_MIN_GAP_SECONDS,
    ) -> None:
        self.rate = rate
        self.threshold = threshold
        self.min_gap = int(min_gap_seconds * rate)
        self.position = 0  # samples fed so far
        self.last_loud = -self.min_gap - 1
        self.onsets: list[int] = []

    def feed(self, block: np.ndarray) -> list[int]:
        """Scan the next block; return the onsets that start in it."""
        arr = np.abs(np.asarray(block, dtype=np.float64))
        if arr.ndim == 2:
            arr = arr.max(axis=0) if arr.shape[0] else np.zeros(arr.shape[1])
        elif arr.ndim != 1:
            raise ValueError(f"expected samples or (channels, samples), got shape {arr.shape}")
        found: list[int] = []
        for i in np.flatnonzero(arr > self.threshold):
            at = self.position + int(i)
            if at - self.last_loud > self.min_gap:
                found.append(at)
            self.last_loud = at
        self.position += int(arr.shape[0])
        self.onsets += found
        return found


def find_onsets(
    samples: np.ndarray,
    rate: int,
    *,
    threshold: float = MARKER_THRESHOLD,
    min_gap_seconds: float = MARKER_MIN_GAP_SECONDS,
) -> list[int]:
    """Sample indices of every marker onset in ``samples`` (mono or ``(channels, n)``)."""
    detector = OnsetDetector(rate, threshold=threshold, min_gap_seconds=min_gap_seconds)
    return detector.feed(samples)


def flash_onsets(times: list[float], lumas: list[float]) -> list[float]:
    """Times of the frames that start a flash (bright after a frame that was not)."""
    if len(times) != len(lumas):
        raise ValueError("one mean luma per frame time")
    onsets: list[float] = []
    previous = False
    for time, luma in zip(times, lumas, strict=True):
        bright = luma >= FLASH_MIN_LUMA
        if bright and not previous:
            onsets.append(time)
        previous = bright
    return onsets
