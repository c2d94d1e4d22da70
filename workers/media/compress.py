"""A compressed copy of a finished session MP4, tuned for screen recordings.

Screen recordings are mostly still pictures of text: long stretches where nothing changes,
then a few glyphs. Two things make them small without making text blurry:

* **duplicate frames are dropped** (mpdecimate semantics: a frame is a duplicate of the last
  kept one unless some 8x8 block changed clearly, or many blocks changed a little). The kept
  frame simply lasts longer (variable frame rate), so a still minute costs one frame;
* **x264 is tuned for text**: psycho-visual optimisations off (they add grain that looks like
  noise around glyphs), light deblocking, adaptive quantisation that protects flat areas, a
  long keyframe interval with scene-cut detection for window switches.

Audio is copied as it is. The work runs on two threads side by side: decoding plus the
duplicate test on one, x264 plus muxing on the other, with a queue between them deep enough
to ride out a burst of changing frames. On 2 cores that keeps both busy, and the whole copy
takes well under twice the time of decoding alone (see bench/RESULTS.md).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Final, Literal

import av
import av.container
import numpy as np
from av.video.frame import PictureType
from av.video.reformatter import VideoReformatter

from .errors import MediaError, decode_failure
from .framediff import FrameDiff
from .output import ProgressCallback, Throttle, atomic_output, output_url
from .probe import demux_checked, is_flush, local_path, open_input

__all__ = [
    "PART_TIMING",
    "PRESETS",
    "CompressPreset",
    "CompressResult",
    "Encoding",
    "PartTiming",
    "compress_part",
    "compress_video",
]

CompressPreset = Literal["low", "medium", "high"]


@dataclass(frozen=True)
class Encoding:
    """libx264 settings of one quality level."""

    crf: int  # constant rate factor: lower = better and bigger
    x264_preset: str  # speed/efficiency trade-off; fast enough to keep up with decoding


#: Quality levels, smallest file first. "veryfast" keeps macroblock-tree rate control (what
#: makes still content cheap: a static frame's quality is inherited by the frames that repeat
#: it); slower presets saved nothing on screens, and X264_PARAMS trims it further for speed.
PRESETS: dict[CompressPreset, Encoding] = {
    "low": Encoding(crf=30, x264_preset="veryfast"),
    "medium": Encoding(crf=25, x264_preset="veryfast"),
    "high": Encoding(crf=20, x264_preset="veryfast"),
}

#: x264 options shared by every level (see the module docstring for why).
X264_PARAMS = ":".join(
    [
        "psy=0",  # no psy-rd / psy-trellis: they add ringing and grain around text
        "aq-mode=2",  # auto-variance AQ: keeps flat backgrounds clean
        "deblock=-1,-1",  # keep glyph edges sharp
        "scenecut=40",
        # Speed: x264 on one core is the slower half of the pipeline (see _EncodeThread), and
        # these three took about 30 % off its time per kept 1080p frame at the same PSNR.
        # The price is bytes: the benchmark's video came out about 40 % bigger, so the whole
        # copy is 3.2 % of the original instead of 2.7 % (the target is at most 40 %).
        "bframes=0",
        "me=dia",
        "subme=1",
    ]
)
#: Longest stretch between keyframes, in *kept* frames (duplicates do not count).
KEYINT_FRAMES = 600
#: Decoded pictures that may wait for the encoder, in bytes. Kept frames come in bursts (a
#: window being dragged keeps every frame for seconds, then nothing changes for a minute);
#: the queue lets decoding run on through a burst while x264 catches up in the still part
#: after it, so neither core idles. 256 MiB holds 86 frames of 1080p (2.9 s at 30 fps).
ENCODE_QUEUE_BYTES = 256 * 1024 * 1024
ENCODE_QUEUE_MIN_FRAMES = 4
#: Decoded frames waiting for the duplicate test (which keeps up on average; this smooths).
DECODED_QUEUE_FRAMES = 8
_QUEUE_POLL_S = 0.1  # how often a blocked hand-over looks whether the other side failed
_OUTPUT_PIX_FMT = "yuv420p"
_FALLBACK_FRAME_SECONDS = 1 / 30  # last frame's duration when the source does not say


@dataclass(frozen=True)
class PartTiming:
    """What every compressed part of a session shares, so their packets join in one MP4
    track by stream copy: x264 writes the time base into the SPS (VUI timing) and picks the
    H.264 level from the frame rate, and two parts whose parameter sets differ cannot be
    joined (``videocopy`` refuses them). So parts get one fixed time base, and a nominal
    rate from a short list instead of each segment's measured average (a variable-rate
    recorder's 30.2 fps would lift 1080p from level 4.0 to 4.2 in one part only). The
    timestamps, not the rate, say when each frame shows."""

    time_base: Fraction = Fraction(1, 90000)
    nominal_rates: tuple[int, ...] = (10, 12, 15, 20, 24, 25, 30, 50, 60, 120)

    def rate_for(self, measured: Fraction) -> Fraction:
        """The nominal rate nearest the measured one."""
        return Fraction(min(self.nominal_rates, key=lambda rate: abs(rate - measured)))


#: The timing of every compressed part.
PART_TIMING: Final = PartTiming()


@dataclass(frozen=True)
class CompressResult:
    """What the compressed copy holds and how much it saved."""

    path: Path
    preset: CompressPreset
    duration: float  # seconds (longest track)
    size: int  # bytes
    source_size: int  # bytes
    frames_in: int  # decoded source frames
    frames_out: int  # frames encoded (duplicates dropped)
    has_video: bool
    has_audio: bool

    @property
    def ratio(self) -> float:
        """Output size as a fraction of the source size."""
        return self.size / self.source_size if self.source_size else 0.0


def thread_split(cpus: int | None = None) -> tuple[int, int]:
    """(decoder, x264) threads: half the cores each, at least one.

    Decoding and encoding run side by side (see :class:`_EncodeThread`), so each gets its
    own share instead of both spreading threads over every core. On 2 cores that is one
    thread each, which is also simply cheaper: libavcodec's frame threading on a screen
    recording took 1.7x the CPU time of one thread for the same wall time, and x264's frame
    threads about 15 % more CPU per frame than one thread.
    """
    cores = max(1, cpus if cpus is not None else os.cpu_count() or 1)
    encoder = max(1, cores // 2)
    return max(1, cores - encoder), encoder


def queue_frames(width: int, height: int) -> int:
    """How many decoded 4:2:0 pictures of this size fit in ENCODE_QUEUE_BYTES."""
    picture = max(1, width * height * 3 // 2)
    return max(ENCODE_QUEUE_MIN_FRAMES, ENCODE_QUEUE_BYTES // picture)


#: A kept frame and how long it lasts, in its stream's time base.
_Kept = tuple[av.VideoFrame, int]


def _luma(frame: av.VideoFrame) -> np.ndarray:
    """The frame's 8-bit luma plane as a view (no copy; valid while ``frame`` lives)."""
    plane = frame.planes[0]
    rows = np.frombuffer(memoryview(plane), np.uint8).reshape(frame.height, plane.line_size)
    return rows[:, : frame.width]


