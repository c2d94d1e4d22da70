"""ffmpeg lavfi sources of synthetic media: what ffmpeg is told to generate.

* :class:`SyntheticSource` and :func:`recorder_inputs` - the recorder's
  ``capture-agent record --synthetic`` input: ``testsrc2`` video and the speech-like
  ``aevalsrc`` microphone (onset marker at the start of every run), both paced to the wall
  clock by ``realtime``/``arealtime``. With ``sync_period_s`` the onset marker moves to the
  A/V sync markers instead (:class:`SyncGrid`): every period, a white frame in the video and
  the onset marker in the audio at the same media time, so the offset between a flash and
  its beep in any output is the audio-vs-video error of the whole chain;
* :func:`desktop_graph` - the benchmark's 1080p30 desktop: a still picture with a few small
  regions changing (caret, typed line, cursor, a thumbnail that plays now and then), which
  :mod:`synthetic.ffmpeg_session` encodes.

Pure functions returning strings; nothing here runs ffmpeg.
"""

from __future__ import annotations

from dataclasses import dataclass

from synthetic.markers import MARKER_AMPLITUDE, MARKER_HZ, marker_samples
from synthetic.voice import speech_aevalsrc_expr, voice_aevalsrc_expr

__all__ = [
    "DESKTOP_FPS",
    "DESKTOP_HEIGHT_PX",
    "DESKTOP_WIDTH_PX",
    "SyncGrid",
    "SyntheticSource",
    "desktop_graph",
    "recorder_inputs",
    "speech_source",
    "sync_audio_expr",
    "sync_video_filter",
]

#: The recorder's synthetic screen: small, so real-time encoding is cheap on any CI box.
RECORDER_WIDTH_PX = 640
RECORDER_HEIGHT_PX = 360
RECORDER_FPS = 15
#: Sample rate of generated audio, in Hz (the pipeline mixes at 48 kHz).
AUDIO_RATE_HZ = 48_000

#: The benchmark desktop: 1080p30.
DESKTOP_WIDTH_PX = 1920
DESKTOP_HEIGHT_PX = 1080
DESKTOP_FPS = 30
# Activity on the desktop: the cursor moves CURSOR_MOVE_S out of every CURSOR_PERIOD_S, the
# thumbnail plays THUMB_PLAY_S out of every THUMB_PERIOD_S, the typed line changes
# TYPING_UPDATES_PER_S times a second and the caret blinks every CARET_HALF_PERIOD_S.
CURSOR_MOVE_S, CURSOR_PERIOD_S = 1, 10
THUMB_PLAY_S, THUMB_PERIOD_S = 3, 60
TYPING_UPDATES_PER_S = 1
CARET_HALF_PERIOD_S = 0.5
#: Colour of the sync marker's video frame (its luma is far above any testsrc2 frame's mean).
FLASH_COLOR = "white"


@dataclass(frozen=True)
class SyntheticSource:
    """Generated screen and microphone (lavfi) for the recorder, paced to the wall clock."""

    width: int = RECORDER_WIDTH_PX
    height: int = RECORDER_HEIGHT_PX
    fps: int = RECORDER_FPS
    sample_rate: int = AUDIO_RATE_HZ
    audio: bool = True
    # Seconds between A/V sync markers (None: none); a whole number of frames (SyncGrid).
    sync_period_s: float | None = None


