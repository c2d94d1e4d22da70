"""The playable MP4 assembled piece by piece: a fragmented MP4 that grows while recording.

The one-run merge (:func:`.merge.mux_copied`) copies every packet of the session after it
ends and then rewrites the whole file to put its index first (``+faststart``): seconds per
recorded half hour, growing with the length. Here the same packets are written as a
fragmented MP4 (index first by construction: ``moov`` then ``moof``/``mdat`` pairs), one
*piece* per video segment, so the file can grow while the session records and only the
last pieces are left when it ends.

A piece is video segment *k*'s packets, copied to their output times exactly as the
one-run merge places them (:class:`.videocopy.VideoCopier` on a timeline holding only that
segment, its last frame lasting ``until`` the next segment's start), with the AAC packets
whose timestamps fall in ``[audio_from, audio_until)`` (the first piece takes the priming
packet too). Each piece is muxed on its own by ffmpeg (``delay_moov``: the init segment of
the first piece declares the audio priming and the B-frame delay by edit lists, as the
one-run merge does), which starts each file's tracks at decode time 0; appending it after
the first means moving each track's ``tfdt`` by (its first decode time - the first piece's),
:func:`.fragment.rebase`. Demuxed, the assembled file has the one-run merge's packets with
the one-run merge's timestamps (``tests/workers/media/test_assemble.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import av.container

from shared.segments import SegmentKind

from .fragment import normalized_init, rebase, split_fragmented, timescales
from .output import output_url, temp_path
from .timeline import PlacedSegment, Timeline
from .videocopy import VideoCopier

__all__ = ["AacConfig", "Piece", "mux_piece", "piece_offsets"]

#: ``moov`` before the media, written once the first fragment is cut so it knows the first
#: timestamps (edit lists); one fragment per keyframe; data offsets relative to each moof.
ASSEMBLY_MOVFLAGS = "empty_moov+delay_moov+default_base_moof+frag_keyframe"
VIDEO_TRACK = 1
AUDIO_TRACK = 2
AUDIO_LEAD_S = 0.5  # audio muxed this far ahead of the video it goes with, to interleave


@dataclass(frozen=True)
class AacConfig:
    """The AAC stream the packets belong to."""

    rate: int
    layout: str
    bitrate: int
    extradata: bytes


@dataclass(frozen=True)
class Piece:
    """One muxed piece: its init segment, its fragments (decode times from 0) and the first
    decode time of each track in that track's timescale (what ffmpeg subtracted)."""

    init: bytes
    media: bytes
    starts: dict[int, int]
    packets: int  # video packets


class _Recording(VideoCopier):
    """A VideoCopier that remembers its first packet's decode time."""

    first_dts: int | None = None

    def _mux(self, packet: av.Packet) -> None:
        if self.first_dts is None:
            self.first_dts = packet.dts
        super()._mux(packet)


def mux_piece(
    timeline: Timeline,
    segment: PlacedSegment,
    *,
    until: float,
    audio: AacConfig | None,
    packets: Sequence[tuple[int, int, bytes]],
    work: Path,
) -> Piece:
    """Mux video ``segment`` (its last frame lasting to output second ``until``) with the
    AAC ``packets`` ((pts, duration, payload) in samples, in order) into one piece.

    CopyNotExact when the segment's packets cannot be copied to the timeline exactly.
    """
    if segment.kind != SegmentKind.VIDEO:
        raise ValueError(f"{segment.path} is not a video segment")
    alone = replace(timeline, segments=(segment,), duration=until)
    work.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(work)
    try:
        with av.open(
            output_url(tmp), "w", format="mp4", container_options={"movflags": ASSEMBLY_MOVFLAGS}
        ) as container:
            video = _Recording(alone, container)
            stream = None
            if audio is not None:
                stream = container.add_stream("aac", rate=audio.rate, layout=audio.layout)
                stream.codec_context.bit_rate = audio.bitrate
                stream.codec_context.extradata = audio.extradata
            time_base = Fraction(1, audio.rate) if audio is not None else Fraction(1)
            queue = list(reversed(packets)) if stream is not None else []

            def mux_audio_until(seconds: float) -> None:
                while queue and queue[-1][0] * time_base < seconds:
                    pts, duration, payload = queue.pop()
                    assert stream is not None  # the queue is empty without audio
                    packet = av.Packet(payload)
                    packet.pts = packet.dts = pts
                    packet.duration = duration
                    packet.time_base = time_base
                    packet.stream = stream
                    container.mux(packet)

            video.run(lambda seconds: mux_audio_until(seconds + AUDIO_LEAD_S))
            mux_audio_until(math.inf)
        data = tmp.read_bytes()
    finally:
        tmp.unlink(missing_ok=True)
    split = split_fragmented(data)
    scales = timescales(split.init)
    starts: dict[int, int] = {}
    if video.first_dts is not None:
        starts[VIDEO_TRACK] = _ticks(video.first_dts * video.time_base, scales[VIDEO_TRACK])
    if audio is not None and packets:
        starts[AUDIO_TRACK] = _ticks(Fraction(packets[0][0], audio.rate), scales[AUDIO_TRACK])
    return Piece(
        init=normalized_init(split.init), media=split.media, starts=starts, packets=video.packets
    )


def piece_offsets(piece: Piece, first: Mapping[int, int]) -> dict[int, int]:
    """How far each track of ``piece`` moves to follow the first piece (ticks)."""
    return {track: start - first.get(track, 0) for track, start in piece.starts.items()}


def appended(piece: Piece, first: Mapping[int, int], sequence: int) -> tuple[bytes, int]:
    """The piece's fragments as they follow the first piece in the file; how many."""
    return rebase(piece.media, piece_offsets(piece, first), sequence)


def _ticks(seconds: Fraction, timescale: int) -> int:
    return math.floor(seconds * timescale + Fraction(1, 2))


__all__ += ["ASSEMBLY_MOVFLAGS", "appended"]
