"""probe(): stream facts and a duration that survives truncated uploads."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from synthetic.clips import truncate, write_random_bytes
from workers.media import MediaError, probe


def test_probe_audio_and_video(media: Callable[..., Path]) -> None:
    m4a = probe(media("tone", "p44.m4a", seconds=2.0, rate=44100, channels=1))
    assert (m4a.has_audio, m4a.has_video, m4a.audio_codec) == (True, False, "aac")
    assert (m4a.sample_rate, m4a.channels) == (44100, 1)
    assert m4a.duration == pytest.approx(2.0, abs=0.03)

    wav = probe(media("tone", "p48.wav", seconds=1.5, rate=48000, channels=2, codec="pcm_s16le"))
    assert (wav.audio_codec, wav.sample_rate, wav.channels) == ("pcm_s16le", 48000, 2)
    assert wav.duration == pytest.approx(1.5, abs=0.01)

    mp4 = probe(media("video", "p.mp4", seconds=5.0, fps=10))  # > 3 s: exercises the tail seek
    assert (mp4.has_video, mp4.has_audio, mp4.video_codec) == (True, False, "h264")
    assert (mp4.width, mp4.height, mp4.fps) == (160, 120, 10.0)
    assert mp4.duration == pytest.approx(5.0, abs=0.11)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="nope.mp4") as info:
        probe(tmp_path / "nope.mp4")
    assert info.value.path is not None and info.value.path.endswith("nope.mp4")


def test_random_bytes(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="noise.mp4"):
        probe(write_random_bytes(tmp_path / "noise.mp4"))


@pytest.mark.parametrize("name", ["t.m4a", "t.mp4"])
def test_truncated_file(media: Callable[..., Path], tmp_path: Path, name: str) -> None:
    source = (
        media("tone", "pt.m4a", seconds=2.0)
        if name.endswith("m4a")
        else media("video", "pt.mp4", seconds=2.0)
    )
    broken = truncate(Path(shutil.copy(source, tmp_path / name)))
    with pytest.raises(MediaError, match=name):
        probe(broken)


def test_truncated_fast_start_file_is_detected(media: Callable[..., Path], tmp_path: Path) -> None:
    """moov at the front keeps the full duration in the header; the packets tell the truth."""
    fast = media("video", "fast.mp4", seconds=6.0, fps=10, faststart=True)
    assert probe(fast).duration == pytest.approx(6.0, abs=0.11)
    broken = truncate(Path(shutil.copy(fast, tmp_path / "fast.mp4")), 0.5)
    with pytest.raises(MediaError, match="fast.mp4"):
        probe(broken)


def test_url_is_refused() -> None:
    with pytest.raises(MediaError, match="http://example.com/a.mp4"):
        probe("http://example.com/a.mp4")  # type: ignore[arg-type]