class _Decimator:
    """Drops duplicates and gives each kept frame the duration until the next kept one.

    Holding one kept frame back is what lets its duration be known before it is encoded:
    :meth:`add` returns the previous kept frame with its duration once the next one shows.
    """

    def __init__(self, source: av.VideoStream) -> None:
        cc = source.codec_context
        self.width = max(2, cc.width - cc.width % 2)  # 4:2:0 needs even sizes
        self.height = max(2, cc.height - cc.height % 2)
        self.rate: Fraction = source.average_rate or source.guessed_rate or Fraction(30)
        self.time_base: Fraction = source.time_base or Fraction(1, 90000)
        self._reformatter = VideoReformatter()
        self._diff = FrameDiff(self.height, self.width)
        self._pending: av.VideoFrame | None = None  # last kept frame, not yet handed on
        self._end = 0  # end of the latest source frame, in ticks
        self.frames_in = 0
        self.frames_out = 0

    def add(self, frame: av.VideoFrame) -> _Kept | None:
        """Take the next decoded source frame (presentation order)."""
        self.frames_in += 1
        pts = frame.pts
        if pts is None:
            return None  # cannot be placed; the previous frame stays on screen
        step = frame.duration or round(_FALLBACK_FRAME_SECONDS / self.time_base)
        self._end = max(self._end, pts + step)
        if (
            frame.format.name != _OUTPUT_PIX_FMT
            or frame.width != self.width
            or frame.height != self.height
        ):
            frame = self._reformatter.reformat(
                frame, width=self.width, height=self.height, format=_OUTPUT_PIX_FMT
            )
            frame.pts = pts
        pending, self._pending = self._pending, frame
        if pending is None:
            return None
        if self._diff.is_duplicate(_luma(pending), _luma(frame)) or pts <= (pending.pts or 0):
            # nothing new, or an out-of-order/repeated timestamp: the earlier frame stays
            self._pending = pending
            return None
        return self._hand_on(pending, pts - (pending.pts or 0))

    @property
    def end(self) -> float:
        """Seconds where the source video ends (last frame's time plus its duration)."""
        return float(self._end * self.time_base)

    def finish(self) -> _Kept | None:
        """The held frame, lasting to the end of the source video."""
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        return self._hand_on(pending, max(1, self._end - (pending.pts or 0)))

    def _hand_on(self, frame: av.VideoFrame, duration: int) -> _Kept:
        self.frames_out += 1
        return frame, duration


