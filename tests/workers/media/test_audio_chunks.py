"""The chunked AAC paths against the one-pass reference: same placement, no audible joins.

Whole-session (parallel threads) and incremental (chunks stored while segments arrive, then
reused) must put every marker where the reference puts it, keep the exact sample count, and
leave no discontinuity where independently encoded chunks meet.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest

from shared.segments import SegmentKind
from synthetic.clips import truncate
from synthetic.decode import decode_audio
from tests.support.media import marker_onsets
from tests.workers.media.helpers import leftovers
from workers.media import Cancelled, MediaError, SegmentInput, Timeline, plan_timeline
from workers.media.aacchunk import (
    ChunkedAudioResult,
    ChunkStore,
    concat_audio_chunked,
    encode_settled_chunks,
    encoder_params,
    render_range,
)
from workers.media.aacplan import AAC_FRAME, ChunkGrid, plan_audio, plan_chunks
from workers.media.audio import render_audio

RATE = 48000
CHUNK_S = 0.25  # tiny chunks: many joins in a few seconds of audio
# How far markers found in two encodings of the same placement may differ: onsets are the
# first sample over a threshold, and two encoders' quantisation can move that by a few.
SAME_ONSET_SAMPLES = 8


def audio(path: Path | str, start: float | None, duration: float) -> SegmentInput:
    return SegmentInput(kind=SegmentKind.AUDIO, path=str(path), started_at=start, duration=duration)


def assert_same_onsets(a: list[int], b: list[int]) -> None:
    assert len(a) == len(b), (a, b)
    assert max((abs(x - y) for x, y in zip(a, b, strict=True)), default=0) <= SAME_ONSET_SAMPLES


def tone_segments(
    media: Callable[..., Path], prefix: str, count: int, seconds: float, **kwargs: object
) -> list[Path]:
    return [media("tone", f"{prefix}{i}.m4a", seconds=seconds, **kwargs) for i in range(count)]


def back_to_back(paths: list[Path], seconds: float) -> Timeline:
    return plan_timeline([audio(p, i * seconds, seconds) for i, p in enumerate(paths)])


Track = tuple[tuple[object, ...], list[tuple[int | None, int | None, int | None, bytes]], bytes]


def _track(path: Path) -> Track:
    """What a player gets from an AAC file: its stream's timing and configuration, every
    packet with its timestamps, and the samples decoded."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        facts: tuple[object, ...] = (stream.time_base, stream.duration, stream.start_time,
                                     stream.rate, stream.channels,
                                     stream.codec_context.extradata)  # fmt: skip
        packets = [(p.pts, p.dts, p.duration, bytes(p)) for p in container.demux(stream) if p.size]
    with av.open(str(path)) as container:
        pcm = b"".join(f.to_ndarray().tobytes() for f in container.decode(audio=0))
    return facts, packets, pcm


def test_one_chunk_is_the_reference_track(media: Callable[..., Path], tmp_path: Path) -> None:
    """One chunk is the one-pass render exactly: the same packets at the same times, the same
    samples decoded (the file is written by the track writer, not FFmpeg's muxer, so only
    the container's tags differ)."""
    timeline = back_to_back(tone_segments(media, "id", 3, 0.5), 0.5)
    ref = render_audio(timeline, tmp_path / "ref.m4a")
    one = concat_audio_chunked(timeline, tmp_path / "one.m4a", chunk_seconds=3600.0)
    assert isinstance(one, ChunkedAudioResult) and one.chunks == 1
    want, got = _track(ref.path), _track(one.path)
    assert got[0] == want[0] and got[1] == want[1] and got[2] == want[2]
    assert len(got[1]) > 3 * 0.5 * RATE / AAC_FRAME and got[2]


