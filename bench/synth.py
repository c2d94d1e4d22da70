"""Synthesise a realistic recorded session quickly with the bundled ffmpeg binary.

The session looks like what the Mac recorder ships (see README, "Session directory format"):

* ``screen-NNNN.mp4``: 1080p30 H.264 (libx264 ultrafast) at about 8 Mbit/s in fragmented MP4,
  showing a still desktop (wallpaper, two windows, text-like lines, a picture) with a few small
  regions changing: a blinking caret, a "typing" line, a cursor that moves now and then and a
  small thumbnail that plays now and then (see the activity constants; about three frames in
  four are exact repeats). Short GOPs are what keep a hardware-like bitrate on still content.
* ``mic-NNNN.m4a``: mono 48 kHz AAC, each file encoded on its own (so each carries its own
  encoder priming and padding, like a recorder restarting per segment), starting with a
  ``MARKER_S`` tone of ``MARKER_HZ`` at ``MARKER_AMPLITUDE`` followed by speech-like sound that
  never reaches the marker's level. Finding the markers in an output measures placement.
* ``session.json``: id, name, started_at and every segment's kind/file/started_at/duration,
  written last.

Generated sessions are cached under ``bench/out/sessions/<key>/``, keyed by every parameter.
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

__all__ = [
    "MARKER_AMPLITUDE",
    "MARKER_HZ",
    "MARKER_S",
    "SessionSpec",
    "SynthSession",
    "ensure_session",
    "ffmpeg_exe",
]

SYNTH_VERSION = 2  # bump when the generated media changes, to invalidate the cache

WIDTH_PX = 1920
HEIGHT_PX = 1080
FPS = 30
VIDEO_BITRATE_BPS = 8_000_000
VIDEO_BUFSIZE_BITS = 16_000_000
KEYFRAME_INTERVAL_FRAMES = 30  # 1 s GOP, like a hardware screen recorder
# Activity on the "screen": the cursor moves CURSOR_MOVE_S out of every CURSOR_PERIOD_S, the
# thumbnail plays THUMB_PLAY_S out of every THUMB_PERIOD_S, the typed line changes
# TYPING_UPDATES_PER_S times a second and the caret blinks every CARET_HALF_PERIOD_S.
CURSOR_MOVE_S, CURSOR_PERIOD_S = 1, 10
THUMB_PLAY_S, THUMB_PERIOD_S = 3, 60
TYPING_UPDATES_PER_S = 1
CARET_HALF_PERIOD_S = 0.5
FRAGMENTED_MP4_FLAGS = "+frag_keyframe+empty_moov+default_base_moof"

AUDIO_RATE_HZ = 48_000
AUDIO_SOURCE_BITRATE = "64k"
MARKER_S = 0.030  # length of the onset tone at each audio segment's start
MARKER_HZ = 1000.0
MARKER_AMPLITUDE = 0.9  # full scale = 1.0; speech below stays under 0.25

DEFAULT_AUDIO_SEGMENTS = 60
DEFAULT_VIDEO_SEGMENTS = 30  # 1-minute segments for a 30-minute session
SESSION_START = datetime(2026, 11, 21, 10, 0, 0, tzinfo=UTC)
MANIFEST = "session.json"
SYNTH_META = "synth.json"


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary shipped by imageio-ffmpeg."""
    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass(frozen=True)
class SessionSpec:
    """What to synthesise; every field is part of the cache key."""

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
        if self.audio_segment_s <= MARKER_S * 10:
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
            "w": WIDTH_PX,
            "h": HEIGHT_PX,
            "fps": FPS,
            "vb": VIDEO_BITRATE_BPS,
            "gop": KEYFRAME_INTERVAL_FRAMES,
            "ar": AUDIO_RATE_HZ,
            "ab": AUDIO_SOURCE_BITRATE,
            "graph": _video_graph(),
            "speech": _speech_expr(),
        }
        digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
        return (
            f"m{self.minutes:g}-v{self.video_segments}-a{self.audio_segments}"
            f"-{HEIGHT_PX}p{FPS}-{VIDEO_BITRATE_BPS // 1_000_000}M-{digest}"
        )


@dataclass(frozen=True)
class SegmentFile:
    kind: str  # "audio" | "video"
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


def _video_graph() -> str:
    """Filter graph of the desktop: a still picture looped, plus small moving parts."""
    w, h = WIDTH_PX, HEIGHT_PX
    # seconds of cursor movement so far: grows during the first CURSOR_MOVE_S of each period
    period, move = CURSOR_PERIOD_S, CURSOR_MOVE_S
    moved = f"({move}*floor(t/{period})+min(mod(t,{period}),{move}))"
    return ";".join(
        [
            f"mandelbrot=s={w}x{h}:rate={FPS},trim=end_frame=1[wall]",
            # text-like lines: cellular-automaton "glyphs" with white line spacing
            f"cellauto=s=900x600:rule=30:rate={FPS}:seed=7,trim=end_frame=1,format=yuv420p,"
            "drawgrid=w=iw:h=22:t=9:c=white[text]",
            f"testsrc2=s=640x360:rate={FPS},trim=end_frame=1[pic]",
            "[wall]drawbox=x=0:y=0:w=iw:h=28:c=0xe8e8e8:t=fill,"
            "drawbox=x=120:y=100:w=940:h=680:c=0xf4f4f4:t=fill,"
            "drawbox=x=1120:y=160:w=700:h=460:c=0xfafafa:t=fill[d0]",
            "[d0][text]overlay=x=140:y=150[d1]",
            f"[d1][pic]overlay=x=1150:y=200,format=yuv420p,loop=loop=-1:size=1,"
            f"setpts=N/{FPS}/TB[desk]",
            # changing regions: a typed line, a thumbnail playing now and then, a caret, the
            # cursor (its path advances only while it moves, so it rests in between)
            f"cellauto=s=600x14:rule=110:rate={TYPING_UPDATES_PER_S}:seed=3,format=yuv420p[typing]",
            f"testsrc2=s=240x136:rate={FPS}[anim]",
            f"color=c=white:s=12x18:rate={FPS}[cursor]",
            "[desk][typing]overlay=x=140:y=764:eof_action=repeat[e1]",
            f"[e1][anim]overlay=x=1560:y=640:enable='lt(mod(t,{THUMB_PERIOD_S}),{THUMB_PLAY_S})'[e2]",
            "[e2]drawbox=x=742:y=762:w=2:h=18:c=black:t=fill:"
            f"enable='lt(mod(t,{2 * CARET_HALF_PERIOD_S:g}),{CARET_HALF_PERIOD_S:g})'[e3]",
            f"[e3][cursor]overlay=x='960+700*sin({moved}/2)':y='540+400*sin({moved}/3)'[v]",
        ]
    )


