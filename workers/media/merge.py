"""Mux the timeline's video with the finished audio into one MP4 that plays at once.

Two ways to produce the video track:

* **copy** (the default, see :mod:`.videocopy`): recorded H.264/HEVC packets are remuxed with
  their timestamps moved to the output timeline. No decoding, so it runs at disk speed and
  keeps the recorder's quality; gaps hold the previous frame, cuts shift later packets.
* **re-encode** (fallback): output frame k shows the latest source frame placed at or before
  k/fps. That single rule yields frozen frames in video-only gaps, drops frames inside cuts and
  keeps the frame count equal to round(duration * fps), so audio and video end within one
  frame of each other. Used when segments differ in codec/size/parameter sets or a cut does
  not fall on a keyframe.

Audio is never re-encoded here: the AAC packets from :func:`concat_audio` are remuxed as they
are, interleaved with the video by time.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from contextlib import closing
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import av.container
import numpy as np
from av.video.frame import PictureType

from shared.segments import SegmentKind

from .errors import MediaError, decode_failure
from .output import ProgressCallback, Throttle, atomic_output, output_url
from .probe import demux_checked, local_path, open_input
from .timeline import PlacedSegment, Timeline
from .videocopy import CopyNotExact, VideoCopier

__all__ = ["MergeResult", "mux_playable"]

_DEFAULT_FPS = 30
_MAX_FPS = 60
# Source frames up to this much after an output tick still count as "at" the tick; absorbs
# float error in k/fps versus container timestamps.
_TICK_SLACK = 1e-4
# How far ahead of the video the audio packets are muxed, so the muxer interleaves nicely.
_AUDIO_LEAD = 0.5


@dataclass(frozen=True)
class MergeResult:
    """What ended up in the finished file."""

    path: Path
    duration: float  # seconds
    has_video: bool
    has_audio: bool
    frames: int  # video frames (packets when copied) written; 0 without video
    video_copied: bool = False  # packets remuxed as recorded, not re-encoded
    video_codec: str | None = None  # "h264" or "hevc"; None without video
    fallback_reason: str | None = None  # why video was re-encoded instead of copied


def _first_video_info(path: str) -> tuple[int, int, float | None]:
    """Width, height and average frame rate of a segment's first video stream."""
    try:
        with open_input(path) as container:
            if not container.streams.video:
                raise MediaError(f"no video stream in {path}", path=path)
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if not width or not height:
                frame = next(container.decode(stream), None)
                if frame is None:
                    raise MediaError(f"no video frame could be decoded from {path}", path=path)
                width, height = frame.width, frame.height
            rate = stream.average_rate or stream.guessed_rate
            return width, height, float(rate) if rate else None
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError, EOFError) as exc:
        raise decode_failure(path, exc) from exc


def _choose_fps(fps: float | None, source_rate: float | None) -> Fraction:
    if fps is not None:
        if not math.isfinite(fps) or fps <= 0:
            raise ValueError(f"fps must be a positive finite number, got {fps!r}")
        return Fraction(fps).limit_denominator(1001)
    if source_rate is None or not math.isfinite(source_rate) or source_rate <= 0:
        return Fraction(_DEFAULT_FPS)
    return Fraction(min(_MAX_FPS, max(1, round(source_rate))))


def _placed_frames(
    timeline: Timeline, segments: tuple[PlacedSegment, ...]
) -> Generator[tuple[float, av.VideoFrame], None, None]:
    """Decoded frames of all video segments with their output times, in output order.

    A frame's position is its timestamp relative to the segment's first frame; frames in the
    trimmed overlap or past the placed end are skipped, and decoding stops at the end.
    """
    for seg in segments:
        try:
            with open_input(seg.path) as container:
                if not container.streams.video:
                    raise MediaError(f"no video stream in {seg.path}", path=seg.path)
                stream = container.streams.video[0]
                rate = stream.average_rate or stream.guessed_rate
                step = 1.0 / float(rate) if rate else 1.0 / _DEFAULT_FPS
                first: float | None = None
                prev: float | None = None
                keep_until = seg.trim_start + seg.duration
                decoded = 0
                with closing(_frames(container, stream, seg.path)) as frames:
                    for frame in frames:
                        decoded += 1
                        t = frame.time
                        if t is None:
                            t = 0.0 if prev is None else prev + step
                        if prev is not None:
                            t = max(t, prev)
                        prev = t
                        if first is None:
                            first = t
                        rel = t - first
                        if rel < seg.trim_start - _TICK_SLACK:
                            continue
                        if rel >= keep_until - _TICK_SLACK:
                            break
                        recorded = seg.start + max(0.0, rel - seg.trim_start)
                        yield timeline.to_output(recorded), frame
                if decoded == 0:
                    raise MediaError(
                        f"no video frame could be decoded from {seg.path}", path=seg.path
                    )
        except MediaError:
            raise
        except (av.error.FFmpegError, OSError, EOFError) as exc:
            raise decode_failure(seg.path, exc) from exc


