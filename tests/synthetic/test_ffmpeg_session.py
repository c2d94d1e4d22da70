"""Benchmark sessions made by ffmpeg: valid ``session.json``, markers in every mic segment,
and a cache key that only changes when the media would."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.sessiondir import load_manifest
from synthetic.decode import file_marker_onsets
from synthetic.ffmpeg_session import AUDIO_RATE_HZ, FPS, SessionSpec, ensure_session

SMALL = SessionSpec(minutes=0.1, audio_segments=3, video_segments=2)  # 6 s


def test_key_is_stable_and_names_the_layout() -> None:
    assert SessionSpec(minutes=1).key == SessionSpec(minutes=1.0).key
    assert SessionSpec(minutes=1).key != SessionSpec(minutes=1, audio_segments=30).key
    assert SessionSpec(minutes=1).key.startswith("m1-v30-a60-1080p30-8M-")


@pytest.mark.parametrize(
    "spec",
    [SessionSpec(minutes=0), SessionSpec(minutes=0.1, video_segments=7), SessionSpec(0.01, 60)],
)
def test_bad_specs_raise(spec: SessionSpec) -> None:
    with pytest.raises(ValueError):
        spec.validate()


def test_generated_session_is_valid_and_cached(tmp_path: Path) -> None:
    made = ensure_session(SMALL, tmp_path, log=False)
    assert made.generated_s is not None
    manifest = load_manifest(made.directory)
    assert [(s.kind, s.duration) for s in manifest.segments] == [("video", 3.0)] * 2 + [
        ("audio", 2.0)
    ] * 3
    assert manifest.id == f"bench-{SMALL.key}"
    for segment in made.of_kind("audio"):
        (onset,) = file_marker_onsets(segment.path, AUDIO_RATE_HZ)
        assert onset <= 16  # at the very start of the file
    assert made.video_bytes > 0 and FPS == 30
    again = ensure_session(SMALL, tmp_path, log=False)
    assert again.generated_s is None and again.directory == made.directory
