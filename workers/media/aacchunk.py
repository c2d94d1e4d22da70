"""Chunked AAC encoding: one exact track from independently encoded, storable pieces.

Re-encoding a whole session after it ends is too slow for the "audio ready seconds after the
end" target, and one AAC encoder cannot use two cores. The plan (:mod:`.aacplan`) cuts the
output into chunks on the AAC frame grid; each chunk is rendered (decode, place to the
sample) and encoded on its own with a pre- and post-roll, and only its own packets are kept.
So chunks can be

* encoded while the session is still recording, as soon as their audio is known
  (:func:`encode_settled_chunks`), stored as small files and reused at the end;
* encoded in parallel threads (PyAV releases the GIL inside the encoder) for a whole-session
  render (:func:`concat_audio_chunked`);

and the final file is a stream copy of all kept packets (one priming delay, written as an
edit list), each chunk's payload region appended as it is stored (:mod:`.m4a`), which takes
a fraction of a second even for hours of audio.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import tempfile
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.container
import numpy as np

from .aacplan import (
    AudioPlan,
    Chunk,
    ChunkGrid,
    EncoderParams,
    expected_packets,
    keeps_packet,
    plan_audio,
    plan_chunks,
    settled_sample,
)
from .audio import (
    DEFAULT_AAC_CODER,
    ENCODE_BLOCK,
    AudioResult,
    SegmentReader,
    check_audio_args,
    close_readers,
    configure_aac_encoder,
    render_audio,
    render_placements,
)
from .m4a import AacTrackWriter
from .output import ProgressCallback, Throttle, temp_path
from .timeline import Timeline

__all__ = [
    "DEFAULT_CHUNK_SECONDS",
    "DEFAULT_WORKERS",
    "ChunkStore",
    "ChunkedAudioResult",
    "EncodedChunk",
    "IncrementalResult",
    "concat_audio_chunked",
    "encode_chunk",
    "encode_settled_chunks",
    "encoder_params",
    "render_chunked",
    "render_range",
]

DEFAULT_CHUNK_SECONDS = 20.0  # ~1 s pre-roll per chunk costs 5 %; the tail left at the end
DEFAULT_WORKERS = 2  # encoder threads for a whole-session render (the target machine's cores)
CHUNK_SUFFIX = ".aacchunk"
_MAGIC = b"SPAACCK1"  # chunk file: magic, u32 header length, JSON header, arrays, payload
_HEADER_LENGTH = struct.Struct("<I")
_LOOKAHEAD_PER_WORKER = 2  # chunks queued per encoder thread: keeps both busy, bounds memory


def encoder_params(rate: int, layout: str, bitrate: int, coder: str) -> EncoderParams:
    """Encoder settings plus the library version, which a chunk signature must include."""
    version = f"av {av.__version__}, libavcodec {av.library_versions['libavcodec']}"
    return EncoderParams(rate=rate, layout=layout, bitrate=bitrate, coder=coder, version=version)


@dataclass(frozen=True)
class EncodedChunk:
    """A chunk's kept AAC packets (timestamps in output samples) and the stream config."""

    chunk: Chunk
    extradata: bytes
    pts: tuple[int, ...]
    durations: tuple[int, ...]
    payloads: tuple[bytes, ...]


@dataclass(frozen=True)
class ChunkedAudioResult(AudioResult):
    """The finished track and how much of it came from stored chunks."""

    chunks: int
    reused: int
    encoded: int


@dataclass(frozen=True)
class IncrementalResult:
    """What one incremental pass did."""

    settled: int  # output samples known to be final
    chunks: int  # chunks that are final so far
    reused: int  # already stored with the right signature
    encoded: int  # encoded and stored by this pass
    stopped: bool  # ``keep_going`` said stop before the pass finished


def render_range(plan: AudioPlan, start: int, end: int, layout: str) -> np.ndarray:
    """Output samples [start, end) as float32 (channels, n): placed audio, silence elsewhere."""
    channels = av.AudioLayout(layout).nb_channels
    out = np.zeros((channels, max(0, end - start)), dtype=np.float32)
    readers: dict[str, SegmentReader] = {}
    try:
        for at, block in render_placements(plan, start, end, layout, channels, readers):
            out[:, at - start : at - start + block.shape[1]] = block
    finally:
        close_readers(readers)
    return out


