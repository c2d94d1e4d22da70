"""Place already-encoded H.264/HEVC video on the output timeline without re-encoding it.

Recorders already produce good H.264 (or HEVC on Macs), so decoding and re-encoding it only
costs time and quality. Instead every packet is remuxed with its timestamps moved to where
its frame lands on the output timeline:

* a one-track gap needs no new frames: MP4 sample durations are timestamp differences, so
  the frame before the gap simply stays on screen until the next one;
* a pause cut moves every later packet earlier by the cut's length;
* video that starts after output 0 gets an empty edit (the MP4 muxer writes it);
* a piece of a segment may only *start* on a keyframe (nothing before it is kept), and no
  kept frame may depend on a dropped one that comes after it in decode order (B-frames
  reordered across a cut). When that cannot be guaranteed, or the segments cannot share one
  MP4 track (codec, frame size or parameter sets differ), :class:`CopyNotExact` tells the
  caller to re-encode instead, which always satisfies the timeline.

No packet is decoded and each segment is opened once; the per-packet work is a few integer
operations, so the copy runs close to the speed of a plain ``ffmpeg -c copy``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import av
import av.container

from shared.segments import SegmentKind

from .errors import MediaError
from .probe import demux_checked, open_input
from .timeline import Piece, PlacedSegment, Timeline

__all__ = ["COPYABLE_CODECS", "TICK_SLACK", "CopyNotExact", "CopyStats", "VideoCopier"]

#: Codecs that MP4 carries and QuickTime plays, so their packets can be copied as they are.
COPYABLE_CODECS = frozenset({"h264", "hevc"})
#: Sample-entry tag per codec; ``hvc1`` (parameter sets in the sample entry) is what
#: QuickTime and iOS require for HEVC, they refuse ``hev1``.
_CODEC_TAGS = {"h264": "avc1", "hevc": "hvc1"}
# Demuxer whose packets are length-prefixed (AVCC/HVCC) with the parameter sets in the
# extradata, i.e. exactly what an MP4 sample entry holds.
_MP4_DEMUXER = "mp4"
#: A frame up to this many seconds before a piece boundary counts as "at" it; the same slack
#: as the re-encode path, so both paths keep the same frames.
TICK_SLACK = 1e-4
# Open options that skip avformat_find_stream_info's trial decoding: for H.264 it decodes
# about 7 frames per file to guess the reorder delay (20+ ms per 1080p segment, more than
# copying its packets), and nothing here is decoded. The MP4 header has what the copy needs.
_HEADER_ONLY_OPTIONS = {"probesize": "32", "analyzeduration": "0", "skip_frame": "all"}


def _open(path: str) -> av.container.InputContainer:
    """Like :func:`.probe.open_input` (local ``file:`` only), without trial decoding."""
    return open_input(path, options=_HEADER_ONLY_OPTIONS)


class CopyNotExact(Exception):
    """Copying packets cannot reproduce the timeline exactly; re-encode instead.

    Not a MediaError: the input is fine, only the fast path does not apply.
    """


@dataclass(frozen=True)
class CopyStats:
    """What the copy wrote."""

    packets: int
    bytes: int
    codec: str  # "h264" or "hevc"
    end: float  # output seconds where the video track ends


@dataclass(frozen=True)
class _Format:
    """What two segments must share for their packets to live in one MP4 track."""

    codec: str
    width: int
    height: int
    extradata: bytes


def _copyable_format(container: av.container.InputContainer, path: str) -> _Format:
    """The segment's copy-relevant header fields; CopyNotExact if it cannot be copied."""
    if not container.streams.video:
        raise MediaError(f"no video stream in {path}", path=path)
    if _MP4_DEMUXER not in container.format.name.split(","):
        raise CopyNotExact(f"{path} is not an MP4/MOV file ({container.format.name})")
    stream = container.streams.video[0]
    cc = stream.codec_context
    if cc.name not in COPYABLE_CODECS:
        raise CopyNotExact(f"{path} is {cc.name}; only {sorted(COPYABLE_CODECS)} are copied")
    extradata = bytes(cc.extradata or b"")
    if not _has_parameter_sets(cc.name, extradata):
        raise CopyNotExact(f"{path} keeps its parameter sets in-band (avc3/hev1 style)")
    if not cc.width or not cc.height or stream.time_base is None:
        raise CopyNotExact(f"{path} lacks a frame size or time base")
    return _Format(cc.name, cc.width, cc.height, extradata)


