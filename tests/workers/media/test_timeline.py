"""Rules of plan_timeline: unit cases plus hypothesis properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.segments import SegmentKind
from workers.media.timeline import SegmentInput, Timeline, plan_timeline


def seg(kind: str, start: float | None, duration: float, path: str = "x") -> SegmentInput:
    return SegmentInput(kind=kind, path=path, started_at=start, duration=duration)  # type: ignore[arg-type]


# --- unit cases -------------------------------------------------------------------------------


def test_implicit_starts_follow_previous_segment_of_same_kind() -> None:
    tl = plan_timeline(
        [seg("audio", None, 2, "a1"), seg("video", 1.0, 3, "v1"), seg("audio", None, 4, "a2")]
    )
    audio = tl.of_kind(SegmentKind.AUDIO)
    assert [(s.path, s.start, s.end) for s in audio] == [("a1", 0.0, 2.0), ("a2", 2.0, 6.0)]
    assert tl.duration == 6.0 and tl.cuts == ()


def test_overlap_is_trimmed_from_the_later_segment() -> None:
    tl = plan_timeline([seg("audio", 0, 3, "a1"), seg("audio", 2, 3, "a2")])
    a1, a2 = tl.of_kind(SegmentKind.AUDIO)
    assert (a2.start, a2.end, a2.trim_start, a2.out_start) == (3.0, 5.0, 1.0, 3.0)
    assert a1.trim_start == 0.0 and tl.duration == 5.0


def test_fully_covered_and_zero_length_segments_disappear() -> None:
    tl = plan_timeline(
        [seg("audio", 0, 10, "big"), seg("audio", 2, 3, "inside"), seg("audio", 4, 0, "empty")]
    )
    assert [s.path for s in tl.segments] == ["big"]


def test_leading_gap_is_not_in_the_output() -> None:
    tl = plan_timeline([seg("audio", 5, 2), seg("video", 6, 2)])
    assert tl.origin == 5.0 and tl.duration == 3.0
    assert tl.to_output(5.0) == 0.0 and tl.to_output(1.0) == 0.0
    assert [s.out_start for s in tl.segments] == [0.0, 1.0]


def test_gap_in_both_tracks_is_cut_only_with_cut_pauses() -> None:
    segments = [seg("audio", 0, 2), seg("video", 0, 2), seg("audio", 5, 2), seg("video", 5, 2)]
    tl = plan_timeline(segments)
    assert tl.cuts == ((2.0, 5.0),) and tl.duration == 4.0
    assert tl.to_output(3.0) == 2.0 and tl.to_output(6.0) == 3.0
    kept = plan_timeline(segments, cut_pauses=False)
    assert kept.cuts == () and kept.duration == 7.0


def test_gap_in_one_track_is_never_cut() -> None:
    tl = plan_timeline([seg("audio", 0, 3), seg("audio", 13, 3), seg("video", 0, 16)])
    assert tl.cuts == () and tl.duration == 16.0
    assert tl.of_kind(SegmentKind.AUDIO)[1].out_start == 13.0


def test_explicit_pause_splits_segments_on_both_tracks() -> None:
    tl = plan_timeline([seg("audio", 0, 10), seg("video", 0, 10)], pauses=[(4, 6)])
    assert tl.cuts == ((4.0, 6.0),) and tl.duration == 8.0
    parts = tl.kept_parts(tl.of_kind(SegmentKind.AUDIO)[0])
    assert [(p.source_offset, p.out_start, p.duration) for p in parts] == [
        (0.0, 0.0, 4.0),
        (6.0, 4.0, 4.0),
    ]
    assert plan_timeline([seg("audio", 0, 10)], pauses=[(4, 6)], cut_pauses=False).duration == 10


def test_empty_input_gives_empty_timeline() -> None:
    tl = plan_timeline([])
    assert tl.segments == () and tl.duration == 0.0 and not tl.has_audio and not tl.has_video


@pytest.mark.parametrize(
    ("segments", "pauses", "message"),
    [
        ([seg("audio", 0, -1)], (), "duration must be >= 0"),
        ([seg("audio", -1, 1)], (), "started_at must be >= 0"),
        ([seg("audio", math.nan, 1)], (), "finite"),
        ([seg("audio", 0, math.inf)], (), "finite"),
        ([seg("audio", 0, math.nan)], (), "finite"),
        ([seg("subtitle", 0, 1)], (), "kind"),
        ([seg("audio", 0, 1)], [(3, 2)], "ends before it starts"),
        ([seg("audio", 0, 1)], [(math.nan, 2)], "finite"),
    ],
)
def test_invalid_input_raises_value_error(
    segments: list[SegmentInput], pauses: list[tuple[float, float]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        plan_timeline(segments, pauses=pauses)


# --- properties --------------------------------------------------------------------------------

times = st.floats(min_value=0, max_value=100, allow_nan=False, allow_infinity=False)
durations = st.one_of(st.just(0.0), st.floats(min_value=0, max_value=30, allow_nan=False))
segment_inputs = st.builds(
    seg,
    st.sampled_from(["audio", "video"]),
    st.one_of(st.none(), times),
    durations,
    st.sampled_from(["p0", "p1", "p2"]),
)
segment_lists = st.lists(segment_inputs, max_size=12)
pause_lists = st.lists(
    st.tuples(times, st.floats(min_value=0, max_value=20)).map(lambda p: (p[0], p[0] + p[1])),
    max_size=4,
)


def covered(tl: Timeline, t: float, kind: str | None = None) -> bool:
    return any(s.start < t < s.end for s in tl.segments if kind is None or s.kind == kind)


def union_length(intervals: list[tuple[float, float]]) -> float:
    total, cur_a = 0.0, 0.0
    cur_b: float | None = None  # the interval being merged, if any
    for a, b in sorted(intervals):
        if cur_b is None or a > cur_b:
            if cur_b is not None:
                total += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_b is not None:
        total += cur_b - cur_a
    return total


def resolved(segments: list[SegmentInput]) -> dict[str, list[tuple[float, float]]]:
    """Raw (start, end) per kind with implicit starts resolved, as the spec defines them."""
    out: dict[str, list[tuple[float, float]]] = {"audio": [], "video": []}
    nxt = {"audio": 0.0, "video": 0.0}
    for s in segments:
        start = nxt[s.kind] if s.started_at is None else s.started_at
        nxt[s.kind] = start + s.duration
        if s.duration > 0:
            out[s.kind].append((start, start + s.duration))
    return out


@settings(max_examples=300, deadline=None)
@given(segment_lists, st.booleans(), pause_lists)
def test_planning_invariants(
    segments: list[SegmentInput], cut_pauses: bool, pauses: list[tuple[float, float]]
) -> None:
    tl = plan_timeline(segments, cut_pauses=cut_pauses, pauses=pauses)
    assert list(tl.segments) == sorted(tl.segments, key=lambda s: (s.kind, s.start))
    if not tl.segments:
        assert tl.duration == 0.0
        return
    origin = min(s.start for s in tl.segments)
    span_end = max(s.end for s in tl.segments)
    assert tl.origin == origin

    for kind in ("audio", "video"):
        track = tl.of_kind(kind)  # type: ignore[arg-type]
        for s in track:
            assert s.end > s.start and s.trim_start >= 0
        for prev, nxt in zip(track, track[1:], strict=False):
            assert nxt.start >= prev.end  # no overlap within a kind
            assert nxt.out_start >= prev.out_start  # out_start monotonic
        # trimming keeps exactly the union of what was recorded
        kept = sum(s.end - s.start for s in track)
        assert kept == pytest.approx(union_length(resolved(segments)[kind]), abs=1e-6)

    # cuts: sorted, disjoint, inside the span; duration = span minus cuts
    for a, b in tl.cuts:
        assert origin <= a < b <= span_end
    for (_, b1), (a2, _) in zip(tl.cuts, tl.cuts[1:], strict=False):
        assert b1 < a2
    cut_total = sum(b - a for a, b in tl.cuts)
    assert tl.duration == pytest.approx(span_end - origin - cut_total, abs=1e-6)

    # to_output: monotonic non-decreasing, from 0 at the origin to duration at the end
    probes = sorted(
        {0.0, origin, span_end, span_end + 5}
        | {s.start for s in tl.segments}
        | {s.end for s in tl.segments}
        | {x for c in tl.cuts for x in c}
        | {origin + i * (span_end - origin) / 97 for i in range(98)}
    )
    mapped = [tl.to_output(t) for t in probes]
    assert all(b >= a for a, b in zip(mapped, mapped[1:], strict=False))
    assert tl.to_output(origin) == 0.0 and tl.to_output(span_end) == tl.duration
    for s in tl.segments:
        assert s.out_start == tl.to_output(s.start)

    # kept parts: what survives the cuts, in order, never overlapping on the output
    for s in tl.segments:
        parts = tl.kept_parts(s)
        inside = sum(max(0.0, min(b, s.end) - max(a, s.start)) for a, b in tl.cuts)
        assert sum(p.duration for p in parts) == pytest.approx(s.end - s.start - inside, abs=1e-6)
        for p, q in zip(parts, parts[1:], strict=False):
            assert q.out_start >= p.out_start + p.duration - 1e-6

    if not cut_pauses:
        assert tl.cuts == () and tl.duration == pytest.approx(span_end - origin)
        return
    cut_mid = [(a + b) / 2 for a, b in tl.cuts]
    if not pauses:
        # a gap in one track while the other continues is never cut ...
        assert not any(covered(tl, m) for m in cut_mid)
    # ... but every moment where no track has media is
    edges = sorted({origin, span_end} | {x for s in tl.segments for x in (s.start, s.end)})
    for a, b in zip(edges, edges[1:], strict=False):
        m = (a + b) / 2
        if b - a > 1e-6 and not covered(tl, m):
            assert any(ca <= m <= cb for ca, cb in tl.cuts)
    # explicit pauses are cut (clipped to the span)
    for a, b in pauses:
        a, b = max(a, origin), min(b, span_end)
        if b - a > 1e-6:
            m = (a + b) / 2
            assert any(ca <= m <= cb for ca, cb in tl.cuts)


@settings(max_examples=200, deadline=None)
@given(segment_lists)
def test_one_track_gap_keeps_recorded_spacing(segments: list[SegmentInput]) -> None:
    """Without pauses, later media keeps its recorded distance from the origin."""
    tl = plan_timeline([*segments, seg("video", 0, 1000)])
    assert tl.cuts == ()
    for s in tl.segments:
        assert s.out_start == pytest.approx(s.start - tl.origin)
