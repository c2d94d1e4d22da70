"""mux_playable(): one MP4 with H.264 + remuxed AAC, frames placed on the output timeline.

Tests of the constant-rate re-encode path pass ``copy_video=False``; the packet-copy path has
its own tests in test_merge_copy.py. Failure handling is checked on both paths.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import av
import pytest

from synthetic.clips import truncate, write_random_bytes
from synthetic.decode import decode_audio, decode_video
from tests.workers.media.helpers import leftovers
from workers.media import (
    Cancelled,
    MediaError,
    SegmentInput,
    Timeline,
    mux_playable,
    plan_timeline,
    render_audio,
)

FPS = 10


def seg(kind: str, path: Path, start: float | None, duration: float) -> SegmentInput:
    return SegmentInput(kind=kind, path=str(path), started_at=start, duration=duration)  # type: ignore[arg-type]


def streams(path: Path) -> list[tuple[str, str]]:
    with av.open(str(path)) as container:
        return [(s.type, s.codec_context.name) for s in container.streams]


def render(tl: Timeline, out: Path, **kwargs: object) -> Path:
    audio = render_audio(tl, out.with_suffix(".m4a")).path if tl.has_audio else None
    result = mux_playable(tl, audio, out, **kwargs)  # type: ignore[arg-type]
    assert result.path == out and out.exists()
    return out


def test_merged_file_has_one_h264_and_one_aac_and_durations_agree(
    media: Callable[..., Path], tmp_path: Path
) -> None:
    a = media("tone", "ma.m4a", seconds=3.0, rate=44100, channels=1)
    v = media("video", "mv.mp4", seconds=3.0, fps=FPS)
    tl = plan_timeline([seg("audio", a, 0.0, 3.0), seg("video", v, 0.2, 2.8)])
    audio_result = render_audio(tl, tmp_path / "a.m4a")
    result = mux_playable(tl, audio_result.path, tmp_path / "final.mp4", copy_video=False)
    assert (result.has_video, result.has_audio, result.frames) == (True, True, 3 * FPS)
    assert (result.video_copied, result.fallback_reason) == (False, "copying disabled")
    assert sorted(streams(result.path)) == [("audio", "aac"), ("video", "h264")]

    samples, rate = decode_audio(result.path)
    indices, times = decode_video(result.path)
    assert len(indices) == result.frames
    video_seconds = len(indices) / FPS
    assert abs(samples.shape[1] / rate - video_seconds) < 0.05
    assert video_seconds == pytest.approx(3.0)
    # black before the video starts at 0.2 s, then frame i at 0.2 + i/10
    assert indices[:2] == [0, 0] and indices[2] == 0 and indices[3] == 1 and indices[-1] == 27
    with av.open(str(result.path)) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"
    assert b"moov" in result.path.read_bytes()[:200]  # +faststart
    assert leftovers(tmp_path) == ["a.m4a", "final.mp4"]


def test_video_gap_freezes_last_frame_and_keeps_recorded_time(
    media: Callable[..., Path], tmp_path: Path
) -> None:
    a = media("tone", "ga.m4a", seconds=5.0)
    v1 = media("video", "g1.mp4", seconds=2.0, fps=FPS)
    v2 = media("video", "g2.mp4", seconds=2.0, fps=FPS, first_index=100)
    tl = plan_timeline(
        [seg("audio", a, 0.0, 5.0), seg("video", v1, 0.0, 2.0), seg("video", v2, 3.0, 2.0)]
    )
    assert tl.cuts == ()
    indices, _ = decode_video(render(tl, tmp_path / "gap.mp4", copy_video=False))
    assert len(indices) == 5 * FPS
    assert indices[:20] == list(range(20))
    assert indices[20:30] == [19] * 10  # frozen frame during the video-only gap
    assert indices[30:] == list(range(100, 120))


def test_cut_pauses_removes_gap_where_both_tracks_stop(
    media: Callable[..., Path], tmp_path: Path
) -> None:
    a1 = media("tone", "c1.m4a", seconds=2.0)
    a2 = media("tone", "c2.m4a", seconds=2.0)
    v1 = media("video", "cv1.mp4", seconds=2.0, fps=FPS)
    v2 = media("video", "cv2.mp4", seconds=2.0, fps=FPS, first_index=200)
    segments = [
        seg("audio", a1, 0.0, 2.0),
        seg("video", v1, 0.0, 2.0),
        seg("audio", a2, 5.0, 2.0),
        seg("video", v2, 5.0, 2.0),
    ]
    cut = plan_timeline(segments)
    assert cut.cuts == ((2.0, 5.0),) and cut.duration == 4.0
    out = render(cut, tmp_path / "cut.mp4", copy_video=False)
    indices, _ = decode_video(out)
    samples, rate = decode_audio(out)
    assert len(indices) == 40 and indices[19:21] == [19, 200]
    assert abs(samples.shape[1] / rate - 4.0) < 0.05
    loud = (abs(samples[0]) > 0.45).nonzero()[0]
    assert abs(int(loud[loud > rate].min()) - 2 * rate) <= 1024  # a2's marker moved to 2.0 s

    kept = plan_timeline(segments, cut_pauses=False)
    indices, _ = decode_video(render(kept, tmp_path / "kept.mp4", copy_video=False))
    assert len(indices) == 70 and indices[20:50] == [19] * 30 and indices[50] == 200


@pytest.mark.parametrize("copy_video", [True, False])
def test_video_only(media: Callable[..., Path], tmp_path: Path, copy_video: bool) -> None:
    v = media("video", "vo.mp4", seconds=1.0, fps=FPS)
    tl = plan_timeline([seg("video", v, 0.0, 1.0)])
    result = mux_playable(tl, None, tmp_path / "vo.mp4", copy_video=copy_video)
    assert result.video_copied is copy_video
    assert streams(result.path) == [("video", "h264")]
    assert (result.has_audio, result.frames, result.duration) == (False, FPS, 1.0)
    assert decode_video(result.path)[0] == list(range(FPS))


def test_audio_only(media: Callable[..., Path], tmp_path: Path) -> None:
    a = media("tone", "ao.m4a", seconds=1.5)
    tl = plan_timeline([seg("audio", a, 0.0, 1.5)])
    audio = render_audio(tl, tmp_path / "ao.m4a")
    result = mux_playable(tl, audio.path, tmp_path / "ao.mp4")
    assert streams(result.path) == [("audio", "aac")]
    assert (result.has_video, result.has_audio, result.frames) == (False, True, 0)
    samples, rate = decode_audio(result.path)
    reference, _ = decode_audio(audio.path)
    assert samples.shape == reference.shape  # remuxed, not re-encoded
    assert abs(samples - reference).max() == 0.0
    assert result.duration == pytest.approx(1.5, abs=0.03)


def test_fps_choice_and_scaling_to_first_even_size(
    media: Callable[..., Path], tmp_path: Path
) -> None:
    odd = media("video", "odd.mp4", seconds=1.0, fps=25, size=(161, 121), codec="mpeg4")
    big = media("video", "big.mp4", seconds=1.0, fps=25, size=(320, 240), first_index=50)
    tl = plan_timeline([seg("video", odd, None, 1.0), seg("video", big, None, 1.0)])
    result = mux_playable(tl, None, tmp_path / "s.mp4")
    assert not result.video_copied and "mpeg4" in (result.fallback_reason or "")
    assert result.frames == 50  # the first segment's 25 fps
    with av.open(str(result.path)) as container:
        cc = container.streams.video[0].codec_context
        assert (cc.width, cc.height) == (160, 120)
    indices, _ = decode_video(result.path)
    assert indices[:25] == list(range(25)) and indices[25:] == list(range(50, 75))
    assert mux_playable(tl, None, tmp_path / "f.mp4", fps=5).frames == 10


@pytest.mark.parametrize("copy_video", [True, False])
@pytest.mark.parametrize("damage", ["truncated", "truncated_faststart", "random"])
def test_broken_video_segment_raises_and_leaves_nothing(
    media: Callable[..., Path], tmp_path: Path, damage: str, copy_video: bool
) -> None:
    good = media("video", "good.mp4", seconds=1.0, fps=FPS)
    if damage == "truncated":
        bad = truncate(
            Path(shutil.copy(media("video", "b.mp4", seconds=2.0), tmp_path / "bad.mp4"))
        )
    elif damage == "truncated_faststart":
        source = media("video", "bfs.mp4", seconds=2.0, faststart=True)
        bad = truncate(Path(shutil.copy(source, tmp_path / "bad.mp4")), 0.6)
    else:
        bad = write_random_bytes(tmp_path / "bad.mp4")
    tl = plan_timeline([seg("video", good, 0.0, 1.0), seg("video", bad, None, 2.0)])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(MediaError, match="bad.mp4"):
        mux_playable(tl, None, out_dir / "final.mp4", copy_video=copy_video)
    assert leftovers(out_dir) == []


@pytest.mark.parametrize("copy_video", [True, False])
def test_broken_audio_file_raises(
    media: Callable[..., Path], tmp_path: Path, copy_video: bool
) -> None:
    v = media("video", "ba.mp4", seconds=1.0, fps=FPS)
    bad = write_random_bytes(tmp_path / "noise.m4a")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(MediaError, match="noise.m4a"):
        tl = plan_timeline([seg("video", v, 0.0, 1.0)])
        mux_playable(tl, bad, out_dir / "final.mp4", copy_video=copy_video)
    assert leftovers(out_dir) == []


@pytest.mark.parametrize("copy_video", [True, False])
def test_cancel_from_progress(media: Callable[..., Path], tmp_path: Path, copy_video: bool) -> None:
    v = media("video", "cp.mp4", seconds=1.0, fps=FPS)
    tl = plan_timeline([seg("video", v, 0.0, 1.0)])

    def cancel(fraction: float) -> None:
        raise Cancelled

    with pytest.raises(Cancelled):
        mux_playable(tl, None, tmp_path / "final.mp4", copy_video=copy_video, progress=cancel)
    assert leftovers(tmp_path) == []


def test_nothing_to_merge(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nothing to merge"):
        mux_playable(plan_timeline([]), None, tmp_path / "x.mp4")
