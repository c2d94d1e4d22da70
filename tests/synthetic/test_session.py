"""A recorded synthetic session is one a real recorder could have written, and measurable:
``session.json`` valid per :mod:`shared.sessiondir`, timecode read back from every frame,
every microphone marker at its planned time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import av
import numpy as np
import pytest

from shared.sessiondir import Manifest, load_manifest
from synthetic.decode import decode_audio
from synthetic.markers import MARKER_THRESHOLD, find_onsets, marker_samples, marker_tone
from synthetic.plan import SyntheticSpec
from synthetic.session import RecordedSegment, record_synthetic_session
from synthetic.timecode import read_timecode

START = datetime(2024, 5, 1, 9, 30, 0, tzinfo=timezone(timedelta(hours=2)))
SPEC = SyntheticSpec(
    duration=12.0,
    segment_seconds=4.0,
    audio_holes=((5.0, 9.0),),
    width=160,
    height=96,
    fps=15,
)
# (kind, file, start offset, duration) as a recorder would list them.
EXPECTED = [
    ("video", "screen-0000.mp4", 0.0, 4.0),
    ("audio", "mic-0000.m4a", 0.0, 4.0),
    ("video", "screen-0001.mp4", 4.0, 4.0),
    ("audio", "mic-0001.m4a", 4.0, 1.0),
    ("video", "screen-0002.mp4", 8.0, 4.0),
    ("audio", "mic-0002.m4a", 9.0, 3.0),
]
AAC_FRAME = 1024
# A marker found in a decoded file lies within this many samples of where it was written.
ONSET_TOLERANCE = 16


@dataclass
class Recorded:
    dir: Path
    manifest: Manifest
    calls: list[tuple[RecordedSegment, bool]]  # (segment, file existed at call time)


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    dest = tmp_path_factory.mktemp("rec") / "sess"
    calls: list[tuple[RecordedSegment, bool]] = []
    out = record_synthetic_session(
        dest,
        session_id="sess-1",
        name="Synthetic test",
        spec=SPEC,
        started_at=START,
        on_segment=lambda seg: calls.append((seg, seg.path.is_file())),
    )
    assert out == dest
    return Recorded(dest, load_manifest(dest), calls)


def _offset(when: datetime | None) -> float:
    assert when is not None and when.tzinfo is not None
    return (when - START).total_seconds()


def test_session_json_is_valid_and_lists_segments(session: Recorded) -> None:
    manifest = session.manifest
    assert (manifest.id, manifest.name, manifest.started_at) == ("sess-1", "Synthetic test", START)
    got = [(s.kind, s.file, _offset(s.started_at), s.duration) for s in manifest.segments]
    assert got == EXPECTED
    # No temporary files left behind.
    assert sorted(p.name for p in session.dir.iterdir()) == sorted(
        [f for _, f, _, _ in EXPECTED] + ["session.json"]
    )


def test_on_segment_called_once_per_segment_in_order(session: Recorded) -> None:
    segs = [seg for seg, _ in session.calls]
    assert all(existed for _, existed in session.calls)
    assert sorted(s.file for s in segs) == sorted(f for _, f, _, _ in EXPECTED)
    ends = [(s.started_at - START).total_seconds() + s.duration for s in segs]
    assert ends == sorted(ends)  # closed in recording order
    listed = {s.file: s for s in session.manifest.segments}
    for seg in segs:
        assert seg.path == session.dir / seg.file
        assert seg.path.is_absolute()
        assert (seg.started_at, seg.duration) == (
            listed[seg.file].started_at,
            listed[seg.file].duration,
        )


def test_video_segments_decode_with_timecode(session: Recorded) -> None:
    for s in session.manifest.segments:
        if s.kind != "video":
            continue
        path = session.dir / s.file
        assert b"moof" in path.read_bytes()  # fragmented MP4
        start = _offset(s.started_at)
        with av.open(str(path)) as c:
            stream = c.streams.video[0]
            assert stream.codec_context.name == "h264"
            assert (stream.codec_context.width, stream.codec_context.height) == (160, 96)
            frames = list(c.decode(stream))
        assert s.duration is not None and len(frames) == round(s.duration * SPEC.fps)
        for f in frames:
            assert f.format.name == "yuv420p"
            t = start + float(f.time or 0.0)
            assert read_timecode(f.to_ndarray(format="rgb24")) == pytest.approx(t, abs=1 / SPEC.fps)
            # Gray input (the Y plane) works too.
            assert read_timecode(f.to_ndarray(format="gray")) == pytest.approx(t, abs=1 / SPEC.fps)


def test_markers_at_their_planned_times_and_no_silence(session: Recorded) -> None:
    rate = SPEC.sample_rate
    first_loud = int(np.argmax(np.abs(marker_tone(rate)) > MARKER_THRESHOLD))
    timeline = np.zeros(round(SPEC.duration * rate) + AAC_FRAME, np.float32)
    planned = []
    for s in session.manifest.segments:
        if s.kind != "audio":
            continue
        samples, got_rate = decode_audio(session.dir / s.file)
        assert got_rate == rate and samples.shape[0] == SPEC.channels
        assert s.duration is not None
        expected = round(s.duration * rate)
        assert abs(samples.shape[1] - expected) <= AAC_FRAME
        mono = samples[0, :expected]
        # Speech-like, never digital silence: every 50 ms window has signal.
        w = round(0.05 * rate)
        usable = (len(mono) // w) * w
        assert np.sqrt((mono[:usable].reshape(-1, w) ** 2).mean(axis=1)).min() > 1e-3
        at = round(_offset(s.started_at) * rate)
        timeline[at : at + len(mono)] = mono
        planned.append(at + first_loud)
    found = find_onsets(timeline, rate)
    assert len(found) == len(planned) == 3
    assert max(abs(f - p) for f, p in zip(found, planned, strict=True)) <= ONSET_TOLERANCE
    assert marker_samples(rate) < min(np.diff(found))


def test_video_only(tmp_path: Path) -> None:
    spec = SyntheticSpec(duration=2.0, segment_seconds=1.0, audio=False, width=128, height=16)
    seen: list[RecordedSegment] = []
    record_synthetic_session(
        tmp_path / "v", session_id="v", name="v", spec=spec, on_segment=seen.append
    )
    manifest = load_manifest(tmp_path / "v")
    assert [s.kind for s in manifest.segments] == ["video", "video"]
    assert [s.file for s in seen] == ["screen-0000.mp4", "screen-0001.mp4"]
    with av.open(str(tmp_path / "v" / "screen-0001.mp4")) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == 15
    assert read_timecode(frames[0].to_ndarray(format="rgb24")) == pytest.approx(1.0)


def test_audio_only_stereo(tmp_path: Path) -> None:
    spec = SyntheticSpec(
        duration=1.5,
        segment_seconds=1.0,
        audio_holes=((0.5, 0.8),),
        video=False,
        sample_rate=16000,
        channels=2,
    )
    record_synthetic_session(tmp_path / "a", session_id="a", name="a", spec=spec, started_at=START)
    manifest = load_manifest(tmp_path / "a")
    got = [(s.kind, s.file, _offset(s.started_at), s.duration) for s in manifest.segments]
    assert got == [
        ("audio", "mic-0000.m4a", 0.0, 0.5),
        ("audio", "mic-0001.m4a", 0.8, pytest.approx(0.7)),
    ]
    samples, rate = decode_audio(tmp_path / "a" / "mic-0001.m4a")
    assert rate == 16000 and samples.shape[0] == 2
    assert abs(samples.shape[1] - round(0.7 * rate)) <= AAC_FRAME
    assert len(find_onsets(samples, rate)) == 1


def test_refuses_to_overwrite_a_session(tmp_path: Path) -> None:
    spec = SyntheticSpec(duration=0.5, video=False, audio_holes=())
    record_synthetic_session(tmp_path, session_id="x", name="x", spec=spec)
    with pytest.raises(FileExistsError):
        record_synthetic_session(tmp_path, session_id="x", name="x", spec=spec)


def test_bad_spec_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="duration"):
        record_synthetic_session(
            tmp_path / "bad", session_id="b", name="b", spec=SyntheticSpec(duration=0)
        )
    assert not (tmp_path / "bad").exists()


def test_naive_started_at_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        record_synthetic_session(
            tmp_path, session_id="b", name="b", started_at=datetime(2024, 1, 1)
        )
