"""Fragmented MP4 pieces of the output timeline: the live view's media segments.

A *live fragment* is one video segment's packets, copied as recorded (not re-encoded) to
where they land on the output timeline, with the session's AAC packets for the same
stretch, written as a CMAF media segment: ``moof`` + ``mdat`` pairs whose ``tfdt`` (base
media decode time) is the output time. Each comes with its own init segment (``ftyp`` +
``moov``); played in order after an init segment, fragments form one growing presentation,
which is what an HLS media playlist (``EXT-X-MAP`` + media segments, RFC 8216 with fMP4)
and Media Source Extensions play.

ffmpeg's MP4 muxer starts every fragmented file at decode time 0 (it subtracts each track's
first timestamp), so each fragment is written on its own and then *rebased* (pure byte
functions below, property-tested): each track's ``tfdt`` values move by that track's first
decode time on the output timeline, and the fragment sequence numbers continue from the
caller's. Both edits rewrite fixed-size fields in place, so the byte layout and the
``default-base-is-moof`` data offsets stay valid.

Video is written with signed composition offsets (``negative_cts_offsets``, as CMAF asks),
so a track's first sample is presented at its decode time and the rebased ``tfdt`` is the
first frame's output time, B-frames or not. The AAC priming packet (negative time) is left
out: a live view starts decoding anywhere anyway.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import av.container

from shared.segments import SegmentKind

from .errors import MediaError
from .output import output_url, temp_path
from .timeline import PlacedSegment, Timeline
from .videocopy import VideoCopier

__all__ = [
    "AudioPackets",
    "FragmentError",
    "LiveFragment",
    "codecs_string",
    "first_decode_times",
    "rebase",
    "split_fragmented",
    "timescales",
    "write_live_fragment",
]

#: Muxer flags: ``moov`` before any sample, one fragment per keyframe, data offsets relative
#: to each ``moof`` (so fragments can be cut out and concatenated), signed CTS for B-frames.
FRAGMENT_MOVFLAGS = "empty_moov+default_base_moof+frag_keyframe+negative_cts_offsets"
#: Audio is muxed this far ahead of the video it goes with (seconds), to interleave.
AUDIO_LEAD_S = 0.5
_UINT32 = 2**32
_UINT64 = 2**64
_HEADER = struct.Struct(">I4s")


class FragmentError(MediaError):
    """A fragmented MP4 that is not laid out as this module writes and reads them."""


# -- boxes (ISO/IEC 14496-12) -----------------------------------------------------------------
@dataclass(frozen=True)
class Box:
    """Where one box lies in a buffer."""

    type: str
    start: int  # offset of its header
    size: int  # header included
    header: int  # 8, or 16 with a 64-bit size

    @property
    def body(self) -> int:
        return self.start + self.header

    @property
    def end(self) -> int:
        return self.start + self.size


def boxes(data: bytes | bytearray, start: int = 0, end: int | None = None) -> Iterator[Box]:
    """The boxes laid one after another in ``data[start:end]``; FragmentError if torn."""
    end = len(data) if end is None else end
    at = start
    while at < end:
        if end - at < _HEADER.size:
            raise FragmentError(f"truncated box header at byte {at}")
        size, kind = _HEADER.unpack_from(data, at)
        header = _HEADER.size
        if size == 1:
            if end - at < 16:
                raise FragmentError(f"truncated 64-bit box size at byte {at}")
            (size,) = struct.unpack_from(">Q", data, at + 8)
            header = 16
        elif size == 0:  # extends to the end
            size = end - at
        name = kind.decode("latin-1")
        if size < header or at + size > end:
            raise FragmentError(f"box {name!r} at byte {at} claims {size} bytes, past the end")
        yield Box(name, at, size, header)
        at += size


def _children(data: bytes | bytearray, parent: Box, kind: str) -> list[Box]:
    return [b for b in boxes(data, parent.body, parent.end) if b.type == kind]


def _child(data: bytes | bytearray, parent: Box, kind: str) -> Box:
    found = _children(data, parent, kind)
    if len(found) != 1:
        raise FragmentError(f"box {parent.type!r} has {len(found)} {kind!r} boxes, not one")
    return found[0]


@dataclass(frozen=True)
class Split:
    """A fragmented MP4 cut in two: what a player needs first, and the media after it."""

    init: bytes  # ftyp + moov
    media: bytes  # the moof/mdat pairs (no index: mfra/sidx describe the old offsets)


def split_fragmented(data: bytes) -> Split:
    """Cut a fragmented MP4 into its init segment and its media fragments."""
    top = list(boxes(data))
    moofs = [b for b in top if b.type == "moof"]
    if not moofs:
        raise FragmentError("no fragment (moof box) in the file")
    first = moofs[0].start
    init = b"".join(data[b.start : b.end] for b in top if b.end <= first and b.type in _INIT)
    if b"moov" not in init[4:8] and not any(b.type == "moov" for b in top if b.end <= first):
        raise FragmentError("no moov box before the first fragment")
    media = b"".join(data[b.start : b.end] for b in top if b.start >= first and b.type in _MEDIA)
    return Split(init=init, media=media)


_INIT = frozenset({"ftyp", "moov"})
_MEDIA = frozenset({"moof", "mdat"})


#: Bytes between a sample entry's box header and its child boxes (ISO/IEC 14496-12:
#: 8 of SampleEntry, then 70 of VisualSampleEntry or 20 of AudioSampleEntry).
_ENTRY_HEADERS = {"vide": 78, "soun": 28}


def normalized_init(init: bytes) -> bytes:
    """The init segment with its ``btrt`` (bitrate) boxes zeroed.

    ffmpeg writes each file's own bitrates there, the only difference between the init
    segments of two fragments with one codec configuration; zero means "not given", and
    equal init segments are what lets a player append fragments without a new init.
    """
    out = bytearray(init)
    moov = next((b for b in boxes(out) if b.type == "moov"), None)
    if moov is None:
        raise FragmentError("no moov box in the init segment")
    for trak in _children(out, moov, "trak"):
        mdia = _child(out, trak, "mdia")
        handler = bytes(out[_child(out, mdia, "hdlr").body + 8 :][:4]).decode("latin-1")
        stbl = _child(out, _child(out, mdia, "minf"), "stbl")
        stsd = _child(out, stbl, "stsd")
        skip = _ENTRY_HEADERS.get(handler)
        if skip is None:
            continue
        for entry in boxes(out, stsd.body + 8, stsd.end):
            for box in boxes(out, entry.body + skip, entry.end):
                if box.type == "btrt":
                    out[box.body : box.end] = bytes(box.end - box.body)
    return bytes(out)


def timescales(init: bytes) -> dict[int, int]:
    """Track id -> media timescale (ticks per second), from the init segment's moov."""
    moov = next((b for b in boxes(init) if b.type == "moov"), None)
    if moov is None:
        raise FragmentError("no moov box in the init segment")
    found: dict[int, int] = {}
    for trak in _children(init, moov, "trak"):
        tkhd = _child(init, trak, "tkhd")
        track_at = tkhd.body + (20 if init[tkhd.body] == 1 else 12)
        (track_id,) = struct.unpack_from(">I", init, track_at)
        mdhd = _child(init, _child(init, trak, "mdia"), "mdhd")
        scale_at = mdhd.body + (20 if init[mdhd.body] == 1 else 12)
        (found[track_id],) = struct.unpack_from(">I", init, scale_at)
    return found


