"""Pure builders for the recorder's ffmpeg command lines (argv lists, no I/O).

Kept free of side effects so the macOS avfoundation command can be tested as data on Linux:
the synthetic source (:mod:`synthetic.lavfi`) differs from the real one only in its input
arguments; everything after the inputs (encoders, the ``segment`` muxer, segment lists) is
shared.

One ffmpeg run has two outputs fed by the same input clock: video segments
``screen-NNNNN.mp4`` and audio segments ``mic-NNNNN.m4a``, each written by the ``segment``
muxer as fragmented MP4 (crash-safe: a killed recorder leaves decodable files) with its own
CSV segment list (``file,start,end`` in seconds since the run's first sample). ffmpeg runs
with the session folder as its working directory, so every name here is relative and no
folder path ever has to be escaped for ffmpeg's ``%d`` patterns.

Both outputs keep the run's one clock, so a segment carries its true start:

* ``-avoid_negative_ts disabled``: the AAC encoder's first packet is its priming (encoder
  delay, 1024 samples for ffmpeg's ``aac``), timestamped before 0. Left to the default, each
  output would shift *its own* timestamps so they start at 0: the audio, and its segment
  list, would run one priming (21.3 ms at 48 kHz) late against the video.
* ``delay_moov``: the fragmented MP4 muxer writes the (still empty) ``moov`` with the first
  fragment instead of before it, so it knows where the track starts and writes the edit
  list that declares the priming (and any start offset of the track). Decoders then drop
  the priming, as for any MP4 from Apple's or ffmpeg's non-fragmented muxer. The files stay
  crash-safe: only the first fragment of a segment (``FRAGMENT_US``) was ever at risk.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass

from shared.segments import SegmentKind
from synthetic.lavfi import SyntheticSource, recorder_inputs

VIDEO_PREFIX = "screen-"
AUDIO_PREFIX = "mic-"
VIDEO_EXT = ".mp4"
AUDIO_EXT = ".m4a"
#: File name prefix and extension of each kind's segments.
FILE_NAMING: dict[SegmentKind, tuple[str, str]] = {
    SegmentKind.VIDEO: (VIDEO_PREFIX, VIDEO_EXT),
    SegmentKind.AUDIO: (AUDIO_PREFIX, AUDIO_EXT),
}
#: Digits of the segment number in file names (``screen-00042.mp4``).
SEGMENT_DIGITS = 5
#: Fragment length inside a segment, in microseconds: at most this much media is lost when
#: the recorder is killed (without it a segment is a single fragment written at its end).
FRAGMENT_US = 1_000_000
#: Fragmented MP4: an empty moov (written with the first fragment, with the edit list that
#: declares the AAC priming: see the module's docstring), then self-contained moof+mdat
#: fragments.
MOVFLAGS = "+frag_keyframe+empty_moov+delay_moov+default_base_moof"
#: Timestamps before 0 (the AAC priming) stay as they are, on the run's clock.
AVOID_NEGATIVE_TS = "disabled"

#: Frames per second asked of the screen capture.
DEFAULT_SCREEN_FPS = 30
#: Target bitrate of the hardware encoder (VideoToolbox needs one; bits per second).
VIDEOTOOLBOX_BITRATE = "6M"
#: libx264 constant rate factor (quality; lower = better, 23 = ffmpeg default).
X264_CRF = 23
X264_PRESET = "veryfast"
AUDIO_BITRATE = "128k"
#: Audio sample rate in Hz (the pipeline mixes at 48 kHz).
AUDIO_SAMPLE_RATE = 48_000

ENCODER_VIDEOTOOLBOX = "h264_videotoolbox"
ENCODER_X264 = "libx264"

_SCREEN_NUMBER = re.compile(r"^\d+$")


def segment_name(kind: SegmentKind, number: int) -> str:
    """File name of segment ``number`` of a kind (``screen-00003.mp4``)."""
    prefix, ext = FILE_NAMING[kind]
    return f"{prefix}{number:0{SEGMENT_DIGITS}d}{ext}"


def segment_pattern(kind: SegmentKind) -> str:
    """The ``segment`` muxer's output pattern for a kind (``screen-%05d.mp4``)."""
    prefix, ext = FILE_NAMING[kind]
    return f"{prefix}%0{SEGMENT_DIGITS}d{ext}"


def segment_number(kind: SegmentKind, name: str) -> int | None:
    """Inverse of :func:`segment_name`; ``None`` when ``name`` is not such a segment."""
    prefix, ext = FILE_NAMING[kind]
    match = re.fullmatch(re.escape(prefix) + r"(\d+)" + re.escape(ext), name)
    return int(match.group(1)) if match else None