# Byte offsets in the ISO/IEC 14496-15 decoder configuration records.
_AVCC_SPS_COUNT = 5  # low 5 bits: number of SPS
_HVCC_ARRAY_COUNT = 22  # number of parameter-set arrays (VPS/SPS/PPS/SEI)


def _has_parameter_sets(codec: str, extradata: bytes) -> bool:
    """Whether the sample entry itself can carry the decoder setup ('avc1'/'hvc1' rule).

    Streams that only repeat SPS/PPS inside the packets would not play under those tags.
    """
    if codec == "h264":
        return (
            len(extradata) > _AVCC_SPS_COUNT
            and extradata[0] == 1
            and (extradata[_AVCC_SPS_COUNT] & 0x1F) > 0
        )
    return (
        len(extradata) > _HVCC_ARRAY_COUNT
        and extradata[0] == 1
        and (extradata[_HVCC_ARRAY_COUNT] > 0)
    )


def _check_same(path: str, fmt: _Format, first: _Format) -> None:
    if fmt.codec != first.codec:
        raise CopyNotExact(f"{path} is {fmt.codec} but the first segment is {first.codec}")
    if (fmt.width, fmt.height) != (first.width, first.height):
        raise CopyNotExact(
            f"{path} is {fmt.width}x{fmt.height} but the first segment is "
            f"{first.width}x{first.height}"
        )
    if fmt.extradata != first.extradata:
        raise CopyNotExact(f"{path} has other encoder parameter sets than the first segment")


@dataclass
class _Span:
    """One kept piece: its source interval (seconds from the first frame) and output shift."""

    lo: float  # inclusive, slack applied
    hi: float  # exclusive, slack applied
    shift: int  # output ticks of source offset 0 for this piece
    started: bool = False  # a packet of this piece has been written
    key_pts: int = 0  # source pts of the keyframe that opened the piece


def _spans(pieces: Sequence[Piece], time_base: Fraction) -> list[_Span]:
    return [
        _Span(
            lo=p.source_offset - TICK_SLACK,
            hi=p.source_offset + p.duration - TICK_SLACK,
            shift=round((p.out_start - p.source_offset) / time_base),
        )
        for p in pieces
    ]


