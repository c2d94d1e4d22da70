"""The playable MP4 assembled while the session records, so it is ready when it ends.

The media side is :mod:`workers.media.assemble` (one piece per video segment, appended to a
fragmented MP4). Here: when pieces are appended, by whom, and how the merge stage finishes
the file. The file and its description live in the session's derived folder
(``assembly/playable.mp4`` and ``assembly/playable.json``). The rules:

- **One writer at a time, no new lock.** While the session records, the audio chunk pass
  (``workers.audiochunks``, one per session at a time under its lock) appends the pieces
  that are ready after encoding its chunks, renewing the lock before each piece. Once
  ``concat_audio`` has taken the lock over (it waits for the holder before it succeeds), the
  ``merge`` stage, which runs after it, is the only writer.
- **The description is the truth about the file.** It is rewritten (temporary name, then
  rename) after every append and names what the file holds up to which byte; bytes past
  that are a torn append (a writer died) and are cut off before anything is written.
- **Nothing stale survives.** Before appending, and when finishing, every recorded piece is
  checked against the session as it is now: the same segment content, placed at the same
  times, with audio from chunks of the same signatures (``workers.media.aacplan``). From
  the first piece that differs on (a late segment placed earlier, a pause that turned out
  to be one) the file is cut back and those pieces are made again.
- **A piece waits until it is final.** It is appended while recording only once the next
  video segment is known (its last frame lasts until that one starts) and every audio
  chunk of its stretch is stored (settled): the file trails the recording by about one
  audio chunk (``audio_chunk_s``).
- **The stage finishes it.** ``merge`` cuts back to what is still right, appends the
  remaining pieces with the finished audio track's packets, and moves the file to the
  playable MP4's key: the work left after the end is the last pieces, not the session.
  Anything unexpected (no piece appended, a copy that is not exact, a torn description)
  makes the stage merge in one run, and its result says why.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from shared.atomicfile import temp_path
from shared.segments import SegmentKind
from shared.settings import Settings
from shared.storage import Storage
from workers.media.aacchunk import ChunkStore, encoder_params
from workers.media.aacplan import ChunkGrid, plan_audio, plan_chunks
from workers.media.assemble import (
    AacConfig,
    appended,
    index_reservation,
    mux_piece,
    write_index,
)
from workers.media.fragment import FragmentError, boxes, timescales
from workers.media.probe import open_input
from workers.media.timeline import PlacedSegment, Timeline
from workers.stages.audio import audio_chunk_store
from workers.stages.context import SessionSnapshot

log = logging.getLogger(__name__)

ASSEMBLY_DIR: Final = "assembly"
FILE_NAME: Final = "playable.mp4"
DESCRIPTION_NAME: Final = "playable.json"
FORMAT: Final = 1  # of the description; another one is discarded
#: Placements equal within this many seconds are the same (float noise).
SAME_S: Final = 1e-6
AUDIO_LAYOUT: Final = "stereo"  # as the chunks are encoded (workers.stages.audio)
FIRST_SEQUENCE: Final = 1
#: The finished track is read from this far before the first sample still to append, so a
#: seek that lands on a packet boundary before it misses nothing (seconds).
AUDIO_SEEK_MARGIN_S: Final = 2.0


class AssemblyUnusable(Exception):
    """The assembled file cannot become the playable MP4; the stage merges in one run."""


class _NotYet(Exception):
    """The session has audio whose stream configuration is not stored yet: wait."""


@dataclass
class PieceRecord:
    """What one appended piece holds, as the description records it."""

    segment: str  # the segment's storage path
    sha256: str
    placement: list[float]  # start, end, trim_start, out_start of the placed segment
    until: float  # output second its last frame lasts to
    audio_from: int | None  # first sample (None: from the start, the priming included)
    audio_until: int | None  # first sample not in it (None: to the end)
    chunks: list[str]  # signatures of the audio chunks its packets came from
    packets: int  # video packets in it
    end: int  # bytes of the file once it was appended


@dataclass
class Description:
    """The assembled file's description (``playable.json``)."""

    audio: dict[str, Any] | None  # AacConfig with hex extradata; None: video only
    first: dict[str, int] = field(default_factory=dict)  # track id -> first piece's start
    sequence: int = FIRST_SEQUENCE  # next fragment sequence number
    pieces: list[PieceRecord] = field(default_factory=list)
    index_at: int = 0  # where the space reserved for the index starts (bytes)
    index_size: int = 0
    format: int = FORMAT

    @classmethod
    def load(cls, path: Path) -> Description | None:
        try:
            data = json.loads(path.read_bytes())
            if data.get("format") != FORMAT:
                return None
            return cls(
                audio=data["audio"],
                first={str(k): int(v) for k, v in data["first"].items()},
                sequence=int(data["sequence"]),
                pieces=[PieceRecord(**p) for p in data["pieces"]],
                index_at=int(data["index_at"]),
                index_size=int(data["index_size"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, path: Path) -> None:
        tmp = temp_path(path)
        try:
            tmp.write_text(json.dumps(asdict(self)), encoding="utf-8")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    @property
    def size(self) -> int:
        return self.pieces[-1].end if self.pieces else 0


def folder(storage: Storage, session_id: str) -> Path:
    return storage.output_path(storage.derived_key(session_id, ASSEMBLY_DIR))


def discard(storage: Storage, session_id: str) -> None:
    """Delete a session's assembly (it failed; a retry merges again)."""
    shutil.rmtree(folder(storage, session_id), ignore_errors=True)


# -- the plan of pieces -------------------------------------------------------------------------
@dataclass(frozen=True)
class PlannedPiece:
    """A piece as the session is now: which segment, until when, which audio."""

    segment: PlacedSegment
    sha256: str
    until: float
    audio_from: int | None
    audio_until: int | None

    def same_as(self, record: PieceRecord) -> bool:
        placement = _placement(self.segment)
        return (
            record.segment == self.segment.path
            and record.sha256 == self.sha256
            and all(abs(a - b) <= SAME_S for a, b in zip(record.placement, placement, strict=True))
            and abs(record.until - self.until) <= SAME_S
            and record.audio_from == self.audio_from
            and record.audio_until == self.audio_until
        )


def _placement(segment: PlacedSegment) -> list[float]:
    return [segment.start, segment.end, segment.trim_start, segment.out_start]


def plan_pieces(
    timeline: Timeline, identities: dict[str, str], rate: int, *, final: bool
) -> list[PlannedPiece]:
    """The pieces of ``timeline``: every video segment's when ``final``, else all but the
    last (its end, and what follows it, are not known yet)."""
    video = [s for s in timeline.of_kind(SegmentKind.VIDEO) if timeline.kept_parts(s)]
    planned: list[PlannedPiece] = []
    audio_from: int | None = None
    for index, segment in enumerate(video):
        last = index == len(video) - 1
        if last and not final:
            break
        until = timeline.duration if last else video[index + 1].out_start
        audio_until = None if last else round(until * rate)
        planned.append(
            PlannedPiece(segment, identities.get(segment.path, ""), until, audio_from, audio_until)
        )
        audio_from = audio_until
    return planned


def _valid_prefix(description: Description, planned: list[PlannedPiece],
                  signatures: Callable[[PlannedPiece], list[str] | None]) -> int:  # fmt: skip
    """How many recorded pieces still hold: the same plan, the same audio signatures."""
    count = 0
    for record, piece in zip(description.pieces, planned, strict=False):
        if not piece.same_as(record) or signatures(piece) != record.chunks:
            break
        count += 1
    return count


def _cut_back(path: Path, description: Description, keep: int) -> None:
    """Keep the first ``keep`` pieces; the file is cut to their end."""
    del description.pieces[keep:]
    if not description.pieces:
        description.first = {}
        description.sequence = FIRST_SEQUENCE
    with open(path, "ab") as handle:
        handle.truncate(description.size)


# -- while recording: the chunk pass appends what is ready --------------------------------------
def append_ready(
    settings: Settings,
    snapshot: SessionSnapshot,
    timeline: Timeline,
    keep_going: Callable[[], bool],
) -> int:
    """Append every piece that is final now (the caller holds the chunk lock); how many.

    ``keep_going`` is asked before each append (False: the stage took over, stop).
    """
    storage = Storage(settings.storage)
    identities = _identities(storage, snapshot)
    rate = settings.audio_sample_rate
    planned = plan_pieces(timeline, identities, rate, final=False)
    if not planned:
        return 0
    audio = _ChunkAudio(settings, snapshot, storage, timeline, identities)
    try:
        return _append(storage, snapshot.id, timeline, planned, audio, keep_going)
    except _NotYet:
        return 0


def _append(
    storage: Storage,
    session_id: str,
    timeline: Timeline,
    planned: list[PlannedPiece],
    audio: _AudioSource,
    keep_going: Callable[[], bool],
) -> int:
    where = folder(storage, session_id)
    where.mkdir(parents=True, exist_ok=True)
    path, described = where / FILE_NAME, where / DESCRIPTION_NAME
    description = Description.load(described)
    config = audio.config()
    config_json = _config_json(config)
    if description is None or description.audio != config_json or not path.is_file():
        description = Description(audio=config_json)
        path.write_bytes(b"")
    keep = _valid_prefix(description, planned, audio.signatures)
    if keep < len(description.pieces) or path.stat().st_size != description.size:
        _cut_back(path, description, keep)
        description.save(described)
    done = 0
    for piece in planned[keep:]:
        packets = audio.packets(piece)
        if packets is None:  # its audio has not settled yet
            break
        chunks = audio.signatures(piece) or []
        muxed = mux_piece(timeline, piece.segment, until=piece.until, audio=config,
                          packets=packets, work=where / "piece.mp4")  # fmt: skip
        if not description.pieces:  # it opens the file: its init segment, kept as written,
            # then the space for the index (workers.media.assemble.write_index)
            description.first = {str(k): v for k, v in muxed.starts.items()}
            fragments = sum(1 for _ in _moofs(muxed.media))
            seconds = max(1.0, piece.until - piece.segment.out_start)
            reserved = index_reservation(fragments / seconds, len(muxed.starts))
            data = muxed.init + reserved + muxed.media
            description.index_at, description.index_size = len(muxed.init), len(reserved)
            description.sequence = FIRST_SEQUENCE + fragments
        else:
            first = {int(k): v for k, v in description.first.items()}
            data, count = appended(muxed, first, description.sequence)
            description.sequence += count
        if not keep_going():
            return done
        with open(path, "ab") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        description.pieces.append(PieceRecord(
            segment=piece.segment.path, sha256=piece.sha256,
            placement=_placement(piece.segment), until=piece.until,
            audio_from=piece.audio_from, audio_until=piece.audio_until,
            chunks=chunks, packets=muxed.packets, end=description.size + len(data),
        ))  # fmt: skip
        description.save(described)
        done += 1
    return done


def _moofs(media: bytes) -> Iterator[int]:
    for box in boxes(media):
        if box.type == "moof":
            yield box.start


def _config_json(config: AacConfig | None) -> dict[str, Any] | None:
    if config is None:
        return None
    return {"rate": config.rate, "layout": config.layout, "bitrate": config.bitrate,
            "extradata": config.extradata.hex()}  # fmt: skip


# -- audio for the pieces -----------------------------------------------------------------------
class _AudioSource(Protocol):
    """Where a piece's AAC packets come from: the stored chunks while recording
    (:class:`_ChunkAudio`), the finished track at the end (:class:`_TrackAudio`)."""

    def config(self) -> AacConfig | None:
        """The stream's configuration; None without audio."""

    def packets(self, piece: PlannedPiece) -> list[tuple[int, int, bytes]] | None:
        """The piece's (pts, duration, payload); None while they are not final."""

    def signatures(self, piece: PlannedPiece) -> list[str] | None:
        """Signatures of the chunks its audio comes from (what must not have changed)."""


def _in(piece: PlannedPiece, pts: int) -> bool:
    low = -math.inf if piece.audio_from is None else piece.audio_from
    high = math.inf if piece.audio_until is None else piece.audio_until
    return low <= pts < high


class _ChunkAudio:
    """While recording: the stored (settled) chunks; None while one is missing."""

    def __init__(self, settings: Settings, snapshot: SessionSnapshot, storage: Storage,
                 timeline: Timeline, identities: dict[str, str]) -> None:  # fmt: skip
        self.rate = settings.audio_sample_rate
        self.bitrate = settings.audio_bitrate
        self.has_audio = timeline.has_audio
        plan = plan_audio(timeline, self.rate, identities)
        params = encoder_params(self.rate, AUDIO_LAYOUT, self.bitrate, settings.audio_aac_coder)
        grid = ChunkGrid.for_seconds(settings.audio_chunk_s, self.rate)
        self.chunks = plan_chunks(plan, grid, params)
        self.store: ChunkStore = audio_chunk_store(snapshot, storage)
        self._extradata: bytes | None = None

    def _covering(self, piece: PlannedPiece) -> list[Any]:
        low = -math.inf if piece.audio_from is None else piece.audio_from
        high = math.inf if piece.audio_until is None else piece.audio_until
        return [c for c in self.chunks if c.end > low and c.start < high]

    def config(self) -> AacConfig | None:
        if not self.has_audio:
            return None
        if self._extradata is None and self.chunks:
            first = self.store.load(self.chunks[0])
            self._extradata = first.extradata if first is not None else None
        if self._extradata is None:
            raise _NotYet("the first audio chunk is not stored yet")
        return AacConfig(self.rate, AUDIO_LAYOUT, self.bitrate, self._extradata)

    def signatures(self, piece: PlannedPiece) -> list[str] | None:
        return [c.signature for c in self._covering(piece)] if self.has_audio else []

    def packets(self, piece: PlannedPiece) -> list[tuple[int, int, bytes]] | None:
        if not self.has_audio:
            return []
        found: list[tuple[int, int, bytes]] = []
        for chunk in self._covering(piece):
            if chunk.last:
                return None  # the track's last chunk is never settled while recording
            encoded = self.store.load(chunk)
            if encoded is None:
                return None
            found.extend(
                (p, d, b) for p, d, b in zip(encoded.pts, encoded.durations, encoded.payloads,
                                             strict=True) if _in(piece, p)
            )  # fmt: skip
        return found


class _TrackAudio:
    """At the end: the finished audio track's packets (the chunks' very packets)."""

    def __init__(self, settings: Settings, snapshot: SessionSnapshot, storage: Storage,
                 timeline: Timeline, identities: dict[str, str],
                 track: Path | None) -> None:  # fmt: skip
        self.track = track
        self.chunked = _ChunkAudio(settings, snapshot, storage, timeline, identities)
        self.rate = settings.audio_sample_rate
        self.bitrate = settings.audio_bitrate
        self._extradata: bytes | None = None
        self._from: int | None = None
        self._packets: list[tuple[int, int, bytes]] = []

    def config(self) -> AacConfig | None:
        if self.track is None:
            return None
        if self._extradata is None:
            with open_input(self.track) as container:
                self._extradata = bytes(container.streams.audio[0].codec_context.extradata or b"")
        return AacConfig(self.rate, AUDIO_LAYOUT, self.bitrate, self._extradata)

    def signatures(self, piece: PlannedPiece) -> list[str] | None:
        return self.chunked.signatures(piece) if self.track is not None else []

    def load_from(self, sample: int | None) -> None:
        """Read the track's packets from ``sample`` on (None: all of them), once."""
        if self.track is None:
            return
        with open_input(self.track) as container:
            stream = container.streams.audio[0]
            tb = stream.time_base
            assert tb is not None
            if sample is not None:
                seconds = max(0.0, sample / self.rate - AUDIO_SEEK_MARGIN_S)
                container.seek(int(seconds / tb), stream=stream, backward=True)
            scale = tb * self.rate
            self._packets = [
                (int(p.pts * scale), int((p.duration or 0) * scale), bytes(p))
                for p in container.demux(stream)
                if p.pts is not None and p.size and (sample is None or p.pts * scale >= sample)
            ]
        self._from = sample

    def packets(self, piece: PlannedPiece) -> list[tuple[int, int, bytes]] | None:
        if self.track is None:
            return []
        return [p for p in self._packets if _in(piece, p[0])]


# -- at the end: the merge stage finishes the file --------------------------------------------
@dataclass(frozen=True)
class Finished:
    """The playable MP4, finished from the assembly."""

    path: Path
    pieces: int  # in all
    appended_before: int  # while recording (reused as they were)
    packets: int  # video packets in the file
    indexed: bool  # a sidx per track (else players read every fragment to seek)


def finish(
    settings: Settings,
    snapshot: SessionSnapshot,
    timeline: Timeline,
    audio_track: Path | None,
    output: Path,
) -> Finished:
    """Finish the assembled file into ``output``; AssemblyUnusable when it cannot serve."""
    storage = Storage(settings.storage)
    where = folder(storage, snapshot.id)
    description = Description.load(where / DESCRIPTION_NAME)
    if description is None or not description.pieces:
        raise AssemblyUnusable("no piece of the playable MP4 was assembled while recording")
    identities = _identities(storage, snapshot)
    planned = plan_pieces(timeline, identities, settings.audio_sample_rate, final=True)
    audio = _TrackAudio(settings, snapshot, storage, timeline, identities, audio_track)
    keep = _valid_prefix(description, planned, audio.signatures)
    if keep == 0:
        raise AssemblyUnusable("the pieces assembled while recording no longer match")
    remaining = planned[keep:]
    if remaining:
        audio.load_from(remaining[0].audio_from)
    try:
        _append(storage, snapshot.id, timeline, planned, audio, lambda: True)
    except FragmentError as exc:
        raise AssemblyUnusable(f"the assembled file is not as described: {exc}") from exc
    final = Description.load(where / DESCRIPTION_NAME)
    if final is None or len(final.pieces) != len(planned):
        raise AssemblyUnusable("the assembly stopped short of the last piece")
    path = where / FILE_NAME
    with open(path, "rb") as handle:
        scales = timescales(handle.read(final.index_at))
    indexed = write_index(path, final.index_at, final.index_size, scales)
    if not indexed:
        log.warning("playable MP4 of %s: too many fragments for its index", snapshot.id)
    output.parent.mkdir(parents=True, exist_ok=True)
    os.replace(where / FILE_NAME, output)
    shutil.rmtree(where, ignore_errors=True)
    return Finished(path=output, pieces=len(planned), appended_before=keep,
                    packets=sum(p.packets for p in final.pieces), indexed=indexed)  # fmt: skip


def _identities(storage: Storage, snapshot: SessionSnapshot) -> dict[str, str]:
    """Each stored segment's local path and content hash (every pass looks them all up, so
    each folder is checked once)."""
    folders: dict[str, Path] = {}
    return {str(storage.path(r.storage_key, folders=folders)): r.sha256 for r in snapshot.segments}
