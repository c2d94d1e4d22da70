"""Checks on media by decoding it (container metadata can hide drift): one ``decode``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from synthetic.decode import decode_audio
from synthetic.markers import find_onsets


@dataclass(frozen=True)
class Track:
    """One decoded stream: its codec, how many frames it has and the time they cover."""

    kind: str  # "video" or "audio"
    codec: str
    frames: int
    start: float  # time of the first frame
    end: float  # end of the last frame (its time plus its length)

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class Decoded:
    tracks: list[Track]  # every audio and video stream, in the file's order
    audio: np.ndarray | None  # the first audio stream, mono float32, from its first sample
    sample_rate: int | None

    @property
    def video_codecs(self) -> list[str]:
        return [t.codec for t in self.tracks if t.kind == "video"]

    @property
    def audio_codecs(self) -> list[str]:
        return [t.codec for t in self.tracks if t.kind == "audio"]

    @property
    def video_duration(self) -> float | None:
        """End of the first video stream's last frame."""
        video = [t for t in self.tracks if t.kind == "video"]
        return video[0].end if video else None

    @property
    def audio_duration(self) -> float | None:
        """Decoded samples of the first audio stream over its rate."""
        if self.audio is None or not self.sample_rate:
            return None
        return len(self.audio) / self.sample_rate


def _track(path: Path, index: int) -> Track:
    with av.open(str(path)) as container:
        stream = container.streams[index]
        frames = 0
        first: float | None = None
        last = 0.0
        for frame in container.decode(stream):
            assert isinstance(frame, av.AudioFrame | av.VideoFrame) and frame.time is not None
            frames += 1
            first = frame.time if first is None else min(first, frame.time)
            if isinstance(frame, av.AudioFrame):
                last = max(last, frame.time + frame.samples / frame.sample_rate)
            else:
                rate = stream.average_rate or stream.guessed_rate or 30
                last = max(last, frame.time + 1 / float(rate))
        return Track(stream.type, stream.codec_context.name, frames, first or 0.0, last)


def decode(path: Path) -> Decoded:
    """Decode every frame of every audio and video stream (raises if the file is corrupt)."""
    with av.open(str(path)) as container:
        indices = [s.index for s in container.streams if s.type in ("audio", "video")]
        has_audio = any(s.type == "audio" for s in container.streams)
    tracks = [_track(path, index) for index in indices]
    audio = rate = None
    if has_audio:
        channels, rate = decode_audio(path)
        audio = channels.mean(axis=0).astype(np.float32)
    return Decoded(tracks, audio, rate)


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples.astype(np.float64))))) if len(samples) else 0.0


def first_onset(
    samples: np.ndarray, rate: int, *, start_s: float, threshold: float = 0.05
) -> float | None:
    """Time (s) of the first sample at or after ``start_s`` louder than ``threshold``."""
    begin = int(start_s * rate)
    loud = np.nonzero(np.abs(samples[begin:]) > threshold)[0]
    return (begin + int(loud[0])) / rate if len(loud) else None


def marker_onsets(samples: np.ndarray, rate: int) -> list[int]:
    """Sample indices of the marker onsets (:mod:`synthetic.markers`) in the first channel.

    ``samples`` is ``(channels, samples)``, as :func:`synthetic.decode.decode_audio` returns.
    """
    return find_onsets(samples[0], rate)


def track_ends(path: Path) -> dict[str, float]:
    """Where each stream ends as the container says (start time plus duration), by type."""
    with av.open(str(path)) as container:
        return {
            s.type: float(((s.start_time or 0) + (s.duration or 0)) * (s.time_base or 0))
            for s in container.streams
        }


def shown_timecodes(path: Path) -> list[tuple[float, float | None]]:
    """(time, burnt-in timecode) of every video frame, in presentation order."""
    from synthetic.timecode import read_timecode

    with av.open(str(path)) as container:
        return [
            (float(frame.time or 0.0), read_timecode(frame.to_ndarray(format="gray")))
            for frame in container.decode(container.streams.video[0])
        ]


def timecode_at(shown: list[tuple[float, float | None]], t: float) -> float | None:
    """The timecode on screen at time ``t`` (the last frame shown at or before it)."""
    current = None
    for time, code in shown:
        if time > t + 1e-6:
            break
        current = code
    return current


def differing_times(a: Path, b: Path, *, duration: float, fps: float) -> list[float]:
    """Frame times (a grid of ``fps`` over ``duration``) at which the two videos show
    different burnt-in timecodes: empty when they show the same pictures at the same times."""
    shown_a, shown_b = shown_timecodes(a), shown_timecodes(b)
    assert all(code is not None for _, code in shown_a + shown_b), "unreadable timecode"
    ticks = [k / fps for k in range(round(duration * fps))]
    return [t for t in ticks if timecode_at(shown_a, t) != timecode_at(shown_b, t)]