def _trafs(data: bytes | bytearray) -> Iterator[tuple[Box, Box, int, Box]]:
    """(moof, its mfhd, track id, tfdt) for every track fragment, in file order."""
    for moof in boxes(data):
        if moof.type != "moof":
            continue
        mfhd = _child(data, moof, "mfhd")
        for traf in _children(data, moof, "traf"):
            tfhd = _child(data, traf, "tfhd")
            (track_id,) = struct.unpack_from(">I", data, tfhd.body + 4)
            yield moof, mfhd, track_id, _child(data, traf, "tfdt")


def _tfdt_value(data: bytes | bytearray, tfdt: Box) -> int:
    if data[tfdt.body] == 1:
        return int(struct.unpack_from(">Q", data, tfdt.body + 4)[0])
    return int(struct.unpack_from(">I", data, tfdt.body + 4)[0])


def first_decode_times(media: bytes) -> dict[int, int]:
    """Track id -> the decode time (tfdt, in its timescale) of its first track fragment."""
    first: dict[int, int] = {}
    for _, _, track_id, tfdt in _trafs(media):
        first.setdefault(track_id, _tfdt_value(media, tfdt))
    return first


def rebase(media: bytes, offsets: Mapping[int, int], first_sequence: int) -> tuple[bytes, int]:
    """The fragments with each track's decode times moved by ``offsets[track id]`` ticks
    and sequence numbers counting from ``first_sequence``; also how many fragments.

    FragmentError if a time would leave the field's range (below 0, or past 32 bits in a
    version-0 tfdt).
    """
    if not 0 < first_sequence < _UINT32:
        raise ValueError(f"sequence numbers run from 1 to 2**32-1, not {first_sequence}")
    out = bytearray(media)
    numbered: set[int] = set()
    sequence = first_sequence
    for moof, mfhd, track_id, tfdt in _trafs(out):
        if moof.start not in numbered:
            if sequence >= _UINT32:
                raise FragmentError("fragment sequence number past 2**32-1")
            struct.pack_into(">I", out, mfhd.body + 4, sequence)
            numbered.add(moof.start)
            sequence += 1
        value = _tfdt_value(out, tfdt) + offsets.get(track_id, 0)
        wide = out[tfdt.body] == 1
        if not 0 <= value < (_UINT64 if wide else _UINT32):
            raise FragmentError(f"track {track_id}: decode time {value} out of the tfdt range")
        struct.pack_into(">Q" if wide else ">I", out, tfdt.body + 4, value)
    return bytes(out), sequence - first_sequence


