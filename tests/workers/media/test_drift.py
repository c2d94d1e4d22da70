"""Drift over many joins, measured by decoding and finding the marker each segment starts with.

ffprobe hides join drift (durations look right); only the decoded samples tell where a
segment really starts. Every path must keep all 60 markers within one AAC frame of their
recorded times, and must not accumulate error from join to join.
"""

from __future__ import annotations

import csv
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np
import pytest

from shared.segments import SegmentKind
from synthetic.clips import tone, write_tone_segment
from synthetic.decode import decode_audio
from tests.support.media import marker_onsets
from workers.media import SegmentInput, Timeline, plan_timeline
from workers.media.aacchunk import (
    ChunkStore,
    concat_audio_chunked,
    encode_settled_chunks,
    render_range,
)
from workers.media.aacplan import AAC_FRAME, plan_audio
from workers.media.audio import render_audio

RATE = 48000
JOINS = 60
SEGMENT_S = 0.5
ONE_FRAME = AAC_FRAME  # the bound on total drift: one AAC frame (~21 ms)
# Error may differ between the first and the last marker by this much (threshold crossing
# jitter of a lossy codec), never by a per-join amount.
NO_ACCUMULATION = 32
APPLE_PRIMING = 2112  # samples of encoder delay in files from Apple's AAC encoder


def errors(path: Path, expected: list[int]) -> list[int]:
    samples, rate = decode_audio(path)
    assert rate == RATE
    found = marker_onsets(samples, RATE)
    assert len(found) == len(expected), (len(found), len(expected))
    return [f - e for f, e in zip(found, expected, strict=True)]


def assert_no_drift(errs: list[int]) -> None:
    assert max(abs(e) for e in errs) <= ONE_FRAME, errs
    assert abs(errs[-1] - errs[0]) <= NO_ACCUMULATION, errs


def write_primed(path: Path, seconds: float, priming: int) -> Path:
    """An AAC .m4a whose encoder delay is ``priming`` samples, declared by its edit list.

    ffmpeg's encoder primes 1024 samples; feeding it ``priming - 1024`` extra zeros and
    shifting the packets back by as much gives the layout Apple's encoder writes (2112).
    """
    extra = priming - AAC_FRAME
    mono = np.concatenate([np.zeros(extra, dtype=np.float32), tone(seconds, RATE)])
    encoder = av.CodecContext.create("aac", "w")
    assert isinstance(encoder, av.AudioCodecContext)
    encoder.sample_rate, encoder.layout, encoder.format = RATE, "stereo", "fltp"
    encoder.bit_rate, encoder.time_base = 128_000, Fraction(1, RATE)
    encoder.open()
    frame = av.AudioFrame.from_ndarray(np.tile(mono, (2, 1)), format="fltp", layout="stereo")
    frame.sample_rate, frame.pts, frame.time_base = RATE, 0, Fraction(1, RATE)
    packets = [*encoder.encode(frame), *encoder.encode(None)]
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=RATE, layout="stereo")
        stream.codec_context.extradata = encoder.extradata
        for p in packets:
            q = av.Packet(bytes(p))
            q.pts = q.dts = (p.pts or 0) - extra
            q.duration, q.time_base, q.stream = p.duration, Fraction(1, RATE), stream
            out.mux(q)
    return path


@pytest.fixture(scope="module")
def sixty(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """60 independently encoded 0.5 s AAC segments, half ffmpeg-primed, half Apple-primed."""
    root = tmp_path_factory.mktemp("sixty")
    return [
        write_primed(root / f"seg{i:02d}.m4a", SEGMENT_S, APPLE_PRIMING)
        if i % 2
        else write_tone_segment(root / f"seg{i:02d}.m4a", SEGMENT_S)
        for i in range(JOINS)
    ]


def sixty_timeline(paths: list[Path]) -> Timeline:
    return plan_timeline(
        [
            SegmentInput(
                kind=SegmentKind.AUDIO, path=str(p), started_at=i * SEGMENT_S, duration=SEGMENT_S
            )
            for i, p in enumerate(paths)
        ]
    )


def expected_onsets() -> list[int]:
    return [round(i * SEGMENT_S * RATE) for i in range(JOINS)]


def test_naive_stream_copy_drifts(sixty: list[Path], tmp_path: Path) -> None:
    """The measurement works: a plain concat (stream copy) is late by a priming per join."""
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"file '{p}'\n" for p in sixty))
    out = tmp_path / "naive.m4a"
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
         "-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(out)],
        check=True,
    )  # fmt: skip
    errs = errors(out, expected_onsets())
    assert errs[-1] - errs[0] > 10 * ONE_FRAME, errs


def test_reference_has_no_drift_over_60_joins(sixty: list[Path], tmp_path: Path) -> None:
    assert_no_drift(
        errors(render_audio(sixty_timeline(sixty), tmp_path / "r.m4a").path, expected_onsets())
    )


def test_parallel_chunks_have_no_drift_over_60_joins(sixty: list[Path], tmp_path: Path) -> None:
    out = concat_audio_chunked(sixty_timeline(sixty), tmp_path / "c.m4a", chunk_seconds=1.0)
    assert_no_drift(errors(out.path, expected_onsets()))


