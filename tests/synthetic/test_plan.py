"""Session layout: segments on the session clock, holes, and specs that are refused."""

from __future__ import annotations

import pytest

from shared.segments import SegmentKind
from synthetic.plan import PlannedSegment, SyntheticSpec, frame_range, plan_segments

SPEC = SyntheticSpec(duration=12.0, segment_seconds=4.0, audio_holes=((5.0, 9.0),))


def test_layout_in_recorder_closing_order() -> None:
    assert plan_segments(SPEC) == [
        PlannedSegment(SegmentKind.VIDEO, "screen-0000.mp4", 0.0, 4.0),
        PlannedSegment(SegmentKind.AUDIO, "mic-0000.m4a", 0.0, 4.0),
        PlannedSegment(SegmentKind.AUDIO, "mic-0001.m4a", 4.0, 5.0),
        PlannedSegment(SegmentKind.VIDEO, "screen-0001.mp4", 4.0, 8.0),
        PlannedSegment(SegmentKind.VIDEO, "screen-0002.mp4", 8.0, 12.0),
        PlannedSegment(SegmentKind.AUDIO, "mic-0002.m4a", 9.0, 12.0),
    ]


def test_frame_range_is_half_open_on_the_session_clock() -> None:
    assert frame_range(0.0, 1.0, 15) == (0, 15)
    assert frame_range(1.0, 1.1, 15) == (15, 17)


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
def test_bad_specs_raise(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        plan_segments(SyntheticSpec(**kwargs))  # type: ignore[arg-type]