# -- codec strings (RFC 6381), for MSE's addSourceBuffer and HLS's CODECS ---------------------
def codecs_string(video_codec: str | None, video_extradata: bytes, has_audio: bool) -> str:
    """``avc1.PPCCLL`` from the avcC record (``hvc1`` for HEVC), ``mp4a.40.2`` for AAC-LC."""
    names: list[str] = []
    if video_codec == "h264":
        if len(video_extradata) >= 4 and video_extradata[0] == 1:
            names.append("avc1." + video_extradata[1:4].hex())
        else:
            names.append("avc1.640028")  # High 4.0: what a Mac's encoder writes at 1080p
    elif video_codec == "hevc":
        names.append("hvc1.1.6.L120.90")  # Main, level 4; players read the real one in-band
    if has_audio:
        names.append("mp4a.40.2")
    return ",".join(names)


# -- writing one live fragment ----------------------------------------------------------------
@dataclass(frozen=True)
class AudioPackets:
    """AAC packets on the output timeline (timestamps in samples) and their stream config."""

    rate: int
    layout: str
    bitrate: int
    extradata: bytes
    packets: Sequence[tuple[int, int, bytes]]  # (pts, duration, payload), pts >= 0, in order


@dataclass(frozen=True)
class LiveFragment:
    """One video segment's stretch of the output as an init segment plus media fragments."""

    init: bytes
    media: bytes
    start: float  # output seconds where its first frame is shown
    end: float  # output seconds where the segment's kept part ends
    fragments: int  # moof boxes, numbered from the sequence given
    codecs: str  # RFC 6381, for MSE and HLS


class _FirstPts(VideoCopier):
    """A VideoCopier that remembers when its first packet is presented (its time base).

    With signed composition offsets the muxer presents a track's first sample at the
    track's first decode time, so that is where the rebased fragment starts.
    """

    first_pts: int | None = None

    def _mux(self, packet: av.Packet) -> None:
        if self.first_pts is None:
            self.first_pts = packet.pts
        super()._mux(packet)