def test_parallel_chunks_match_the_reference(media: Callable[..., Path], tmp_path: Path) -> None:
    parts = [
        media("tone", "mx1.m4a", seconds=1.0, rate=44100, channels=1, codec="aac"),
        media("tone", "mx2.wav", seconds=1.0, rate=48000, channels=2, codec="pcm_s16le"),
        media("tone", "mx3.wav", seconds=1.0, rate=44100, channels=1, codec="pcm_s16le"),
        media("tone", "mx4.m4a", seconds=1.0, rate=48000, channels=2, codec="aac"),
        media("tone", "mx5.m4a", seconds=1.0, rate=48000, channels=1, codec="aac"),
    ]
    zero = media("tone", "mx0.m4a", seconds=1.0)
    timeline = plan_timeline(
        [
            audio(parts[0], 0.0, 1.0),
            audio(parts[1], 1.0, 1.0),
            audio(zero, 1.5, 0.0),  # zero length: dropped
            audio(parts[2], 2.5, 1.0),  # after a 0.5 s gap (kept: silence)
            audio(parts[3], 3.0, 1.0),  # overlaps parts[2] by 0.5 s: its start is trimmed
            audio(parts[4], 4.0, 1.0),
        ],
        cut_pauses=False,
    )
    ref = render_audio(timeline, tmp_path / "ref.m4a")
    out = concat_audio_chunked(timeline, tmp_path / "par.m4a", chunk_seconds=CHUNK_S, workers=2)
    assert isinstance(out, ChunkedAudioResult)
    assert out.samples == ref.samples == 5 * RATE and out.chunks > 15
    assert (out.reused, out.encoded) == (0, out.chunks)
    a, _ = decode_audio(ref.path)
    b, _ = decode_audio(out.path)
    assert a.shape == b.shape
    expected = [0, RATE, round(2.5 * RATE), 4 * RATE]  # parts[3]'s marker was trimmed away
    found = marker_onsets(b, RATE)
    assert_same_onsets(marker_onsets(a, RATE), found)
    assert all(abs(f - e) <= AAC_FRAME for f, e in zip(found, expected, strict=True))
    assert leftovers(tmp_path) == ["par.m4a", "ref.m4a"]


def test_chunk_joins_have_no_discontinuity(media: Callable[..., Path], tmp_path: Path) -> None:
    """Errors against the exact rendered input near chunk joins are like everywhere else."""
    source = media("tone", "steady.m4a", seconds=4.0, marker=False)
    timeline = plan_timeline([audio(source, 0.0, 4.0)])
    plan = plan_audio(timeline, RATE)
    exact = render_range(plan, 0, plan.total, "stereo")
    ref, _ = decode_audio(render_audio(timeline, tmp_path / "ref.m4a").path)
    out, _ = decode_audio(
        concat_audio_chunked(timeline, tmp_path / "ch.m4a", chunk_seconds=CHUNK_S).path
    )
    n = plan.total
    err_ref = np.abs(ref[:, :n] - exact).max(axis=0)
    err_out = np.abs(out[:, :n] - exact).max(axis=0)
    settle = 2 * AAC_FRAME  # the stream's first frames are the encoder's start-up
    grid = ChunkGrid.for_seconds(CHUNK_S, RATE)
    joins = range(grid.chunk_samples, n, grid.chunk_samples)
    assert len(joins) >= 10
    worst_ref = float(err_ref[settle:].max())
    for join in joins:
        near = err_out[join - AAC_FRAME : join + AAC_FRAME]
        assert near.max() <= 2 * worst_ref + 1e-3, (join, float(near.max()), worst_ref)
    # no jump between neighbouring samples beyond what the tone itself does
    steepest = float(np.abs(np.diff(exact[0])).max())
    for join in joins:
        step = np.abs(np.diff(out[0, join - AAC_FRAME : join + AAC_FRAME])).max()
        assert step <= steepest * 1.5 + 1e-3, (join, float(step), steepest)
    # overall the chunked encode is as faithful as the single pass
    snr = [10 * np.log10(np.sum(exact**2) / np.sum((x[:, :n] - exact) ** 2)) for x in (ref, out)]
    assert snr[1] >= snr[0] - 1.0, snr


