"""What a synthetic session looks like: its spec, checks, and the layout of its segments.

A session lasts ``duration`` seconds. The screen is cut into ``segment_seconds`` video
segments; the microphone covers the session except the ``audio_holes`` (it recorded nothing
while the screen kept going), with a segment boundary on every hole edge, and its segment
clock restarts when it resumes. Segments are listed in the order a recorder closes them.
Pure functions: nothing here touches files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from shared.segments import SegmentKind
from synthetic.lecture import Lecture
from synthetic.markers import MARKER_SECONDS
from synthetic.timecode import TIMECODE_STRIP_WIDTH_PX

__all__ = [
    "AAC_SAMPLE_RATES",
    "PlannedSegment",
    "SyntheticSpec",
    "frame_range",
    "plan_segments",
    "validate_spec",
]


#: Sample rates (Hz) AAC can carry.
AAC_SAMPLE_RATES = (
    8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000,
)  # fmt: skip
#: Limits of the screen, in pixels and frames per second.
MAX_WIDTH_PX, MAX_HEIGHT_PX, MIN_HEIGHT_PX = 7680, 4320, 16
MIN_FPS, MAX_FPS = 1, 240
#: Tolerance of session-time comparisons, in seconds.
_EPS_SECONDS = 1e-9
#: Tolerance of frame-number rounding (frames).
_EPS_FRAMES = 1e-6


@dataclass(frozen=True)
class SyntheticSpec:
    """What to record; defaults mimic a one-minute session with a microphone gap."""

    duration: float = 60.0  # seconds of session
    segment_seconds: float = 10.0
    # Spans (start, end) in session seconds where the microphone recorded nothing while the
    # screen kept recording; sorted, not overlapping.
    audio_holes: tuple[tuple[float, float], ...] = ((25.0, 35.0),)
    video: bool = True
    audio: bool = True
    width: int = 640  # pixels
    height: int = 360  # pixels
    fps: int = 15
    sample_rate: int = 48000  # Hz
    channels: int = 1
    # Real content: the lecture's slides on screen and its narration (espeak-ng speech) on
    # the microphone instead of the desktop and the speech-like voice (synthetic.lecture).
    lecture: Lecture | None = None


@dataclass(frozen=True)
class PlannedSegment:
    """One segment file to write: its kind, name and span on the session clock."""

    kind: SegmentKind
    file: str
    start: float  # session seconds
    end: float  # session seconds

    @property
    def duration(self) -> float:
        """Length in seconds (rounded to the nanosecond)."""
        return round(self.end - self.start, 9)


def validate_spec(spec: SyntheticSpec) -> None:
    """Reject specs a recorder could never have produced, saying why (``ValueError``)."""
    if not (math.isfinite(spec.duration) and spec.duration > 0):
        raise ValueError(f"duration must be a positive number of seconds, got {spec.duration!r}")
    if not (math.isfinite(spec.segment_seconds) and spec.segment_seconds > 0):
        raise ValueError(f"segment_seconds must be positive, got {spec.segment_seconds!r}")
    if not (spec.video or spec.audio):
        raise ValueError("at least one of video or audio must be enabled")
    if spec.video:
        _validate_screen(spec)
    if spec.audio:
        if spec.sample_rate not in AAC_SAMPLE_RATES:
            raise ValueError(
                f"sample_rate {spec.sample_rate!r} is not an AAC rate; use one of "
                f"{AAC_SAMPLE_RATES}"
            )
        if spec.channels not in (1, 2):
            raise ValueError(f"channels must be 1 or 2, got {spec.channels!r}")
        _validate_holes(spec)


def _validate_screen(spec: SyntheticSpec) -> None:
    if not isinstance(spec.fps, int) or not MIN_FPS <= spec.fps <= MAX_FPS:
        raise ValueError(
            f"fps must be an integer between {MIN_FPS} and {MAX_FPS}, got {spec.fps!r}"
        )
    for label, value, lo, hi in (
        ("width", spec.width, TIMECODE_STRIP_WIDTH_PX, MAX_WIDTH_PX),
        ("height", spec.height, MIN_HEIGHT_PX, MAX_HEIGHT_PX),
    ):
        if not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f"{label} must be an integer in [{lo}, {hi}], got {value!r}")
        if value % 2:
            raise ValueError(f"{label} must be even for yuv420p H.264, got {value}")


def _validate_holes(spec: SyntheticSpec) -> None:
    prev_end = 0.0
    for hole in spec.audio_holes:
        if len(hole) != 2:
            raise ValueError(f"audio hole must be a (start, end) pair, got {hole!r}")
        start, end = float(hole[0]), float(hole[1])
        if not (math.isfinite(start) and math.isfinite(end)) or start >= end:
            raise ValueError(f"audio hole {hole!r} must have start < end")
        if start < 0 or end > spec.duration:
            raise ValueError(f"audio hole {hole!r} lies outside the session [0, {spec.duration}]")
        if start < prev_end:
            raise ValueError(
                f"audio hole {hole!r} overlaps or precedes the previous hole "
                f"(holes must be sorted and not overlap)"
            )
        prev_end = end


def frame_range(start: float, end: float, fps: int) -> tuple[int, int]:
    """Frame numbers ``n`` (first, stop) with ``n / fps`` in ``[start, end)`` seconds."""
    return math.ceil(start * fps - _EPS_FRAMES), math.ceil(end * fps - _EPS_FRAMES)


def _cuts(start: float, end: float, step: float) -> list[tuple[float, float]]:
    """Split ``[start, end)`` every ``step`` seconds from ``start``."""
    out = []
    k = 0
    while start + k * step < end - _EPS_SECONDS:
        out.append((start + k * step, min(start + (k + 1) * step, end)))
        k += 1
    return out


def _audio_runs(spec: SyntheticSpec) -> list[tuple[float, float]]:
    """Spans where the microphone records: the session minus its holes."""
    runs: list[tuple[float, float]] = []
    pos = 0.0
    for hole_start, hole_end in spec.audio_holes:
        if hole_start > pos:
            runs.append((pos, float(hole_start)))
        pos = float(hole_end)
    if pos < spec.duration:
        runs.append((pos, spec.duration))
    return runs


def plan_segments(spec: SyntheticSpec) -> list[PlannedSegment]:
    """Validate ``spec`` and lay out every segment, in the order a recorder closes them
    (by end time, video first on ties)."""
    validate_spec(spec)
    items: list[PlannedSegment] = []
    if spec.video:
        for i, (a, b) in enumerate(_cuts(0.0, spec.duration, spec.segment_seconds)):
            first, stop = frame_range(a, b, spec.fps)
            if first >= stop:
                raise ValueError(
                    f"video segment [{a:g}, {b:g}) s holds no frame at {spec.fps} fps; "
                    f"adjust duration or segment_seconds"
                )
            items.append(PlannedSegment(SegmentKind.VIDEO, f"screen-{i:04d}.mp4", a, b))
    if spec.audio:
        n = 0
        for run_start, run_end in _audio_runs(spec):
            for a, b in _cuts(run_start, run_end, spec.segment_seconds):
                if b - a < MARKER_SECONDS - _EPS_SECONDS:
                    raise ValueError(
                        f"audio segment [{a:g}, {b:g}) s is shorter than the "
                        f"{MARKER_SECONDS * 1000:g} ms onset marker; adjust audio_holes, "
                        f"duration or segment_seconds"
                    )
                items.append(PlannedSegment(SegmentKind.AUDIO, f"mic-{n:04d}.m4a", a, b))
                n += 1
    items.sort(key=lambda p: (p.end, p.start, p.kind != "video"))
    return items
