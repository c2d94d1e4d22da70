"""Making one live fragment of a session's video segment (the rules: ``workers.live``)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from shared import models
from shared.atomicfile import temp_path
from shared.db import session_scope
from shared.segments import SegmentKind
from shared.settings import Settings
from shared.storage import Storage
from workers import live
from workers.live import DESCRIPTION_SUFFIX, INIT_SUFFIX, MEDIA_SUFFIX, SEQUENCE_STEP, live_key
from workers.media.aacchunk import ChunkStore, EncodedChunk, encode_chunk, encoder_params
from workers.media.aacplan import ChunkGrid, plan_audio, plan_chunks
from workers.media.fragment import (
    AudioPackets,
    LiveFragment,
    segment_span,
    write_live_fragment,
)
from workers.media.timeline import PlacedSegment, Timeline
from workers.snapshot import load_snapshot, remember_probes
from workers.stages.audio import audio_chunk_store, segment_identities
from workers.stages.context import SessionSnapshot, build_timeline


def make(settings: Settings, session_id: str, segment_file: str) -> str:
    """What the task does: write the live fragment of one stored video segment; a short
    outcome for the log. MediaError (a broken segment) propagates: the task logs it."""
    with session_scope(settings.database_url) as db:
        session = db.get(models.Session, session_id)
        if session is None:
            return f"skipped: unknown session {session_id!r}"
        if session.status == models.SessionStatus.FAILED.value:
            return "skipped: the session failed"
        if session.status != models.SessionStatus.RECORDING.value and _finishing(db, session_id):
            return "skipped: the session is being finalized"
        snapshot = load_snapshot(db, session)
    ref = next((s for s in snapshot.segments if s.file == segment_file), None)
    if ref is None:
        return f"skipped: no segment {segment_file!r} in session {session_id!r}"
    if ref.kind != SegmentKind.VIDEO:
        return f"skipped: {segment_file!r} is not a video segment"
    storage = Storage(settings.storage)
    folder = storage.output_path(live_key(storage, session_id))
    stem = f"{Path(segment_file).stem}-{ref.sha256[:16]}"
    if (folder / f"{stem}{DESCRIPTION_SUFFIX}").is_file():
        return "done already"
    probed: dict[str, float] = {}
    timeline = build_timeline(snapshot, storage, cut_pauses=settings.cut_pauses, probed=probed)
    remember_probes(settings.database_url, session_id, probed)
    path = str(storage.path(ref.storage_key))
    video = timeline.of_kind(SegmentKind.VIDEO)
    position = next((i for i, s in enumerate(video) if s.path == path), None)
    if position is None:
        return f"skipped: {segment_file!r} has no place on the timeline"
    audio = _audio_packets(settings, timeline, snapshot, storage, video[position])
    fragment = write_live_fragment(
        timeline, video[position], audio, folder, sequence=1 + position * SEQUENCE_STEP
    )
    if fragment is None:
        return "skipped: nothing of the segment is kept"
    _store(folder, stem, segment_file, fragment)
    # It may have come after finalize deleted the live view: then it goes too. Looked at
    # after the write, so whichever of the two is last deletes (the finalize job exists
    # before finalize runs).
    with session_scope(settings.database_url) as db:
        late = _finishing(db, session_id)
    if late:
        live.discard(storage, session_id)
        return "made, then discarded: the session is being finalized"
    return f"made {fragment.start:.3f}-{fragment.end:.3f} s"


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
    segment: PlacedSegment,
) -> AudioPackets | None:
    """The AAC packets of the segment's stretch: stored chunks, the rest encoded now."""
    span = segment_span(timeline, segment)
    if span is None:
        return None
    # Without audio yet (or at all) the plan is silence: every fragment has both tracks,
    # so one init segment serves them all (a player cannot add a track midway).
    rate = settings.audio_sample_rate
    lo, hi = round(span[0] * rate), round(span[1] * rate)
    plan = plan_audio(timeline, rate, segment_identities(snapshot, storage))
    params = encoder_params(rate, "stereo", settings.audio_bitrate, settings.audio_aac_coder)
    grid = ChunkGrid.for_seconds(settings.audio_chunk_s, rate)
    store: ChunkStore = audio_chunk_store(snapshot, storage)
    packets: list[tuple[int, int, bytes]] = []
    extradata = b""
    # Grid chunks, stored ones as they are and the rest encoded the same way (the encoder is
    # deterministic): where the audio does not change any more, these are the finished
    # track's very packets.
    for chunk in plan_chunks(plan, grid, params):
        if chunk.end <= lo or chunk.start >= hi:
            continue
        encoded = store.load(chunk) or encode_chunk(plan, chunk, params)
        extradata = encoded.extradata
        packets.extend(_within(encoded, lo, hi))
    if not packets:
        return None
    return AudioPackets(
        rate=rate,
        layout="stereo",
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
