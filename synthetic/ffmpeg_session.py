"""Long realistic sessions synthesised quickly by the bundled ffmpeg (used by the benchmark).

The session looks like what the Mac recorder ships (see README, "Session directory format"):

* ``screen-NNNN.mp4``: 1080p30 H.264 (libx264 ultrafast) at about 8 Mbit/s in fragmented MP4
  showing :func:`synthetic.lavfi.desktop_graph` (about three frames in four are exact
  repeats). Short GOPs are what keep a hardware-like bitrate on still content.
* ``mic-NNNN.m4a``: mono 48 kHz AAC, each file encoded on its own (so each carries its own
  encoder priming and padding, like a recorder restarting per segment), starting with the
  onset marker (:mod:`synthetic.markers`) followed by speech-like sound
  (:func:`synthetic.voice.speech_aevalsrc_expr`). Finding the markers measures placement.
* ``session.json``: written last through :func:`shared.sessiondir.write_manifest`.

Generated sessions are cached under ``<root>/<key>/``, keyed by every parameter.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import imageio_ffmpeg

from shared.routing import Priority
from shared.segments import SegmentKind
from shared.sessiondir import MANIFEST_NAME, Manifest, ManifestSegment, write_manifest
from synthetic.lavfi import (
    AUDIO_RATE_HZ,
    DESKTOP_FPS,
    DESKTOP_HEIGHT_PX,
    DESKTOP_WIDTH_PX,
    desktop_graph,
    speech_source,
)
from synthetic.markers import MARKER_SECONDS
from synthetic.voice import speech_aevalsrc_expr

__all__ = [
    "AUDIO_RATE_HZ",
    "FPS",
    "SegmentFile",
    "SessionSpec",
    "SynthSession",
    "ensure_session",
    "ffmpeg_exe",
]

SYNTH_VERSION = 2  # bump when the generated media changes, to invalidate the cache

FPS = DESKTOP_FPS
VIDEO_BITRATE_BPS = 8_000_000
VIDEO_BUFSIZE_BITS = 16_000_000
KEYFRAME_INTERVAL_FRAMES = 30  # 1 s GOP, like a hardware screen recorder
FRAGMENTED_MP4_FLAGS = "+frag_keyframe+empty_moov+default_base_moof"
AUDIO_SOURCE_BITRATE = "64k"
#: An audio segment must be longer than this many markers.
MIN_AUDIO_SEGMENT_MARKERS = 10

DEFAULT_AUDIO_SEGMENTS = 60
DEFAULT_VIDEO_SEGMENTS = 30  # 1-minute segments for a 30-minute session
SESSION_START = datetime(2026, 11, 21, 10, 0, 0, tzinfo=UTC)
SYNTH_META = "synth.json"


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary shipped by imageio-ffmpeg."""
    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass(frozen=True)
class SessionSpec:
    """What to synthesise (equal audio and equal video segments); every field is in the key."""

    minutes: float = 30.0
    audio_segments: int = DEFAULT_AUDIO_SEGMENTS
    video_segments: int = DEFAULT_VIDEO_SEGMENTS

    @property
    def seconds(self) -> float:
        """Session length in seconds."""
        return self.minutes * 60.0

    @property
    def frames(self) -> int:
        """Video frames in the whole session."""
        return round(self.seconds * FPS)

    @property
    def frames_per_video_segment(self) -> int:
        return self.frames // self.video_segments

    @property
    def audio_segment_s(self) -> float:
        return self.seconds / self.audio_segments

    @property
    def video_segment_s(self) -> float:
        return self.frames_per_video_segment / FPS

    def validate(self) -> None:
        """Refuse specs that cannot be cut into equal, frame-exact segments."""
        if self.minutes <= 0 or self.audio_segments < 1 or self.video_segments < 1:
            raise ValueError("minutes, audio_segments and video_segments must be positive")
        if abs(self.seconds * FPS - self.frames) > 1e-6:
            raise ValueError(f"{self.seconds} s is not a whole number of frames at {FPS} fps")
        if self.frames % self.video_segments:
            raise ValueError(
                f"{self.frames} frames do not split into {self.video_segments} equal segments"
            )
        if self.audio_segment_s <= MARKER_SECONDS * MIN_AUDIO_SEGMENT_MARKERS:
            raise ValueError("audio segments are too short for their marker")

    @property
    def key(self) -> str:
        """Readable cache key plus a hash of everything that shapes the media.

        The filter graph and the audio expression are hashed too, so editing them (or any
        constant they use) invalidates the cache without bumping SYNTH_VERSION.
        """
        params = {
            **asdict(self),
            "minutes": float(self.minutes),
            "v": SYNTH_VERSION,
            "w": DESKTOP_WIDTH_PX,
            "h": DESKTOP_HEIGHT_PX,
            "fps": FPS,
            "vb": VIDEO_BITRATE_BPS,
            "gop": KEYFRAME_INTERVAL_FRAMES,
            "ar": AUDIO_RATE_HZ,
            "ab": AUDIO_SOURCE_BITRATE,
            "graph": desktop_graph(),
            "speech": speech_aevalsrc_expr(),
        }
        digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
        return (
            f"m{self.minutes:g}-v{self.video_segments}-a{self.audio_segments}"
            f"-{DESKTOP_HEIGHT_PX}p{FPS}-{VIDEO_BITRATE_BPS // 1_000_000}M-{digest}"
        )


@dataclass(frozen=True)
class SegmentFile:
    """One generated segment file and its span on the session clock."""

    kind: SegmentKind
    path: Path
    start_s: float  # session seconds
    duration_s: float


