"""A screen recording at a low rate: small grayscale samples for chapters, and single frames.

Chapters need a picture every second or two, not thirty; decoding every frame of a 1080p30
session to look at one in thirty is most of the cost. H.264 keyframes decode on their own,
so where keyframes are dense enough the keyframes *are* the samples and nothing else is
decoded: on a 1080p30 screen recording with a keyframe every 2 s (our recorder's GOP) that is
about 15x faster than decoding everything (measured: 0.15 s against 2.3 s per 2 minutes, one
core; bench/bench_chapters.py). A stretch whose keyframes are further apart than
``MAX_KEYFRAME_GAP_S`` (a Mac recorder's GOP can be several seconds long, or the whole file)
is decoded in full and sampled at ``sample_fps`` instead, so sampling works whatever the GOP.
The two are chosen per GOP from a first demux-only pass, which also proves the file complete.

Samples are ``SAMPLE_WIDTH_PX`` wide (height by the aspect ratio), luma only, area-averaged:
a slide's text still shows as texture, while a ticking clock covers a block or two.
:meth:`Video.frames` decodes every frame of a short span (to place a change to the frame),
:meth:`Video.frame_at` one full-resolution RGB frame (for OCR).

Inputs are opened as :mod:`workers.media.probe` opens them (local files only, media demuxers
only); a file that cannot be read is an :class:`EnrichError` naming it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import av
import av.container
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from workers.enrich.documents import EnrichError
from workers.media.errors import MediaError, failure_reason
from workers.media.probe import demux_checked, is_flush, local_path, open_input

__all__ = [
    "MAX_KEYFRAME_GAP_S",
    "SAMPLE_FPS",
    "SAMPLE_WIDTH_PX",
    "Video",
    "VideoIndex",
    "open_video",
]

#: Samples per second where the whole GOP must be decoded anyway (keyframe stretches give
#: one sample per keyframe). 1 fps: a chapter change is placed to the frame afterwards
#: (:meth:`Video.frames`), so a higher rate would buy nothing but comparisons.
SAMPLE_FPS = 1.0
#: Width of a sample in pixels: 320 px keeps a slide's lines of text as distinct rows of
#: texture (1080p text of 20-30 px becomes 3-5 px) while a clock or a pointer stays under
#: 1 % of the picture.
SAMPLE_WIDTH_PX = 320
#: Keyframes at most this many seconds apart are the samples themselves (our recorder: 2 s).
MAX_KEYFRAME_GAP_S = 2.5

Sample = tuple[float, np.ndarray]
_T = TypeVar("_T")


@dataclass(frozen=True)
class VideoIndex:
    """What the demux-only pass found: duration, keyframe times, picture size."""

    duration: float  # seconds: end of the last frame, from the first frame's start
    keyframes: tuple[float, ...]  # seconds, increasing
    frames: int
    width: int
    height: int
    fps: float | None

    def gop_end(self, k: int) -> float:
        """Where the GOP starting at keyframe ``k`` ends (the next keyframe, or the end)."""
        return self.keyframes[k + 1] if k + 1 < len(self.keyframes) else self.duration

    @property
    def keyframe_only(self) -> bool:
        """Whether every GOP is short enough for keyframe-only sampling."""
        return all(self.gop_end(k) - t <= MAX_KEYFRAME_GAP_S for k, t in enumerate(self.keyframes))


def _sample_height(width: int, src_w: int, src_h: int) -> int:
    return max(1, round(src_h * width / max(src_w, 1)))


class Video:
    """One video file opened for sampling; use :func:`open_video` (a context manager)."""

    def __init__(self, path: str | os.PathLike[str], index: VideoIndex | None = None) -> None:
        try:
            self.path = local_path(path)
        except MediaError as exc:
            raise EnrichError(str(exc)) from exc
        self._seeker: av.container.InputContainer | None = None
        self.index = index if index is not None else self._guard(self._scan)

    # -- plumbing ----------------------------------------------------------------------------

    def _guard(self, fn: Callable[[], _T]) -> _T:
        try:
            return fn()
        except EnrichError:
            raise
        except MediaError as exc:
            raise EnrichError(str(exc)) from exc
        except (av.error.FFmpegError, OSError, EOFError, ValueError) as exc:
            raise EnrichError(f"cannot decode {self.path}: {failure_reason(exc)}") from exc

    def _open(self) -> av.container.InputContainer:
        container = open_input(self.path)
        if not container.streams.video:
            container.close()
            raise EnrichError(f"{self.path} has no video stream")
        return container

    def close(self) -> None:
        if self._seeker is not None:
            self._seeker.close()
            self._seeker = None

    def __enter__(self) -> Video:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _scan(self) -> VideoIndex:
        with self._open() as container:
            stream = container.streams.video[0]
            tb = stream.time_base
            if tb is None:
                raise EnrichError(f"{self.path}: video stream has no time base")
            start = stream.start_time
            keys: list[float] = []
            end = 0.0
            count = 0
            for packet in demux_checked(container, stream, self.path):
                if is_flush(packet) or packet.pts is None:
                    continue
                count += 1
                t = float((packet.pts - (start or 0)) * tb)
                end = max(end, t + float((packet.duration or 0) * tb))
                if packet.is_keyframe:
                    keys.append(t)
            if count == 0 or not keys:
                raise EnrichError(f"{self.path} has no decodable video frames")
            cc = stream.codec_context
            rate = stream.average_rate or stream.guessed_rate
            return VideoIndex(
                duration=end,
                keyframes=tuple(sorted(set(keys))),
                frames=count,
                width=int(cc.width),
                height=int(cc.height),
                fps=float(rate) if rate else None,
            )

    def _time(self, frame: av.VideoFrame, stream: av.video.stream.VideoStream) -> float | None:
        """Seconds from the stream's start; None for a frame without a timestamp (skipped)."""
        if frame.pts is None or stream.time_base is None:
            return None
        return float((frame.pts - (stream.start_time or 0)) * stream.time_base)

    # -- sampling ----------------------------------------------------------------------------

    def samples(
        self,
        sample_fps: float = SAMPLE_FPS,
        width: int = SAMPLE_WIDTH_PX,
        *,
        full_decode: bool = False,
        progress: Callable[[float], None] | None = None,
    ) -> Iterator[Sample]:
        """(seconds, HxW uint8 luma ``width`` px wide), in time order: the keyframe of each
        GOP up to ``MAX_KEYFRAME_GAP_S`` long, and frames every ``1/sample_fps`` s of longer
        ones (decoded in full); ``full_decode`` treats every GOP as a long one (what the
        benchmark compares with). ``progress`` gets the fraction of the duration covered."""
        if not sample_fps > 0:
            raise ValueError(f"sample_fps must be positive, got {sample_fps!r}")
        container = self._guard(self._open)
        try:
            yield from self._guard_iter(
                self._samples(container, sample_fps, width, full_decode, progress)
            )
        finally:
            container.close()

    def _guard_iter(self, it: Iterator[_T]) -> Iterator[_T]:
        while True:
            try:
                item = self._guard(lambda: next(it))
            except StopIteration:
                return
            yield item

    def _samples(
        self,
        container: av.container.InputContainer,
        sample_fps: float,
        width: int,
        full_decode: bool,
        progress: Callable[[float], None] | None,
    ) -> Iterator[Sample]:
        index = self.index
        stream = container.streams.video[0]
        cc = stream.codec_context
        cc.thread_type = "SLICE"  # frame threads buy nothing here and delay every frame
        height = _sample_height(width, index.width, index.height)
        shrink = VideoReformatter()
        step = 1.0 / sample_fps
        due = 0.0  # time of the next sample wanted
        sparse = False  # decoding the whole of the current GOP
        keys = index.keyframes
        duration = max(index.duration, 1e-9)
        tb = stream.time_base
        assert tb is not None
        tolerance = step / 4  # a keyframe this close to the due time is on time
        for packet in demux_checked(container, stream, self.path):
            if not is_flush(packet) and packet.pts is not None:
                t = float((packet.pts - (stream.start_time or 0)) * tb)
                if packet.is_keyframe:
                    gop = max(0, int(np.searchsorted(keys, t + 1e-9, side="right")) - 1)
                    sparse = full_decode or index.gop_end(gop) - keys[gop] > MAX_KEYFRAME_GAP_S
                    if not sparse and t + tolerance < due:
                        continue  # keyframes denser than the sample rate: skip this one
                elif not sparse:
                    continue  # keyframe-only stretch: the other frames are not decoded
            for frame in packet.decode():
                ft = self._time(frame, stream)
                if ft is None:
                    continue
                # a chosen keyframe is on time within the tolerance; other frames keep to
                # the grid of multiples of ``step``
                if ft + (tolerance if frame.key_frame else 1e-6) < due:
                    continue
                small = shrink.reformat(
                    frame, width=width, height=height, format="gray",
                    interpolation=Interpolation.AREA,
                )  # fmt: skip
                yield ft, small.to_ndarray()
                due = max((math.floor(ft / step + 1e-6) + 1) * step, ft + tolerance)
                if progress is not None:
                    progress(min(1.0, ft / duration))
        if progress is not None:
            progress(1.0)

    def _seek_container(self) -> av.container.InputContainer:
        if self._seeker is None:
            self._seeker = self._open()
            self._seeker.streams.video[0].codec_context.thread_type = "SLICE"
        return self._seeker

    def _decode_from(self, start: float) -> Iterator[tuple[float, av.VideoFrame]]:
        """Every frame from the keyframe at or before ``start`` on, with its time."""
        container = self._seek_container()
        stream = container.streams.video[0]
        tb = stream.time_base
        assert tb is not None
        target = int(math.floor(max(0.0, start) / tb)) + (stream.start_time or 0)
        container.seek(target, stream=stream, backward=True, any_frame=False)
        for packet in container.demux(stream):
            if packet.is_corrupt:
                raise EnrichError(f"{self.path} is truncated or corrupt (damaged packet)")
            for frame in packet.decode():
                t = self._time(frame, stream)
                if t is not None:
                    yield t, frame

    def frames(self, start: float, end: float, width: int = SAMPLE_WIDTH_PX) -> Iterator[Sample]:
        """Every frame shown in ``[start, end]`` seconds as a sample (like :meth:`samples`)."""
        height = _sample_height(width, self.index.width, self.index.height)
        shrink = VideoReformatter()

        def run() -> Iterator[Sample]:
            for t, frame in self._decode_from(start):
                if t > end + 1e-6:
                    return
                if t + 1e-6 >= start:
                    small = shrink.reformat(
                        frame, width=width, height=height, format="gray",
                        interpolation=Interpolation.AREA,
                    )  # fmt: skip
                    yield t, small.to_ndarray()

        return self._guard_iter(run())

    def frame_at(self, t: float) -> np.ndarray:
        """The full-resolution RGB frame (HxWx3 uint8) shown at ``t`` seconds (the last frame
        for a time past the end)."""

        def run() -> np.ndarray:
            shown: av.VideoFrame | None = None
            for ft, frame in self._decode_from(t):
                if ft > t + 1e-6:  # past t: the frame before it was showing
                    shown = shown or frame
                    break
                shown = frame
            if shown is None:
                raise EnrichError(f"{self.path}: no frame at {t:.3f} s")
            return shown.to_ndarray(format="rgb24")

        return self._guard(run)


def open_video(path: str | os.PathLike[str] | Path, index: VideoIndex | None = None) -> Video:
    """Open ``path`` for sampling (demuxes it once to index it); EnrichError naming the file
    if it is missing, not a video, truncated or undecodable. With ``index`` (known already:
    its samples were taken elsewhere) nothing is demuxed: only single frames and short
    spans are read then (:meth:`Video.frames`, :meth:`Video.frame_at`)."""
    return Video(path, index)
