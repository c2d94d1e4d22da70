"""compress_video(): a small, visually sound copy of a screen recording (VFR H.264, audio)."""

from __future__ import annotations

import json
import shutil
import threading
import time
from bisect import bisect_right
from datetime import datetime
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from synthetic.clips import index_image, read_index, truncate, write_random_bytes
from synthetic.plan import SyntheticSpec
from synthetic.session import record_synthetic_session
from synthetic.timecode import read_timecode
from tests.support.media import track_ends
from tests.workers.media.helpers import leftovers
from workers.media import (
    Cancelled,
    MediaError,
    SegmentInput,
    mux_playable,
    plan_timeline,
    render_audio,
)
from workers.media import compress as compress_module
from workers.media.compress import (
    PRESETS,
    CompressResult,
    compress_video,
    queue_frames,
    thread_split,
)
from workers.media.quality import PSNR_IDENTICAL_DB, compare, psnr, ssim

SECONDS = 10.0
FPS = 15
MAX_MEDIUM_RATIO = 0.40  # compressed size / source size at "medium"
MIN_PSNR_DB = 35.0
MIN_SSIM = 0.95
AV_TOLERANCE = 0.05  # seconds


def _merged(tmp: Path, *, audio: bool) -> Path:
    """A finished session MP4 as the pipeline makes it: synthetic screen + mic, merged."""
    spec = SyntheticSpec(
        duration=SECONDS,
        segment_seconds=SECONDS,
        audio_holes=(),
        width=640,
        height=360,
        fps=FPS,
        audio=audio,
    )
    dest = tmp / ("av" if audio else "v")
    record_synthetic_session(dest, session_id="compress-test", name="compress", spec=spec)
    doc = json.loads((dest / "session.json").read_text())
    origin = datetime.fromisoformat(doc["started_at"])
    inputs = [
        SegmentInput(
            kind=s["kind"],
            path=str(dest / s["file"]),
            started_at=(datetime.fromisoformat(s["started_at"]) - origin).total_seconds(),
            duration=s["duration"],
        )
        for s in doc["segments"]
    ]
    tl = plan_timeline(inputs)
    track = render_audio(tl, tmp / f"{dest.name}.m4a").path if audio else None
    return mux_playable(tl, track, tmp / f"{dest.name}-merged.mp4").path


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _merged(tmp_path_factory.mktemp("compress-src"), audio=True)


@pytest.fixture(scope="module")
def compressed(source: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, CompressResult]:
    out = tmp_path_factory.mktemp("compressed")
    return {level: compress_video(source, out / f"{level}.mp4", preset=level) for level in PRESETS}


def stream_bytes(path: Path, kind: str) -> list[bytes]:
    with av.open(str(path)) as container:
        stream = next(s for s in container.streams if s.type == kind)
        return [bytes(p) for p in container.demux(stream) if p.size]


def timecodes(path: Path) -> tuple[list[float], list[float]]:
    """(frame times, burnt-in timecodes) of every decoded frame."""
    times, codes = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.video[0]):
            times.append(float(frame.time or 0.0))
            codes.append(read_timecode(frame.to_ndarray(format="gray")))
    return times, codes


def test_medium_is_small_sound_and_keeps_audio(
    source: Path, compressed: dict[str, CompressResult]
) -> None:
    result = compressed["medium"]
    out = result.path
    source_video = sum(map(len, stream_bytes(source, "video")))
    out_video = sum(map(len, stream_bytes(out, "video")))
    # audio is copied byte for byte, so the saving is all in the video
    assert stream_bytes(out, "audio") == stream_bytes(source, "audio")
    assert out_video <= MAX_MEDIUM_RATIO * source_video
    assert result.size < result.source_size == source.stat().st_size
    assert (result.has_video, result.has_audio, result.preset) == (True, True, "medium")

    quality = compare(source, out, samples=8)
    assert quality.frames == 8
    assert quality.psnr > MIN_PSNR_DB and quality.ssim > MIN_SSIM, quality

    src_ends, out_ends = track_ends(source), track_ends(out)
    assert abs(out_ends["video"] - src_ends["video"]) <= AV_TOLERANCE
    assert abs(out_ends["audio"] - out_ends["video"]) <= AV_TOLERANCE
    assert result.duration == pytest.approx(SECONDS, abs=AV_TOLERANCE)

    # the frame on screen at any time is the source's frame for that time
    src_times, src_codes = timecodes(source)
    out_times, out_codes = timecodes(out)
    for t in np.arange(0.0, SECONDS, 0.25):
        s = bisect_right(src_times, t + 1e-6) - 1
        o = bisect_right(out_times, t + 1e-6) - 1
        assert out_codes[o] == pytest.approx(src_codes[s], abs=1 / FPS + 1e-6)

    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
    data = out.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # +faststart


def test_presets_are_ordered_by_size_and_quality(
    source: Path, compressed: dict[str, CompressResult]
) -> None:
    sizes = [compressed[level].size for level in ("low", "medium", "high")]
    assert sizes == sorted(sizes) and len(set(sizes)) == 3
    low = compare(source, compressed["low"].path, samples=6)
    high = compare(source, compressed["high"].path, samples=6)
    assert low.psnr < high.psnr
    assert low.psnr > MIN_PSNR_DB - 3  # even "low" keeps text readable


