"""Checks on finished media, by decoding (container metadata can hide drift)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np


@dataclass
class Decoded:
    video_codecs: list[str]
    audio_codecs: list[str]
    video_duration: float | None
    audio_duration: float | None
    audio: np.ndarray | None  # mono float32
    sample_rate: int | None


def decode_output(path: Path) -> Decoded:
    with av.open(str(path)) as container:
        video_codecs = [s.codec_context.name for s in container.streams.video]
        audio_codecs = [s.codec_context.name for s in container.streams.audio]
    video_duration = audio_duration = None
    samples = None
    rate = None
    if video_codecs:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            last_end = 0.0
            for frame in container.decode(stream):
                assert frame.time is not None
                last_end = frame.time
            fps = float(stream.average_rate or stream.guessed_rate or 30)
            video_duration = last_end + 1.0 / fps
    if audio_codecs:
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            rate = stream.codec_context.sample_rate
            chunks = []
            for frame in container.decode(stream):
                data = frame.to_ndarray().astype(np.float32)
                if data.ndim == 2 and not frame.format.is_planar:
                    data = data.reshape(-1, len(frame.layout.channels)).T
                chunks.append(data.mean(axis=0) if data.ndim == 2 else data)
            samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
            audio_duration = len(samples) / rate
    return Decoded(video_codecs, audio_codecs, video_duration, audio_duration, samples, rate)


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples.astype(np.float64))))) if len(samples) else 0.0


def first_onset(
    samples: np.ndarray, rate: int, *, start_s: float, threshold: float = 0.05
) -> float | None:
    """Time (s) of the first sample at or after ``start_s`` louder than ``threshold``."""
    begin = int(start_s * rate)
    loud = np.nonzero(np.abs(samples[begin:]) > threshold)[0]
    return (begin + int(loud[0])) / rate if len(loud) else None