def _video_command(spec: SessionSpec, directory: Path) -> list[str]:
    per = spec.frames_per_video_segment
    cuts = ",".join(str(per * i) for i in range(1, spec.video_segments))
    segmenting = ["-segment_frames", cuts] if cuts else []
    return [
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-filter_complex", _video_graph(), "-map", "[v]", "-frames:v", str(spec.frames),
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
        "-b:v", str(VIDEO_BITRATE_BPS), "-maxrate", str(VIDEO_BITRATE_BPS),
        "-bufsize", str(VIDEO_BUFSIZE_BITS), "-g", str(KEYFRAME_INTERVAL_FRAMES),
        "-force_key_frames", f"expr:eq(mod(n,{per}),0)",
        "-f", "segment", *segmenting, "-segment_format", "mp4",
        "-segment_format_options", f"movflags={FRAGMENTED_MP4_FLAGS}",
        "-reset_timestamps", "1", str(directory / "screen-%04d.mp4"),
    ]  # fmt: skip


def _speech_expr() -> str:
    """aevalsrc expression: the marker tone, then voiced sound in syllables over a noise floor."""
    marker = f"{MARKER_AMPLITUDE}*sin(2*PI*{MARKER_HZ:g}*t)"
    pitch = "(140+40*sin(2*PI*0.3*t))"
    voice = f"(0.15*sin(2*PI*{pitch}*t)+0.05*sin(4*PI*{pitch}*t))"
    syllables = "gt(sin(2*PI*4*t)+0.3*sin(2*PI*0.21*t),0)"
    noise = "0.01*(random(0)*2-1)"
    return f"if(lt(t,{MARKER_S:g}),{marker},{voice}*{syllables}+{noise})"


def _audio_command(path: Path, duration_s: float) -> list[str]:
    source = f"aevalsrc=exprs='{_speech_expr()}':s={AUDIO_RATE_HZ}:c=mono:d={duration_s:.6f}"
    return [
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", source, "-c:a", "aac", "-b:a", AUDIO_SOURCE_BITRATE, str(path),
    ]  # fmt: skip


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _plan(spec: SessionSpec, directory: Path) -> tuple[SegmentFile, ...]:
    video = tuple(
        SegmentFile(
            "video",
            directory / f"screen-{i:04d}.mp4",
            i * spec.video_segment_s,
            spec.video_segment_s,
        )
        for i in range(spec.video_segments)
    )
    audio = tuple(
        SegmentFile(
            "audio", directory / f"mic-{i:04d}.m4a", i * spec.audio_segment_s, spec.audio_segment_s
        )
        for i in range(spec.audio_segments)
    )
    return video + audio


def _cached(spec: SessionSpec, directory: Path, segments: tuple[SegmentFile, ...]) -> bool:
    meta = directory / SYNTH_META
    if not (directory / MANIFEST).is_file() or not meta.is_file():
        return False
    try:
        recorded = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    sizes: dict[str, int] = recorded.get("sizes", {})
    return recorded.get("key") == spec.key and all(
        s.path.is_file() and s.path.stat().st_size == sizes.get(s.path.name) for s in segments
    )


def _write_manifest(spec: SessionSpec, directory: Path, segments: tuple[SegmentFile, ...]) -> None:
    manifest = {
        "id": f"bench-{spec.key}",
        "name": f"Benchmark session, {spec.minutes:g} min",
        "started_at": _iso(SESSION_START),
        "priority": "normal",
        "segments": [
            {
                "kind": s.kind,
                "file": s.path.name,
                "started_at": _iso(SESSION_START + timedelta(seconds=s.start_s)),
                "duration": s.duration_s,
            }
            for s in segments
        ],
    }
    tmp = directory / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    tmp.replace(directory / MANIFEST)


def ensure_session(spec: SessionSpec, root: Path, *, log: bool = True) -> SynthSession:
    """Return the cached session for ``spec`` under ``root``, generating it if needed."""
    spec.validate()
    directory = (root / spec.key).absolute()
    segments = _plan(spec, directory)
    if _cached(spec, directory, segments):
        return SynthSession(spec, directory, segments, generated_s=None)

    directory.mkdir(parents=True, exist_ok=True)
    for stale in (directory / MANIFEST, directory / SYNTH_META):
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
    _write_manifest(spec, directory, segments)  # last: its presence marks a complete session
    return SynthSession(spec, directory, segments, generated_s=elapsed)