@dataclass(frozen=True)
class SyncGrid:
    """Where sync markers go, in frames and in samples (the same media times).

    The first marker is ``offset_frames`` (half a period, rounded down to a frame) after the
    run's start, then one every period: never at a run's edges, where one track may stop a
    few frames before the other, or run into the next run's first marker.
    """

    period_frames: int
    offset_frames: int
    samples_per_frame: int

    @classmethod
    def of(cls, period_s: float, fps: int, sample_rate: int) -> SyncGrid:
        frames = round(period_s * fps)
        if frames < 2 or abs(frames - period_s * fps) > 1e-6:
            raise ValueError(f"sync period {period_s!r} s is not a whole number (2+) of frames")
        if sample_rate % fps:
            raise ValueError(f"{sample_rate} Hz is not a whole number of samples per frame")
        grid = cls(frames, frames // 2, sample_rate // fps)
        if marker_samples(sample_rate) >= grid.period_samples:
            raise ValueError(f"sync period {period_s!r} s is not longer than the marker")
        return grid

    @property
    def period_samples(self) -> int:
        return self.period_frames * self.samples_per_frame

    @property
    def offset_samples(self) -> int:
        return self.offset_frames * self.samples_per_frame


def sync_audio_expr(grid: SyncGrid, sample_rate: int) -> str:
    """``aevalsrc`` expression: the onset marker at every sync time, the voice in between.

    Counted in samples (``n``), so each marker starts exactly on its sample.
    """
    since = f"mod(n+{grid.period_samples - grid.offset_samples},{grid.period_samples})"
    tone = f"{MARKER_AMPLITUDE}*sin(2*PI*{MARKER_HZ:g}*{since}/s)"
    return f"if(lt({since},{marker_samples(sample_rate)}),{tone},{voice_aevalsrc_expr()})"


def sync_video_filter(grid: SyncGrid) -> str:
    """``drawbox`` filling the frame at every sync time with white."""
    since = f"mod(n+{grid.period_frames - grid.offset_frames},{grid.period_frames})"
    return f"drawbox=x=0:y=0:w=iw:h=ih:c={FLASH_COLOR}:t=fill:enable='eq({since},0)'"


def speech_source(sample_rate: int, duration_s: float | None = None) -> str:
    """lavfi ``aevalsrc`` source of mono speech-like audio starting with the onset marker."""
    length = f":d={duration_s:.6f}" if duration_s is not None else ""
    return f"aevalsrc=exprs='{speech_aevalsrc_expr()}':s={sample_rate}:c=mono{length}"


def recorder_inputs(source: SyntheticSource) -> tuple[str, str | None]:
    """The lavfi graphs of the recorder's video input and audio input (``None``: no audio).

    ``realtime``/``arealtime`` hold every frame until its wall-clock time, like ``-re`` but
    without ``-re``'s initial burst, so media time matches the clock a pause or stop request
    is made on.
    """
    if source.width <= 0 or source.height <= 0 or source.fps <= 0 or source.sample_rate <= 0:
        raise ValueError("synthetic source dimensions, fps and sample rate must be positive")
    video = f"testsrc2=size={source.width}x{source.height}:rate={source.fps}"
    speech = speech_source(source.sample_rate)
    if source.sync_period_s is not None:
        grid = SyncGrid.of(source.sync_period_s, source.fps, source.sample_rate)
        video += "," + sync_video_filter(grid)
        expr = sync_audio_expr(grid, source.sample_rate)
        speech = f"aevalsrc=exprs='{expr}':s={source.sample_rate}:c=mono"
    audio = f"{speech},arealtime" if source.audio else None
    return f"{video},realtime", audio


def desktop_graph() -> str:
    """Filter graph (output ``[v]``) of the benchmark desktop at 1080p30.

    The text is part of the benchmark's cache key: changing it regenerates benchmark media.
    """
    w, h, fps = DESKTOP_WIDTH_PX, DESKTOP_HEIGHT_PX, DESKTOP_FPS
    # seconds of cursor movement so far: grows during the first CURSOR_MOVE_S of each period
    period, move = CURSOR_PERIOD_S, CURSOR_MOVE_S
    moved = f"({move}*floor(t/{period})+min(mod(t,{period}),{move}))"
    return ";".join(
        [
            f"mandelbrot=s={w}x{h}:rate={fps},trim=end_frame=1[wall]",
            # text-like lines: cellular-automaton "glyphs" with white line spacing
            f"cellauto=s=900x600:rule=30:rate={fps}:seed=7,trim=end_frame=1,format=yuv420p,"
            "drawgrid=w=iw:h=22:t=9:c=white[text]",
            f"testsrc2=s=640x360:rate={fps},trim=end_frame=1[pic]",
            "[wall]drawbox=x=0:y=0:w=iw:h=28:c=0xe8e8e8:t=fill,"
            "drawbox=x=120:y=100:w=940:h=680:c=0xf4f4f4:t=fill,"
            "drawbox=x=1120:y=160:w=700:h=460:c=0xfafafa:t=fill[d0]",
            "[d0][text]overlay=x=140:y=150[d1]",
            f"[d1][pic]overlay=x=1150:y=200,format=yuv420p,loop=loop=-1:size=1,"
            f"setpts=N/{fps}/TB[desk]",
            # changing regions: a typed line, a thumbnail playing now and then, a caret, the
            # cursor (its path advances only while it moves, so it rests in between)
            f"cellauto=s=600x14:rule=110:rate={TYPING_UPDATES_PER_S}:seed=3,format=yuv420p[typing]",
            f"testsrc2=s=240x136:rate={fps}[anim]",
            f"color=c=white:s=12x18:rate={fps}[cursor]",
            "[desk][typing]overlay=x=140:y=764:eof_action=repeat[e1]",
            f"[e1][anim]overlay=x=1560:y=640:enable='lt(mod(t,{THUMB_PERIOD_S}),{THUMB_PLAY_S})'[e2]",
            "[e2]drawbox=x=742:y=762:w=2:h=18:c=black:t=fill:"
            f"enable='lt(mod(t,{2 * CARET_HALF_PERIOD_S:g}),{CARET_HALF_PERIOD_S:g})'[e3]",
            f"[e3][cursor]overlay=x='960+700*sin({moved}/2)':y='540+400*sin({moved}/3)'[v]",
        ]
    )
