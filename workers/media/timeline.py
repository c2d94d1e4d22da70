"""Placement of recorded segments on one output timeline.

Pure functions only (no I/O) so the rules that decide where every sample and frame lands can be
property-tested without media files. Two clocks exist:

* *recorded time*: seconds on the recorder's clock, as the capture agent saw them;
* *output time*: seconds in the finished file, i.e. recorded time with the pauses removed.

The output starts at the first recorded media, so recorded time ``origin`` maps to output 0.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

from shared.segments import SegmentKind

__all__ = [
    "KINDS",
    "Piece",
    "PlacedSegment",
    "SegmentInput",
    "Timeline",
    "plan_timeline",
]

KINDS: tuple[SegmentKind, ...] = tuple(SegmentKind)

# Intervals shorter than this are float noise, not media; dropping them avoids 1e-15 s cuts.
_EPS = 1e-9


@dataclass(frozen=True)
class SegmentInput:
    """One recorded file as reported by the capture agent (or measured by probing)."""

    kind: SegmentKind
    path: str
    # Seconds from session start on the recorder's clock; None = starts where the previous
    # segment of the same kind (in input order) ended; the first one starts at 0.0.
    started_at: float | None
    duration: float


@dataclass(frozen=True)
class PlacedSegment:
    """A segment after overlap trimming, positioned on both clocks."""

    kind: SegmentKind
    path: str
    start: float  # recorded time where the kept part begins
    end: float  # recorded time where it ends
    trim_start: float  # seconds dropped from the beginning of the file (overlap)
    out_start: float  # output time where the kept part begins (after pause cuts)

    @property
    def duration(self) -> float:
        """Recorded length of the kept part (before any cut inside it)."""
        return self.end - self.start


@dataclass(frozen=True)
class Piece:
    """A contiguous part of a segment that survives the cuts; what an encoder actually copies."""

    source_offset: float  # seconds from the start of the file
    out_start: float  # output time where it lands
    duration: float  # seconds


@dataclass(frozen=True)
class Timeline:
    """The plan: placed segments, removed intervals and the resulting output length."""

    segments: tuple[PlacedSegment, ...]  # sorted by (kind, start)
    cuts: tuple[tuple[float, float], ...]  # recorded-time intervals removed from the output
    duration: float  # output duration in seconds
    origin: float = 0.0  # recorded time of output time 0 (the first recorded media)

    def to_output(self, t: float) -> float:
        """Map recorded time to output time; times inside a cut map to the cut's start.

        Evaluated cut by cut with the same arithmetic at every boundary so the mapping is
        exactly monotonic in floating point, not just mathematically.
        """
        return min(_map_time(t, self.origin, self.cuts), self.duration)

    def of_kind(self, kind: SegmentKind) -> tuple[PlacedSegment, ...]:
        """Segments of one track, in recorded order."""
        return tuple(s for s in self.segments if s.kind == kind)

    @property
    def has_audio(self) -> bool:
        """Whether any audio survives planning."""
        return any(s.kind == "audio" for s in self.segments)

    @property
    def has_video(self) -> bool:
        """Whether any video survives planning."""
        return any(s.kind == "video" for s in self.segments)

    def kept_parts(self, segment: PlacedSegment) -> tuple[Piece, ...]:
        """Split a segment around the cuts that fall inside it.

        Automatic pauses never intersect a segment, but explicit pauses can; engines copy
        these pieces so both tracks drop exactly the same recorded intervals.
        """
        pieces: list[Piece] = []
        a = segment.start
        for cs, ce in self.cuts:
            if ce <= a:
                continue
            if cs >= segment.end:
                break
            if cs - a > _EPS:
                pieces.append(self._piece(segment, a, cs))
            a = max(a, ce)
        if segment.end - a > _EPS:
            pieces.append(self._piece(segment, a, segment.end))
        return tuple(pieces)

    def _piece(self, segment: PlacedSegment, a: float, b: float) -> Piece:
        return Piece(
            source_offset=segment.trim_start + (a - segment.start),
            out_start=self.to_output(a),
            duration=b - a,
        )


def _map_time(t: float, origin: float, cuts: Sequence[tuple[float, float]]) -> float:
    if math.isnan(t):
        raise ValueError("time must not be NaN")
    if t <= origin:
        return 0.0
    out, prev = 0.0, origin
    for cs, ce in cuts:
        if t < cs:
            break
        cut_out = out + (cs - prev)
        if t < ce:
            return cut_out
        out, prev = cut_out, ce
    return out + (t - prev)


def _check_number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{what} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite, got {number!r}")
    if number < 0:
        raise ValueError(f"{what} must be >= 0, got {number!r}")
    return number


def _merge(intervals: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for a, b in sorted(intervals):
        if merged and a <= merged[-1][1] + _EPS:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def plan_timeline(
    segments: Sequence[SegmentInput],
    *,
    cut_pauses: bool = True,
    pauses: Sequence[tuple[float, float]] = (),
) -> Timeline:
    """Place segments, trim overlaps and decide which pauses to cut.

    A pause is a recorded interval where no track has media, or an explicit ``pauses``
    interval; with ``cut_pauses`` those are removed from both tracks. A gap in only one track
    is never cut so later media keeps its recorded time (the engines fill it with silence or a
    frozen frame). Raises ValueError for negative, NaN or infinite times and durations.
    """
    # 1. validate and resolve implicit starts (per kind, in input order)
    resolved: dict[str, list[tuple[float, float, int, SegmentInput]]] = {k: [] for k in KINDS}
    next_start: dict[str, float] = {k: 0.0 for k in KINDS}
    for index, seg in enumerate(segments):
        label = f"segment {index} ({seg.path!r})"
        if seg.kind not in KINDS:
            raise ValueError(f"{label}: kind must be 'audio' or 'video', got {seg.kind!r}")
        if not isinstance(seg.path, str) or not seg.path:
            raise ValueError(f"{label}: path must be a non-empty string")
        duration = _check_number(seg.duration, f"{label}: duration")
        if seg.started_at is None:
            start = next_start[seg.kind]
        else:
            start = _check_number(seg.started_at, f"{label}: started_at")
        end = start + duration
        if not math.isfinite(end):
            raise ValueError(f"{label}: start + duration overflows")
        next_start[seg.kind] = end
        resolved[seg.kind].append((start, end, index, seg))

    explicit: list[tuple[float, float]] = []
    for index, pause in enumerate(pauses):
        if len(pause) != 2:
            raise ValueError(f"pause {index} must be a (start, end) pair, got {pause!r}")
        a = _check_number(pause[0], f"pause {index} start")
        b = _check_number(pause[1], f"pause {index} end")
        if b < a:
            raise ValueError(f"pause {index} ends before it starts: {pause!r}")
        explicit.append((a, b))

    # 2. order each track and trim overlaps from the later segment
    kept: list[tuple[SegmentKind, str, float, float, float]] = []  # kind, path, start, end, trim
    for kind in KINDS:
        covered = -math.inf
        for raw_start, raw_end, _, seg in sorted(resolved[kind], key=lambda r: (r[0], r[2])):
            if raw_end - raw_start <= _EPS or raw_end <= covered + _EPS:
                continue  # zero length, or entirely covered by earlier media
            start = max(raw_start, covered)
            kept.append((kind, seg.path, start, raw_end, start - raw_start))
            covered = raw_end

    if not kept:
        return Timeline(segments=(), cuts=(), duration=0.0, origin=0.0)

    origin = min(k[2] for k in kept)
    span_end = max(k[3] for k in kept)

    # 3. pauses: gaps in the union of all tracks, plus explicit ones, clipped to the span
    cuts: list[tuple[float, float]] = []
    if cut_pauses:
        union = _merge([(k[2], k[3]) for k in kept])
        gaps = [(union[i][1], union[i + 1][0]) for i in range(len(union) - 1)]
        clipped = [(max(a, origin), min(b, span_end)) for a, b in explicit]
        candidates = [(a, b) for a, b in gaps + clipped if b - a > _EPS]
        cuts = [(a, b) for a, b in _merge(candidates) if b - a > _EPS]

    duration = _map_time(span_end, origin, cuts)
    placed = tuple(
        PlacedSegment(
            kind=kind,
            path=path,
            start=start,
            end=end,
            trim_start=trim,
            out_start=min(_map_time(start, origin, cuts), duration),
        )
        for kind, path, start, end, trim in sorted(kept, key=lambda k: (k[0], k[2]))
    )
    return Timeline(segments=placed, cuts=tuple(cuts), duration=duration, origin=origin)