def segment_list_name(kind: SegmentKind, run: int) -> str:
    """Per-run CSV segment list (hidden; not part of the session)."""
    return f".{'screen' if kind == 'video' else 'mic'}-run{run:03d}.csv"


@dataclass(frozen=True)
class AVFoundationSource:
    """The Mac's screen and microphone through ffmpeg's avfoundation input device.

    ``screen`` is a screen number (``"0"`` = main display, captured as the device named
    ``"Capture screen 0"``, which unlike the numeric index does not shift when a camera is
    plugged in) or an exact video device name; ``audio_device`` is an audio device index
    (``"0"``) or name as printed by ``ffmpeg -f avfoundation -list_devices true -i ""``,
    or ``None`` to record no audio.
    """

    screen: str = "0"
    audio_device: str | None = "0"
    framerate: int = DEFAULT_SCREEN_FPS
    capture_cursor: bool = True
    capture_mouse_clicks: bool = True


Source = AVFoundationSource | SyntheticSource


@dataclass(frozen=True)
class InputArgs:
    """The input half of a command and which streams the two outputs map."""

    argv: list[str]
    video_map: str
    audio_map: str | None
    fps: int


def avfoundation_video_device(screen: str) -> str:
    """avfoundation device for a ``--screen`` value: a number means ``Capture screen N``."""
    screen = screen.strip()
    if not screen:
        raise ValueError("screen must be a screen number or an avfoundation device name")
    if ":" in screen:
        raise ValueError(f"screen {screen!r}: ':' separates video and audio, not allowed here")
    return f"Capture screen {screen}" if _SCREEN_NUMBER.fullmatch(screen) else screen


def avfoundation_input(source: AVFoundationSource) -> InputArgs:
    """``-f avfoundation ... -i "<screen>:<audio>"``: one input with both streams."""
    video = avfoundation_video_device(source.screen)
    audio = source.audio_device.strip() if source.audio_device is not None else None
    if audio is not None and (not audio or ":" in audio):
        raise ValueError(f"audio device {source.audio_device!r}: give an index or a name")
    if source.framerate <= 0:
        raise ValueError("framerate must be positive")
    argv = [
        "-f",
        "avfoundation",
        "-capture_cursor",
        "1" if source.capture_cursor else "0",
        "-capture_mouse_clicks",
        "1" if source.capture_mouse_clicks else "0",
        "-framerate",
        str(source.framerate),
        "-i",
        f"{video}:{audio if audio is not None else 'none'}",
    ]
    return InputArgs(
        argv=argv,
        video_map="0:v:0",
        audio_map="0:a:0" if audio is not None else None,
        fps=source.framerate,
    )


def synthetic_input(source: SyntheticSource) -> InputArgs:
    """Two lavfi inputs (:func:`synthetic.lavfi.recorder_inputs`), paced to the wall clock."""
    video, audio = recorder_inputs(source)
    argv = ["-f", "lavfi", "-i", video]
    if audio is not None:
        argv += ["-f", "lavfi", "-i", audio]
    return InputArgs(
        argv=argv,
        video_map="0:v:0",
        audio_map="1:a:0" if audio is not None else None,
        fps=source.fps,
    )


def input_args(source: Source) -> InputArgs:
    if isinstance(source, AVFoundationSource):
        return avfoundation_input(source)
    return synthetic_input(source)


def choose_video_encoder(platform: str, available_encoders: frozenset[str]) -> str:
    """Hardware H.264 on a Mac when this ffmpeg has it; libx264 everywhere else."""
    if platform == "darwin" and ENCODER_VIDEOTOOLBOX in available_encoders:
        return ENCODER_VIDEOTOOLBOX
    return ENCODER_X264


def parse_encoders(ffmpeg_encoders_output: str) -> frozenset[str]:
    """Encoder names from ``ffmpeg -hide_banner -encoders`` output."""
    names = set()
    for line in ffmpeg_encoders_output.splitlines():
        parts = line.split()
        if len(parts) >= 2 and len(parts[0]) == 6 and parts[0][0] in "VAS":
            names.add(parts[1])
    return frozenset(names)


def keyframe_expr(segment_seconds: float) -> str:
    """Force a keyframe at every segment boundary (the segment muxer cuts only there)."""
    return f"expr:gte(t,n_forced*{segment_seconds:g})"