def _frames(
    container: av.container.InputContainer, stream: av.VideoStream, path: str
) -> Generator[av.VideoFrame, None, None]:
    for packet in demux_checked(container, stream, path):
        for frame in packet.decode():
            if isinstance(frame, av.VideoFrame):
                yield frame


def _black(width: int, height: int) -> av.VideoFrame:
    planes = np.full((height * 3 // 2, width), 128, dtype=np.uint8)
    planes[:height] = 16  # limited-range black luma, neutral chroma
    return av.VideoFrame.from_ndarray(planes, format="yuv420p")


class _AudioCopier:
    """Remuxes the AAC packets of the audio file, interleaved with the video by time."""

    def __init__(self, path: Path, container: av.container.OutputContainer) -> None:
        self.path = local_path(path)
        self._input = open_input(self.path)
        try:
            if not self._input.streams.audio:
                raise MediaError(f"no audio stream in {self.path}", path=self.path)
            source = self._input.streams.audio[0]
            self._stream = container.add_stream_from_template(source)
            self._packets = demux_checked(self._input, source, self.path)
        except BaseException:
            self._input.close()
            raise
        self._container = container
        # float seconds per tick: Fraction arithmetic per packet would dominate the copy path
        self._tick = float(source.time_base) if source.time_base is not None else 0.0
        self._pending: av.Packet | None = None
        self._done = False
        self.end = 0.0  # end time (s) of the last packet copied

    def _next(self) -> av.Packet | None:
        try:
            for packet in self._packets:
                if packet.dts is not None:
                    return packet
        except (av.error.FFmpegError, OSError, EOFError) as exc:
            raise decode_failure(self.path, exc) from exc
        return None

    def copy_until(self, seconds: float) -> None:
        """Mux every packet whose decode time is before ``seconds`` (math.inf = all)."""
        while not self._done:
            if self._pending is None:
                self._pending = self._next()
                if self._pending is None:
                    self._done = True
                    return
            packet = self._pending
            assert packet.dts is not None
            if packet.dts * self._tick >= seconds:
                return
            start = packet.pts if packet.pts is not None else packet.dts
            self.end = max(self.end, (start + (packet.duration or 0)) * self._tick)
            packet.stream = self._stream
            self._container.mux(packet)
            self._pending = None

    def close(self) -> None:
        self._input.close()


def mux_playable(
    timeline: Timeline,
    audio: Path | None,
    output: Path,
    *,
    fps: float | None = None,
    crf: int = 23,
    preset: str = "veryfast",
    copy_video: bool = True,
    progress: ProgressCallback | None = None,
) -> MergeResult:
    """Write the finished MP4: the timeline's video plus the AAC track in ``audio``.

    H.264/HEVC video is copied packet by packet when that reproduces the timeline exactly
    (``copy_video``, no forced ``fps``); otherwise it is re-encoded to H.264 at a constant
    rate, and ``MergeResult.fallback_reason`` says why. Either part may be missing (audio
    None, or a timeline without video), not both. The file appears atomically at ``output``
    or not at all; a broken input raises MediaError.
    """
    video_segments = timeline.of_kind(SegmentKind.VIDEO)
    if not video_segments and audio is None:
        raise ValueError("nothing to merge: the timeline has no video and no audio was given")
    for seg in video_segments:
        local_path(seg.path)
    if audio is not None:
        local_path(audio)
    output = Path(output)
    reason: str | None = None
    if video_segments:
        if not copy_video:
            reason = "copying disabled"
        elif fps is not None:
            reason = f"a constant {fps:g} fps was requested"
        else:
            try:
                return mux_copied(timeline, audio, output, progress)
            except CopyNotExact as exc:
                reason = str(exc)  # re-encode below; its progress restarts from 0
    result = _reencode_merge(
        timeline, audio, output, fps=fps, crf=crf, preset=preset, progress=progress
    )
    return replace(result, fallback_reason=reason)


def mux_copied(
    timeline: Timeline, audio: Path | None, output: Path, progress: ProgressCallback | None
) -> MergeResult:
    """Remux the timeline's video packets at their output times, with the AAC track of
    ``audio`` (see videocopy); CopyNotExact when copying cannot reproduce the timeline."""
    throttle = Throttle(progress)
    copier: _AudioCopier | None = None
    video: VideoCopier | None = None
    total = timeline.duration or 1.0
    try:
        with (
            atomic_output(output, throttle) as tmp,
            av.open(
                output_url(tmp), "w", format="mp4", container_options={"movflags": "+faststart"}
            ) as container,
        ):
            video = VideoCopier(timeline, container)
            if audio is not None:
                copier = _AudioCopier(audio, container)
            audio_copier = copier

            def on_packet(seconds: float) -> None:
                if audio_copier is not None:
                    audio_copier.copy_until(seconds + _AUDIO_LEAD)
                throttle(seconds / total)

            stats = video.run(on_packet)
            if copier is not None:
                copier.copy_until(math.inf)
    finally:
        if video is not None:
            video.close()
        if copier is not None:
            copier.close()
    return MergeResult(
        path=output,
        duration=stats.end,
        has_video=True,
        has_audio=audio is not None,
        frames=stats.packets,
        video_copied=True,
        video_codec=stats.codec,
    )


def _reencode_merge(
    timeline: Timeline,
    audio: Path | None,
    output: Path,
    *,
    fps: float | None,
    crf: int,
    preset: str,
    progress: ProgressCallback | None,
) -> MergeResult:
    """Decode every segment and encode H.264 at a constant frame rate (always exact)."""
    video_segments = timeline.of_kind(SegmentKind.VIDEO)
    throttle = Throttle(progress)
    copier: _AudioCopier | None = None
    frames_iter: Generator[tuple[float, av.VideoFrame], None, None] | None = None
    frame_count = 0
    rate = Fraction(_DEFAULT_FPS)
    try:
        with (
            atomic_output(output, throttle) as tmp,
            av.open(
                output_url(tmp), "w", format="mp4", container_options={"movflags": "+faststart"}
            ) as container,
        ):
            if video_segments:
                width, height, source_rate = _first_video_info(video_segments[0].path)
                rate = _choose_fps(fps, source_rate)
                width, height = max(2, width - width % 2), max(2, height - height % 2)
                vstream = container.add_stream("libx264", rate=rate)
                vstream.width, vstream.height = width, height
                vstream.pix_fmt = "yuv420p"
                vstream.options = {"crf": str(crf), "preset": preset}
                vstream.codec_context.time_base = 1 / rate
            if audio is not None:
                copier = _AudioCopier(audio, container)

            if video_segments:
                frame_count = max(1, round(timeline.duration * rate))
                frames_iter = _placed_frames(timeline, video_segments)
                pending = next(frames_iter, None)
                shown: av.VideoFrame | None = None
                encoded: av.VideoFrame | None = None
                time_base = 1 / rate
                for k in range(frame_count):
                    tick = float(k / rate)
                    while pending is not None and pending[0] <= tick + _TICK_SLACK:
                        shown, encoded = pending[1], None
                        pending = next(frames_iter, None)
                    if encoded is None:
                        encoded = (
                            _black(width, height)
                            if shown is None
                            else shown.reformat(width=width, height=height, format="yuv420p")
                        )
                        # a decoded frame keeps its I/P type, which libx264 would obey: a
                        # held keyframe would become an IDR frame at every tick
                        encoded.pict_type = PictureType.NONE
                    encoded.pts = k
                    encoded.time_base = time_base
                    encoded.duration = 1
                    container.mux(vstream.encode(encoded))
                    if copier is not None:
                        copier.copy_until(tick + _AUDIO_LEAD)
                    throttle(k / frame_count)
                container.mux(vstream.encode(None))
            if copier is not None:
                copier.copy_until(math.inf)
    finally:
        if frames_iter is not None:
            frames_iter.close()
        if copier is not None:
            copier.close()
    duration = float(frame_count / rate) if video_segments else (copier.end if copier else 0.0)
    return MergeResult(
        path=output,
        duration=duration,
        has_video=bool(video_segments),
        has_audio=audio is not None,
        frames=frame_count,
        video_codec="h264" if video_segments else None,
    )
