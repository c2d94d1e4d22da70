"""The replay's schedule (bench/replay.py): a pure function of the manifest and the speed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bench.replay import Step, StepKind, bytes_due, recorded_seconds, replay_schedule
from shared.segments import SegmentKind
from shared.sessiondir import Manifest, ManifestSegment

START = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


def segment(
    kind: SegmentKind, file: str, start_s: float | None, duration_s: float
) -> ManifestSegment:
    at = None if start_s is None else START + timedelta(seconds=start_s)
    return ManifestSegment(kind=kind, file=file, started_at=at, duration=duration_s)


def manifest(*segments: ManifestSegment) -> Manifest:
    return Manifest(id="s", started_at=START, segments=list(segments))


V, A = SegmentKind.VIDEO, SegmentKind.AUDIO


def test_each_segment_opens_at_its_start_and_closes_at_its_end_divided_by_the_speed() -> None:
    m = manifest(
        segment(V, "screen-0.mp4", 0, 10),
        segment(A, "mic-0.m4a", 0, 10),
        segment(V, "screen-1.mp4", 10, 10),
        segment(A, "mic-1.m4a", 10, 10),
    )
    assert replay_schedule(m, 5) == [
        Step(0.0, StepKind.START),
        Step(0.0, StepKind.OPEN, "mic-0.m4a"),
        Step(0.0, StepKind.OPEN, "screen-0.mp4"),
        # one segment closes before the next opens at the same instant
        Step(2.0, StepKind.CLOSE, "mic-0.m4a"),
        Step(2.0, StepKind.CLOSE, "screen-0.mp4"),
        Step(2.0, StepKind.OPEN, "mic-1.m4a"),
        Step(2.0, StepKind.OPEN, "screen-1.mp4"),
        Step(4.0, StepKind.CLOSE, "mic-1.m4a"),
        Step(4.0, StepKind.CLOSE, "screen-1.mp4"),
        Step(4.0, StepKind.END),
    ]
    assert recorded_seconds(m) == 20


def test_a_segment_without_a_start_follows_the_previous_of_its_kind_and_pauses_stay() -> None:
    m = manifest(
        segment(V, "v0", 0, 10),
        segment(V, "v1", None, 10),
        segment(V, "v2", 60, 5),  # after a pause
        segment(A, "a0", 0, 30),
    )
    steps = replay_schedule(m, 10)
    closes = {s.file: s.at_s for s in steps if s.kind is StepKind.CLOSE}
    opens = {s.file: s.at_s for s in steps if s.kind is StepKind.OPEN}
    assert opens == {"v0": 0.0, "v1": 1.0, "v2": 6.0, "a0": 0.0}
    assert closes == {"v0": 1.0, "v1": 2.0, "v2": 6.5, "a0": 3.0}
    assert steps[-1] == Step(6.5, StepKind.END)
    assert [s.at_s for s in steps] == sorted(s.at_s for s in steps)


def test_the_end_comes_after_every_close_and_every_file_opens_before_it_closes() -> None:
    m = manifest(*(segment(V, f"v{i}", 10 * i, 10) for i in range(30)))
    steps = replay_schedule(m, 5)
    assert steps[0].kind is StepKind.START and steps[-1].kind is StepKind.END
    order = {(s.kind, s.file): i for i, s in enumerate(steps)}
    for i in range(30):
        assert order[(StepKind.OPEN, f"v{i}")] < order[(StepKind.CLOSE, f"v{i}")]
    assert steps[-1].at_s == pytest.approx(60.0)


def test_replay_needs_durations_and_a_positive_speed() -> None:
    with pytest.raises(ValueError, match="duration"):
        replay_schedule(manifest(ManifestSegment(kind=V, file="v0")), 5)
    with pytest.raises(ValueError, match="speed"):
        replay_schedule(manifest(segment(V, "v0", 0, 10)), 0)


def test_bytes_are_due_in_proportion_to_the_elapsed_span() -> None:
    assert bytes_due(1000, 2.0, 4.0, 1.0) == 0
    assert bytes_due(1000, 2.0, 4.0, 2.0) == 0
    assert bytes_due(1000, 2.0, 4.0, 3.0) == 500
    assert bytes_due(1000, 2.0, 4.0, 4.0) == 1000
    assert bytes_due(1000, 2.0, 4.0, 9.0) == 1000
    assert bytes_due(1000, 2.0, 2.0, 2.0) == 1000  # an empty span: all at once
