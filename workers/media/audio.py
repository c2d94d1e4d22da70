"""Concatenate the audio segments of a timeline into one AAC track (the reference encoder).

Placement is done by counting samples, never by trusting packet timestamps: recorders restart
their clocks per segment and encoders add priming, so the only reliable position of a sample
is "n samples after the first decoded one". Where every sample goes is planned once by
:func:`workers.media.aacplan.plan_audio`; this module decodes (:class:`SegmentReader`) and, in
:func:`render_audio`, encodes the whole track in one pass with streamed, flat memory. The fast
paths in :mod:`workers.media.aacchunk` render the same plan in independently encoded chunks.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from contextlib import closing
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.container
import numpy as np

from shared.segments import SegmentKind

from .aacplan import AAC_FRAME, AudioPlan, plan_audio
from .errors import MediaError, decode_failure
from .output import ProgressCallback, Throttle, atomic_output, output_url
from .probe import demux_checked, local_path, open_input
from .timeline import Timeline

__all__ = [
    "DEFAULT_AAC_CODER",
    "ENCODE_BLOCK",
    "AudioResult",
    "SegmentReader",
    "check_audio_args",
    "close_readers",
    "render_audio",
    "configure_aac_encoder",
    "render_placements",
]

DEFAULT_AAC_CODER = "twoloop"  # ffmpeg's default, so a plain ffmpeg command gives the same
_SILENCE_CHUNK = 1 << 16  # samples of silence generated at once, bounds memory in long gaps
_BATCH_SAMPLES = 16 * AAC_FRAME  # decoded samples converted per resampler call
ENCODE_BLOCK = 16 * AAC_FRAME  # samples per encoder call; PyAV re-frames to 1024 bit-exactly


@dataclass(frozen=True)
class AudioResult:
    """The encoded track and its exact length."""

    path: Path
    duration: float  # seconds (samples / sample_rate)
    samples: int
    sample_rate: int


def _primer_packet(previous: str, stream: av.AudioStream) -> av.Packet | None:
    """The last packet of ``previous`` if it continues the same AAC stream as ``stream``.

    ffmpeg's segment muxer cuts one AAC stream into files; decoding a file alone leaves its
    first frame without the overlap-add partner (an audible glitch at every join). Feeding
    the previous slice's last packet first restores the continuous decode. Anything that
    does not look like the same stream (other codec or configuration, unreadable) gives
    None: the previous file's own reader reports its errors.
    """
    context = stream.codec_context
    if context.name != "aac":
        return None
    try:
        with open_input(previous) as container:
            if not container.streams.audio:
                return None
            source = container.streams.audio[0]
            other = source.codec_context
            if (
                other.name != context.name
                or other.extradata != context.extradata
                or other.sample_rate != context.sample_rate
            ):
                return None
            last: av.Packet | None = None
            for packet in container.demux(source):
                if packet.size and not packet.is_corrupt:
                    last = packet
            return av.Packet(bytes(last)) if last is not None else None
    except (MediaError, av.error.FFmpegError, OSError, EOFError):
        return None


def _decoded_chunks(
    path: str, rate: int, layout: str, preroll_from: str | None = None
) -> Generator[np.ndarray, None, None]:
    """Decode the first audio stream as planar float (channels, n) at ``rate``/``layout``.

    A new resampler is built whenever the input format changes mid-file, which PyAV's
    resampler would otherwise reject. Decoder failures become MediaError naming the file.
    ``preroll_from`` names the previous slice of the same recording (see _primer_packet).
    """
    try:
        with open_input(path) as container:
            if not container.streams.audio:
                raise MediaError(f"no audio stream in {path}", path=path)
            stream = container.streams.audio[0]
            resampler: av.AudioResampler | None = None
            key: tuple[str, str, int] | None = None
            frames = _batched(_frames(container, stream, path, preroll_from))
            with closing(frames):
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
        raise decode_failure(path, exc) from exc


def _batched(frames: Generator[av.AudioFrame, None, None]) -> Generator[av.AudioFrame, None, None]:
    """Join consecutive planar-float frames into blocks of about _BATCH_SAMPLES.

    Decoders hand out 1024-sample frames; converting each on its own costs more in call
    overhead than in conversion. The samples are the same, only fewer, larger frames.
    """
    pending: list[np.ndarray] = []
    count = 0
    like: av.AudioFrame | None = None

    def joined() -> av.AudioFrame:
        assert like is not None
        block = av.AudioFrame.from_ndarray(
            np.concatenate(pending, axis=1), format="fltp", layout=like.layout.name
        )
        block.sample_rate = like.sample_rate
        return block

    with closing(frames):
        for frame in frames:
            plain = frame.format.name == "fltp"
            if pending and (
                not plain
                or like is None
                or (frame.layout.name, frame.sample_rate) != (like.layout.name, like.sample_rate)
            ):
                yield joined()
                pending, count = [], 0
            if not plain:
                yield frame
                continue
            pending.append(frame.to_ndarray())
            count += frame.samples
            like = frame
            if count >= _BATCH_SAMPLES:
                yield joined()
                pending, count = [], 0
        if pending:
            yield joined()


def _frames(
    container: av.container.InputContainer,
    stream: av.AudioStream,
    path: str,
    preroll_from: str | None = None,
) -> Generator[av.AudioFrame, None, None]:
    for packet in demux_checked(container, stream, path):
        if preroll_from is not None:
            # Only a file without its own priming (no edit list: first timestamp >= 0) is a
            # continuation; one with priming starts a stream and must decode alone.
            if packet.pts is not None and packet.pts >= 0:
                primer = _primer_packet(preroll_from, stream)
                for _ in stream.codec_context.decode(primer) if primer is not None else ():
                    pass  # the primer's output belongs to the previous file
            preroll_from = None
        for frame in packet.decode():
            if isinstance(frame, av.AudioFrame):
                yield frame


class SegmentReader:
    """Sequential sample-exact access to one decoded segment (reads must move forward)."""

    def __init__(
        self, path: str, rate: int, layout: str, channels: int, preroll_from: str | None = None
    ) -> None:
        self.path = path
        self._channels = channels
        self._chunks = _decoded_chunks(path, rate, layout, preroll_from)
        self._buf = np.zeros((channels, 0), dtype=np.float32)
        self._pos = 0  # sample index of self._buf[:, 0] in the decoded stream
        self._eof = False
        self.decoded = 0

    @property
    def position(self) -> int:
        """Next sample index a read can start at without going backwards."""
        return self._pos

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
    """Feeds arbitrary-sized sample blocks to the AAC encoder as whole 1024-sample frames."""

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
        if self._pending_n >= AAC_FRAME:
            data = np.concatenate(self._pending, axis=1)
            full = data.shape[1] - data.shape[1] % AAC_FRAME
            # Big blocks save Python overhead; the output is the same as frame by frame.
            for i in range(0, full, ENCODE_BLOCK):
                self._encode(data[:, i : min(full, i + ENCODE_BLOCK)])
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


def configure_aac_encoder(
    context: av.AudioCodecContext, rate: int, layout: str, bitrate: int, coder: str
) -> None:
    """Configure an AAC encoder context identically for every path (bytes depend on it)."""
    context.sample_rate = rate
    context.layout = layout
    context.format = "fltp"
    context.bit_rate = bitrate
    context.time_base = Fraction(1, rate)
    context.options = {"aac_coder": coder}


def check_audio_args(timeline: Timeline, sample_rate: int) -> None:
    """Reject what no encoder path can render, before any work or output."""
    if not timeline.has_audio:
        raise ValueError("timeline has no audio segments")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    for seg in timeline.of_kind(SegmentKind.AUDIO):
        local_path(seg.path)  # reject URLs before any work


def render_placements(
    plan: AudioPlan,
    start: int,
    end: int,
    layout: str,
    channels: int,
    readers: dict[str, SegmentReader],
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (output sample, block) for every placed sample in [start, end), in order.

    Silence is not yielded: the caller fills what lies between blocks. ``readers`` keeps one
    open reader per file so consecutive placements from a file decode it once; a reader
    that would have to move backwards is reopened (decoding restarts at the file's start,
    which keeps the samples identical whichever range asked for them). Files are closed
    as soon as the output moves past them, so long sessions hold one file open.
    """
    for placement in plan.within(start, end):
        for path in [p for p in readers if p != placement.path]:
            readers.pop(path).close()  # placements never return to an earlier file
        reader = readers.get(placement.path)
        if reader is not None and reader.position > placement.source_start:
            reader.close()
            reader = None
        if reader is None:
            reader = SegmentReader(
                placement.path, plan.rate, layout, channels, placement.preroll_from
            )
            readers[placement.path] = reader
        at = placement.out_start
        for block in reader.read(placement.source_start, placement.count):
            yield at, block
            at += block.shape[1]


