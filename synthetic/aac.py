"""Mono samples to an AAC ``.m4a`` file: what a recorder's microphone segment is, and what
the pipeline's audio track is (the mono copied to every channel)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Final

import av
import numpy as np

#: Samples per AAC frame.
AAC_FRAME_SAMPLES: Final = 1024


def write_aac(
    path: Path,
    mono: np.ndarray,
    sample_rate: int,
    *,
    channels: int,
    bitrate_per_channel: int,
) -> Path:
    """Encode float32 mono samples to AAC in an .m4a file (the mono copied to each channel)."""
    layout = {1: "mono", 2: "stereo"}[channels]
    planes = np.repeat(np.asarray(mono, dtype=np.float32)[None, :], channels, axis=0)
    with av.open(str(path), "w", format="ipod") as out:
        stream = out.add_stream("aac", rate=sample_rate, layout=layout)
        stream.bit_rate = bitrate_per_channel * channels
        for off in range(0, planes.shape[1], AAC_FRAME_SAMPLES):
            chunk = np.ascontiguousarray(planes[:, off : off + AAC_FRAME_SAMPLES])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate = sample_rate
            frame.pts = off
            frame.time_base = Fraction(1, sample_rate)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path