@dataclass(frozen=True)
class SynthSession:
    """A generated session folder and what is in it."""

    spec: SessionSpec
    directory: Path
    segments: tuple[SegmentFile, ...]
    generated_s: float | None  # wall seconds spent generating; None = taken from the cache

    def of_kind(self, kind: str) -> tuple[SegmentFile, ...]:
        return tuple(s for s in self.segments if s.kind == kind)

    @property
    def video_bytes(self) -> int:
        return sum(s.path.stat().st_size for s in self.of_kind("video"))

    @property
    def audio_bytes(self) -> int:
        return sum(s.path.stat().st_size for s in self.of_kind("audio"))


def _video_command(spec: SessionSpec, directory: Path) -> list[str]:
    per = spec.frames_per_video_segment
    cuts = ",".join(str(per * i) for i in range(1, spec.video_segments))
    segmenting = ["-segment_frames", cuts] if cuts else []
    return [
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-filter_complex", desktop_graph(), "-map", "[v]", "-frames:v", str(spec.frames),
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
        "-b:v", str(VIDEO_BITRATE_BPS), "-maxrate", str(VIDEO_BITRATE_BPS),
        "-bufsize", str(VIDEO_BUFSIZE_BITS), "-g", str(KEYFRAME_INTERVAL_FRAMES),
        "-force_key_frames", f"expr:eq(mod(n,{per}),0)",
        "-f", "segment", *segmenting, "-segment_format", "mp4",
        "-segment_format_options", f"movflags={FRAGMENTED_MP4_FLAGS}",
        "-reset_timestamps", "1", str(directory / "screen-%04d.mp4"),
    ]  # fmt: skip


def _audio_command(path: Path, duration_s: float) -> list[str]:
    return [
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", speech_source(AUDIO_RATE_HZ, duration_s),
        "-c:a", "aac", "-b:a", AUDIO_SOURCE_BITRATE, str(path),
    ]  # fmt: skip


def _plan(spec: SessionSpec, directory: Path) -> tuple[SegmentFile, ...]:
    video = tuple(
        SegmentFile(
            SegmentKind.VIDEO,
            directory / f"screen-{i:04d}.mp4",
            i * spec.video_segment_s,
            spec.video_segment_s,
        )
        for i in range(spec.video_segments)
    )
    audio = tuple(
        SegmentFile(
            SegmentKind.AUDIO,
            directory / f"mic-{i:04d}.m4a",
            i * spec.audio_segment_s,
            spec.audio_segment_s,
        )
        for i in range(spec.audio_segments)
    )
    return video + audio


def _cached(spec: SessionSpec, directory: Path, segments: tuple[SegmentFile, ...]) -> bool:
    meta = directory / SYNTH_META
    if not (directory / MANIFEST_NAME).is_file() or not meta.is_file():
        return False
    try:
        recorded = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    sizes: dict[str, int] = recorded.get("sizes", {})
    return recorded.get("key") == spec.key and all(
        s.path.is_file() and s.path.stat().st_size == sizes.get(s.path.name) for s in segments
    )


def session_manifest(spec: SessionSpec, segments: tuple[SegmentFile, ...]) -> Manifest:
    """The ``session.json`` model of a generated session."""
    return Manifest(
        id=f"bench-{spec.key}",
        name=f"Benchmark session, {spec.minutes:g} min",
        started_at=SESSION_START,
        priority=Priority.NORMAL,
        segments=[
            ManifestSegment(
                kind=s.kind,
                file=s.path.name,
                started_at=SESSION_START + timedelta(seconds=s.start_s),
                duration=s.duration_s,
            )
            for s in segments
        ],
    )


def ensure_session(spec: SessionSpec, root: Path, *, log: bool = True) -> SynthSession:
    """Return the cached session for ``spec`` under ``root``, generating it if needed."""
    spec.validate()
    directory = (root / spec.key).absolute()
    segments = _plan(spec, directory)
    if _cached(spec, directory, segments):
        return SynthSession(spec, directory, segments, generated_s=None)

    directory.mkdir(parents=True, exist_ok=True)
    for stale in (directory / MANIFEST_NAME, directory / SYNTH_META):
        stale.unlink(missing_ok=True)
    if log:
        print(f"synthesising {spec.minutes:g} min session into {directory} ...", flush=True)
    started = time.perf_counter()
    # the video encode is the long part; audio segments are encoded while it runs
    video = subprocess.Popen(_video_command(spec, directory), stderr=subprocess.PIPE, text=True)
    try:
        for seg in segments:
            if seg.kind == "audio":
                subprocess.run(
                    _audio_command(seg.path, seg.duration_s),
                    check=True,
                    capture_output=True,
                    text=True,
                )
        _, err = video.communicate()
    except BaseException:
        video.kill()
        video.wait()
        raise
    if video.returncode != 0:
        raise RuntimeError(f"video synthesis failed ({video.returncode}): {err.strip()[-2000:]}")
    missing = [s.path.name for s in segments if not s.path.is_file()]
    if missing:
        raise RuntimeError(f"synthesis did not produce {missing}")
    elapsed = time.perf_counter() - started
    meta = {
        "key": spec.key,
        "spec": asdict(spec),
        "generated_s": round(elapsed, 3),
        "sizes": {s.path.name: s.path.stat().st_size for s in segments},
    }
    (directory / SYNTH_META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    # last: its presence marks a complete session
    write_manifest(directory, session_manifest(spec, segments))
    return SynthSession(spec, directory, segments, generated_s=elapsed)
