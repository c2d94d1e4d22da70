"""A compressed copy of a finished session MP4, tuned for screen recordings.

Screen recordings are mostly still pictures of text: long stretches where nothing changes,
then a few glyphs. Two things make them small without making text blurry:

* **duplicate frames are dropped** (mpdecimate semantics: a frame is a duplicate of the last
  kept one unless some 8x8 block changed clearly, or many blocks changed a little). The kept
  frame simply lasts longer (variable frame rate), so a still minute costs one frame;
* **x264 is tuned for text**: psycho-visual optimisations off (they add grain that looks like
  noise around glyphs), light deblocking, adaptive quantisation that protects flat areas, a
  long keyframe interval with scene-cut detection for window switches.

Audio is copied as it is. Decoding and encoding are both threaded; the x264 preset per quality
level is chosen so the encoder keeps up with the decoder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import av.container
import numpy as np
from av.video.frame import PictureType
from av.video.reformatter import Interpolation, VideoReformatter

from .audio import ProgressCallback, Throttle, output_url, temp_path
from .errors import MediaError
from .probe import local_path, open_input

__all__ = ["PRESETS", "CompressPreset", "CompressResult", "Encoding", "compress", "is_duplicate"]

CompressPreset = Literal["low", "medium", "high"]


@dataclass(frozen=True)
class Encoding:
    """libx264 settings of one quality level."""

    crf: int  # constant rate factor: lower = better and bigger
    x264_preset: str  # speed/efficiency trade-off; fast enough to keep up with decoding


#: Quality levels, smallest file first. "veryfast" keeps macroblock-tree rate control (what
#: makes still content cheap: a static frame's quality is inherited by the frames that repeat
#: it) while costing a few ms per kept 720p frame; slower presets saved nothing on screens.
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
        "bframes=3",
    ]
)
#: Longest stretch between keyframes, in *kept* frames (duplicates do not count).
KEYINT_FRAMES = 600
#: Duplicates are judged on luma downscaled by this factor (area average, done by swscale in
#: C): 4x fewer pixels to compare, and zero-mean coding noise of re-quantised still frames
#: averages out while a change (glyph, caret) keeps its summed difference.
DUP_SCALE = 2
#: mpdecimate's rule and default thresholds, per 8x8 block of full-resolution 8-bit luma:
#: the frame is new if one block's sum of absolute differences exceeds DUP_HI, or more than
#: DUP_FRAC of all blocks exceed DUP_LO. Scaled by DUP_SCALE**2 for the downscaled plane.
DUP_BLOCK = 8  # pixels at full resolution
DUP_HI = 64 * 12
DUP_LO = 64 * 5
DUP_FRAC = 0.33
_OUTPUT_PIX_FMT = "yuv420p"
_FALLBACK_FRAME_SECONDS = 1 / 30  # last frame's duration when the source does not say


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


def _block_sads(ref: np.ndarray, cur: np.ndarray, block: int) -> np.ndarray:
    """Sum of absolute differences per ``block`` x ``block`` tile (partial edge tiles dropped).

    Strided adds of whole rows and columns: far cheaper in numpy than a reshape-and-sum over
    a middle axis.
    """
    height, width = cur.shape
    h, w = height - height % block, width - width % block
    diff = np.maximum(ref[:h, :w], cur[:h, :w]) - np.minimum(ref[:h, :w], cur[:h, :w])
    rows = diff[0::block].astype(np.uint16)
    for k in range(1, block):
        rows += diff[k::block]
    sads = rows[:, 0::block].astype(np.uint32)
    for k in range(1, block):
        sads += rows[:, k::block]
    return sads


def is_duplicate(ref: np.ndarray, cur: np.ndarray, scale: int = DUP_SCALE) -> bool:
    """Whether ``cur`` shows nothing new next to ``ref`` (luma planes downscaled by ``scale``).

    FFmpeg's mpdecimate rule with its default thresholds, rescaled from full-resolution 8x8
    blocks to the downscaled plane (a same-sign change keeps its sum under area averaging).
    """
    if np.array_equal(ref, cur):
        return True
    block = max(1, DUP_BLOCK // scale)
    sads = _block_sads(ref, cur, block)
    if sads.size == 0:
        return True
    area = scale * scale
    if int(sads.max()) * area > DUP_HI:
        return False
    return int(np.count_nonzero(sads * area > DUP_LO)) <= DUP_FRAC * sads.size


def _input_error(path: str, exc: BaseException) -> MediaError:
    reason = exc.strerror if isinstance(exc, av.error.FFmpegError) and exc.strerror else exc
    return MediaError(f"cannot decode {path}: {reason}", path=path)


class _VideoEncoder:
    """Drops duplicates, gives each kept frame the duration until the next kept one, encodes.

    Holding one kept frame back is what lets its duration be known before it is encoded;
    the durations also go on the packets, so the MP4's last sample ends where the source did.
    """

    def __init__(
        self,
        container: av.container.OutputContainer,
        source: av.VideoStream,
        encoding: Encoding,
    ) -> None:
        cc = source.codec_context
        self.width = max(2, cc.width - cc.width % 2)  # 4:2:0 needs even sizes
        self.height = max(2, cc.height - cc.height % 2)
        rate = source.average_rate or source.guessed_rate or Fraction(30)
        self.time_base: Fraction = source.time_base or Fraction(1, 90000)
        self._stream = container.add_stream(
            "libx264",
            rate=rate,
            options={
                "crf": str(encoding.crf),
                "preset": encoding.x264_preset,
                "x264-params": f"{X264_PARAMS}:keyint={KEYINT_FRAMES}",
            },
        )
        self._stream.width, self._stream.height = self.width, self.height
        self._stream.pix_fmt = _OUTPUT_PIX_FMT
        self._stream.time_base = self.time_base
        self._stream.codec_context.time_base = self.time_base
        self._stream.codec_context.thread_type = "AUTO"
        self._container = container
        self._reformatter = VideoReformatter()
        self._small = VideoReformatter()
        self._small_size = (
            max(1, self.width // DUP_SCALE),
            max(1, self.height // DUP_SCALE),
        )
        self._pending: av.VideoFrame | None = None
        self._reference: np.ndarray | None = None
        self._durations: dict[int, int] = {}
        self._end = 0  # end of the latest source frame, in ticks
        self.frames_in = 0
        self.frames_out = 0

    def add(self, frame: av.VideoFrame) -> None:
        """Take the next decoded source frame (presentation order)."""
        self.frames_in += 1
        pts = frame.pts
        if pts is None:
            return  # cannot be placed; the previous frame stays on screen
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
        small = self._small.reformat(
            frame,
            width=self._small_size[0],
            height=self._small_size[1],
            format="gray",
            interpolation=Interpolation.AREA,
        ).to_ndarray()
        if self._reference is not None and is_duplicate(self._reference, small):
            return
        if self._pending is not None:
            if pts <= (self._pending.pts or 0):
                return  # out-of-order or repeated timestamp: keep the earlier frame
            self._encode(self._pending, pts - (self._pending.pts or 0))
        self._pending, self._reference = frame, small

    @property
    def end(self) -> float:
        """Seconds where the source video ends (last frame's time plus its duration)."""
        return float(self._end * self.time_base)

    def finish(self) -> None:
        """Encode the held frame so it lasts to the end of the source video, then flush."""
        if self._pending is not None:
            pts = self._pending.pts or 0
            self._encode(self._pending, max(1, self._end - pts))
            self._pending = None
        self._mux(self._stream.encode(None))

    def _encode(self, frame: av.VideoFrame, duration: int) -> None:
        frame.time_base = self.time_base
        frame.duration = duration
        # a decoded frame keeps its I/P type, which libx264 would obey
        frame.pict_type = PictureType.NONE
        assert frame.pts is not None
        self._durations[frame.pts] = duration
        self.frames_out += 1
        self._mux(self._stream.encode(frame))

    def _mux(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            if packet.pts is not None:
                packet.duration = self._durations.pop(packet.pts, packet.duration)
            self._container.mux(packet)


def _demux(
    container: av.container.InputContainer, streams: Sequence[av.stream.Stream], path: str
) -> Iterator[av.Packet]:
    """Packets of the given streams; MediaError on damaged or missing (truncated) data."""
    counts = dict.fromkeys((s.index for s in streams), 0)
    for packet in container.demux(streams):
        if packet.dts is None and packet.pts is None and packet.size == 0:
            continue  # flush marker
        if packet.is_corrupt:
            raise MediaError(f"{path} is truncated or corrupt (damaged packet)", path=path)
        counts[packet.stream.index] += 1
        yield packet
    for stream in streams:
        if stream.frames and counts[stream.index] < stream.frames:
            raise MediaError(
                f"{path} is truncated: its index lists {stream.frames} packets of stream "
                f"{stream.index} but only {counts[stream.index]} are present",
                path=path,
            )


def compress(
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
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    encoding = PRESETS[preset]
    path = local_path(source)
    output = Path(output)
    tmp = temp_path(output)
    throttle = Throttle(progress)
    encoder: _VideoEncoder | None = None
    audio_end = 0.0
    try:
        with open_input(path) as inp:
            vin = inp.streams.video[0] if inp.streams.video else None
            ain = inp.streams.audio[0] if inp.streams.audio else None
            if vin is None and ain is None:
                raise MediaError(f"no audio or video stream in {path}", path=path)
            duration = (inp.duration or 0) / av.time_base
            with av.open(
                output_url(tmp), "w", format="mp4", container_options={"movflags": "+faststart"}
            ) as out:
                if vin is not None:
                    vin.codec_context.thread_type = "AUTO"
                    encoder = _VideoEncoder(out, vin, encoding)
                aout = out.add_stream_from_template(ain) if ain is not None else None
                streams = [s for s in (vin, ain) if s is not None]
                try:
                    for packet in _demux(inp, streams, path):
                        if packet.stream is ain:
                            assert aout is not None and packet.time_base is not None
                            end = (packet.pts or 0) + (packet.duration or 0)
                            audio_end = max(audio_end, float(end * packet.time_base))
                            packet.stream = aout
                            out.mux(packet)
                            continue
                        assert encoder is not None
                        for frame in packet.decode():
                            encoder.add(frame)
                            if frame.time is not None and duration:
                                throttle(frame.time / duration)
                    if encoder is not None:
                        for frame in vin.decode(None) if vin is not None else ():
                            encoder.add(frame)
                        encoder.finish()
                except (av.error.FFmpegError, OSError, EOFError) as exc:
                    raise _input_error(path, exc) from exc
                if encoder is not None and encoder.frames_in == 0:
                    raise MediaError(f"no video frame could be decoded from {path}", path=path)
        throttle.done()  # last chance to cancel before the file becomes visible
        os.replace(tmp, output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    video_end = encoder.end if encoder is not None else 0.0
    return CompressResult(
        path=output,
        preset=preset,
        duration=max(video_end, audio_end),
        size=output.stat().st_size,
        source_size=os.path.getsize(path),
        frames_in=encoder.frames_in if encoder is not None else 0,
        frames_out=encoder.frames_out if encoder is not None else 0,
        has_video=encoder is not None,
        has_audio=ain is not None,
    )