def close_readers(readers: dict[str, SegmentReader]) -> None:
    for reader in readers.values():
        reader.close()
    readers.clear()


def render_audio(
    timeline: Timeline,
    output: Path,
    *,
    sample_rate: int = 48000,
    layout: str = "stereo",
    bitrate: int = 128_000,
    progress: ProgressCallback | None = None,
    aac_coder: str = DEFAULT_AAC_CODER,
) -> AudioResult:
    """Render the timeline's audio track to one AAC file (``.m4a``), sample-exact, one pass.

    Each kept piece of each segment lands at round(out_start * rate); gaps become digital
    silence and the total is round(duration * rate) samples. The file appears atomically at
    ``output`` (temp name + os.replace) or not at all. This is the reference the chunked
    encoders are checked against.
    """
    check_audio_args(timeline, sample_rate)
    channels = av.AudioLayout(layout).nb_channels
    plan = plan_audio(timeline, sample_rate)
    total = plan.total
    output = Path(output)
    throttle = Throttle(progress)
    readers: dict[str, SegmentReader] = {}
    try:
        with (
            atomic_output(output, throttle) as tmp,
            av.open(output_url(tmp), "w", format="mp4") as container,
        ):
            stream = container.add_stream("aac", rate=sample_rate, layout=layout)
            configure_aac_encoder(stream.codec_context, sample_rate, layout, bitrate, aac_coder)
            writer = _AacWriter(container, stream, layout, sample_rate, channels)
            for at, block in render_placements(plan, 0, total, layout, channels, readers):
                writer.silence(at - writer.written)
                writer.write(block)
                throttle(writer.written / total if total else 1.0)
            writer.silence(total - writer.written)
            writer.close()
    finally:
        close_readers(readers)
    return AudioResult(
        path=output, duration=total / sample_rate, samples=total, sample_rate=sample_rate
    )
