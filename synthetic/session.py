"""Record a synthetic session folder, laid out exactly as the Mac recorder lays one out.

So everything downstream (capture agent, upload, merge workers) runs end to end on a Linux
box with no screen and no microphone:

* ``screen-NNNN.mp4`` - H.264 in *fragmented* MP4 (crash-safe, like a real screen recorder)
  showing :class:`synthetic.screen.Scene` (or, for a spec with a lecture, its slides:
  :class:`synthetic.slides.SlideScene`) with its timecode strip, one per
  ``segment_seconds`` of session time (:mod:`synthetic.plan`);
* ``mic-NNNN.m4a`` - AAC microphone segments of :class:`synthetic.voice.Voice` (or the
  lecture's narration: :class:`synthetic.speech.Narration`), each starting with the onset
  marker (:mod:`synthetic.markers`), covering the session except its holes;
* ``session.json`` - written last through :func:`shared.sessiondir.write_manifest`
  (validated model, temporary name then rename).

Video frames sit at ``n / fps`` session seconds, so if ``segment_seconds`` is not a whole
number of frames a segment's first frame lies up to one frame after its start (fragmented
MP4 has no edit list, so the file reports it at 0); the timecode strip holds the true time.
Every segment file is written under a hidden temporary name and renamed once complete, like a
recorder closing a file; ``on_segment`` runs right after each rename, so a capture agent can
ship segments while the "recording" continues. Deterministic for a session id and spec.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from pathlib import Path

import av
from av.video.reformatter import VideoReformatter

from shared.segments import SegmentKind
from shared.sessiondir import MANIFEST_NAME, Manifest, ManifestSegment, write_manifest
from synthetic.aac import write_aac
from synthetic.lecture import DEMO_LECTURE
from synthetic.plan import PlannedSegment, SyntheticSpec, frame_range, plan_segments
from synthetic.screen import Scene
from synthetic.slides import Renderer, SlideScene
from synthetic.speech import Narration, demo_narration
from synthetic.voice import Voice

__all__ = ["RecordedSegment", "record_synthetic_session", "session_seed"]

#: Fragmented MP4: empty moov first, then self-contained fragments (one per keyframe).
FRAGMENTED_MOVFLAGS = "+frag_keyframe+empty_moov+default_base_moof"
#: Time base of the video stream (90 kHz, like MPEG).
VIDEO_TIME_BASE = Fraction(1, 90000)
#: Seconds between keyframes, hence fragments.
KEYFRAME_INTERVAL_SECONDS = 2
#: libx264 constant rate factor of the screen segments.
VIDEO_CRF = "23"
#: AAC bit rate per channel, bits per second.
AUDIO_BITRATE_PER_CHANNEL = 64000
#: The default spec (frozen, so sharing it is safe): one minute with a microphone gap.
DEFAULT_SPEC = SyntheticSpec()


@dataclass(frozen=True)
class RecordedSegment:
    """One finished segment file, as reported to ``on_segment``."""

    kind: SegmentKind
    path: Path  # absolute path of the finished file
    file: str  # path relative to the session dir (what goes in session.json)
    started_at: datetime  # tz-aware
    duration: float  # seconds


def session_seed(session_id: str) -> int:
    """The 64-bit seed of all content of session ``session_id``."""
    return int.from_bytes(hashlib.sha256(session_id.encode()).digest()[:8], "big")


def record_synthetic_session(
    dest: Path,
    *,
    session_id: str,
    name: str,
    spec: SyntheticSpec = DEFAULT_SPEC,
    started_at: datetime | None = None,
    on_segment: Callable[[RecordedSegment], None] | None = None,
    realtime: bool = False,
) -> Path:
    """Record a synthetic session into ``dest`` and return ``dest``.

    Segments are produced in the order a recorder would close them, each written to a hidden
    ``.<file>.partial`` name and renamed when complete; ``on_segment`` runs right after each
    rename. ``session.json`` is written last. With ``realtime=True`` each segment is held back
    until its end time on the wall clock (measured from the call), so a watcher sees files
    appear at recording pace.
    """
    plan = plan_segments(spec)
    if started_at is None:
        started_at = datetime.now().astimezone()
    elif started_at.tzinfo is None or started_at.utcoffset() is None:
        raise ValueError("started_at must be timezone-aware (e.g. datetime.now().astimezone())")
    if not session_id:
        raise ValueError("session_id must be a non-empty string")

    dest = Path(dest).absolute()
    dest.mkdir(parents=True, exist_ok=True)
    if (dest / MANIFEST_NAME).exists():
        raise FileExistsError(f"{dest} already holds a session ({MANIFEST_NAME} exists)")

    seed = session_seed(session_id)
    scene = screen_of(spec, seed) if spec.video else None
    voice = microphone_of(spec, seed) if spec.audio else None
    wall0 = time.monotonic()
    records: list[RecordedSegment] = []
    for item in plan:
        final = dest / item.file
        tmp = dest / f".{item.file}.partial"
        if item.kind == "video":
            assert scene is not None
            write_screen_segment(tmp, spec, scene, item)
        else:
            assert voice is not None
            write_mic_segment(tmp, spec, voice, item)
        if realtime:
            delay = wall0 + item.end - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        os.replace(tmp, final)
        record = RecordedSegment(
            kind=item.kind,
            path=final,
            file=item.file,
            started_at=started_at + timedelta(seconds=item.start),
            duration=item.duration,
        )
        records.append(record)
        if on_segment is not None:
            on_segment(record)

    write_manifest(dest, session_manifest(session_id, name, started_at, records))
    return dest


def screen_of(spec: SyntheticSpec, seed: int) -> Renderer:
    """What the screen shows: the lecture's slides, or the desktop."""
    if spec.lecture is not None:
        return SlideScene(spec.lecture, spec.width, spec.height, seed)
    return Scene(spec.width, spec.height, spec.duration, seed)


