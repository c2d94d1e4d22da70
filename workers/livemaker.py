"""Making a session's live fragments (the rules: ``workers.live``).

Every stored segment of a session that records (video or microphone) and the end of its
recording ask for a *live pass*: it writes the fragment of every stored video segment that
has none yet and is due, i.e. the microphone audio of its stretch is stored too (or has
been waited for long enough, ``AUDIO_WAIT_SEGMENTS``, or the recorder said it ended). Its audio is
the recorder's own AAC packets, copied (``workers.media.liveaudio``): a pass costs a remux,
never an encode, so the view keeps up with the recorder on a busy machine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Final

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from shared import models
from shared.atomicfile import temp_path
from shared.db import session_scope
from shared.segments import SegmentKind
from shared.settings import Settings
from shared.storage import Storage
from workers import live
from workers.live import (
    DESCRIPTION_SUFFIX,
    HOLE_S,
    INIT_SUFFIX,
    MEDIA_SUFFIX,
    SEQUENCE_STEP,
    live_key,
)
from workers.media import MediaError
from workers.media.aacchunk import ChunkStore, EncodedChunk, encode_chunk, encoder_params
from workers.media.aacplan import ChunkGrid, plan_audio, plan_chunks
from workers.media.fragment import (
    AudioPackets,
    LiveFragment,
    segment_span,
    write_live_fragment,
)
from workers.media.liveaudio import (
    AacConfig,
    as_tuples,
    lay_out,
    recorded_packets,
    silent_frame,
    view_config,
)
from workers.media.timeline import Timeline
from workers.media.videocopy import CopyNotExact
from workers.snapshot import load_snapshot, remember_probes
from workers.stages.audio import audio_chunk_store, segment_identities
from workers.stages.context import SessionSnapshot, build_timeline

log = logging.getLogger(__name__)

#: The layout of the output's audio (the finished track is stereo).
OUTPUT_LAYOUT: Final = "stereo"

#: A video segment's fragment waits for the microphone audio of its stretch (its own
#: segment is usually stored within a second of it); once this many later video segments
#: are stored without that audio, it is made with silence there (the audio is late, or
#: never comes), so the view trails the recorder by at most this many segments.
AUDIO_WAIT_SEGMENTS: Final = 2


def make(settings: Settings, session_id: str) -> str:
    """What the task does: write every live fragment that is due now; a short outcome for
    the log. A segment that cannot be copied is logged and skipped: a view only."""
    with session_scope(settings.database_url) as db:
        session = db.get(models.Session, session_id)
        if session is None:
            return f"skipped: unknown session {session_id!r}"
        if session.status == models.SessionStatus.FAILED.value:
            return "skipped: the session failed"
        recording = session.status == models.SessionStatus.RECORDING.value
        if not recording and _finishing(db, session_id):
            return "skipped: the session is being finalized"
        # Once the recorder said it ended, nothing waits: what is stored is all there is to
        # show (a segment still in flight is made the moment it is stored).
        waiting = recording and session.ended_at is None
        snapshot = load_snapshot(db, session)
    storage = Storage(settings.storage)
    folder = storage.output_path(live_key(storage, session_id))
    folders: dict[str, Path] = {}  # each folder checked once: this runs on every pass
    refs = {str(storage.path(s.storage_key, folders=folders)): s for s in snapshot.segments
            if s.kind == SegmentKind.VIDEO}  # fmt: skip
    stems = {path: f"{Path(s.file).stem}-{s.sha256[:16]}" for path, s in refs.items()}
    if all((folder / f"{stem}{DESCRIPTION_SUFFIX}").is_file() for stem in stems.values()):
        return "nothing due" if stems else "no video segment yet"
    probed: dict[str, float] = {}
    timeline = build_timeline(snapshot, storage, cut_pauses=settings.cut_pauses, probed=probed)
    remember_probes(settings.database_url, session_id, probed)
    video = timeline.of_kind(SegmentKind.VIDEO)
    outcomes: list[str] = []
    for position, segment in enumerate(video):
        stem = stems.get(segment.path)
        if stem is None or (folder / f"{stem}{DESCRIPTION_SUFFIX}").is_file():
            continue
        span = segment_span(timeline, segment)
        if span is None:
            continue  # nothing of it is kept (inside a pause)
        if waiting and not _audio_due(timeline, span, later=len(video) - 1 - position):
            outcomes.append(f"{refs[segment.path].file} waits for its audio")
            continue
        name = refs[segment.path].file
        try:
            audio = _audio_packets(settings, timeline, snapshot, storage, span)
            fragment = write_live_fragment(
                timeline, segment, audio, folder, sequence=1 + position * SEQUENCE_STEP
            )
        except (MediaError, CopyNotExact) as exc:  # the stages report a broken segment
            log.warning("live fragment of %s in %s failed: %s", name, session_id, exc)
            outcomes.append(f"{name} failed: {exc}")
            continue
        if fragment is not None:
            _store(folder, stem, name, fragment)
            outcomes.append(f"made {fragment.start:.3f}-{fragment.end:.3f} s")
    if not outcomes:
        return "nothing due"
    # One may have come after finalize deleted the live view: then it goes too. Looked at
    # after the write, so whichever of the two is last deletes (the finalize job exists
    # before finalize runs).
    with session_scope(settings.database_url) as db:
        late = _finishing(db, session_id)
    if late:
        live.discard(storage, session_id)
        return "made, then discarded: the session is being finalized"
    return "; ".join(outcomes)


def _audio_due(timeline: Timeline, span: tuple[float, float], *, later: int) -> bool:
    """Whether a fragment of a session still recording is made now: the microphone audio
    of its stretch is stored, or it waited ``AUDIO_WAIT_SEGMENTS`` (also when no audio
    segment is stored at all: the microphone may only be late, and a view whose audio
    format changed after its first fragments would start again at a discontinuity)."""
    ends = [p.out_start + p.duration for s in timeline.of_kind(SegmentKind.AUDIO)
            for p in timeline.kept_parts(s)]  # fmt: skip
    covered = bool(ends) and max(ends) >= span[1] - HOLE_S
    return covered or later >= AUDIO_WAIT_SEGMENTS


def _finishing(db: DbSession, session_id: str) -> bool:
    """The finalize stage has its job (it deletes the live view; the MP4 exists by then)."""
    return (
        db.execute(
            select(models.Job.id).where(
                models.Job.session_id == session_id, models.Job.stage == "finalize"
            )
        ).first()
        is not None
    )


def _audio_packets(
    settings: Settings,
    timeline: Timeline,
    snapshot: SessionSnapshot,
    storage: Storage,
    span: tuple[float, float],
) -> AudioPackets:
    """The audio of the stretch: the recorder's AAC packets copied, silence where there is
    none (``workers.media.liveaudio``). A session whose microphone is not AAC has its
    stretch encoded instead."""
    lo_s, hi_s = span
    config = view_config(timeline)
    if config is None and timeline.has_audio:
        return _encoded_packets(settings, timeline, snapshot, storage, span)
    if config is None:  # no microphone audio stored yet: silence, the output's format
        silence = silent_frame(settings.audio_sample_rate, OUTPUT_LAYOUT, settings.audio_bitrate)
        config = AacConfig(settings.audio_sample_rate, OUTPUT_LAYOUT, silence.extradata)
    else:
        silence = silent_frame(config.rate, config.layout, settings.audio_bitrate)
    copied = [
        packet
        for segment in timeline.of_kind(SegmentKind.AUDIO)
        for packet in recorded_packets(timeline, segment, config, lo_s, hi_s)
    ]
    laid = lay_out(copied, round(lo_s * config.rate), round(hi_s * config.rate), silence.frame)
    return AudioPackets(
        rate=config.rate,
        layout=config.layout,
        bitrate=settings.audio_bitrate,
        extradata=config.extradata,
        packets=as_tuples(laid),
    )


def _encoded_packets(
    settings: Settings,
    timeline: Timeline,
    snapshot: SessionSnapshot,
    storage: Storage,
    span: tuple[float, float],
) -> AudioPackets:
    """The stretch's audio encoded in the output's format (a microphone that is not AAC):
    stored chunks as they are, the rest encoded the same deterministic way."""
    rate = settings.audio_sample_rate
    lo, hi = round(span[0] * rate), round(span[1] * rate)
    plan = plan_audio(timeline, rate, segment_identities(snapshot, storage))
    params = encoder_params(rate, OUTPUT_LAYOUT, settings.audio_bitrate, settings.audio_aac_coder)
    grid = ChunkGrid.for_seconds(settings.audio_chunk_s, rate)
    store: ChunkStore = audio_chunk_store(snapshot, storage)
    packets: list[tuple[int, int, bytes]] = []
    extradata = b""
    for chunk in plan_chunks(plan, grid, params):
        if chunk.end <= lo or chunk.start >= hi:
            continue
        encoded = store.load(chunk) or encode_chunk(plan, chunk, params)
        extradata = encoded.extradata
        packets.extend(_within(encoded, lo, hi))
    return AudioPackets(
        rate=rate,
        layout=OUTPUT_LAYOUT,
        bitrate=settings.audio_bitrate,
        extradata=extradata,
        packets=packets,
    )


def _within(encoded: EncodedChunk, lo: int, hi: int) -> list[tuple[int, int, bytes]]:
    """The chunk's packets whose timestamps fall in [lo, hi)."""
    return [
        (pts, duration, payload)
        for pts, duration, payload in zip(
            encoded.pts, encoded.durations, encoded.payloads, strict=True
        )
        if lo <= pts < hi
    ]


def _store(folder: Path, stem: str, segment_file: str, fragment: LiveFragment) -> None:
    """Write the fragment's files whole, its description last."""
    init_name = f"{hashlib.sha256(fragment.init).hexdigest()[:16]}{INIT_SUFFIX}"
    media_name = f"{stem}{MEDIA_SUFFIX}"
    _write(folder / init_name, fragment.init)
    _write(folder / media_name, fragment.media)
    description = {
        "segment": segment_file,
        "start": fragment.start,
        "end": fragment.end,
        "media": media_name,
        "init": init_name,
        "codecs": fragment.codecs,
    }
    _write(folder / f"{stem}{DESCRIPTION_SUFFIX}", json.dumps(description).encode())


def _write(path: Path, data: bytes) -> None:
    tmp = temp_path(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
