"""mux_playable() copy path: recorded H.264/HEVC packets remuxed at their output times.

The synthetic recorder burns the session time into every frame, so "the frame shown at output
time t is the one recorded at the expected time" is checked directly on the decoded output.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Callable
from datetime import datetime
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from av.video.frame import PictureType

from shared.segments import SegmentKind
from synthetic.decode import decode_video
from synthetic.plan import SyntheticSpec
from synthetic.session import record_synthetic_session
from synthetic.timecode import read_timecode
from tests.support.media import track_ends
from tests.workers.media.helpers import leftovers
from workers.media import (
    MergeResult,
    SegmentInput,
    Timeline,
    mux_playable,
    plan_timeline,
    render_audio,
)

FPS = 10
FRAME = 1 / FPS
SIZE = (192, 108)  # the smallest even size that holds the 128 px timecode strip
SEGMENT_SECONDS = 4.0  # two GOPs (the recorder puts a keyframe every 2 s)
DURATION = 12.0
AV_TOLERANCE = 0.05  # seconds audio and video may differ in length


def record(dest: Path, size: tuple[int, int] = SIZE) -> dict[str, tuple[Path, float]]:
    """Record a small session; {file name: (path, start seconds)}."""
    spec = SyntheticSpec(
        duration=DURATION,
        segment_seconds=SEGMENT_SECONDS,
        audio_holes=(),
        width=size[0],
        height=size[1],
        fps=FPS,
    )
    record_synthetic_session(dest, session_id="copy-test", name="copy", spec=spec)
    doc = json.loads((dest / "session.json").read_text())
    origin = datetime.fromisoformat(doc["started_at"])
    return {
        s["file"]: (
            dest / s["file"],
            (datetime.fromisoformat(s["started_at"]) - origin).total_seconds(),
        )
        for s in doc["segments"]
    }


def to_hevc(source: Path, dest: Path) -> Path:
    """Re-encode a segment to HEVC with B-frames and a closed GOP every 2 s, like a Mac."""
    params = (
        f"keyint={2 * FPS}:min-keyint={2 * FPS}:scenecut=0:open-gop=0"
        ":bframes=3:b-adapt=0:log-level=error"
    )
    with av.open(str(source)) as inp, av.open(str(dest), "w", format="mp4") as out:
        stream = out.add_stream(
            "libx265", rate=FPS, options={"preset": "ultrafast", "x265-params": params}
        )
        stream.width, stream.height, stream.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        for frame in inp.decode(inp.streams.video[0]):
            frame.pts = round((frame.time or 0.0) * FPS)
            frame.time_base = Fraction(1, FPS)
            frame.pict_type = PictureType.NONE  # else the decoder's I/P types bind the encoder
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return dest


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, float]]:
    return record(tmp_path_factory.mktemp("copy") / "session")


@pytest.fixture(scope="module")
def hevc(
    session: dict[str, tuple[Path, float]], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, float]]:
    # PyAV's wheels ship libx265; Macs record HEVC, so this must never silently not run.
    assert "libx265" in av.codecs_available, "PyAV's libav cannot encode HEVC"
    root = tmp_path_factory.mktemp("hevc")
    return {
        name: (to_hevc(path, root / name), start)
        for name, (path, start) in session.items()
        if name.startswith("screen")
    }


def segments(
    files: dict[str, tuple[Path, float]], names: list[str], shift: dict[str, float] | None = None
) -> list[SegmentInput]:
    out = []
    for name in names:
        path, start = files[name]
        kind = "video" if name.startswith("screen") else "audio"
        start += (shift or {}).get(name, 0.0)
        seg = SegmentInput(kind=kind, path=str(path), started_at=start, duration=SEGMENT_SECONDS)  # type: ignore[arg-type]
        out.append(seg)
    return out


def render(tl: Timeline, out: Path, progress: Callable[[float], None] | None = None) -> MergeResult:
    audio = render_audio(tl, out.with_suffix(".m4a")).path if tl.has_audio else None
    return mux_playable(tl, audio, out, progress=progress)


def expected_frames(tl: Timeline, timecodes: dict[str, float]) -> list[tuple[float, float]]:
    """(output time, burnt-in time) of every source frame the timeline keeps, in order.

    ``timecodes`` maps a video path to the timecode of its first frame; a segment placed
    elsewhere than recorded keeps its timecodes, which is how misplacement would show.
    """
    kept: list[tuple[float, float]] = []
    for seg in tl.of_kind(SegmentKind.VIDEO):
        file_start = seg.start - seg.trim_start  # placed time of the file's first frame
        for piece in tl.kept_parts(seg):
            n = round(piece.source_offset * FPS)
            while n * FRAME < piece.source_offset + piece.duration - 1e-6:
                if n * FRAME >= piece.source_offset - 1e-6:
                    out = tl.to_output(file_start + n * FRAME)
                    kept.append((out, timecodes[seg.path] + n * FRAME))
                n += 1
    return sorted(kept)


def shown_at(path: Path, t: float) -> float:
    """Timecode of the frame on screen at output time ``t``."""
    shown = shown_timecodes(path)
    index = bisect_right([s for s, _ in shown], t + 1e-6) - 1
    assert index >= 0, f"nothing shown at {t} s"
    return shown[index][1]


def shown_timecodes(path: Path) -> list[tuple[float, float]]:
    """(output time, burnt-in recorded time) of every decoded frame."""
    with av.open(str(path)) as container:
        return [
            (float(frame.time or 0.0), read_timecode(frame.to_ndarray(format="gray")))
            for frame in container.decode(container.streams.video[0])
        ]


def assert_frames_on_timeline(path: Path, tl: Timeline, timecodes: dict[str, float]) -> None:
    """At every output time, the frame on screen is the one the timeline puts there (±1 frame)."""
    expected = expected_frames(tl, timecodes)
    shown = shown_timecodes(path)
    shown_times = [t for t, _ in shown]
    expected_times = [t for t, _ in expected]
    for t in np.arange(0.0, tl.duration, FRAME / 2):
        e = bisect_right(expected_times, t + 1e-6) - 1
        s = bisect_right(shown_times, t + 1e-6) - 1
        if e < 0:
            assert s < 0 or shown[s][1] == 0.0, f"a frame is shown at {t:.2f} s before any video"
            continue
        assert s >= 0, f"nothing shown at {t:.2f} s"
        assert abs(shown[s][1] - expected[e][1]) <= FRAME + 1e-6, (
            f"at {t:.2f} s the frame recorded at {shown[s][1]} s is shown, "
            f"expected {expected[e][1]} s"
        )


def video_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(container.streams.video[0]) if p.size]


def source_packets(tl: Timeline) -> list[bytes]:
    """Payloads of the source packets whose frames the timeline keeps, in output order."""
    out: list[bytes] = []
    for seg in tl.of_kind(SegmentKind.VIDEO):
        pieces = tl.kept_parts(seg)
        with av.open(seg.path) as container:
            stream = container.streams.video[0]
            start = stream.start_time or 0
            tb = stream.time_base
            assert tb is not None
            for packet in container.demux(stream):
                if not packet.size or packet.pts is None:
                    continue
                rel = float((packet.pts - start) * tb)
                if any(
                    p.source_offset - 1e-4 <= rel < p.source_offset + p.duration - 1e-4
                    for p in pieces
                ):
                    out.append(bytes(packet))
    return out


def top_level_boxes(path: Path) -> list[str]:
    data = path.read_bytes()
    boxes, pos = [], 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        boxes.append(data[pos + 4 : pos + 8].decode("latin-1"))
        if size == 1:
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
        if size < 8:
            break
        pos += size
    return boxes


def first_frames(files: dict[str, tuple[Path, float]]) -> dict[str, float]:
    return {str(path): start for path, start in files.values()}


def test_h264_copy_with_video_gap_and_pause_cut(
    session: dict[str, tuple[Path, float]], tmp_path: Path
) -> None:
    # screen-0001 is missing: a 4 s video-only gap (audio goes on); the explicit pause
    # (9, 10) cuts inside screen-0002, whose second GOP starts at 10 s.
    names = ["screen-0000.mp4", "screen-0002.mp4", "mic-0000.m4a", "mic-0001.m4a", "mic-0002.m4a"]
    tl = plan_timeline(segments(session, names), pauses=[(9.0, 10.0)])
    assert tl.cuts == ((9.0, 10.0),) and tl.duration == pytest.approx(11.0)
    out = tmp_path / "copy.mp4"
    progress: list[float] = []
    result = render(tl, out, progress=progress.append)

    assert result.video_copied and result.fallback_reason is None
    assert (result.video_codec, result.has_audio) == ("h264", True)
    assert result.duration == pytest.approx(11.0)
    assert progress[-1] == 1.0 and progress == sorted(progress)
    # copied, not re-encoded: exactly the kept source packets, byte for byte
    copied = video_packets(out)
    assert copied == source_packets(tl)
    assert result.frames == len(copied) == 40 + 10 + 20
    assert_frames_on_timeline(out, tl, first_frames(session))
    assert shown_at(out, 7.95) == pytest.approx(3.9)  # the gap holds the last frame
    assert not any(4.0 <= t < 8.0 for t, _ in shown_timecodes(out))  # ... without new frames
    assert shown_at(out, 9.0) == pytest.approx(10.0)  # the pause is cut
    ends = track_ends(out)
    assert abs(ends["video"] - ends["audio"]) <= AV_TOLERANCE
    assert ends["video"] == pytest.approx(11.0, abs=AV_TOLERANCE)
    boxes = top_level_boxes(out)
    assert boxes.index("moov") < boxes.index("mdat")  # +faststart
    assert leftovers(tmp_path) == ["copy.m4a", "copy.mp4"]


def test_automatic_pause_cut_between_segments(
    session: dict[str, tuple[Path, float]], tmp_path: Path
) -> None:
    names = ["screen-0000.mp4", "screen-0002.mp4", "mic-0000.m4a", "mic-0002.m4a"]
    tl = plan_timeline(segments(session, names))
    assert tl.cuts == ((4.0, 8.0),)
    result = render(tl, tmp_path / "cut.mp4")
    assert result.video_copied
    assert_frames_on_timeline(result.path, tl, first_frames(session))
    assert shown_at(result.path, 4.0) == pytest.approx(8.0)


def test_hevc_is_copied_with_hvc1_tag(
    session: dict[str, tuple[Path, float]],
    hevc: dict[str, tuple[Path, float]],
    tmp_path: Path,
) -> None:
    files = {**session, **hevc}
    with av.open(str(hevc["screen-0000.mp4"][0])) as container:
        stream = container.streams.video[0]
        order = [p.pts for p in container.demux(stream) if p.pts is not None]
    assert order != sorted(order), "the HEVC source should use B-frames"
    # screen-0001 is missing: a video-only gap. The pause keeps screen-0002's frames up to
    # 8.8 s (a P-frame closing a mini-GOP: nothing kept needs the cut 9-11) and resumes on
    # its keyframe at 10 s.
    names = ["screen-0000.mp4", "screen-0002.mp4", "mic-0000.m4a", "mic-0001.m4a", "mic-0002.m4a"]
    tl = plan_timeline(segments(files, names), pauses=[(8.9, 10.0)])
    result = render(tl, tmp_path / "hevc.mp4")
    assert result.video_copied, result.fallback_reason
    assert result.video_codec == "hevc"
    with av.open(str(result.path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_tag) == ("hevc", "hvc1")
    assert video_packets(result.path) == source_packets(tl)
    assert_frames_on_timeline(result.path, tl, first_frames(files))
    ends = track_ends(result.path)
    assert abs(ends["video"] - ends["audio"]) <= AV_TOLERANCE
    boxes = top_level_boxes(result.path)
    assert boxes.index("moov") < boxes.index("mdat")


def test_hevc_bframes_across_a_cut_fall_back_to_reencode(
    session: dict[str, tuple[Path, float]],
    hevc: dict[str, tuple[Path, float]],
    tmp_path: Path,
) -> None:
    files = {**session, **hevc}
    names = ["screen-0000.mp4", "mic-0000.m4a"]
    # the kept part ends at 1.1 s, inside a mini-GOP whose P-frame (1.2 s) is cut; the part
    # after the pause starts on the 2 s keyframe
    tl = plan_timeline(segments(files, names), pauses=[(1.1, 2.0)])
    result = render(tl, tmp_path / "b.mp4")
    assert not result.video_copied
    assert "needs one that is cut" in (result.fallback_reason or "")
    assert_frames_on_timeline(result.path, tl, first_frames(files))


@pytest.mark.parametrize(
    ("case", "reason"),
    [("pause_mid_gop", "keyframe"), ("overlap_mid_gop", "keyframe")],
)
def test_cut_not_on_keyframe_falls_back_and_keeps_timeline(
    session: dict[str, tuple[Path, float]], tmp_path: Path, case: str, reason: str
) -> None:
    names = ["screen-0000.mp4", "screen-0001.mp4", "mic-0000.m4a", "mic-0001.m4a"]
    if case == "pause_mid_gop":
        tl = plan_timeline(segments(session, names), pauses=[(5.0, 5.5)])
    else:  # screen-0001 placed 1 s early: its first second is trimmed as overlap
        tl = plan_timeline(segments(session, names, shift={"screen-0001.mp4": -1.0}))
    result = render(tl, tmp_path / "f.mp4")
    assert not result.video_copied and reason in (result.fallback_reason or "")
    assert result.video_codec == "h264"
    assert_frames_on_timeline(result.path, tl, first_frames(session))
    ends = track_ends(result.path)
    assert abs(ends["video"] - ends["audio"]) <= AV_TOLERANCE
    assert leftovers(tmp_path) == ["f.m4a", "f.mp4"]


def test_overlap_trimmed_on_a_keyframe_is_copied(
    session: dict[str, tuple[Path, float]], tmp_path: Path
) -> None:
    names = ["screen-0000.mp4", "screen-0001.mp4", "mic-0000.m4a", "mic-0001.m4a"]
    # screen-0001 placed 2 s early: the overlap ends exactly on its second keyframe
    tl = plan_timeline(segments(session, names, shift={"screen-0001.mp4": -2.0}))
    result = render(tl, tmp_path / "o.mp4")
    assert result.video_copied, result.fallback_reason
    assert_frames_on_timeline(result.path, tl, first_frames(session))


@pytest.mark.parametrize("mismatch", ["resolution", "codec"])
def test_mismatched_segments_fall_back_to_reencode(
    session: dict[str, tuple[Path, float]],
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
    mismatch: str,
) -> None:
    files = dict(session)
    if mismatch == "resolution":
        other = record(tmp_path_factory.mktemp("big") / "session", size=(SIZE[0], 144))
        files["screen-0001.mp4"] = other["screen-0001.mp4"]
        expected_reason = f"{SIZE[0]}x144"
    else:
        assert "libx265" in av.codecs_available, "PyAV's libav cannot encode HEVC"
        path, start = session["screen-0001.mp4"]
        files["screen-0001.mp4"] = (to_hevc(path, tmp_path / "hevc-0001.mp4"), start)
        expected_reason = "hevc"
    names = ["screen-0000.mp4", "screen-0001.mp4", "mic-0000.m4a", "mic-0001.m4a"]
    tl = plan_timeline(segments(files, names))
    result = render(tl, tmp_path / "mixed.mp4")
    assert not result.video_copied and expected_reason in (result.fallback_reason or "")
    with av.open(str(result.path)) as container:
        cc = container.streams.video[0].codec_context
        assert (cc.name, cc.width, cc.height) == ("h264", *SIZE)
    assert_frames_on_timeline(result.path, tl, first_frames(files))


def test_video_starting_after_audio_gets_an_empty_edit(
    media: Callable[..., Path], tmp_path: Path
) -> None:
    a = media("tone", "late.m4a", seconds=3.0)
    v = media("video", "late.mp4", seconds=2.0, fps=FPS)
    tl = plan_timeline(
        [
            SegmentInput(kind=SegmentKind.AUDIO, path=str(a), started_at=0.0, duration=3.0),
            SegmentInput(kind=SegmentKind.VIDEO, path=str(v), started_at=0.5, duration=2.0),
        ]
    )
    result = render(tl, tmp_path / "late.mp4")
    assert result.video_copied and result.duration == pytest.approx(3.0)
    indices, times = decode_video(result.path)
    assert indices == list(range(20))
    assert times[0] == pytest.approx(0.5) and times[-1] == pytest.approx(2.4)
    ends = track_ends(result.path)
    # the last frame is held to the end of the audio
    assert ends["video"] == pytest.approx(3.0, abs=AV_TOLERANCE)
    assert ends["audio"] == pytest.approx(3.0, abs=AV_TOLERANCE)