def segment_span(timeline: Timeline, segment: PlacedSegment) -> tuple[float, float] | None:
    """Output seconds (start, end) of what is kept of ``segment``; None if nothing is."""
    pieces = timeline.kept_parts(segment)
    if not pieces:
        return None
    return pieces[0].out_start, max(p.out_start + p.duration for p in pieces)


def write_live_fragment(
    timeline: Timeline,
    segment: PlacedSegment,
    audio: AudioPackets | None,
    work_dir: Path,
    *,
    sequence: int,
) -> LiveFragment | None:
    """The live fragment of one video ``segment`` placed on ``timeline``, with the
    ``audio`` packets of its stretch; None when nothing of the segment is kept.

    Raises CopyNotExact when its packets cannot be copied to the timeline (the live view
    then skips it; the finished MP4 decides for itself), MediaError on a broken input.
    """
    if segment.kind != SegmentKind.VIDEO:
        raise ValueError(f"{segment.path} is not a video segment")
    span = segment_span(timeline, segment)
    if span is None:
        return None
    start, end = span
    alone = replace(timeline, segments=(segment,), duration=end)
    work_dir.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(work_dir / f"fragment-{sequence}.mp4")
    try:
        video, audio_first = _mux_fragment(alone, audio, tmp, start, end)
        data = tmp.read_bytes()
    finally:
        tmp.unlink(missing_ok=True)
    split = split_fragmented(data)
    split = Split(init=normalized_init(split.init), media=split.media)
    scales = timescales(split.init)
    first = first_decode_times(split.media)
    offsets: dict[int, int] = {}
    if video.first_pts is not None:
        offsets[1] = _ticks(video.first_pts * video.time_base, scales[1]) - first.get(1, 0)
    if audio is not None and audio_first is not None and 2 in scales:
        offsets[2] = _ticks(Fraction(audio_first, audio.rate), scales[2]) - first.get(2, 0)
    media, count = rebase(split.media, offsets, sequence)
    extradata = _video_extradata(segment.path)
    return LiveFragment(
        init=split.init,
        media=media,
        start=start,
        end=end,
        fragments=count,
        codecs=codecs_string(video.codec, extradata, audio_first is not None),
    )


def _ticks(seconds: Fraction, timescale: int) -> int:
    return math.floor(seconds * timescale + Fraction(1, 2))


def _video_extradata(path: str) -> bytes:
    with av.open(path, options={"probesize": "32", "analyzeduration": "0"}) as source:
        return bytes(source.streams.video[0].codec_context.extradata or b"")


def _mux_fragment(
    alone: Timeline, audio: AudioPackets | None, tmp: Path, start: float, end: float
) -> tuple[_FirstPts, int | None]:
    """Mux the segment's packets and the audio of [start, end) into ``tmp``."""
    wanted = (
        [p for p in audio.packets if start * audio.rate <= p[0] < end * audio.rate]
        if audio is not None
        else []
    )
    audio_first = wanted[0][0] if wanted else None
    with av.open(
        output_url(tmp), "w", format="mp4", container_options={"movflags": FRAGMENT_MOVFLAGS}
    ) as container:
        video = _FirstPts(alone, container)
        stream = None
        if audio is not None and wanted:
            stream = container.add_stream("aac", rate=audio.rate, layout=audio.layout)
            stream.codec_context.bit_rate = audio.bitrate
            stream.codec_context.extradata = audio.extradata
        time_base = Fraction(1, audio.rate) if audio is not None else Fraction(1)
        pending = iter(wanted)
        held: list[tuple[int, int, bytes]] = []

        def mux_audio_until(seconds: float) -> None:
            if stream is None:
                return
            while True:
                item = held.pop() if held else next(pending, None)
                if item is None:
                    return
                pts, duration, payload = item
                if pts * time_base >= seconds:
                    held.append(item)
                    return
                packet = av.Packet(payload)
                packet.pts = packet.dts = pts
                packet.duration = duration
                packet.time_base = time_base
                packet.stream = stream
                container.mux(packet)

        video.run(lambda seconds: mux_audio_until(seconds + AUDIO_LEAD_S))
        mux_audio_until(math.inf)
    return video, audio_first