def microphone_of(spec: SyntheticSpec, seed: int) -> Voice | Narration:
    """What the microphone hears: the lecture's narration, or the speech-like voice.

    The demo lecture's narration comes from its committed recording (no espeak-ng needed);
    any other lecture is spoken by espeak-ng now.
    """
    if spec.lecture is None:
        return Voice(spec.sample_rate, spec.duration, seed)
    if spec.lecture == DEMO_LECTURE:
        return demo_narration(spec.sample_rate, seed=seed)
    return Narration(spec.lecture, spec.sample_rate, seed=seed)


def session_manifest(
    session_id: str, name: str, started_at: datetime, records: list[RecordedSegment]
) -> Manifest:
    """The ``session.json`` model of recorded segments (by start time, video first)."""
    listed = sorted(records, key=lambda r: (r.started_at, r.kind != "video", r.file))
    return Manifest(
        id=session_id,
        name=name,
        started_at=started_at,
        segments=[
            ManifestSegment(kind=r.kind, file=r.file, started_at=r.started_at, duration=r.duration)
            for r in listed
        ],
    )


def write_screen_segment(
    path: Path, spec: SyntheticSpec, scene: Renderer, item: PlannedSegment
) -> None:
    """Encode the frames of ``item``'s session span to a fragmented H.264 MP4 at ``path``."""
    n0, n1 = frame_range(item.start, item.end, spec.fps)
    with av.open(str(path), "w", format="mp4", options={"movflags": FRAGMENTED_MOVFLAGS}) as out:
        stream = out.add_stream(
            "libx264",
            rate=spec.fps,
            options={"preset": "ultrafast", "tune": "stillimage", "crf": VIDEO_CRF},
        )
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
        stream.time_base = VIDEO_TIME_BASE
        stream.codec_context.time_base = VIDEO_TIME_BASE
        stream.codec_context.gop_size = KEYFRAME_INTERVAL_SECONDS * spec.fps
        reformatter = VideoReformatter()  # reused: much cheaper than frame.reformat()
        for n in range(n0, n1):
            t = n / spec.fps
            frame = av.VideoFrame.from_ndarray(scene.render(t), format="rgb24")
            frame = reformatter.reformat(frame, format="yuv420p")
            frame.pts = round((t - item.start) / VIDEO_TIME_BASE)
            frame.time_base = VIDEO_TIME_BASE
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def write_mic_segment(
    path: Path, spec: SyntheticSpec, voice: Voice | Narration, item: PlannedSegment
) -> None:
    """Encode ``item``'s session span of the voice (marker first) to AAC in an .m4a file."""
    sr = spec.sample_rate
    n = round((item.end - item.start) * sr)
    mono = voice.segment(item.start, n, index=round(item.start * 1000))
    write_aac(
        path, mono, sr, channels=spec.channels, bitrate_per_channel=AUDIO_BITRATE_PER_CHANNEL
    )