def encode_chunk(plan: AudioPlan, chunk: Chunk, params: EncoderParams) -> EncodedChunk:
    """Render a chunk's fed range, encode it, keep the packets that belong to the chunk."""
    samples = render_range(plan, chunk.feed_start, chunk.feed_end, params.layout)
    context = av.CodecContext.create("aac", "w")
    assert isinstance(context, av.AudioCodecContext)
    configure_aac_encoder(context, params.rate, params.layout, params.bitrate, params.coder)
    context.open()
    time_base = Fraction(1, params.rate)
    kept: list[av.Packet] = []

    def take(packets: Iterable[av.Packet]) -> None:
        kept.extend(p for p in packets if p.pts is not None and keeps_packet(chunk, p.pts))

    for offset in range(0, samples.shape[1], ENCODE_BLOCK):
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples[:, offset : offset + ENCODE_BLOCK]),
            format="fltp",
            layout=params.layout,
        )
        frame.sample_rate = params.rate
        frame.pts = chunk.feed_start + offset
        frame.time_base = time_base
        take(context.encode(frame))
    take(context.encode(None))
    if len(kept) != expected_packets(chunk):
        raise RuntimeError(
            f"chunk {chunk.index} kept {len(kept)} packets, expected {expected_packets(chunk)}"
        )
    return EncodedChunk(
        chunk=chunk,
        extradata=bytes(context.extradata or b""),
        pts=tuple(int(p.pts or 0) for p in kept),
        durations=tuple(int(p.duration or 0) for p in kept),
        payloads=tuple(bytes(p) for p in kept),
    )


class ChunkStore:
    """A folder of encoded chunks named by index and signature, each written temp + rename.

    A file is only used when its header repeats the signature the current plan computes, so
    a stale or torn file is simply re-encoded. Concurrent writers of one chunk write the same
    bytes (the encoder is deterministic), so the last rename winning is harmless.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path_for(self, chunk: Chunk) -> Path:
        return self.folder / f"{chunk.index:06d}-{chunk.signature[:32]}{CHUNK_SUFFIX}"

    def load(self, chunk: Chunk) -> EncodedChunk | None:
        """The stored chunk if present, intact and encoded from the same inputs."""
        try:
            data = self.path_for(chunk).read_bytes()
        except OSError:
            return None
        return _parse(data, chunk)

    def load_run(self, chunk: Chunk) -> ChunkRun | None:
        """The stored chunk as a run (no packet objects), if present, intact and current."""
        try:
            data = self.path_for(chunk).read_bytes()
        except OSError:
            return None
        return _parse_run(data, chunk)

    def has(self, chunk: Chunk) -> bool:
        """Cheap check (header only) that a matching chunk is stored."""
        try:
            with self.path_for(chunk).open("rb") as handle:
                head = handle.read(len(_MAGIC) + _HEADER_LENGTH.size)
                if not head.startswith(_MAGIC) or len(head) < len(_MAGIC) + _HEADER_LENGTH.size:
                    return False
                (length,) = _HEADER_LENGTH.unpack_from(head, len(_MAGIC))
                header = json.loads(handle.read(length))
        except (OSError, ValueError, struct.error):
            return False
        return isinstance(header, dict) and header.get("signature") == chunk.signature

    def save(self, encoded: EncodedChunk) -> Path:
        """Write atomically, then drop older files of the same chunk index."""
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.path_for(encoded.chunk)
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(_serialize(encoded))
            os.replace(name, final)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
        prefix = f"{encoded.chunk.index:06d}-"
        for old in self.folder.glob(f"{prefix}*{CHUNK_SUFFIX}"):
            if old != final:
                old.unlink(missing_ok=True)
        return final

    def files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(self.folder.glob(f"*{CHUNK_SUFFIX}"))

    def clear(self) -> None:
        """Remove the folder and everything in it (after the final file is written)."""
        if not self.folder.is_dir():
            return
        for path in self.folder.iterdir():
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # a concurrent writer put something back
            self.folder.rmdir()


def _serialize(encoded: EncodedChunk) -> bytes:
    chunk = encoded.chunk
    header = json.dumps(
        {
            "signature": chunk.signature,
            "index": chunk.index,
            "start": chunk.start,
            "end": chunk.end,
            "extradata": encoded.extradata.hex(),
            "packets": len(encoded.pts),
        }
    ).encode()
    sizes = np.array([len(p) for p in encoded.payloads], dtype="<u4")
    return b"".join(
        [
            _MAGIC,
            _HEADER_LENGTH.pack(len(header)),
            header,
            np.array(encoded.pts, dtype="<i8").tobytes(),
            np.array(encoded.durations, dtype="<i4").tobytes(),
            sizes.tobytes(),
            *encoded.payloads,
        ]
    )


@dataclass(frozen=True)
class ChunkRun:
    """A chunk's kept packets as arrays and one payload region: what the track file takes."""

    chunk: Chunk
    extradata: bytes
    pts: np.ndarray
    durations: np.ndarray
    sizes: np.ndarray
    payload: memoryview

    @classmethod
    def of(cls, encoded: EncodedChunk) -> ChunkRun:
        return cls(
            chunk=encoded.chunk,
            extradata=encoded.extradata,
            pts=np.array(encoded.pts, dtype=np.int64),
            durations=np.array(encoded.durations, dtype=np.int64),
            sizes=np.array([len(p) for p in encoded.payloads], dtype=np.int64),
            payload=memoryview(b"".join(encoded.payloads)),
        )