def video_encoder_args(encoder: str, *, fps: int, segment_seconds: float) -> list[str]:
    gop = max(1, round(fps * segment_seconds))
    common = [
        # Even dimensions and 4:2:0: what every H.264 player and the merge stage accept
        # (screens deliver 0RGB/UYVY, and some windows have odd sizes).
        "-vf",
        "scale=trunc(iw/2)*2:trunc(ih/2)*2,format=yuv420p",
        "-force_key_frames",
        keyframe_expr(segment_seconds),
        "-g",
        str(gop),
    ]
    if encoder == ENCODER_VIDEOTOOLBOX:
        return [
            "-c:v",
            ENCODER_VIDEOTOOLBOX,
            "-realtime",
            "1",
            # Software fallback when the hardware encoder is busy or absent (VMs).
            "-allow_sw",
            "1",
            "-b:v",
            VIDEOTOOLBOX_BITRATE,
            *common,
        ]
    if encoder == ENCODER_X264:
        return [
            "-c:v",
            ENCODER_X264,
            "-preset",
            X264_PRESET,
            # No B-frames or look-ahead: frames leave the encoder at once, so a stop
            # finishes within a frame and fragments are written as they fill.
            "-tune",
            "zerolatency",
            "-crf",
            str(X264_CRF),
            "-sc_threshold",
            "0",
            *common,
        ]
    raise ValueError(f"unsupported video encoder {encoder!r}")


def audio_encoder_args() -> list[str]:
    return ["-c:a", "aac", "-b:a", AUDIO_BITRATE, "-ar", str(AUDIO_SAMPLE_RATE)]


def segment_muxer_args(
    kind: SegmentKind, *, segment_seconds: float, start_number: int, run: int
) -> list[str]:
    """``-f segment`` writing fragmented MP4 files and a CSV list of the finished ones."""
    if segment_seconds <= 0:
        raise ValueError("segment_seconds must be positive")
    if start_number < 0:
        raise ValueError("start_number must be >= 0")
    return [
        # Keep the run's clock (see the module's docstring), priming before 0 included.
        "-avoid_negative_ts",
        AVOID_NEGATIVE_TS,
        "-f",
        "segment",
        "-segment_time",
        f"{segment_seconds:g}",
        "-segment_start_number",
        str(start_number),
        "-reset_timestamps",
        "1",
        "-segment_format",
        "mp4",
        "-segment_format_options",
        # flush_packets: each fragment reaches the file when it is complete, not when
        # ffmpeg's 32 KiB write buffer happens to fill.
        f"movflags={MOVFLAGS}:frag_duration={FRAGMENT_US}:flush_packets=1",
        "-segment_list",
        segment_list_name(kind, run),
        "-segment_list_type",
        "csv",
        segment_pattern(kind),
    ]


def build_record_command(
    ffmpeg: str,
    source: Source,
    *,
    segment_seconds: float,
    video_start: int,
    audio_start: int,
    run: int,
    encoder: str,
    max_seconds: float | None = None,
) -> list[str]:
    """The argv of one recording run (run ffmpeg with the session folder as cwd).

    ``video_start``/``audio_start`` continue the numbering of earlier runs (after a pause);
    ``max_seconds`` ends the run by itself after that much media (synthetic ``--duration``).
    """
    if max_seconds is not None and max_seconds <= 0:
        raise ValueError("max_seconds must be positive")
    inputs = input_args(source)
    limit = ["-t", f"{max_seconds:.3f}"] if max_seconds is not None else []
    argv = [
        ffmpeg,
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-loglevel",
        "info",
        *inputs.argv,
        "-map",
        inputs.video_map,
        *video_encoder_args(encoder, fps=inputs.fps, segment_seconds=segment_seconds),
        *limit,
        *segment_muxer_args(
            SegmentKind.VIDEO, segment_seconds=segment_seconds, start_number=video_start, run=run
        ),
    ]
    if inputs.audio_map is not None:
        argv += [
            "-map",
            inputs.audio_map,
            *audio_encoder_args(),
            *limit,
            *segment_muxer_args(
                SegmentKind.AUDIO,
                segment_seconds=segment_seconds,
                start_number=audio_start,
                run=run,
            ),
        ]
    return argv


def list_devices_command(ffmpeg: str) -> list[str]:
    """``ffmpeg -f avfoundation -list_devices true -i ""`` (prints to stderr, exits 1)."""
    return [ffmpeg, "-hide_banner", "-f", "avfoundation", "-list_devices", "true", "-i", ""]


@dataclass(frozen=True)
class SegmentListEntry:
    """One line of a CSV segment list: a segment the muxer has finished writing."""

    file: str
    start: float  # seconds since the run's first sample
    end: float


def parse_segment_list(text: str) -> list[SegmentListEntry]:
    """Complete lines of a CSV segment list; a trailing partial line is ignored."""
    complete = text[: text.rfind("\n") + 1] if "\n" in text else ""
    entries = []
    for row in csv.reader(io.StringIO(complete)):
        if len(row) < 3:
            continue
        try:
            start, end = float(row[1]), float(row[2])
        except ValueError:
            continue
        entries.append(SegmentListEntry(file=row[0], start=start, end=end))
    return entries