def test_video_only_source_at_most_40_percent(tmp_path: Path) -> None:
    source = _merged(tmp_path, audio=False)
    result = compress_video(source, tmp_path / "small.mp4")
    assert not result.has_audio and result.ratio <= MAX_MEDIUM_RATIO
    with av.open(str(result.path)) as container:
        assert [s.type for s in container.streams] == ["video"]


def write_held_frames(
    path: Path,
    unique: int,
    repeat: int,
    fps: int = 10,
    *,
    size: tuple[int, int] = (160, 120),
    pix_fmt: str = "yuv420p",
) -> Path:
    """A constant-rate video where each picture is repeated ``repeat`` times (a still screen)."""
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], pix_fmt
        for i in range(unique * repeat):
            frame = av.VideoFrame.from_ndarray(index_image(i // repeat, size), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


@pytest.mark.parametrize(
    ("size", "pix_fmt"),
    [((160, 120), "yuv420p"), ((161, 121), "yuv444p")],  # odd 4:4:4 is converted to even 4:2:0
)
def test_duplicate_frames_are_dropped_and_the_kept_ones_last(
    tmp_path: Path, size: tuple[int, int], pix_fmt: str
) -> None:
    source = write_held_frames(
        tmp_path / "held.mp4", unique=6, repeat=5, size=size, pix_fmt=pix_fmt
    )
    result = compress_video(source, tmp_path / "vfr.mp4")
    assert (result.frames_in, result.frames_out) == (30, 6)
    with av.open(str(result.path)) as container:
        cc = container.streams.video[0].codec_context
        assert (cc.width, cc.height, cc.pix_fmt) == (160, 120, "yuv420p")
        frames = [(float(f.time or 0.0), read_index(f)) for f in container.decode(video=0)]
    assert frames == [(pytest.approx(0.5 * i), i) for i in range(6)]
    assert track_ends(result.path)["video"] == pytest.approx(3.0)


@pytest.mark.parametrize("damage", ["random", "truncated"])
def test_corrupt_input_raises_and_leaves_nothing(source: Path, tmp_path: Path, damage: str) -> None:
    if damage == "random":
        bad = write_random_bytes(tmp_path / "bad.mp4")
    else:
        bad = truncate(Path(shutil.copy(source, tmp_path / "bad.mp4")), 0.6)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(MediaError, match="bad.mp4"):
        compress_video(bad, out_dir / "small.mp4")
    assert leftovers(out_dir) == []


def test_progress_and_cancel(source: Path, tmp_path: Path) -> None:
    seen: list[float] = []

    def cancel(fraction: float) -> None:
        seen.append(fraction)
        raise Cancelled

    with pytest.raises(Cancelled):
        compress_video(source, tmp_path / "c.mp4", progress=cancel)
    assert len(seen) == 1 and leftovers(tmp_path) == []
    assert not encode_threads_alive()

    reports: list[tuple[float, float]] = []
    compress_video(
        source,
        tmp_path / "p.mp4",
        preset="low",
        progress=lambda f: reports.append((time.monotonic(), f)),
    )
    fractions = [f for _, f in reports]
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)
    # at most about once a second (the final 1.0 is always sent)
    assert all(b[0] - a[0] >= 0.9 for a, b in zip(reports[:-2], reports[1:-1], strict=True))


def test_unknown_preset(source: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="preset"):
        compress_video(source, tmp_path / "x.mp4", preset="best")  # type: ignore[arg-type]


def test_quality_helpers(source: Path) -> None:
    plane = np.arange(64 * 48, dtype=np.uint8).reshape(48, 64)
    assert psnr(plane, plane) == PSNR_IDENTICAL_DB and ssim(plane, plane) == pytest.approx(1.0)
    worse = plane // 2
    assert psnr(plane, worse) < 20 and ssim(plane, worse) < 0.99
    same = compare(source, source, samples=3)
    assert (same.frames, same.psnr, same.ssim) == (3, PSNR_IDENTICAL_DB, pytest.approx(1.0))


def encode_threads_alive() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "compress-encode" and t.is_alive()]


def test_a_failing_encoder_stops_the_copy_and_leaves_nothing(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoded: list[int] = []
    real_encode = compress_module._EncodeThread._encode

    def encode_then_fail(self: object, frame: av.VideoFrame, duration: int) -> None:
        encoded.append(duration)
        if len(encoded) == 3:
            raise OSError(28, "No space left on device")
        real_encode(self, frame, duration)  # type: ignore[arg-type]

    monkeypatch.setattr(compress_module._EncodeThread, "_encode", encode_then_fail)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(OSError, match="No space left"):
        compress_video(source, out_dir / "small.mp4")
    assert len(encoded) == 3  # the decoding side stopped handing frames on
    assert leftovers(out_dir) == []
    assert not encode_threads_alive()


def test_threads_are_split_between_decoding_and_encoding() -> None:
    assert thread_split(1) == (1, 1)
    assert thread_split(2) == (1, 1)
    assert thread_split(3) == (2, 1)
    assert thread_split(8) == (4, 4)


def test_queue_depth_follows_picture_size() -> None:
    full_hd = queue_frames(1920, 1080)
    assert full_hd * 1920 * 1080 * 3 // 2 <= compress_module.ENCODE_QUEUE_BYTES
    assert full_hd >= 60  # two seconds of a burst at 30 fps
    assert queue_frames(16384, 16384) == compress_module.ENCODE_QUEUE_MIN_FRAMES
    assert queue_frames(320, 240) > full_hd
