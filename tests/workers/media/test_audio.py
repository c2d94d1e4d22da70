"""render_audio(): sample-exact placement, silence, format mixing, failure hygiene."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from shared.segments import SegmentKind
from synthetic.clips import TONE_AMPLITUDE, truncate, write_random_bytes
from synthetic.decode import decode_audio
from tests.support.media import marker_onsets
from tests.workers.media.helpers import leftovers
from workers.media import Cancelled, MediaError, SegmentInput, plan_timeline, render_audio

RATE = 48000
TOLERANCE = 1024  # samples: the spec's placement tolerance


def audio(path: Path, start: float | None, duration: float) -> SegmentInput:
    return SegmentInput(kind=SegmentKind.AUDIO, path=str(path), started_at=start, duration=duration)


def video(path: Path, start: float | None, duration: float) -> SegmentInput:
    return SegmentInput(kind=SegmentKind.VIDEO, path=str(path), started_at=start, duration=duration)


def rms(samples: np.ndarray, a: float, b: float) -> float:
    return float(np.sqrt(np.mean(samples[:, int(a * RATE) : int(b * RATE)] ** 2)))


def test_hole_in_audio_while_video_continues(media: Callable[..., Path], tmp_path: Path) -> None:
    a1 = media("tone", "h1.m4a", seconds=2.0)
    a2 = media("tone", "h2.m4a", seconds=2.0)
    v = media("video", "h.mp4", seconds=14.0, fps=5, size=(64, 48))
    tl = plan_timeline([audio(a1, 0.0, 2.0), audio(a2, 12.0, 2.0), video(v, 0.0, 14.0)])
    assert tl.cuts == ()
    result = render_audio(tl, tmp_path / "out.m4a")
    assert result.samples == 14 * RATE and result.duration == 14.0

    samples, rate = decode_audio(result.path)
    assert rate == RATE and samples.shape[0] == 2
    assert 14 * RATE <= samples.shape[1] <= 14 * RATE + 1024  # AAC pads the last frame only
    assert rms(samples, 2.05, 11.95) < 1e-4  # digital silence in the 10 s hole
    assert rms(samples, 0.5, 1.5) > TONE_AMPLITUDE / 2
    onsets = marker_onsets(samples, RATE)
    assert len(onsets) == 2
    assert abs(onsets[0]) <= TOLERANCE
    assert abs(onsets[1] - 12 * RATE) <= TOLERANCE
    assert leftovers(tmp_path) == ["out.m4a"]


def test_mixed_rates_layouts_and_codecs(media: Callable[..., Path], tmp_path: Path) -> None:
    parts = [
        media("tone", "m1.m4a", seconds=1.0, rate=44100, channels=1, codec="aac"),
        media("tone", "m2.wav", seconds=1.0, rate=48000, channels=2, codec="pcm_s16le"),
        media("tone", "m3.wav", seconds=1.0, rate=44100, channels=1, codec="pcm_s16le"),
        media("tone", "m4.ogg", seconds=1.0, rate=48000, channels=2, codec="libopus"),
        media("tone", "m5.m4a", seconds=1.0, rate=48000, channels=2, codec="aac"),
    ]
    tl = plan_timeline([audio(p, None, 1.0) for p in parts])
    result = render_audio(tl, tmp_path / "mixed.m4a")
    samples, _ = decode_audio(result.path)
    assert 5 * RATE <= samples.shape[1] <= 5 * RATE + 1024
    onsets = marker_onsets(samples, RATE)
    assert len(onsets) == 5
    for i, onset in enumerate(onsets):
        assert abs(onset - i * RATE) <= TOLERANCE, (parts[i].name, onset)
    # both channels carry the (upmixed) mono sources
    assert rms(samples[1:], 0.2, 0.9) > TONE_AMPLITUDE / 4


def test_mono_output_and_other_rate(media: Callable[..., Path], tmp_path: Path) -> None:
    a = media("tone", "mono.wav", seconds=1.0, rate=48000, channels=2, codec="pcm_s16le")
    result = render_audio(
        plan_timeline([audio(a, 0.0, 1.0)]), tmp_path / "m.m4a", sample_rate=44100, layout="mono"
    )
    samples, rate = decode_audio(result.path)
    assert rate == 44100 and samples.shape[0] == 1 and result.samples == 44100


def test_overlap_is_dropped_from_the_later_segment(
    media: Callable[..., Path], tmp_path: Path
) -> None:
    a1 = media("tone", "o1.m4a", seconds=2.0)
    a2 = media("tone", "o2.m4a", seconds=2.0)
    tl = plan_timeline([audio(a1, 0.0, 2.0), audio(a2, 1.0, 2.0)])  # a2's first second overlaps
    assert tl.of_kind(SegmentKind.AUDIO)[1].trim_start == 1.0
    result = render_audio(tl, tmp_path / "o.m4a")
    samples, _ = decode_audio(result.path)
    assert result.samples == 3 * RATE
    # a2's marker sat in the trimmed second: only a1's marker remains, and no hole appears
    assert len(marker_onsets(samples, RATE)) == 1
    assert rms(samples, 1.9, 2.1) > TONE_AMPLITUDE / 2


def test_declared_duration_cuts_a_longer_file(media: Callable[..., Path], tmp_path: Path) -> None:
    a1 = media("tone", "c1.m4a", seconds=2.0)
    a2 = media("tone", "c2.m4a", seconds=1.0)
    tl = plan_timeline([audio(a1, 0.0, 1.0), audio(a2, None, 1.0)])  # only 1 s of a1 is kept
    samples, _ = decode_audio(render_audio(tl, tmp_path / "c.m4a").path)
    assert [abs(o - i * RATE) <= TOLERANCE for i, o in enumerate(marker_onsets(samples, RATE))] == [
        True,
        True,
    ]


def test_zero_length_segment_is_ignored(media: Callable[..., Path], tmp_path: Path) -> None:
    a = media("tone", "z.m4a", seconds=1.0)
    junk = write_random_bytes(tmp_path / "junk.m4a")  # never opened: it has no length
    tl = plan_timeline([audio(a, 0.0, 1.0), audio(junk, 0.5, 0.0)])
    result = render_audio(tl, tmp_path / "z_out.m4a")
    assert result.samples == RATE


def test_explicit_pause_is_cut_from_audio(media: Callable[..., Path], tmp_path: Path) -> None:
    a1 = media("tone", "x1.m4a", seconds=2.0)
    a2 = media("tone", "x2.m4a", seconds=2.0)
    tl = plan_timeline([audio(a1, 0.0, 2.0), audio(a2, 2.0, 2.0)], pauses=[(1.0, 2.5)])
    samples, _ = decode_audio(render_audio(tl, tmp_path / "x.m4a").path)
    assert tl.duration == 2.5
    assert 2.5 * RATE <= samples.shape[1] <= 2.5 * RATE + 1024
    # a2's marker was inside the pause; the tone continues right after the cut
    assert len(marker_onsets(samples, RATE)) == 1
    assert rms(samples, 1.1, 2.4) > TONE_AMPLITUDE / 2


@pytest.mark.parametrize("damage", ["truncated", "truncated_faststart", "random"])
def test_broken_segment_raises_and_leaves_nothing(
    media: Callable[..., Path], tmp_path: Path, damage: str
) -> None:
    good = media("tone", "g.m4a", seconds=1.0)
    work = tmp_path / "work"
    work.mkdir()
    if damage == "truncated":
        bad = truncate(Path(shutil.copy(media("tone", "b.m4a", seconds=2.0), work / "bad.m4a")))
    elif damage == "truncated_faststart":  # opens fine, fails while decoding
        source = media("tone", "bf.m4a", seconds=2.0, faststart=True)
        bad = truncate(Path(shutil.copy(source, work / "bad.m4a")), 0.6)
    else:
        bad = write_random_bytes(work / "bad.m4a")
    tl = plan_timeline([audio(good, 0.0, 1.0), audio(bad, None, 2.0)])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(MediaError, match="bad.m4a") as info:
        render_audio(tl, out_dir / "session.m4a")
    assert info.value.path is not None and info.value.path.endswith("bad.m4a")
    assert leftovers(out_dir) == []


def test_url_segment_is_refused(tmp_path: Path) -> None:
    seg = SegmentInput(
        kind=SegmentKind.AUDIO, path="http://example.com/a.m4a", started_at=0, duration=1
    )
    with pytest.raises(MediaError, match="http://example.com/a.m4a"):
        render_audio(plan_timeline([seg]), tmp_path / "u.m4a")
    assert leftovers(tmp_path) == []


def test_progress_and_cancel(media: Callable[..., Path], tmp_path: Path) -> None:
    a = media("tone", "pc.m4a", seconds=1.0)
    tl = plan_timeline([audio(a, 0.0, 1.0)])
    seen: list[float] = []
    render_audio(tl, tmp_path / "p.m4a", progress=seen.append)
    assert seen and seen[-1] == 1.0 and all(0.0 <= f <= 1.0 for f in seen)

    def cancel(fraction: float) -> None:
        raise Cancelled

    with pytest.raises(Cancelled):
        render_audio(tl, tmp_path / "c.m4a", progress=cancel)
    assert leftovers(tmp_path) == ["p.m4a"]


def test_timeline_without_audio_is_rejected(media: Callable[..., Path], tmp_path: Path) -> None:
    tl = plan_timeline([video(media("video", "only.mp4", seconds=1.0), 0.0, 1.0)])
    with pytest.raises(ValueError, match="no audio"):
        render_audio(tl, tmp_path / "n.m4a")