class VideoCopier:
    """Copies the video packets of a timeline into one stream of an open MP4 container.

    Create it before adding any other stream so video is the first track, then call
    :meth:`run`. Packets keep the first segment's time base; later segments with another
    one are rescaled (rounded to the nearest tick).
    """

    def __init__(self, timeline: Timeline, container: av.container.OutputContainer) -> None:
        self._timeline = timeline
        self._segments = timeline.of_kind(SegmentKind.VIDEO)
        if not self._segments:
            raise ValueError("timeline has no video segments")
        self._container = container
        # The first segment stays open from here to its copy: one open per segment.
        self._first_source: av.container.InputContainer | None = _open(self._segments[0].path)
        try:
            self._format = _copyable_format(self._first_source, self._segments[0].path)
            template = self._first_source.streams.video[0]
            assert template.time_base is not None  # checked by _copyable_format
            self.time_base: Fraction = template.time_base
            self._stream = container.add_stream_from_template(template)
        except BaseException:
            self.close()
            raise
        self.codec = self._format.codec
        self._stream.codec_context.codec_tag = _CODEC_TAGS[self.codec]
        self._stream.time_base = self.time_base
        self._end = round(timeline.duration / self.time_base)
        self._last_dts: int | None = None
        self._pending: av.Packet | None = None
        self._first_delay = 0  # pts - dts of the first written packet (B-frame delay)
        self.packets = 0
        self.bytes = 0

    def run(self, on_packet: Callable[[float], None]) -> CopyStats:
        """Mux every kept packet; ``on_packet(output_seconds)`` runs after each one.

        Raises CopyNotExact when the result would not match the timeline; the container's
        content is then unusable and the caller must discard it.
        """
        try:
            for index, seg in enumerate(self._segments):
                if index == 0:
                    assert self._first_source is not None
                    source, self._first_source = self._first_source, None
                else:
                    source = _open(seg.path)
                with source:
                    if index:
                        _check_same(seg.path, _copyable_format(source, seg.path), self._format)
                    self._copy_segment(seg, source, on_packet)
        finally:
            self.close()
        if self._pending is None:
            raise CopyNotExact("no video packet falls inside the timeline")
        self._flush_last()
        return CopyStats(
            packets=self.packets,
            bytes=self.bytes,
            codec=self.codec,
            end=float(self._end * self.time_base),
        )

    def close(self) -> None:
        """Release the input held open since construction (idempotent)."""
        if self._first_source is not None:
            self._first_source.close()
            self._first_source = None

    def _copy_segment(
        self,
        seg: PlacedSegment,
        source: av.container.InputContainer,
        on_packet: Callable[[float], None],
    ) -> None:
        pieces = self._timeline.kept_parts(seg)
        if not pieces:
            return
        path = seg.path
        spans = _spans(pieces, self.time_base)
        seconds_per_tick = float(self.time_base)
        stream = source.streams.video[0]
        tb = stream.time_base
        assert tb is not None  # checked by _copyable_format
        ratio = tb / self.time_base  # 1 unless this segment's time base differs
        scale_num, scale_den = ratio.numerator, ratio.denominator
        tick = float(tb)
        first = stream.start_time  # the first frame in presentation order
        seen_max = -math.inf  # latest source time seen so far, in decode order
        try:
            for packet in demux_checked(source, stream, path):
                pts = packet.pts
                if pts is None:
                    if packet.size == 0:
                        continue  # the demuxer's end-of-stream marker
                    raise CopyNotExact(f"{path} has a packet without a timestamp")
                if packet.is_discard:
                    raise CopyNotExact(f"{path} has an edit list hiding frames")
                if first is None:
                    first = pts
                rel = (pts - first) * tick
                span = None
                for candidate in spans:
                    if candidate.lo <= rel < candidate.hi:
                        span = candidate
                        break
                if span is None:
                    seen_max = max(seen_max, rel)
                    continue  # trimmed overlap, inside a cut, or past the placed end
                if seen_max >= span.hi:
                    raise CopyNotExact(f"{path}: the frame at {rel:.3f} s needs one that is cut")
                seen_max = max(seen_max, rel)
                if not span.started:
                    if not packet.is_keyframe:
                        raise CopyNotExact(
                            f"{path}: the part kept from {span.lo + TICK_SLACK:.3f} s "
                            f"does not start on a keyframe"
                        )
                    span.started, span.key_pts = True, pts
                elif pts < span.key_pts:
                    raise CopyNotExact(f"{path}: open-GOP frames lead a kept part")
                dts = packet.dts if packet.dts is not None else pts
                if scale_den == 1:
                    out_pts = (pts - first) * scale_num + span.shift
                    out_dts = (dts - first) * scale_num + span.shift
                else:
                    out_pts = round((pts - first) * ratio) + span.shift
                    out_dts = round((dts - first) * ratio) + span.shift
                self._write(packet, out_pts, out_dts)
                on_packet(out_pts * seconds_per_tick)
        except (av.error.FFmpegError, OSError, EOFError) as exc:
            raise MediaError(f"cannot read {path}: {exc}", path=path) from exc

    def _write(self, packet: av.Packet, pts: int, dts: int) -> None:
        """Queue a packet; the previous one is muxed (the last needs its duration fixed)."""
        if self._last_dts is not None and dts <= self._last_dts:
            dts = self._last_dts + 1  # decode order across a join: nudge by one tick
            if dts > pts:
                raise CopyNotExact("decode timestamps cannot stay increasing across a join")
        if self._pending is None:
            self._first_delay = pts - dts
        else:
            self._mux(self._pending)
        self._last_dts = dts
        packet.pts, packet.dts = pts, dts
        packet.time_base = self.time_base
        packet.stream = self._stream
        self._pending = packet

    def _mux(self, packet: av.Packet) -> None:
        self.packets += 1
        self.bytes += packet.size
        self._container.mux(packet)

    def _flush_last(self) -> None:
        """Give the last packet the duration that makes the track end with the timeline.

        MP4 sample durations are dts differences; only the last one is explicit. The track
        is presented from its first pts, so its end in dts terms is earlier by the B-frame
        delay. Video that ends before the audio thereby holds its last frame.
        """
        packet = self._pending
        assert packet is not None and packet.dts is not None
        packet.duration = max(1, self._end - self._first_delay - packet.dts)
        self._mux(packet)
        self._pending = None
