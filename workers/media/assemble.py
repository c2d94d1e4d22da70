"""The playable MP4 assembled piece by piece: a fragmented MP4 that grows while recording.

The one-run merge (:func:`.merge.mux_copied`) copies every packet of the session after it
ends and then rewrites the whole file to put its index first (``+faststart``): seconds per
recorded half hour, growing with the length. Here the same packets are written as a
fragmented MP4 (index first by construction: ``moov`` then ``moof``/``mdat`` pairs), one
*piece* per video segment, so the file can grow while the session records and only the
last pieces are left when it ends.

The file is indexed once finished: space for a ``sidx`` box per track is reserved (a
``free`` box) between the first piece's ``moov`` and its first fragment, and overwritten in
place at the end (:func:`write_index`), so a player knows the length and where every
fragment lies without reading them all. Measured (``bench/bench_playable.py``): without an
index Chromium read the whole file before it showed the first frame and a seek took a
second; with one sidx (video only) a seek took 8 s (the audio track had no index); with
one per track both are as quick as in the ``+faststart`` file.

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
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import av.container

from shared.segments import SegmentKind

from .fragment import (
    Box,
    FragmentError,
    boxes,
    normalized_init,
    rebase,
    split_fragmented,
    timescales,
)
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


# -- the index ---------------------------------------------------------------------------------
#: sidx: box header 8, version and flags 4, reference_ID 4, timescale 4, earliest time 8,
#: first offset 8, reserved 2, reference count 2; then 12 bytes per reference.
_SIDX_HEAD = 40
_SIDX_REFERENCE = 12
#: A sidx counts its references in 16 bits.
MAX_REFERENCES = 65_535
_FREE_HEAD = 8
#: The index is sized for this many seconds of recording at the first piece's fragment rate.
INDEX_RESERVED_S = 4 * 3600
MIN_REFERENCES = 256


def index_reservation(fragments_per_second: float, tracks: int) -> bytes:
    """The ``free`` box the index will be written into (``tracks`` sidx boxes)."""
    per_track = min(
        MAX_REFERENCES,
        max(MIN_REFERENCES, math.ceil(fragments_per_second * INDEX_RESERVED_S)),
    )
    size = tracks * (_SIDX_HEAD + _SIDX_REFERENCE * per_track) + _FREE_HEAD
    return struct.pack(">I4s", size, b"free") + bytes(size - _FREE_HEAD)


@dataclass(frozen=True)
class _Fragment:
    size: int  # moof + mdat bytes
    starts: dict[int, int]  # track -> tfdt
    durations: dict[int, int]  # track -> sum of its sample durations


def _fragments(handle: BinaryIO, start: int, end: int) -> list[_Fragment]:
    """The moof/mdat pairs from ``start`` to ``end`` of the file, read box by box."""
    found: list[_Fragment] = []
    at = start
    while at < end:
        handle.seek(at)
        size, kind = struct.unpack(">I4s", handle.read(8))
        if size == 1:
            (size,) = struct.unpack(">Q", handle.read(8))
        if size < 8:
            raise FragmentError(f"box {kind!r} at byte {at} has size {size}")
        if kind == b"moof":
            handle.seek(at)
            moof = handle.read(size)
            found.append(_Fragment(size, *_moof_times(moof)))
        elif kind == b"mdat" and found:
            last = found[-1]
            found[-1] = _Fragment(last.size + size, last.starts, last.durations)
        at += size
    return found


def _moof_times(moof: bytes) -> tuple[dict[int, int], dict[int, int]]:
    """Each track fragment's decode time and the sum of its sample durations."""
    starts: dict[int, int] = {}
    durations: dict[int, int] = {}
    (box,) = list(boxes(moof))
    for traf in boxes(moof, box.body, box.end):
        if traf.type != "traf":
            continue
        tfhd = next(b for b in boxes(moof, traf.body, traf.end) if b.type == "tfhd")
        flags = int.from_bytes(moof[tfhd.body + 1 : tfhd.body + 4], "big")
        (track,) = struct.unpack_from(">I", moof, tfhd.body + 4)
        at = tfhd.body + 8 + (8 if flags & 0x01 else 0) + (4 if flags & 0x02 else 0)
        default = struct.unpack_from(">I", moof, at)[0] if flags & 0x08 else 0
        total = 0
        for child in boxes(moof, traf.body, traf.end):
            if child.type == "tfdt":
                wide = moof[child.body] == 1
                starts[track] = struct.unpack_from(">Q" if wide else ">I", moof, child.body + 4)[0]
            elif child.type == "trun":
                total += _trun_duration(moof, child, default)
        durations[track] = total
    return starts, durations


def _trun_duration(data: bytes, trun: Box, default: int) -> int:
    flags = int.from_bytes(data[trun.body + 1 : trun.body + 4], "big")
    (count,) = struct.unpack_from(">I", data, trun.body + 4)
    if not flags & 0x100:
        return default * count
    at = trun.body + 8 + (4 if flags & 0x01 else 0) + (4 if flags & 0x04 else 0)
    step = 4 * sum(1 for bit in (0x100, 0x200, 0x400, 0x800) if flags & bit)
    return sum(struct.unpack_from(">I", data, at + i * step)[0] for i in range(count))


def _sidx(track: int, timescale: int, fragments: list[_Fragment], first_offset: int) -> bytes:
    times = [f.starts[track] for f in fragments]
    spans = [b - a for a, b in zip(times, times[1:], strict=False)]
    spans.append(fragments[-1].durations[track])
    body = struct.pack(">B3xIIQQHH", 1, track, timescale, times[0], first_offset, 0,
                       len(fragments))  # fmt: skip
    sap = (1 << 31) | (1 << 28)  # starts with a sync sample (SAP type 1)
    body += b"".join(struct.pack(">III", f.size, d, sap) for f, d in zip(fragments, spans,
                                                                        strict=True))  # fmt: skip
    return struct.pack(">I4s", 8 + len(body), b"sidx") + body


def write_index(path: Path, reserved_at: int, reserved: int, scales: Mapping[int, int]) -> bool:
    """Write a sidx per track into the ``free`` box reserved at ``reserved_at`` (its size
    ``reserved``); False, leaving it free, when the fragments do not fit in it."""
    with open(path, "r+b") as handle:
        handle.seek(0, 2)
        fragments = _fragments(handle, reserved_at + reserved, handle.tell())
        tracks = sorted(t for t in scales if fragments and all(t in f.starts for f in fragments))
        if not fragments or not tracks:
            return False
        sizes = [_SIDX_HEAD + _SIDX_REFERENCE * len(fragments) for _ in tracks]
        left = reserved - sum(sizes)
        if left != 0 and left < _FREE_HEAD:
            return False
        # What is left stays free *before* the index, which then ends where the first
        # fragment starts (Chromium ignored an index followed by free space).
        written = struct.pack(">I4s", left, b"free") + bytes(left - _FREE_HEAD) if left else b""
        for index, track in enumerate(tracks):  # offsets count from each box's end
            written += _sidx(track, scales[track], fragments, sum(sizes[index + 1 :]))
        handle.seek(reserved_at)
        handle.write(written)
        handle.flush()
        os.fsync(handle.fileno())
    return True


def _ticks(seconds: Fraction, timescale: int) -> int:
    return math.floor(seconds * timescale + Fraction(1, 2))


__all__ += ["ASSEMBLY_MOVFLAGS", "appended", "index_reservation", "write_index"]