def _parse_run(data: bytes, chunk: Chunk) -> ChunkRun | None:
    """A stored chunk's run, None unless it is intact and encoded from the same inputs."""
    try:
        if not data.startswith(_MAGIC):
            return None
        at = len(_MAGIC)
        (length,) = _HEADER_LENGTH.unpack_from(data, at)
        at += _HEADER_LENGTH.size
        header = json.loads(data[at : at + length])
        at += length
        n = int(header["packets"])
        if header["signature"] != chunk.signature or n != expected_packets(chunk):
            return None
        pts = np.frombuffer(data, dtype="<i8", count=n, offset=at)
        at += 8 * n
        durations = np.frombuffer(data, dtype="<i4", count=n, offset=at)
        at += 4 * n
        sizes = np.frombuffer(data, dtype="<u4", count=n, offset=at)
        at += 4 * n
        if at + int(sizes.sum()) != len(data):
            return None  # torn or padded file
        return ChunkRun(
            chunk=chunk,
            extradata=bytes.fromhex(header["extradata"]),
            pts=pts.astype(np.int64),
            durations=durations.astype(np.int64),
            sizes=sizes.astype(np.int64),
            payload=memoryview(data)[at:],
        )
    except (ValueError, KeyError, TypeError, struct.error):
        return None


def _parse(data: bytes, chunk: Chunk) -> EncodedChunk | None:
    run = _parse_run(data, chunk)
    if run is None:
        return None
    ends = np.cumsum(run.sizes)
    starts = ends - run.sizes
    payloads = tuple(bytes(run.payload[int(a) : int(b)]) for a, b in zip(starts, ends, strict=True))
    return EncodedChunk(
        chunk=chunk,
        extradata=run.extradata,
        pts=tuple(int(x) for x in run.pts),
        durations=tuple(int(x) for x in run.durations),
        payloads=payloads,
    )


class _TrackFile:
    """The finished track: every chunk's run appended (``workers.media.m4a``), written to a
    temp name then renamed."""

    def __init__(self, output: Path, params: EncoderParams) -> None:
        self.output = output
        self.tmp = temp_path(output)
        self._params = params
        self._handle = self.tmp.open("wb")
        self._writer: AacTrackWriter | None = None
        self._extradata: bytes | None = None

    def add(self, run: ChunkRun) -> None:
        if self._writer is None:
            self._extradata = run.extradata
            channels = len(av.AudioLayout(self._params.layout).channels)
            self._writer = AacTrackWriter(self._handle, rate=self._params.rate,
                                          channels=channels, extradata=run.extradata)  # fmt: skip
        elif run.extradata != self._extradata:
            raise RuntimeError(f"chunk {run.chunk.index} has another AAC configuration")
        self._writer.add_run(run.pts, run.durations, run.sizes, run.payload)

    def finish(self, throttle: Throttle) -> None:
        if self._writer is None:
            raise RuntimeError("no chunk to write")
        self._writer.close()
        self._handle.close()
        throttle.done()  # last chance to cancel before the file becomes visible
        os.replace(self.tmp, self.output)

    def abort(self) -> None:
        self._handle.close()
        self.tmp.unlink(missing_ok=True)


