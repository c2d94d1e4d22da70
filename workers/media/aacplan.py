"""Sample-exact audio placement and the AAC chunk grid: pure arithmetic, no media I/O.

Two layers, both property-tested without ffmpeg:

* :func:`plan_audio` turns a :class:`~workers.media.timeline.Timeline` into integer sample
  placements: which source samples land where on the output. The reference encoder and the
  chunked encoder both render exactly these placements, so they can only differ in encoding.
* :func:`plan_chunks` cuts the output into chunks on the 1024-sample AAC frame grid. A chunk
  is encoded on its own from ``feed_start`` (a pre-roll of real preceding audio, so the
  encoder's state and window decisions have settled) to ``feed_end`` (a post-roll, because
  the MDCT window of the chunk's last frame reaches past its end); only the packets whose
  timestamps fall inside the chunk are kept. Kept packets of consecutive chunks tile the
  global frame grid, so the decoder's overlap-add across a chunk join is the same as in a
  single pass and the joined stream has one priming delay, at output sample 0.

A chunk's signature hashes everything its bytes depend on (encoder settings, its bounds and
the clipped placements feeding it), so a stored chunk is reused exactly when it would be
encoded identically, and a change anywhere invalidates only the chunks that feed on it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from shared.segments import SegmentKind

from .timeline import KINDS, Timeline

__all__ = [
    "AAC_FRAME",
    "AudioPlan",
    "Chunk",
    "ChunkGrid",
    "EncoderParams",
    "Placement",
    "chunk_bounds",
    "chunk_signature",
    "expected_packets",
    "keeps_packet",
    "plan_audio",
    "plan_chunks",
    "settled_sample",
]

AAC_FRAME = 1024  # samples per AAC frame: every chunk boundary sits on this grid
# Version of the chunk signature scheme and file layout; bump to invalidate stored chunks.
CHUNK_FORMAT_VERSION = 1
# Two segments whose recorded times meet this closely are slices of one recording, so the
# decoder may need the previous slice's last packet (see Placement.preroll_from).
JOIN_TOLERANCE_S = 1e-3
# Fewest pre-roll frames: the encoder must see the frames before the first kept one, or its
# window-shape decision there can disagree with the previous chunk's and leave a click.
MIN_PREROLL_FRAMES = 2
# Fewest post-roll frames: the last kept frame's MDCT window and the psychoacoustic
# look-ahead reach this far past the chunk's end.
MIN_POSTROLL_FRAMES = 2


@dataclass(frozen=True)
class Placement:
    """A run of decoded source samples copied to the output, all in output-rate samples."""

    path: str
    identity: str  # what the file holds (its sha256 when known), for signatures
    source_start: int  # first sample taken, counted from the file's first decoded sample
    out_start: int  # output sample where it lands
    count: int  # samples copied
    # The previous slice of the same recording (ffmpeg's segment muxer cuts one AAC stream
    # into files): its last packet primes the decoder so this file's first frame overlap-adds
    # like in the continuous stream. The decoder uses it only when both files are AAC with
    # the same configuration and this file carries no priming of its own.
    preroll_from: str | None = None
    preroll_identity: str | None = None

    @property
    def out_end(self) -> int:
        """Output sample just after the last one copied."""
        return self.out_start + self.count

    def clip(self, start: int, end: int) -> Placement | None:
        """The part landing in output samples [start, end), or None if nothing does."""
        a, b = max(start, self.out_start), min(end, self.out_end)
        if b <= a:
            return None
        return Placement(
            path=self.path,
            identity=self.identity,
            source_start=self.source_start + (a - self.out_start),
            out_start=a,
            count=b - a,
            preroll_from=self.preroll_from,
            preroll_identity=self.preroll_identity,
        )


@dataclass(frozen=True)
class AudioPlan:
    """Every output sample of the audio track: placements, silence everywhere else."""

    rate: int  # output samples per second
    total: int  # output length in samples
    placements: tuple[Placement, ...]  # ordered by out_start, disjoint, inside [0, total)

    def within(self, start: int, end: int) -> Iterator[Placement]:
        """Placements clipped to output samples [start, end), in output order."""
        for placement in self.placements:
            if placement.out_start >= end:
                break
            clipped = placement.clip(start, end)
            if clipped is not None:
                yield clipped


@dataclass(frozen=True)
class EncoderParams:
    """Everything about the encoder that changes the bytes it produces."""

    rate: int
    layout: str
    bitrate: int  # bits per second
    coder: str  # ffmpeg aac_coder: "twoloop" (ffmpeg's default) or "fast"
    version: str = ""  # encoder library version: a different build may encode differently


@dataclass(frozen=True)
class ChunkGrid:
    """Chunk length and the pre/post-roll around each chunk, in AAC frames."""

    chunk_frames: int
    preroll_frames: int = 48  # ~1 s at 48 kHz: lets the encoder's rate control settle
    postroll_frames: int = MIN_POSTROLL_FRAMES

    def __post_init__(self) -> None:
        if self.chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {self.chunk_frames}")
        if self.preroll_frames < MIN_PREROLL_FRAMES:
            raise ValueError(f"preroll_frames must be >= {MIN_PREROLL_FRAMES}")
        if self.postroll_frames < MIN_POSTROLL_FRAMES:
            raise ValueError(f"postroll_frames must be >= {MIN_POSTROLL_FRAMES}")

    @classmethod
    def for_seconds(cls, seconds: float, rate: int) -> ChunkGrid:
        """Grid whose chunks last about ``seconds`` at ``rate``, with default rolls."""
        if not math.isfinite(seconds) or seconds <= 0:
            raise ValueError(f"chunk length must be positive, got {seconds!r}")
        return cls(chunk_frames=max(1, round(seconds * rate / AAC_FRAME)))

    @property
    def chunk_samples(self) -> int:
        return self.chunk_frames * AAC_FRAME

    @property
    def preroll(self) -> int:
        """Pre-roll in samples."""
        return self.preroll_frames * AAC_FRAME

    @property
    def postroll(self) -> int:
        """Post-roll in samples."""
        return self.postroll_frames * AAC_FRAME


@dataclass(frozen=True)
class Chunk:
    """One independently encoded stretch of the output and what its encoder is fed."""

    index: int
    start: int  # first output sample (a multiple of AAC_FRAME)
    end: int  # exclusive; a multiple of AAC_FRAME unless this is the last chunk
    feed_start: int  # encoder input starts here (pre-roll), clipped at 0
    feed_end: int  # encoder input ends here (post-roll), clipped at the total
    last: bool  # ends at the end of the track: keeps the encoder's final packets
    signature: str  # sha256 of everything the chunk's bytes depend on


def plan_audio(
    timeline: Timeline, rate: int, identities: Mapping[str, str] | None = None
) -> AudioPlan:
    """Place every kept piece of audio at round(out_start * rate), sample-exact.

    Rounding can make neighbouring pieces touch or overlap by a sample; the later piece then
    skips what is already placed, so placements never overlap and the total is
    round(duration * rate). ``identities`` maps a path to its content id (sha256).
    """
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    ids = identities or {}
    total = round(timeline.duration * rate)
    placements: list[Placement] = []
    cursor = 0
    previous = None
    for seg in timeline.of_kind(SegmentKind.AUDIO):
        continues = (
            previous is not None
            and seg.trim_start * rate < 0.5
            and abs(seg.start - previous.end) <= JOIN_TOLERANCE_S
        )
        preroll_from = previous.path if continues and previous is not None else None
        previous = seg
        for piece in timeline.kept_parts(seg):
            out_start = round(piece.out_start * rate)
            out_end = min(round((piece.out_start + piece.duration) * rate), total)
            if out_end <= cursor:
                continue
            begin = max(cursor, out_start)
            placements.append(
                Placement(
                    path=seg.path,
                    identity=ids.get(seg.path, seg.path),
                    source_start=round(piece.source_offset * rate) + (begin - out_start),
                    out_start=begin,
                    count=out_end - begin,
                    preroll_from=preroll_from,
                    preroll_identity=(
                        ids.get(preroll_from, preroll_from) if preroll_from is not None else None
                    ),
                )
            )
            cursor = out_end
    return AudioPlan(rate=rate, total=total, placements=tuple(placements))


def chunk_bounds(total: int, grid: ChunkGrid) -> list[tuple[int, int]]:
    """(start, end) of every chunk tiling [0, total): grid-aligned, the last one shorter."""
    if total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    size = grid.chunk_samples
    return [(a, min(a + size, total)) for a in range(0, total, size)]


def chunk_signature(
    plan: AudioPlan,
    params: EncoderParams,
    start: int,
    end: int,
    feed_start: int,
    feed_end: int,
    last: bool,
) -> str:
    """Hash of the inputs that decide a chunk's bytes, and nothing else.

    The plan's total and the placements outside the fed range do not enter it, so audio
    arriving later leaves the signatures of earlier chunks unchanged.
    """
    sources = [
        [p.identity, p.preroll_identity, p.source_start, p.out_start, p.count]
        for p in plan.within(feed_start, feed_end)
    ]
    doc = {
        "format": CHUNK_FORMAT_VERSION,
        "encoder": [params.rate, params.layout, params.bitrate, params.coder, params.version],
        "chunk": [start, end, feed_start, feed_end, last],
        "sources": sources,
    }
    blob = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def plan_chunks(
    plan: AudioPlan, grid: ChunkGrid, params: EncoderParams, *, settled: int | None = None
) -> tuple[Chunk, ...]:
    """The chunks to encode: all of them, or only those final before sample ``settled``.

    With ``settled`` (an incremental run while the session records) a chunk qualifies when
    it is not the track's last and its post-roll ends by ``settled``: then everything it is
    fed is already known and its signature equals the one the final plan will compute.
    """
    if params.rate != plan.rate:
        raise ValueError(f"encoder rate {params.rate} differs from plan rate {plan.rate}")
    chunks: list[Chunk] = []
    for index, (start, end) in enumerate(chunk_bounds(plan.total, grid)):
        last = end >= plan.total
        if settled is not None and (last or end + grid.postroll > settled):
            break
        feed_start = max(0, start - grid.preroll)
        feed_end = min(plan.total, end + grid.postroll)
        signature = chunk_signature(plan, params, start, end, feed_start, feed_end, last)
        chunks.append(Chunk(index, start, end, feed_start, feed_end, last, signature))
    return tuple(chunks)


def keeps_packet(chunk: Chunk, pts: int) -> bool:
    """Whether an encoded packet (timestamp in output samples) belongs to ``chunk``.

    The first chunk also keeps the stream's priming packet (negative timestamp); the last
    keeps the encoder's final packets. Everything else is pre- or post-roll.
    """
    low = chunk.start if chunk.start > 0 else -math.inf
    return pts >= low and (chunk.last or pts < chunk.end)


def expected_packets(chunk: Chunk) -> int:
    """How many packets a chunk keeps (one per frame, plus the priming one in chunk 0)."""
    frames = -(-(chunk.end - chunk.start) // AAC_FRAME)
    return frames + (1 if chunk.start == 0 else 0)


def settled_sample(timeline: Timeline, rate: int) -> int:
    """Output sample before which a partial timeline's audio should not change any more.

    That is the end of the known audio, or earlier: the start of the first cut that a track
    which has not reached the cut's end could still fill (a gap where no media is known *yet*
    is only a pause once every track has moved past it). A later surprise (a late segment,
    a new pause) is still handled by the signatures; this only avoids encoding work twice.
    """
    audio = timeline.of_kind(SegmentKind.AUDIO)
    if not audio:
        return 0
    limit = max(s.end for s in audio)
    ends = [max(s.end for s in timeline.of_kind(k)) for k in KINDS if timeline.of_kind(k)]
    for cut_start, cut_end in timeline.cuts:
        if cut_start >= limit:
            break
        if any(end < cut_end for end in ends):
            limit = cut_start
            break
    return min(round(timeline.to_output(limit) * rate), round(timeline.duration * rate))
