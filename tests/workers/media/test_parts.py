"""The compressed copy made from parts (one per recorded video segment, each compressed on
its own and joined by stream copy) against the whole-file path (the playable MP4
compressed in one run): the same pictures at the same times, the same audio, the same
length; a part starts with a keyframe and every part shares one set of parameter sets, so
the join is a plain remux."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from pathlib import Path

import av
import pytest

from synthetic.plan import SyntheticSpec
from synthetic.session import record_synthetic_session
from tests.support.media import differing_times, shown_timecodes, track_ends
from workers.media import SegmentInput, Timeline, mux_playable, plan_timeline, render_audio
from workers.media.compress import PART_TIMING, compress_part, compress_video
from workers.media.merge import mux_copied
from workers.media.timeline import SegmentKind

FPS = 15
SPEC = SyntheticSpec(
    duration=12.0, segment_seconds=4.0, audio_holes=((5.0, 7.0),), width=640, height=360,
    fps=FPS,
)  # fmt: skip
FRAME_S = 1 / FPS


@dataclasses.dataclass
class Made:
    timeline: Timeline
    audio: Path
    whole: Path
    joined: Path
    parts: list[Path]
    frames_whole: int
    frames_parts: int


def _timeline(dest: Path) -> Timeline:
    doc = json.loads((dest / "session.json").read_text())
    origin = datetime.fromisoformat(doc["started_at"])
    return plan_timeline([
        SegmentInput(
            kind=s["kind"], path=str(dest / s["file"]),
            started_at=(datetime.fromisoformat(s["started_at"]) - origin).total_seconds(),
            duration=s["duration"],
        )
        for s in doc["segments"]
    ])  # fmt: skip


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
    tmp = tmp_path_factory.mktemp("parts")
    dest = tmp / "session"
    record_synthetic_session(dest, session_id="parts-test", name="parts", spec=SPEC)
    timeline = _timeline(dest)
    audio = render_audio(timeline, tmp / "audio.m4a").path
    merged = mux_playable(timeline, audio, tmp / "merged.mp4").path
    whole = compress_video(merged, tmp / "whole.mp4")
    parts, frames = {}, 0
    for i, segment in enumerate(timeline.of_kind(SegmentKind.VIDEO)):
        part = compress_part(Path(segment.path), tmp / f"part-{i}.mp4")
        parts[segment.path] = part.path
        frames += part.frames_out
    joined_timeline = dataclasses.replace(
        timeline,
        segments=tuple(
            dataclasses.replace(s, path=str(parts[s.path])) if s.path in parts else s
            for s in timeline.segments
        ),
    )
    joined = mux_copied(joined_timeline, audio, tmp / "joined.mp4", None).path
    return Made(timeline, audio, whole.path, joined, list(parts.values()), whole.frames_out,
                frames)  # fmt: skip


def test_parts_join_into_the_same_pictures_at_the_same_times(made: Made) -> None:
    differ = differing_times(made.whole, made.joined, duration=made.timeline.duration, fps=FPS)
    assert not differ, f"{len(differ)} frame times show other pictures: {differ[:5]}"
    assert len(shown_timecodes(made.joined)) == made.frames_parts
    # Each part keeps its first frame (the duplicate test starts afresh): at most one more
    # frame per segment than the whole-file run keeps.
    segments = len(made.parts)
    assert made.frames_whole <= made.frames_parts <= made.frames_whole + segments


def test_same_length_and_the_same_audio(made: Made) -> None:
    whole, joined = track_ends(made.whole), track_ends(made.joined)
    assert joined["video"] == pytest.approx(whole["video"], abs=FRAME_S / 2)
    assert joined["audio"] == pytest.approx(whole["audio"], abs=1e-3)

    def audio_packets(path: Path) -> list[bytes]:
        with av.open(str(path)) as container:
            return [bytes(p) for p in container.demux(container.streams.audio[0]) if p.size]

    assert audio_packets(made.joined) == audio_packets(made.whole)


def test_each_part_starts_with_a_keyframe_and_all_share_their_parameter_sets(made: Made) -> None:
    extradata = set()
    for part in made.parts:
        with av.open(str(part)) as container:
            stream = container.streams.video[0]
            assert stream.time_base == PART_TIMING.time_base
            assert not container.streams.audio
            extradata.add(bytes(stream.codec_context.extradata or b""))
            first = next(p for p in container.demux(stream) if p.size)
            assert first.is_keyframe
    assert len(extradata) == 1


def test_nominal_rates() -> None:
    from fractions import Fraction

    assert PART_TIMING.rate_for(Fraction(302, 10)) == 30
    assert PART_TIMING.rate_for(Fraction(30000, 1001)) == 30
    assert PART_TIMING.rate_for(Fraction(59)) == 60
    assert PART_TIMING.rate_for(Fraction(15)) == 15
    assert PART_TIMING.rate_for(Fraction(27)) == 25