#: What goes from thread to thread: a decoded frame, a kept frame and its duration, a packet
#: to mux as it is, or None for "that was all".
_Item = av.VideoFrame | _Kept | av.Packet | None


class _Pipeline:
    """What the compress threads share: the first failure, after which every thread stops."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.failure: BaseException | None = None

    def fail(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
        self.stopping.set()

    def check(self) -> None:
        """Raise the failure of another thread, if there was one."""
        if self.failure is not None:
            raise self.failure


class _Handover:
    """A queue from one thread to the next that holds at most ``frames`` video frames.

    Packets ride along uncounted (they are small and come interleaved with frames). A side
    that waits keeps looking whether the pipeline is stopping, so a failure anywhere ends
    every thread instead of leaving one blocked.
    """

    def __init__(self, pipeline: _Pipeline, frames: int) -> None:
        self._pipeline = pipeline
        self._items: queue.Queue[tuple[_Item, bool]] = queue.Queue()
        self._slots = threading.Semaphore(frames)

    def send(self, item: _Item, *, frame: bool = False) -> None:
        while frame and not self._slots.acquire(timeout=_QUEUE_POLL_S):
            self._stop_if_failed()
        self._stop_if_failed()
        self._items.put((item, frame))

    def receive(self) -> _Item:
        while True:
            try:
                item, frame = self._items.get(timeout=_QUEUE_POLL_S)
            except queue.Empty:
                self._stop_if_failed()
                continue
            if frame:
                self._slots.release()
            return item

    def _stop_if_failed(self) -> None:
        if self._pipeline.stopping.is_set():
            raise _Stopped


class _Stopped(Exception):
    """Another thread of the pipeline failed or the copy was abandoned."""


class _StageThread(threading.Thread):
    """One step of the pipeline; its exception is recorded for the decoding thread to raise."""

    def __init__(self, name: str, pipeline: _Pipeline) -> None:
        super().__init__(name=name, daemon=True)
        self._pipeline = pipeline

    def run(self) -> None:
        try:
            self.work()
        except _Stopped:
            pass
        except BaseException as exc:
            self._pipeline.fail(exc)

    def work(self) -> None:
        raise NotImplementedError


class _DecimateThread(_StageThread):
    """Runs the duplicate test on every decoded frame and hands the kept ones on."""

    def __init__(
        self, pipeline: _Pipeline, decimator: _Decimator, inbox: _Handover, outbox: _Handover
    ) -> None:
        super().__init__("compress-decimate", pipeline)
        self.decimator = decimator
        self._inbox, self._outbox = inbox, outbox

    def work(self) -> None:
        while (item := self._inbox.receive()) is not None:
            if isinstance(item, av.VideoFrame):
                kept = self.decimator.add(item)
                if kept is not None:
                    self._outbox.send(kept, frame=True)
            else:
                self._outbox.send(item)
        kept = self.decimator.finish()
        if kept is not None:
            self._outbox.send(kept, frame=True)
        self._outbox.send(None)


class _EncodeThread(_StageThread):
    """Encodes kept frames with x264 and muxes every packet, audio included.

    The only thread that touches the output container, so packets keep their order.
    """

    def __init__(
        self,
        pipeline: _Pipeline,
        container: av.container.OutputContainer,
        decimator: _Decimator | None,
        encoding: Encoding,
        inbox: _Handover,
        *,
        threads: int = 1,
        timing: PartTiming | None = None,
    ) -> None:
        super().__init__("compress-encode", pipeline)
        self._container = container
        self._inbox = inbox
        self._durations: dict[int, int] = {}
        self._stream: av.VideoStream | None = None
        self._time_base = Fraction(1, 90000)
        self._source_time_base: Fraction | None = None  # set when timestamps are rescaled
        if decimator is not None:
            rate = decimator.rate if timing is None else timing.rate_for(decimator.rate)
            out_time_base = decimator.time_base if timing is None else timing.time_base
            if out_time_base != decimator.time_base:
                self._source_time_base = decimator.time_base
            stream = container.add_stream(
                "libx264",
                rate=rate,
                options={
                    "crf": str(encoding.crf),
                    "preset": encoding.x264_preset,
                    "x264-params": f"{X264_PARAMS}:keyint={KEYINT_FRAMES}",
                },
            )
            stream.width, stream.height = decimator.width, decimator.height
            stream.pix_fmt = _OUTPUT_PIX_FMT
            stream.time_base = out_time_base
            stream.codec_context.time_base = out_time_base
            stream.codec_context.thread_count = threads
            self._stream = stream
            self._time_base = out_time_base

    def work(self) -> None:
        while (item := self._inbox.receive()) is not None:
            if isinstance(item, tuple):
                self._encode(*item)
            else:
                assert isinstance(item, av.Packet)
                self._container.mux(item)
        if self._stream is not None:
            self._write(self._stream.encode(None))

    def _encode(self, frame: av.VideoFrame, duration: int) -> None:
        assert self._stream is not None and frame.pts is not None
        if self._source_time_base is not None:  # onto the fixed time base of a part
            scale = self._source_time_base / self._time_base
            start = round(frame.pts * scale)
            duration = max(1, round((frame.pts + duration) * scale) - start)
            frame.pts = start
        frame.time_base = self._time_base
        frame.duration = duration
        # a decoded frame keeps its I/P type, which libx264 would obey
        frame.pict_type = PictureType.NONE
        self._durations[frame.pts] = duration
        self._write(self._stream.encode(frame))

    def _write(self, packets: list[av.Packet]) -> None:
        # the durations also go on the packets, so the MP4's last sample ends where the
        # source did
        for packet in packets:
            if packet.pts is not None:
                packet.duration = self._durations.pop(packet.pts, packet.duration)
            self._container.mux(packet)


def _decoded(
    inp: av.container.InputContainer,
    vin: av.VideoStream | None,
    ain: av.AudioStream | None,
    path: str,
) -> Iterator[av.VideoFrame | av.Packet]:
    """Decoded video frames and audio packets in file order; MediaError names a bad input."""
    streams = [s for s in (vin, ain) if s is not None]
    try:
        for packet in demux_checked(inp, streams, path):
            if packet.stream is vin:
                yield from packet.decode()  # the flush packet drains the decoder
            elif not is_flush(packet):
                yield packet
    except (av.error.FFmpegError, OSError, EOFError) as exc:
        raise decode_failure(path, exc) from exc


def _run_threads(
    inp: av.container.InputContainer,
    out: av.container.OutputContainer,
    vin: av.VideoStream | None,
    ain: av.AudioStream | None,
    path: str,
    *,
    encoding: Encoding,
    throttle: Throttle,
    timing: PartTiming | None = None,
) -> tuple[_Decimator | None, float]:
    """Decode here, test duplicates and encode on their own threads; (decimator, audio end s)."""
    decode_threads, encode_threads = thread_split()
    pipeline = _Pipeline()
    decimator = _Decimator(vin) if vin is not None else None
    frames = queue_frames(decimator.width, decimator.height) if decimator is not None else 1
    to_encode = first = _Handover(pipeline, frames)
    stages: list[_StageThread] = [
        _EncodeThread(
            pipeline, out, decimator, encoding, to_encode, threads=encode_threads, timing=timing
        )
    ]
    if vin is not None and decimator is not None:
        vin.codec_context.thread_type = "AUTO"
        vin.codec_context.thread_count = decode_threads
        first = _Handover(pipeline, DECODED_QUEUE_FRAMES)
        stages.append(_DecimateThread(pipeline, decimator, first, to_encode))
    aout = out.add_stream_from_template(ain) if ain is not None else None
    duration = (inp.duration or 0) / av.time_base
    audio_end = 0.0
    for stage in stages:
        stage.start()
    try:
        for item in _decoded(inp, vin, ain, path):
            if isinstance(item, av.Packet):
                assert aout is not None and item.time_base is not None
                end = (item.pts or 0) + (item.duration or 0)
                audio_end = max(audio_end, float(end * item.time_base))
                item.stream = aout
                first.send(item)
            else:
                first.send(item, frame=True)
                if item.time is not None and duration:
                    throttle(item.time / duration)
        first.send(None)
    except BaseException as exc:
        if not isinstance(exc, _Stopped):
            pipeline.fail(exc)  # stops the other threads
        raise
    finally:
        for stage in stages:
            stage.join()
        pipeline.check()  # a failure of another thread (or what stopped this one)
    return decimator, audio_end


def compress_video(
    source: Path,
    output: Path,
    *,
    preset: CompressPreset = "medium",
    progress: ProgressCallback | None = None,
) -> CompressResult:
    """Write a smaller copy of ``source`` (an MP4 from :func:`merge`) to ``output``.

    Video is re-encoded to H.264 for screen content with duplicate frames dropped; audio is
    copied. The file appears atomically at ``output`` or not at all; a corrupt source raises
    MediaError naming it; ``progress`` (at most about once a second) may raise Cancelled.
    """
    return _compress(source, output, preset=preset, progress=progress, part=False)


def compress_part(
    segment: Path,
    output: Path,
    *,
    preset: CompressPreset = "medium",
    progress: ProgressCallback | None = None,
) -> CompressResult:
    """One recorded video segment, compressed as :func:`compress_video` does, into a part
    that joins with its session's other parts by stream copy (``videocopy``).

    The part is video only (the compressed copy takes the session's finished audio), starts
    with a keyframe (each part is its own x264 run), keeps the segment's timestamps on
    :data:`PART_TIMING`'s time base, and its first frame is always kept (the duplicate test
    starts afresh in each part: one extra frame per segment).
    """
    return _compress(segment, output, preset=preset, progress=progress, part=True)


def _compress(
    source: Path,
    output: Path,
    *,
    preset: CompressPreset,
    progress: ProgressCallback | None,
    part: bool,
) -> CompressResult:
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    encoding = PRESETS[preset]
    path = local_path(source)
    output = Path(output)
    throttle = Throttle(progress)
    # A part needs no +faststart: it is read whole by the join, never played.
    options = {} if part else {"movflags": "+faststart"}
    with atomic_output(output, throttle) as tmp, open_input(path) as inp:
        vin = inp.streams.video[0] if inp.streams.video else None
        ain = inp.streams.audio[0] if inp.streams.audio and not part else None
        if vin is None and (ain is None or part):
            what = "video" if part else "audio or video"
            raise MediaError(f"no {what} stream in {path}", path=path)
        with av.open(output_url(tmp), "w", format="mp4", container_options=options) as out:
            decimator, audio_end = _run_threads(
                inp, out, vin, ain, path, encoding=encoding, throttle=throttle,
                timing=PART_TIMING if part else None,
            )  # fmt: skip
        if decimator is not None and decimator.frames_in == 0:
            raise MediaError(f"no video frame could be decoded from {path}", path=path)
    return CompressResult(
        path=output,
        preset=preset,
        duration=max(decimator.end if decimator is not None else 0.0, audio_end),
        size=output.stat().st_size,
        source_size=os.path.getsize(path),
        frames_in=decimator.frames_in if decimator is not None else 0,
        frames_out=decimator.frames_out if decimator is not None else 0,
        has_video=decimator is not None,
        has_audio=ain is not None,
    )
