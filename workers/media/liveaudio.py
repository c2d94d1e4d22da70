"""The live view's audio: the recorder's own AAC packets, copied to the output timeline.

A live fragment needs the audio of its stretch at once, while the session's finished audio
is still being encoded (20 s chunks settle only once the next segment is known). Encoding
that stretch again for the view cost more CPU than the view itself, and at 5x replay it
starved the outputs. The microphone segments are AAC already (the agent's recorder, and the
Mac recorders a watched folder gets), so the view copies their packets instead: no decode,
no encode, a few hundred packets demuxed per segment.

The rules:

- One audio configuration per session's view (a player's source buffer keeps one init
  segment): that of the first AAC microphone segment on the timeline (its sample rate,
  channel layout and ``AudioSpecificConfig``). A segment of another configuration, and any
  stretch without microphone audio (a hole, a segment not stored yet, a session without
  a microphone), is *silence*: one silent AAC frame of the view's configuration, encoded
  once per process and repeated (AAC-LC frames do not depend on each other's contents).
- Each copied packet lands where its first sample lands on the output timeline, by the
  timeline's own mapping of the segment's kept parts (pause cuts and overlap trims
  included); the AAC priming packet (before the first presented sample) is left out.
- :func:`lay_out` (pure, property-tested) turns the packets of a stretch into one
  gapless, non-overlapping run on the view's frame grid: packets partitioned by the
  fragment's ``[lo, hi)`` (in samples, so neighbouring fragments never share a packet), a
  packet that overlaps its predecessor by half a frame or more dropped (two segments'
  overlap), a smaller overlap moved to its predecessor's end, and every gap of a frame or
  more filled with silent frames.

The finished audio track is still made as before (sample-exact joins, the session's output
rate and layout); the view's audio is the recording as the recorder wrote it, within a
frame of the same place.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from shared.segments import SegmentKind

from .probe import local_path
from .timeline import PlacedSegment, Timeline

__all__ = [
    "AAC_FRAME_SAMPLES",
    "AacConfig",
    "Silence",
    "TimedPacket",
    "aac_config",
    "as_tuples",
    "lay_out",
    "recorded_packets",
    "silent_frame",
    "view_config",
]

#: Samples per AAC-LC frame (what every packet of the view lasts).
AAC_FRAME_SAMPLES = 1024
#: Frames encoded to get one silent frame past the encoder's start-up (priming, the
#: window's first overlap).
_SILENCE_WARMUP_FRAMES = 4


@dataclass(frozen=True)
class AacConfig:
    """An AAC stream's configuration: what the view's init segment declares."""

    rate: int
    layout: str
    extradata: bytes  # AudioSpecificConfig


@dataclass(frozen=True, order=True)
class TimedPacket:
    """A packet at output sample ``pts`` (the view's rate), lasting ``duration`` samples."""

    pts: int
    duration: int
    payload: bytes
    silent: bool = False


def aac_config(path: str) -> AacConfig | None:
    """The configuration of the file's first audio stream if it is AAC, else None."""
    with av.open(local_path(path), options={"probesize": "32768", "analyzeduration": "0"}) as c:
        streams = c.streams.audio
        if not streams or streams[0].codec_context.name != "aac":
            return None
        ctx = streams[0].codec_context
        if not ctx.extradata or not ctx.sample_rate:
            return None
        return AacConfig(
            rate=ctx.sample_rate, layout=ctx.layout.name, extradata=bytes(ctx.extradata)
        )


def view_config(timeline: Timeline) -> AacConfig | None:
    """The view's configuration: the first AAC microphone segment's; None when the timeline
    has no audio segment yet, or its first one is not AAC (the caller encodes instead)."""
    audio = timeline.of_kind(SegmentKind.AUDIO)
    return aac_config(audio[0].path) if audio else None


def recorded_packets(
    timeline: Timeline, segment: PlacedSegment, config: AacConfig, lo_s: float, hi_s: float
) -> list[TimedPacket]:
    """The packets of audio ``segment`` whose first sample lands in output ``[lo_s, hi_s)``,
    at their output times (samples at ``config.rate``); none when the segment is not of
    ``config`` (it is silence in the view)."""
    parts = [p for p in timeline.kept_parts(segment)
             if p.out_start < hi_s and p.out_start + p.duration > lo_s]  # fmt: skip
    if not parts or aac_config(segment.path) != config:
        return []
    found: list[TimedPacket] = []
    with av.open(local_path(segment.path)) as container:
        stream = container.streams.audio[0]
        assert stream.time_base is not None
        start = Fraction(stream.start_time or 0) * stream.time_base
        for packet in container.demux(stream):
            if packet.pts is None or not packet.size:
                continue
            at = Fraction(packet.pts) * stream.time_base - start  # seconds after sample 0
            if at < 0:
                continue  # the priming packet
            for part in parts:
                offset = float(at) - part.source_offset
                if 0 <= offset < part.duration:
                    out = part.out_start + offset
                    if lo_s <= out < hi_s:
                        duration = packet.duration or AAC_FRAME_SAMPLES
                        found.append(TimedPacket(round(out * config.rate), duration, bytes(packet)))
                    break
    return found


def lay_out(packets: Iterable[TimedPacket], lo: int, hi: int, silence: bytes) -> list[TimedPacket]:
    """The stretch ``[lo, hi)`` (samples) as one run of frames: ``packets`` starting in it,
    in time order, overlaps resolved and gaps of a frame or more filled with ``silence``
    (the rules in the module docstring)."""
    frame = AAC_FRAME_SAMPLES
    out: list[TimedPacket] = []
    cursor = lo

    def fill(until: int) -> None:
        nonlocal cursor
        while until - cursor >= frame:
            out.append(TimedPacket(cursor, frame, silence, silent=True))
            cursor += frame

    for packet in sorted(p for p in packets if lo <= p.pts < hi):
        if packet.pts < cursor:
            if cursor - packet.pts >= frame // 2:
                continue  # it overlaps the one before it: the two segments' overlap
            packet = TimedPacket(cursor, packet.duration, packet.payload)
        fill(packet.pts)
        out.append(packet)
        cursor = packet.pts + packet.duration
    fill(hi)
    return out


@dataclass(frozen=True)
class Silence:
    """A silent AAC-LC frame and the encoder's AudioSpecificConfig for it."""

    frame: bytes
    extradata: bytes


@functools.cache
def silent_frame(rate: int, layout: str, bitrate: int) -> Silence:
    """One AAC-LC frame of silence at ``rate`` and ``layout`` (encoded once per process)."""
    context = av.CodecContext.create("aac", "w")
    assert isinstance(context, av.AudioCodecContext)
    context.sample_rate = rate
    context.layout = layout
    context.format = "fltp"
    context.bit_rate = bitrate
    context.time_base = Fraction(1, rate)
    context.open()
    channels = len(av.AudioLayout(layout).channels)
    packets: list[av.Packet] = []
    for index in range(_SILENCE_WARMUP_FRAMES):
        frame = av.AudioFrame.from_ndarray(
            np.zeros((channels, AAC_FRAME_SAMPLES), dtype=np.float32), format="fltp", layout=layout
        )
        frame.sample_rate = rate
        frame.pts = index * AAC_FRAME_SAMPLES
        frame.time_base = Fraction(1, rate)
        packets.extend(context.encode(frame))
    packets.extend(context.encode(None))
    return Silence(bytes(packets[_SILENCE_WARMUP_FRAMES // 2]), bytes(context.extradata or b""))


def as_tuples(packets: Sequence[TimedPacket]) -> list[tuple[int, int, bytes]]:
    """(pts, duration, payload) as the muxers take them."""
    return [(p.pts, p.duration, p.payload) for p in packets]