def test_incremental_gives_the_reference_marker_positions(
    sixty: list[Path], tmp_path: Path
) -> None:
    timeline = sixty_timeline(sixty)
    store = ChunkStore(tmp_path / "chunks")
    for arrived in range(5, JOINS + 1, 5):  # segments arrive five at a time
        encode_settled_chunks(sixty_timeline(sixty[:arrived]), store, chunk_seconds=1.0)
    out = concat_audio_chunked(timeline, tmp_path / "i.m4a", chunk_seconds=1.0, store=store)
    incremental = errors(out.path, expected_onsets())
    reference = errors(render_audio(timeline, tmp_path / "r.m4a").path, expected_onsets())
    assert_no_drift(incremental)
    assert max(abs(a - b) for a, b in zip(incremental, reference, strict=True)) <= 8


# -- slices of one stream (ffmpeg's segment muxer, the capture agent's recorder) --------------


@pytest.fixture(scope="module")
def slices(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[SegmentInput], np.ndarray]:
    """One AAC stream cut into ~0.5 s fragmented-MP4 files, and its continuous decode.

    The files carry no priming information and each continues the previous one's MDCT
    overlap, so decoding a file alone gets its first frame wrong.
    """
    root = tmp_path_factory.mktemp("slices")
    seconds = 6.0
    signal = np.concatenate([tone(SEGMENT_S, RATE) for _ in range(round(seconds / SEGMENT_S))])
    wav = root / "source.wav"
    with av.open(str(wav), "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=RATE, layout="stereo")
        pcm = (np.tile(signal, (2, 1)).T.reshape(1, -1) * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = RATE, 0, Fraction(1, RATE)
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
         "-i", str(wav), "-c:a", "aac", "-b:a", "128k", "-f", "segment",
         "-segment_time", f"{SEGMENT_S}", "-reset_timestamps", "1", "-segment_format", "mp4",
         "-segment_format_options", "movflags=+frag_keyframe+empty_moov+default_base_moof",
         "-segment_list", "list.csv", "-segment_list_type", "csv", "mic-%03d.m4a"],
        check=True,
        cwd=root,
    )  # fmt: skip
    with (root / "list.csv").open() as handle:
        rows = [(root / r[0], float(r[1]), float(r[2])) for r in csv.reader(handle) if r]
    segments = [
        SegmentInput(kind=SegmentKind.AUDIO, path=str(p), started_at=a, duration=b - a)
        for p, a, b in rows
    ]
    # the continuous decode: every packet of every file through one decoder
    decoded: list[np.ndarray] = []
    decoder: av.AudioCodecContext | None = None
    for path, _, _ in rows:
        with av.open(str(path)) as container:
            source = container.streams.audio[0]
            if decoder is None:
                created = av.CodecContext.create(source.codec_context.name, "r")
                assert isinstance(created, av.AudioCodecContext)
                decoder = created
                decoder.extradata = source.codec_context.extradata
            for packet in container.demux(source):
                if packet.size:
                    decoded += [f.to_ndarray() for f in decoder.decode(packet)]
    return segments, np.concatenate(decoded, axis=1)


def test_slices_decode_like_the_continuous_stream(
    slices: tuple[list[SegmentInput], np.ndarray],
) -> None:
    segments, continuous = slices
    assert len(segments) >= 10
    timeline = plan_timeline(segments)
    plan = plan_audio(timeline, RATE)
    diff = render_range(plan, 0, plan.total, "stereo") - continuous[:, : plan.total]
    # Decoding a slice alone misses its first frame's overlap partner: errors near 1.0 (the
    # marker's size) at the joins. Primed with the previous slice's last packet, what is left
    # is the decoder's noise substitution restarting its random state in each file.
    assert float(np.abs(diff).max()) < 0.05
    assert float(np.sqrt(np.mean(diff**2))) < 1e-3


def test_slices_have_no_drift(
    slices: tuple[list[SegmentInput], np.ndarray], tmp_path: Path
) -> None:
    segments, continuous = slices
    timeline = plan_timeline(segments)
    # the recording starts with the encoder's priming (the stream's own, not one per join)
    expected = marker_onsets(continuous[:, : round(timeline.duration * RATE)], RATE)
    assert len(expected) == 12
    for out in (
        render_audio(timeline, tmp_path / "r.m4a"),
        concat_audio_chunked(timeline, tmp_path / "c.m4a", chunk_seconds=1.0),
    ):
        assert_no_drift(errors(out.path, expected))
    assert abs(expected[0] - AAC_FRAME) <= 16  # one priming at the start, and only there


def test_slices_timeline_is_continuous(slices: tuple[list[SegmentInput], np.ndarray]) -> None:
    segments, _ = slices
    timeline = plan_timeline(segments)
    assert timeline.cuts == ()
    placed = plan_audio(timeline, RATE).placements
    assert [p.preroll_from is not None for p in placed] == [False] + [True] * (len(placed) - 1)
