"""Pure arithmetic of aacplan: sample placement, the chunk grid, packets and signatures."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from shared.segments import SegmentKind
from workers.media.aacplan import (
    AAC_FRAME,
    AudioPlan,
    ChunkGrid,
    EncoderParams,
    Placement,
    chunk_bounds,
    expected_packets,
    keeps_packet,
    plan_audio,
    plan_chunks,
    settled_sample,
)
from workers.media.timeline import SegmentInput, Timeline, plan_timeline

RATE = 48000
PARAMS = EncoderParams(rate=RATE, layout="stereo", bitrate=128_000, coder="twoloop", version="t")


def audio(path: str, start: float | None, duration: float) -> SegmentInput:
    return SegmentInput(kind=SegmentKind.AUDIO, path=path, started_at=start, duration=duration)


def video(path: str, start: float | None, duration: float) -> SegmentInput:
    return SegmentInput(kind=SegmentKind.VIDEO, path=path, started_at=start, duration=duration)


# Times on a millisecond grid keep examples readable; durations up to ~1 s and small chunk
# grids give timelines of dozens of chunks.
millis = st.integers(min_value=0, max_value=2000).map(lambda m: m / 1000)
lengths = st.one_of(st.just(0.0), st.integers(min_value=1, max_value=1000).map(lambda m: m / 1000))
audio_segments = st.lists(
    st.builds(
        audio,
        st.sampled_from(["a0", "a1", "a2", "a3", "a4"]),
        st.one_of(st.none(), millis),
        lengths,
    ),
    min_size=1,
    max_size=8,
)
grids = st.builds(
    ChunkGrid,
    chunk_frames=st.integers(min_value=1, max_value=6),
    preroll_frames=st.integers(min_value=2, max_value=5),
    postroll_frames=st.integers(min_value=2, max_value=3),
)
pause_lists = st.lists(
    st.tuples(millis, st.integers(min_value=1, max_value=500)).map(
        lambda p: (p[0], p[0] + p[1] / 1000)
    ),
    max_size=2,
)


MODEL_RATE = 1000  # Hz: a low rate keeps the sample-by-sample model below small


def sample_model(timeline: Timeline, rate: int) -> list[tuple[str, int] | None]:
    """Per output sample: (file, source sample) or None for silence, by the plain rule.

    Every kept piece covers [round(start * rate), round(end * rate)) of the output from
    round(source_offset * rate) on; where rounding makes two pieces share a sample, the
    earlier piece keeps it.
    """
    total = round(timeline.duration * rate)
    out: list[tuple[str, int] | None] = [None] * total
    for seg in timeline.of_kind(SegmentKind.AUDIO):
        for piece in timeline.kept_parts(seg):
            a = round(piece.out_start * rate)
            b = min(round((piece.out_start + piece.duration) * rate), total)
            for j in range(a, b):
                if out[j] is None:
                    out[j] = (seg.path, round(piece.source_offset * rate) + (j - a))
    return out


def expand(plan: AudioPlan) -> list[tuple[str, int] | None]:
    out: list[tuple[str, int] | None] = [None] * plan.total
    for p in plan.placements:
        for i in range(p.count):
            out[p.out_start + i] = (p.path, p.source_start + i)
    return out


@settings(max_examples=300, deadline=None)
@given(audio_segments, pause_lists, st.booleans())
def test_placements_put_every_sample_where_the_timeline_says(
    segments: list[SegmentInput], pauses: list[tuple[float, float]], cut: bool
) -> None:
    timeline = plan_timeline(segments, pauses=pauses, cut_pauses=cut)
    plan = plan_audio(timeline, MODEL_RATE)
    assert plan.total == round(timeline.duration * MODEL_RATE)
    cursor = 0
    for p in plan.placements:
        assert p.count > 0 and p.source_start >= 0
        assert p.out_start >= cursor, "placements must be ordered and disjoint"
        cursor = p.out_end
    assert cursor <= plan.total
    assert expand(plan) == sample_model(timeline, MODEL_RATE)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=200_000), grids)
def test_chunks_tile_the_output_on_the_frame_grid(total: int, grid: ChunkGrid) -> None:
    bounds = chunk_bounds(total, grid)
    if total == 0:
        assert bounds == []
        return
    assert bounds[0][0] == 0 and bounds[-1][1] == total
    for (_, b), (next_start, _) in zip(bounds, bounds[1:], strict=False):
        assert b == next_start, "chunks must touch"
        assert b % AAC_FRAME == 0, "inner boundaries sit on the AAC frame grid"
    for a, b in bounds:
        assert a % AAC_FRAME == 0 and a < b <= a + grid.chunk_samples

    plan = AudioPlan(rate=RATE, total=total, placements=())
    chunks = plan_chunks(plan, grid, PARAMS)
    assert [(c.start, c.end) for c in chunks] == bounds
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert [c.last for c in chunks] == [False] * (len(chunks) - 1) + [True]
    for c in chunks:
        assert c.feed_start == max(0, c.start - grid.preroll)
        assert c.feed_end == min(total, c.end + grid.postroll)

    # the encoder of the whole stream emits one packet per frame plus the priming one, at
    # timestamps -1024, 0, 1024, ...: every one is kept by exactly one chunk
    packets = range(-AAC_FRAME, total, AAC_FRAME)
    for pts in packets:
        assert sum(keeps_packet(c, pts) for c in chunks) == 1, pts
    assert sum(expected_packets(c) for c in chunks) == len(packets)


def with_identity(segments: list[SegmentInput], changed: str) -> dict[str, str]:
    return {s.path: (f"{s.path}-v2" if s.path == changed else s.path) for s in segments}


@settings(max_examples=200, deadline=None)
@given(audio_segments, grids, st.sampled_from(["a0", "a1", "a2", "a3", "a4"]))
def test_a_changed_file_changes_exactly_the_chunks_fed_by_it(
    segments: list[SegmentInput], grid: ChunkGrid, changed: str
) -> None:
    timeline = plan_timeline(segments)
    before = plan_chunks(plan_audio(timeline, RATE), grid, PARAMS)
    after_plan = plan_audio(timeline, RATE, with_identity(segments, changed))
    after = plan_chunks(after_plan, grid, PARAMS)
    assert [(c.start, c.end) for c in before] == [(c.start, c.end) for c in after]
    for b, a in zip(before, after, strict=True):
        fed_by_it = any(
            p.path == changed or p.preroll_from == changed
            for p in after_plan.within(a.feed_start, a.feed_end)
        )
        assert (a.signature != b.signature) == fed_by_it


@settings(max_examples=100, deadline=None)
@given(audio_segments, grids)
def test_encoder_settings_change_every_signature(
    segments: list[SegmentInput], grid: ChunkGrid
) -> None:
    plan = plan_audio(plan_timeline(segments), RATE)
    base = plan_chunks(plan, grid, PARAMS)
    for other in (
        dataclasses.replace(PARAMS, bitrate=96_000),
        dataclasses.replace(PARAMS, coder="fast"),
        dataclasses.replace(PARAMS, layout="mono"),
        dataclasses.replace(PARAMS, version="other build"),
    ):
        changed = plan_chunks(plan, grid, other)
        assert all(a.signature != b.signature for a, b in zip(base, changed, strict=True))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(millis, lengths), min_size=1, max_size=8),
    st.integers(min_value=1, max_value=8),
    grids,
    st.booleans(),
)
def test_settled_chunks_keep_their_signature_as_segments_arrive(
    spans: list[tuple[float, float]], arrived: int, grid: ChunkGrid, with_video: bool
) -> None:
    """A chunk encoded while recording is reused at the end unless its inputs changed.

    Segments arrive in recorded order (as a recorder closes them); the final plan's chunk
    with the same index must have the same signature as every chunk settled earlier.
    """
    ordered = sorted(spans)
    segments = [audio(f"a{i}", start, length) for i, (start, length) in enumerate(ordered)]
    if with_video:  # a screen recording spanning everything: no gap is ever a pause
        end = max(s + d for s, d in ordered)
        segments = [video("v", 0.0, end), *segments]
    final = plan_audio(plan_timeline(segments), RATE)
    assume(final.total > 0)
    final_chunks = {c.index: c for c in plan_chunks(final, grid, PARAMS)}
    partial_segments = segments[: arrived + (1 if with_video else 0)]
    partial_timeline = plan_timeline(partial_segments)
    if not partial_timeline.has_audio:
        return
    partial = plan_audio(partial_timeline, RATE)
    settled = settled_sample(partial_timeline, RATE)
    assert 0 <= settled <= partial.total
    for chunk in plan_chunks(partial, grid, PARAMS, settled=settled):
        assert not chunk.last and chunk.end + grid.postroll <= settled
        assert chunk.signature == final_chunks[chunk.index].signature, chunk.index


def test_settled_stops_at_a_gap_a_lagging_track_may_still_fill() -> None:
    # audio [0, 1) and [2, 3); video known only up to 1.5 s: the gap [1.5, 2) is no pause yet
    timeline = plan_timeline([audio("a0", 0.0, 1.0), audio("a1", 2.0, 1.0), video("v0", 0.0, 1.5)])
    assert timeline.cuts == ((1.5, 2.0),)
    assert settled_sample(timeline, RATE) == round(1.5 * RATE)
    # once the video has passed the gap it is a pause, and everything up to the end settles
    timeline = plan_timeline(
        [audio("a0", 0.0, 1.0), audio("a1", 2.0, 1.0), video("v0", 0.0, 1.5), video("v1", 2.0, 1)]
    )
    assert settled_sample(timeline, RATE) == round(timeline.duration * RATE)


def test_contiguous_slices_prime_the_decoder_with_the_previous_file() -> None:
    plan = plan_audio(
        plan_timeline(
            [
                audio("s0", 0.0, 1.0),
                audio("s1", 1.0, 1.0),  # continues s0
                audio("s2", 2.5, 1.0),  # after a gap: starts a new stream
                audio("s3", 3.0, 1.0),  # overlaps s2 (its start is trimmed)
            ]
        ),
        RATE,
        {"s0": "h0", "s1": "h1", "s2": "h2", "s3": "h3"},
    )
    by_path = {p.path: p for p in plan.placements}
    assert by_path["s0"].preroll_from is None
    assert (by_path["s1"].preroll_from, by_path["s1"].preroll_identity) == ("s0", "h0")
    assert by_path["s2"].preroll_from is None
    assert by_path["s3"].preroll_from is None


def test_placement_clip_moves_the_source_with_the_output() -> None:
    p = Placement(path="x", identity="x", source_start=100, out_start=1000, count=500)
    clipped = p.clip(1200, 1300)
    assert clipped is not None
    assert (clipped.source_start, clipped.out_start, clipped.count) == (300, 1200, 100)
    assert p.clip(0, 1000) is None and p.clip(1500, 2000) is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"chunk_frames": 0}, "chunk_frames"),
        ({"chunk_frames": 4, "preroll_frames": 1}, "preroll_frames"),
        ({"chunk_frames": 4, "postroll_frames": 1}, "postroll_frames"),
    ],
)
def test_grid_validation(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ChunkGrid(**kwargs)


def test_grid_for_seconds_rounds_to_whole_frames() -> None:
    grid = ChunkGrid.for_seconds(20.0, RATE)
    assert grid.chunk_samples % AAC_FRAME == 0
    assert math.isclose(grid.chunk_samples / RATE, 20.0, abs_tol=AAC_FRAME / RATE)
    with pytest.raises(ValueError):
        ChunkGrid.for_seconds(0.0, RATE)