def test_incremental_chunks_are_reused_and_give_the_same_file(
    media: Callable[..., Path], tmp_path: Path
) -> None:
    paths = tone_segments(media, "inc", 12, 0.5)
    segments = [audio(p, i * 0.5, 0.5) for i, p in enumerate(paths)]
    store = ChunkStore(tmp_path / "chunks")
    encoded_while_recording = 0
    for arrived in range(1, len(segments) + 1):
        result = encode_settled_chunks(
            plan_timeline(segments[:arrived]), store, chunk_seconds=CHUNK_S
        )
        assert not result.stopped and result.reused + result.encoded == result.chunks
        encoded_while_recording += result.encoded
    assert encoded_while_recording == len(store.files()) > 0

    timeline = plan_timeline(segments)
    final = concat_audio_chunked(timeline, tmp_path / "inc.m4a", chunk_seconds=CHUNK_S, store=store)
    fresh = concat_audio_chunked(timeline, tmp_path / "fresh.m4a", chunk_seconds=CHUNK_S)
    ref = render_audio(timeline, tmp_path / "ref.m4a")
    assert isinstance(final, ChunkedAudioResult)
    assert final.reused == encoded_while_recording
    assert 1 <= final.encoded <= 3  # only the tail was left
    assert final.path.read_bytes() == fresh.path.read_bytes()
    a, _ = decode_audio(ref.path)
    b, _ = decode_audio(final.path)
    found = marker_onsets(b, RATE)
    assert_same_onsets(marker_onsets(a, RATE), found)
    assert len(found) == 12
    assert all(abs(f - i * RATE // 2) <= AAC_FRAME for i, f in enumerate(found))


def test_a_late_segment_invalidates_only_the_chunks_it_feeds(
    media: Callable[..., Path], tmp_path: Path
) -> None:
    paths = tone_segments(media, "late", 12, 0.5)
    segments = [audio(p, i * 0.5, 0.5) for i, p in enumerate(paths)]
    missing = segments.pop(5)  # [2.5, 3.0) arrives after everything else
    store = ChunkStore(tmp_path / "chunks")
    for arrived in range(1, len(segments) + 1):
        encode_settled_chunks(
            plan_timeline(segments[:arrived], cut_pauses=False), store, chunk_seconds=CHUNK_S
        )
    stored = len(store.files())
    timeline = plan_timeline([*segments, missing], cut_pauses=False)
    final = concat_audio_chunked(
        timeline, tmp_path / "late.m4a", chunk_seconds=CHUNK_S, store=store
    )
    assert isinstance(final, ChunkedAudioResult)

    grid = ChunkGrid.for_seconds(CHUNK_S, RATE)
    chunks = plan_chunks(
        plan_audio(timeline, RATE), grid, encoder_params(RATE, "stereo", 128_000, "twoloop")
    )
    # the late file, and the next one, which now continues it (its decoder may be primed
    # with the late file's last packet, so its signature names that file too)
    lo, hi = round(2.5 * RATE), round(3.5 * RATE)
    fed = [c for c in chunks if c.feed_start < hi and c.feed_end > lo]
    assert 0 < len(fed) < len(chunks) // 2
    assert final.encoded == len(fed) + 1  # the invalidated ones and the tail
    assert final.reused == final.chunks - final.encoded and final.reused <= stored
    found = marker_onsets(decode_audio(final.path)[0], RATE)
    assert len(found) == 12
    assert all(abs(f - i * RATE // 2) <= AAC_FRAME for i, f in enumerate(found))


def test_store_ignores_stale_and_torn_files(media: Callable[..., Path], tmp_path: Path) -> None:
    timeline = back_to_back(tone_segments(media, "st", 4, 0.5), 0.5)
    store = ChunkStore(tmp_path / "chunks")
    first = concat_audio_chunked(timeline, tmp_path / "a.m4a", chunk_seconds=CHUNK_S, store=store)
    assert isinstance(first, ChunkedAudioResult) and first.encoded == first.chunks
    files = store.files()
    assert len(files) == first.chunks
    # a torn file and a foreign one: both are re-encoded, nothing else is
    files[2].write_bytes(files[2].read_bytes()[:100])
    files[3].write_bytes(b"not a chunk")
    again = concat_audio_chunked(timeline, tmp_path / "b.m4a", chunk_seconds=CHUNK_S, store=store)
    assert isinstance(again, ChunkedAudioResult)
    assert (again.reused, again.encoded) == (first.chunks - 2, 2)
    assert again.path.read_bytes() == first.path.read_bytes()
    # another bitrate changes every signature: old files are replaced, not reused
    third = concat_audio_chunked(
        timeline, tmp_path / "c.m4a", chunk_seconds=CHUNK_S, store=store, bitrate=96_000
    )
    assert isinstance(third, ChunkedAudioResult) and third.reused == 0
    assert len(store.files()) == third.chunks
    store.clear()
    assert not store.folder.exists()


@pytest.mark.parametrize("cut", [True, False], ids=["pause-cut", "pause-kept"])
def test_long_pause_is_cut_or_kept(media: Callable[..., Path], tmp_path: Path, cut: bool) -> None:
    a1 = media("tone", "p1.m4a", seconds=1.0)
    a2 = media("tone", "p2.m4a", seconds=1.0)
    # the agent paused at 1 s and resumed at 21 s; nothing was recorded in between
    timeline = plan_timeline(
        [audio(a1, 0.0, 1.0), audio(a2, 21.0, 1.0)], pauses=[(1.0, 21.0)], cut_pauses=cut
    )
    expected = [0, RATE] if cut else [0, 21 * RATE]
    ref = render_audio(timeline, tmp_path / "ref.m4a")
    out = concat_audio_chunked(timeline, tmp_path / "ch.m4a", chunk_seconds=2.0)
    assert out.samples == ref.samples == (2 if cut else 22) * RATE
    for result in (ref, out):
        samples, _ = decode_audio(result.path)
        found = marker_onsets(samples, RATE)
        assert all(abs(f - e) <= AAC_FRAME for f, e in zip(found, expected, strict=True))
        if not cut:  # the kept pause is digital silence
            assert float(np.abs(samples[:, int(1.1 * RATE) : int(20.9 * RATE)]).max()) < 1e-4


@pytest.mark.parametrize("damage", ["truncated", "truncated_faststart"])
def test_broken_segment_fails_naming_it_and_leaves_no_output(
    media: Callable[..., Path], tmp_path: Path, damage: str
) -> None:
    good = media("tone", "cg.m4a", seconds=1.0)
    work = tmp_path / "work"
    work.mkdir()
    source = media("tone", f"cb-{damage}.m4a", seconds=2.0, faststart=damage != "truncated")
    bad = truncate(Path(shutil.copy(source, work / "bad.m4a")), 0.6)
    timeline = plan_timeline([audio(good, 0.0, 1.0), audio(bad, 1.0, 2.0)])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(MediaError, match="bad.m4a") as info:
        concat_audio_chunked(timeline, out_dir / "session.m4a", chunk_seconds=CHUNK_S)
    assert info.value.path is not None and info.value.path.endswith("bad.m4a")
    assert leftovers(out_dir) == []


def test_cancel_leaves_no_output(media: Callable[..., Path], tmp_path: Path) -> None:
    timeline = back_to_back(tone_segments(media, "cn", 2, 0.5), 0.5)

    def cancel(fraction: float) -> None:
        raise Cancelled

    with pytest.raises(Cancelled):
        concat_audio_chunked(timeline, tmp_path / "c.m4a", chunk_seconds=CHUNK_S, progress=cancel)
    assert leftovers(tmp_path) == []


def test_keep_going_false_stops_before_writing(media: Callable[..., Path], tmp_path: Path) -> None:
    timeline = back_to_back(tone_segments(media, "kg", 4, 0.5), 0.5)
    store = ChunkStore(tmp_path / "chunks")
    result = encode_settled_chunks(timeline, store, chunk_seconds=CHUNK_S, keep_going=lambda: False)
    assert result.stopped and result.encoded == 0 and store.files() == []
