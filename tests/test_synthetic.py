"""Tests for the synthetic recorder: the session folder must be one a real
recorder could have written, and its markers must be measurable."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import av
import numpy as np
import pytest

from capture_agent.synthetic import (
    MARKER_SECONDS,
    TIMECODE_BITS,
    TIMECODE_BLOCK,
    RecordedSegment,
    SyntheticSpec,
    read_timecode,
    record_synthetic_session,
)

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


@dataclass
class Recorded:
    dir: Path
    doc: dict
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
    doc = json.loads((dest / "session.json").read_text())
    return Recorded(dest, doc, calls)


def _offset(iso: str) -> float:
    when = datetime.fromisoformat(iso)
    assert when.tzinfo is not None
    return (when - START).total_seconds()


def _decode_audio(path: Path) -> tuple[np.ndarray, int]:
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        assert stream.codec_context.name == "aac"
        rate = stream.codec_context.sample_rate
        samples = np.concatenate([f.to_ndarray() for f in c.decode(stream)], axis=1)
    return samples, rate


def test_session_json_lists_segments(session: Recorded) -> None:
    doc = session.doc
    assert doc["id"] == "sess-1"
    assert doc["name"] == "Synthetic test"
    assert datetime.fromisoformat(doc["started_at"]) == START
    got = [(s["kind"], s["file"], _offset(s["started_at"]), s["duration"]) for s in doc["segments"]]
    assert got == EXPECTED
    for s in doc["segments"]:
        assert (session.dir / s["file"]).is_file()
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
    listed = {s["file"]: s for s in session.doc["segments"]}
    for seg in segs:
        assert seg.path == session.dir / seg.file
        assert seg.path.is_absolute()
        assert seg.started_at == datetime.fromisoformat(listed[seg.file]["started_at"])
        assert seg.duration == listed[seg.file]["duration"]


def test_video_segments_decode_with_timecode(session: Recorded) -> None:
    for s in session.doc["segments"]:
        if s["kind"] != "video":
            continue
        path = session.dir / s["file"]
        assert b"moof" in path.read_bytes()  # fragmented MP4
        start = _offset(s["started_at"])
        with av.open(str(path)) as c:
            stream = c.streams.video[0]
            assert stream.codec_context.name == "h264"
            assert (stream.codec_context.width, stream.codec_context.height) == (160, 96)
            frames = list(c.decode(stream))
        assert len(frames) == round(s["duration"] * SPEC.fps)
        for f in frames:
            assert f.format.name == "yuv420p"
            t = start + float(f.pts * f.time_base)
            assert read_timecode(f.to_ndarray(format="rgb24")) == pytest.approx(t, abs=1 / SPEC.fps)
            # Gray input (the Y plane) works too.
            assert read_timecode(f.to_ndarray(format="gray")) == pytest.approx(t, abs=1 / SPEC.fps)


def test_audio_segments_duration_marker_and_no_silence(session: Recorded) -> None:
    for s in session.doc["segments"]:
        if s["kind"] != "audio":
            continue
        samples, rate = _decode_audio(session.dir / s["file"])
        assert rate == SPEC.sample_rate
        assert samples.shape[0] == SPEC.channels
        expected = round(s["duration"] * rate)
        assert abs(samples.shape[1] - expected) <= AAC_FRAME
        mono = samples[0, :expected].astype(np.float64)
        m = round(MARKER_SECONDS * rate)
        marker_rms = np.sqrt(np.mean(mono[:m] ** 2))
        assert marker_rms > 0.5  # ~0.9 peak sine
        assert np.sqrt(np.mean(mono[m:] ** 2)) < marker_rms / 3
        # Speech-like, never digital silence: every 50 ms window has signal.
        w = round(0.05 * rate)
        usable = (len(mono) // w) * w
        window_rms = np.sqrt((mono[:usable].reshape(-1, w) ** 2).mean(axis=1))
        assert window_rms.min() > 1e-3


def test_read_timecode_roundtrip() -> None:
    value = 0b1011_0010_0111_0101  # 45685 -> 456.85 s
    gray = np.full((20, 200), 100, np.uint8)
    for i in range(TIMECODE_BITS):
        bit = (value >> (TIMECODE_BITS - 1 - i)) & 1
        gray[:TIMECODE_BLOCK, i * TIMECODE_BLOCK : (i + 1) * TIMECODE_BLOCK] = 255 * bit
    assert read_timecode(gray) == pytest.approx(456.85)
    assert read_timecode(np.repeat(gray[..., None], 3, axis=2)) == pytest.approx(456.85)
    with pytest.raises(ValueError, match="timecode strip"):
        read_timecode(np.zeros((8, 100), np.uint8))


def test_video_only(tmp_path: Path) -> None:
    spec = SyntheticSpec(duration=2.0, segment_seconds=1.0, audio=False, width=128, height=16)
    seen: list[RecordedSegment] = []
    record_synthetic_session(
        tmp_path / "v", session_id="v", name="v", spec=spec, on_segment=seen.append
    )
    doc = json.loads((tmp_path / "v" / "session.json").read_text())
    assert [s["kind"] for s in doc["segments"]] == ["video", "video"]
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
    doc = json.loads((tmp_path / "a" / "session.json").read_text())
    got = [(s["kind"], s["file"], _offset(s["started_at"]), s["duration"]) for s in doc["segments"]]
    assert got == [
        ("audio", "mic-0000.m4a", 0.0, 0.5),
        ("audio", "mic-0001.m4a", 0.8, pytest.approx(0.7)),
    ]
    samples, rate = _decode_audio(tmp_path / "a" / "mic-0001.m4a")
    assert rate == 16000 and samples.shape[0] == 2
    assert abs(samples.shape[1] - round(0.7 * rate)) <= AAC_FRAME


def test_refuses_to_overwrite_a_session(tmp_path: Path) -> None:
    spec = SyntheticSpec(duration=0.5, video=False, audio_holes=())
    record_synthetic_session(tmp_path, session_id="x", name="x", spec=spec)
    with pytest.raises(FileExistsError):
        record_synthetic_session(tmp_path, session_id="x", name="x", spec=spec)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"duration": 0}, "duration"),
        ({"duration": -3}, "duration"),
        ({"duration": float("nan")}, "duration"),
        ({"segment_seconds": 0}, "segment_seconds"),
        ({"audio_holes": ((50.0, 70.0),)}, "outside the session"),
        ({"audio_holes": ((-1.0, 2.0),)}, "outside the session"),
        ({"audio_holes": ((5.0, 5.0),)}, "start < end"),
        ({"audio_holes": ((10.0, 20.0), (15.0, 25.0))}, "overlap"),
        ({"audio_holes": ((0.0, 9.99),)}, "onset marker"),
        ({"video": False, "audio": False}, "at least one"),
        ({"width": 161}, "even"),
        ({"width": 64}, "width"),
        ({"height": 8}, "height"),
        ({"fps": 0}, "fps"),
        ({"sample_rate": 12345}, "sample_rate"),
        ({"channels": 3}, "channels"),
    ],
)
def test_bad_specs_raise(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        record_synthetic_session(
            tmp_path / "bad", session_id="b", name="b", spec=SyntheticSpec(**kwargs)
        )
    assert not (tmp_path / "bad").exists()


def test_naive_started_at_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        record_synthetic_session(
            tmp_path, session_id="b", name="b", started_at=datetime(2024, 1, 1)
        )