def render_chunked(
    plan: AudioPlan,
    output: Path,
    params: EncoderParams,
    grid: ChunkGrid,
    *,
    store: ChunkStore | None = None,
    workers: int = DEFAULT_WORKERS,
    progress: ProgressCallback | None = None,
) -> ChunkedAudioResult:
    """Write the plan's track to ``output``: stored chunks reused, the rest encoded in parallel.

    Chunks are muxed in order as they complete; at most a few per worker are in flight, so
    memory stays bounded for any length. Newly encoded chunks are saved to ``store`` (if any)
    so a retried render resumes. The file appears atomically or not at all.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    chunks = plan_chunks(plan, grid, params)
    output = Path(output)
    throttle = Throttle(progress)
    track = _TrackFile(output, params)
    pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None
    pending: deque[Future[EncodedChunk] | ChunkRun | Chunk] = deque()
    reused = encoded = 0

    def encode_and_keep(chunk: Chunk) -> EncodedChunk:
        result = encode_chunk(plan, chunk, params)
        if store is not None:
            store.save(result)
        return result

    try:
        queued = 0
        window = workers * _LOOKAHEAD_PER_WORKER
        for done in range(len(chunks)):
            while queued < len(chunks) and queued < done + window:
                chunk = chunks[queued]
                cached = store.load_run(chunk) if store is not None else None
                if cached is not None:
                    reused += 1
                    pending.append(cached)
                else:
                    encoded += 1
                    pending.append(
                        pool.submit(encode_and_keep, chunk) if pool is not None else chunk
                    )
                queued += 1
            head = pending.popleft()
            if isinstance(head, Future):
                head = ChunkRun.of(head.result())
            elif isinstance(head, Chunk):
                head = ChunkRun.of(encode_and_keep(head))
            track.add(head)
            throttle((done + 1) / len(chunks))
        track.finish(throttle)
    except BaseException:
        for item in pending:
            if isinstance(item, Future):
                item.cancel()
        track.abort()
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return ChunkedAudioResult(
        path=output,
        duration=plan.total / plan.rate,
        samples=plan.total,
        sample_rate=plan.rate,
        chunks=len(chunks),
        reused=reused,
        encoded=encoded,
    )


def concat_audio_chunked(
    timeline: Timeline,
    output: Path,
    *,
    sample_rate: int = 48000,
    layout: str = "stereo",
    bitrate: int = 128_000,
    progress: ProgressCallback | None = None,
    aac_coder: str = DEFAULT_AAC_CODER,
    workers: int = DEFAULT_WORKERS,
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    store: ChunkStore | Path | None = None,
    identities: dict[str, str] | None = None,
) -> AudioResult:
    """Drop-in for :func:`~workers.media.audio.render_audio`, chunked and parallel.

    Same placement, same sample count; the audio differs from the single pass only by
    encoder decisions near chunk starts. With ``store`` the chunks already encoded while
    recording (same ``identities``) are reused, so only the rest is encoded.
    """
    check_audio_args(timeline, sample_rate)
    plan = plan_audio(timeline, sample_rate, identities)
    if plan.total == 0:  # nothing to cut into chunks: the one-pass encoder handles it
        return render_audio(
            timeline,
            output,
            sample_rate=sample_rate,
            layout=layout,
            bitrate=bitrate,
            progress=progress,
            aac_coder=aac_coder,
        )
    chunk_store = ChunkStore(store) if isinstance(store, Path) else store
    return render_chunked(
        plan,
        Path(output),
        encoder_params(sample_rate, layout, bitrate, aac_coder),
        ChunkGrid.for_seconds(chunk_seconds, sample_rate),
        store=chunk_store,
        workers=workers,
        progress=progress,
    )


def encode_settled_chunks(
    timeline: Timeline,
    store: ChunkStore | Path,
    *,
    sample_rate: int = 48000,
    layout: str = "stereo",
    bitrate: int = 128_000,
    aac_coder: str = DEFAULT_AAC_CODER,
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    identities: dict[str, str] | None = None,
    keep_going: Callable[[], bool] | None = None,
) -> IncrementalResult:
    """Encode and store every chunk of a still-recording session that can no longer change.

    Call it with the timeline of the segments received so far, each time one arrives;
    :func:`concat_audio_chunked` with the same ``store`` then only encodes the tail.
    ``keep_going`` is asked before each chunk is saved: False stops the pass (the final
    stage has taken over) without writing anything more.
    """
    chunk_store = ChunkStore(store) if isinstance(store, Path) else store
    if not timeline.has_audio:
        return IncrementalResult(settled=0, chunks=0, reused=0, encoded=0, stopped=False)
    check_audio_args(timeline, sample_rate)
    plan = plan_audio(timeline, sample_rate, identities)
    settled = settled_sample(timeline, sample_rate)
    params = encoder_params(sample_rate, layout, bitrate, aac_coder)
    grid = ChunkGrid.for_seconds(chunk_seconds, sample_rate)
    chunks = plan_chunks(plan, grid, params, settled=settled)
    reused = encoded = 0
    for chunk in chunks:
        if chunk_store.has(chunk):
            reused += 1
            continue
        result = encode_chunk(plan, chunk, params)
        if keep_going is not None and not keep_going():
            return IncrementalResult(settled, len(chunks), reused, encoded, stopped=True)
        chunk_store.save(result)
        encoded += 1
    return IncrementalResult(settled, len(chunks), reused, encoded, stopped=False)
