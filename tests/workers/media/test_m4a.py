"""The AAC track writer (workers.media.m4a) against FFmpeg's MP4 muxer: the same packets at
the same times, the same samples decoded, in runs of any size, past the 32-bit limits too."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from workers.media.m4a import AacTrackWriter, write_track

RATE = 48_000


def _encoded(seconds: float, layout: str = "stereo") -> tuple[list[tuple[int, int, bytes]], bytes]:
    """AAC packets (pts, duration, payload) of a tone, as the encoder gives them (the first
    one's timestamp negative: the priming), and the extradata."""
    context = av.CodecContext.create("aac", "w")
    assert isinstance(context, av.AudioCodecContext)
    context.sample_rate, context.layout, context.format = RATE, layout, "fltp"
    context.bit_rate, context.time_base = 128_000, Fraction(1, RATE)
    context.open()
    channels = len(av.AudioLayout(layout).channels)
    t = np.arange(int(seconds * RATE)) / RATE
    tone = np.tile((0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), (channels, 1))
    packets: list[av.Packet] = []
    for offset in range(0, tone.shape[1], 1024):
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(tone[:, offset : offset + 1024]), format="fltp", layout=layout
        )
        frame.sample_rate, frame.pts, frame.time_base = RATE, offset, Fraction(1, RATE)
        packets.extend(context.encode(frame))
    packets.extend(context.encode(None))
    return [(int(p.pts or 0), int(p.duration or 0), bytes(p)) for p in packets], bytes(
        context.extradata or b""
    )


def _ffmpeg_file(path: Path, packets: list[tuple[int, int, bytes]], extradata: bytes,
                 layout: str) -> None:  # fmt: skip
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=RATE, layout=layout)
        stream.codec_context.extradata = extradata
        for pts, duration, payload in packets:
            packet = av.Packet(payload)
            packet.pts = packet.dts = pts
            packet.duration, packet.time_base, packet.stream = duration, Fraction(1, RATE), stream
            out.mux(packet)


def _runs(packets: list[tuple[int, int, bytes]], cuts: list[int]) -> list:
    bounds = [0, *cuts, len(packets)]
    runs = []
    for a, b in zip(bounds, bounds[1:], strict=False):
        part = packets[a:b]
        pts, durations = np.array([p[0] for p in part]), np.array([p[1] for p in part])
        sizes = np.array([len(p[2]) for p in part])
        runs.append((pts, durations, sizes, b"".join(p[2] for p in part)))
    return runs


Packet = tuple[int | None, int | None, int | None, bytes]


def _read(path: Path) -> tuple[dict[str, object], list[Packet], bytes]:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        packets = [(p.pts, p.dts, p.duration, bytes(p)) for p in container.demux(stream) if p.size]
        facts: dict[str, object] = {
            "time_base": stream.time_base, "duration": stream.duration,
            "start": stream.start_time, "rate": stream.rate, "channels": stream.channels,
            "extradata": stream.codec_context.extradata, "whole": container.duration,
        }  # fmt: skip
    with av.open(str(path)) as container:
        pcm = b"".join(f.to_ndarray().tobytes() for f in container.decode(audio=0))
    return facts, packets, pcm


@pytest.mark.parametrize(
    ("layout", "cuts", "large_from"),
    [("stereo", [], 2**32 - 1), ("mono", [7, 8, 50, 93], 2**32 - 1), ("stereo", [40], 0)],
)
def test_the_written_track_is_what_ffmpegs_muxer_writes(
    tmp_path: Path, layout: str, cuts: list[int], large_from: int
) -> None:
    packets, extradata = _encoded(2.5, layout)
    assert packets[0][0] < 0  # the priming packet
    _ffmpeg_file(tmp_path / "ffmpeg.m4a", packets, extradata, layout)
    ours = tmp_path / "ours.m4a"
    with ours.open("wb") as handle:
        writer = AacTrackWriter(handle, rate=RATE, channels=len(av.AudioLayout(layout).channels),
                                extradata=extradata, large_from=large_from)  # fmt: skip
        for run in _runs(packets, cuts):
            writer.add_run(*run)
        writer.close()
    want, got = _read(tmp_path / "ffmpeg.m4a"), _read(ours)
    assert got[0] == want[0]  # durations, start (the priming skipped), configuration
    assert got[1] == want[1]  # every packet, its timestamps and bytes
    assert got[2] == want[2] and len(got[2]) > 0  # the very samples decoded
    if large_from == 0:  # a 64-bit mdat header and 64-bit chunk offsets
        data = ours.read_bytes()
        assert data[28:32] == (1).to_bytes(4, "big") and data[32:36] == b"mdat"
        assert b"co64" in data and b"stco" not in data


def test_packets_out_of_time_or_a_short_payload_are_refused(tmp_path: Path) -> None:
    packets, extradata = _encoded(0.5)
    pts, durations, sizes, payload = _runs(packets, [])[0]
    writer = AacTrackWriter(io.BytesIO(), rate=RATE, channels=2, extradata=extradata)
    with pytest.raises(ValueError, match="not the sum"):
        writer.add_run(pts, durations, sizes, payload[:-1])
    gap = pts.copy()
    gap[3:] += 1024
    with pytest.raises(ValueError, match="not contiguous"):
        writer.add_run(gap, durations, sizes, payload)
    writer.add_run(pts[:5], durations[:5], sizes[:5], payload[: int(sizes[:5].sum())])
    with pytest.raises(ValueError, match="not contiguous"):  # the next run must follow on
        writer.add_run(pts[6:], durations[6:], sizes[6:], payload[int(sizes[:6].sum()) :])
    with pytest.raises(ValueError, match="sample rate"):
        write_track(tmp_path / "x.m4a", rate=96_000, channels=2, extradata=extradata, runs=[])
