"""Decode synthetic media back to what can be measured: samples, frame indices, marker onsets.

Audio is laid out the way a player lays it out: samples counted from the first decoded one;
video by each frame's presentation time.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from synthetic.clips import read_index
from synthetic.markers import OnsetDetector, flash_onsets

__all__ = ["decode_audio", "decode_video", "file_flash_onsets", "file_marker_onsets"]


def decode_audio(path: Path) -> tuple[np.ndarray, int]:
    """Decode the first audio stream to float32 ``(channels, samples)`` and its rate."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        resampler = av.AudioResampler(format="fltp", rate=rate)
        chunks = []
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray())
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray())
    return np.concatenate(chunks, axis=1), rate


def decode_video(path: Path) -> tuple[list[int], list[float]]:
    """Decode the first video stream of a clip to (indices read from the grid, frame times)."""
    indices: list[int] = []
    times: list[float] = []
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.video[0]):
            indices.append(read_index(frame))
            times.append(float(frame.time or 0.0))
    return indices, times


def file_marker_onsets(path: Path, rate: int) -> list[int]:
    """Sample indices (at ``rate`` Hz, mono downmix) of every marker onset in ``path``.

    Decodes block by block, so a long file never sits in memory whole.
    """
    detector = OnsetDetector(rate)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                detector.feed(out.to_ndarray()[0])
    return detector.onsets


def file_flash_onsets(path: Path) -> list[float]:
    """Presentation times (seconds) of every sync flash in the first video stream of ``path``."""
    times: list[float] = []
    lumas: list[float] = []
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.video[0]):
            times.append(float(frame.time or 0.0))
            lumas.append(float(frame.to_ndarray(format="gray").mean()))
    return flash_onsets(times, lumas)
