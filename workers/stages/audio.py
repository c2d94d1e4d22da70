"""The ``concat_audio`` stage: the session's audio track, and its chunks while it records."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared.segments import SegmentKind
from shared.settings import Settings
from shared.storage import Storage
from workers.media import (
    ChunkedAudioResult,
    ChunkStore,
    IncrementalResult,
    MediaError,
    concat_audio_chunked,
    encode_settled_chunks,
)
from workers.stages.context import SessionSnapshot, StageContext, StageOutput, build_timeline

AUDIO_OUTPUT = "audio.m4a"
AUDIO_CHUNKS_DIR = "audio-chunks"  # under derived/: chunks encoded while recording
AUDIO_ONLY = frozenset({"audio"})


def segment_identities(snapshot: SessionSnapshot, storage: Storage) -> dict[str, str]:
    """Path -> sha256 of every segment: what chunk signatures use as the file's identity."""
    return {str(storage.path(ref.storage_key)): ref.sha256 for ref in snapshot.segments}


def audio_chunk_store(snapshot: SessionSnapshot, storage: Storage) -> ChunkStore:
    return ChunkStore(storage.output_path(storage.derived_key(snapshot.id, AUDIO_CHUNKS_DIR)))


def encode_audio_chunks(
    snapshot: SessionSnapshot,
    settings: Settings,
    keep_going: Callable[[], bool],
    probed: dict[str, float] | None = None,
) -> IncrementalResult:
    """While recording: encode the chunks of audio that can no longer change, and store them.

    Purely an optimisation for the stage, which reuses every stored chunk whose signature
    still matches and encodes the rest (see build_timeline for ``probed``).
    """
    storage = Storage(settings.storage)
    timeline = build_timeline(
        snapshot, storage, cut_pauses=settings.cut_pauses, needed=AUDIO_ONLY, probed=probed
    )
    return encode_settled_chunks(
        timeline,
        audio_chunk_store(snapshot, storage),
        sample_rate=settings.audio_sample_rate,
        bitrate=settings.audio_bitrate,
        aac_coder=settings.audio_aac_coder,
        chunk_seconds=settings.audio_chunk_s,
        identities=segment_identities(snapshot, storage),
        keep_going=keep_going,
    )


def build_audio(ctx: StageContext) -> StageOutput:
    """The session's audio track: stored chunks reused, the rest encoded in parallel, remuxed.

    The chunk folder is removed afterwards, and after a failure caused by the input (which
    a retry cannot fix), so only ``audio.m4a`` stays in the derived folder.
    """
    snapshot, storage, settings = ctx.snapshot, ctx.storage, ctx.settings
    store = audio_chunk_store(snapshot, storage)
    key = storage.derived_key(snapshot.id, AUDIO_OUTPUT)
    try:
        timeline = build_timeline(
            snapshot, storage, cut_pauses=settings.cut_pauses, needed=AUDIO_ONLY, probed=ctx.probed
        )
        if not timeline.has_audio:
            ctx.wait_for_writers()
            store.clear()
            return StageOutput.skipped("session has no audio segments")
        out = concat_audio_chunked(
            timeline,
            storage.output_path(key),
            sample_rate=settings.audio_sample_rate,
            bitrate=settings.audio_bitrate,
            progress=ctx.progress,
            aac_coder=settings.audio_aac_coder,
            workers=settings.audio_workers,
            chunk_seconds=settings.audio_chunk_s,
            store=store,
            identities=segment_identities(snapshot, storage),
        )
    except (MediaError, ValueError):
        ctx.wait_for_writers()
        store.clear()
        raise
    ctx.wait_for_writers()
    store.clear()
    result: dict[str, Any] = {
        "duration": out.duration,
        "segments": len(timeline.of_kind(SegmentKind.AUDIO)),
        "cuts": [list(c) for c in timeline.cuts],
    }
    if isinstance(out, ChunkedAudioResult):
        result["chunks"] = {"total": out.chunks, "reused": out.reused, "encoded": out.encoded}
    return StageOutput(output_key=key, result=result)
