"""Concatenate the audio segments of a timeline into one AAC track.

Placement is done by counting samples, never by trusting packet timestamps: recorders restart
their clocks per segment and encoders add priming, so the only reliable position of a sample
is "n samples after the first decoded one". Everything is streamed, so memory stays flat for
sessions of any length, and the result is encoded exactly once.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.container
import numpy as np

from .errors import MediaError
from .probe import demux_checked, local_path, open_input
from .timeline import Timeline

__all__ = ["AudioResult", "ProgressCallback", "concat_audio"]

ProgressCallback = Callable[[float], None]

_AAC_FRAME = 1024  # samples per AAC frame; the encoder only accepts full frames
_SILENCE_CHUNK = 1 << 16  # samples of silence generated at once, bounds memory in long gaps


@dataclass(frozen=True)
class AudioResult:
    """The encoded track and its exact length."""

    path: Path
    duration: float  # seconds (samples / sample_rate)
    samples: int
    sample_rate: int


class Throttle:
    """Forward progress to a callback at most about once a second.

    Workers report progress to a database; once a second is plenty and keeps that cheap. A
    :class:`Cancelled` raised by the callback propagates to stop the stage.
    """

    def __init__(self, callback: ProgressCallback | None, interval: float = 1.0) -> None:
        self._callback = callback
        self._interval = interval
        self._last = -math.inf  # the first report goes through at once

    def __call__(self, fraction: float) -> None:
        if self._callback is None:
            return
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            self._callback(min(1.0, max(0.0, fraction)))

    def done(self) -> None:
        """Report completion once, whatever the throttle says."""
        if self._callback is not None:
            self._callback(1.0)


def temp_path(output: Path) -> Path:
    """Hidden name next to ``output`` so ``os.replace`` is atomic on the same filesystem."""
    return output.with_name(f".{output.name}.tmp-{os.getpid()}")


def output_url(path: Path) -> str:
    """``file:`` URL for an output path, so a ``:`` in the name is never read as a protocol."""
    return "file:" + os.path.abspath(path)


def _input_failure(path: str, exc: BaseException) -> MediaError:
    reason = exc.strerror if isinstance(exc, av.error.FFmpegError) and exc.strerror else exc
    return MediaError(f"cannot decode {path}: {reason}", path=path)


def _decoded_chunks(path: str, rate: int, layout: str) -> Generator[np.ndarray, None, None]:
    """Decode the first audio stream as planar float (channels, n) at ``rate``/``layout``.

    A new resampler is built whenever the input format changes mid-file, which PyAV's
    resampler would otherwise reject. Decoder failures become MediaError naming the file.
    """
    try:
        with open_input(path) as container:
            if not container.streams.audio:
                raise MediaError(f"no audio stream in {path}", path=path)
            stream = container.streams.audio[0]
            resampler: av.AudioResampler | None = None
            key: tuple[str, str, int] | None = None
            with closing(_frames(container, stream, path)) as frames:
                for frame in frames:
                    frame_key = (frame.format.name, frame.layout.name, frame.sample_rate)
                    if resampler is None or frame_key != key:
                        if resampler is not None:
                            for out in resampler.resample(None):
                                yield out.to_ndarray()
                        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
                        key = frame_key
                    for out in resampler.resample(frame):
                        yield out.to_ndarray()
            if resampler is not None:
                for out in resampler.resample(None):
                    yield out.to_ndarray()
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError, EOFError) as exc:
        raise _input_failure(path, exc) from exc


def _frames(
    container: av.container.InputContainer, stream: av.AudioStream, path: str
) -> Generator[av.AudioFrame, None, None]:
    for packet in demux_checked(container, stream, path):
        for frame in packet.decode():
            if isinstance(frame, av.AudioFrame):
                yield frame


class _SegmentReader:
    """Sequential sample-exact access to one decoded segment (reads must move forward)."""

    def __init__(self, path: str, rate: int, layout: str, channels: int) -> None:
        self.path = path
        self._channels = channels
        self._chunks = _decoded_chunks(path, rate, layout)
        self._buf = np.zeros((channels, 0), dtype=np.float32)
        self._pos = 0  # sample index of self._buf[:, 0] in the decoded stream
        self._eof = False
        self.decoded = 0

    def _fill(self) -> bool:
        if self._eof:
            return False
        try:
            chunk = next(self._chunks)
        except StopIteration:
            self._eof = True
            return False
        self._buf = chunk.astype(np.float32, copy=False)
        self.decoded += chunk.shape[1]
        return True

    def read(self, start: int, count: int) -> Iterator[np.ndarray]:
        """Yield ``count`` samples from ``start`` on, zero-padded past the end of the file."""
        start = max(start, self._pos)
        while count > 0:
            if self._buf.shape[1] == 0 and not self._fill():
                if self.decoded == 0:
                    raise MediaError(f"no audio could be decoded from {self.path}", path=self.path)
                while count > 0:  # the file is shorter than declared: pad with silence
                    n = min(count, _SILENCE_CHUNK)
                    yield np.zeros((self._channels, n), dtype=np.float32)
                    count -= n
                return
            skip = min(start - self._pos, self._buf.shape[1])
            if skip > 0:
                self._buf = self._buf[:, skip:]
                self._pos += skip
                continue
            n = min(count, self._buf.shape[1])
            yield self._buf[:, :n]
            self._buf = self._buf[:, n:]
            self._pos += n
            start += n
            count -= n

    def close(self) -> None:
        self._chunks.close()


class _AacWriter:
    """Feeds arbitrary-sized sample blocks to the AAC encoder as full 1024-sample frames."""

    def __init__(
        self,
        container: av.container.OutputContainer,
        stream: av.AudioStream,
        layout: str,
        rate: int,
        channels: int,
    ) -> None:
        self._container = container
        self._stream = stream
        self._layout = layout
        self._rate = rate
        self._channels = channels
        self._pending: list[np.ndarray] = []
        self._pending_n = 0
        self._pts = 0
        self.written = 0  # samples accepted so far (the output cursor)

    def write(self, block: np.ndarray) -> None:
        if block.shape[1] == 0:
            return
        self._pending.append(block)
        self._pending_n += block.shape[1]
        self.written += block.shape[1]
        if self._pending_n >= _AAC_FRAME:
            data = np.concatenate(self._pending, axis=1)
            full = data.shape[1] - data.shape[1] % _AAC_FRAME
            for i in range(0, full, _AAC_FRAME):
                self._encode(data[:, i : i + _AAC_FRAME])
            rest = data[:, full:]
            self._pending = [rest] if rest.shape[1] else []
            self._pending_n = rest.shape[1]

    def silence(self, count: int) -> None:
        while count > 0:
            n = min(count, _SILENCE_CHUNK)
            self.write(np.zeros((self._channels, n), dtype=np.float32))
            count -= n

    def _encode(self, data: np.ndarray | None) -> None:
        if data is None:
            self._container.mux(self._stream.encode(None))
            return
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(data, dtype=np.float32), format="fltp", layout=self._layout
        )
        frame.sample_rate = self._rate
        frame.pts = self._pts
        frame.time_base = Fraction(1, self._rate)
        self._pts += data.shape[1]
        self._container.mux(self._stream.encode(frame))

    def close(self) -> None:
        if self._pending_n:
            self._encode(np.concatenate(self._pending, axis=1))
            self._pending, self._pending_n = [], 0
        self._encode(None)


def concat_audio(
    timeline: Timeline,
    output: Path,
    *,
    sample_rate: int = 48000,
    layout: str = "stereo",
    bitrate: int = 128_000,
    progress: ProgressCallback | None = None,
) -> AudioResult:
    """Render the timeline's audio track to one AAC file (``.m4a``), sample-exact.

    Each kept piece of each segment lands at round(out_start * rate); gaps become digital
    silence and the total is round(duration * rate) samples. The file appears atomically at
    ``output`` (temp name + os.replace) or not at all.
    """
    if not timeline.has_audio:
        raise ValueError("timeline has no audio segments")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    for seg in timeline.of_kind("audio"):
        local_path(seg.path)  # reject URLs before any work
    channels = av.AudioLayout(layout).nb_channels
    total = round(timeline.duration * sample_rate)
    output = Path(output)
    tmp = temp_path(output)
    throttle = Throttle(progress)
    reader: _SegmentReader | None = None
    try:
        with av.open(output_url(tmp), "w", format="mp4") as container:
            stream = container.add_stream("aac", rate=sample_rate, layout=layout)
            stream.bit_rate = bitrate
            writer = _AacWriter(container, stream, layout, sample_rate, channels)
            for seg in timeline.of_kind("audio"):
                reader = _SegmentReader(seg.path, sample_rate, layout, channels)
                for piece in timeline.kept_parts(seg):
                    out_start = round(piece.out_start * sample_rate)
                    out_end = min(round((piece.out_start + piece.duration) * sample_rate), total)
                    if out_end <= writer.written:
                        continue
                    writer.silence(out_start - writer.written)
                    # rounding may make pieces touch by a sample: skip what is already written
                    late = writer.written - out_start
                    source_start = round(piece.source_offset * sample_rate) + max(0, late)
                    for block in reader.read(source_start, out_end - writer.written):
                        writer.write(block)
                        throttle(writer.written / total if total else 1.0)
                reader.close()
                reader = None
            writer.silence(total - writer.written)
            writer.close()
        throttle.done()  # last chance to cancel before the file becomes visible
        os.replace(tmp, output)
    except BaseException:
        if reader is not None:
            reader.close()
        tmp.unlink(missing_ok=True)
        raise
    return AudioResult(
        path=output, duration=total / sample_rate, samples=total, sample_rate=sample_rate
    )
