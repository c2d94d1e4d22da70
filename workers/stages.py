"""What each stage does, given a session snapshot: I/O around the pure media engine.

No Celery here: ``workers.tasks`` wraps these with claiming, retries and progress.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

from shared.settings import Settings
from shared.storage import Storage, sha256_file
from workers.media.aacchunk import (
    ChunkedAudioResult,
    ChunkStore,
    IncrementalResult,
    concat_audio_chunked,
    encode_settled_chunks,
)
from workers.media.errors import MediaError
from workers.media.probe import probe
from workers.media.timeline import Kind, SegmentInput, Timeline, plan_timeline

AUDIO_OUTPUT = "audio.m4a"
AUDIO_CHUNKS_DIR = "audio-chunks"  # under derived/: chunks encoded while recording
MANIFEST_OUTPUT = "outputs.json"
PROBE_CACHE_ENTRIES = 4096  # probed files remembered per process (chunk passes re-plan often)
ProgressFn = Callable[[float], None]


def merged_output_name(session_id: str) -> str:
    return f"{session_id}.mp4"


@dataclass(frozen=True)
class SegmentRef:
    kind: str
    file: str
    storage_key: str
    sha256: str
    started_at: datetime | None
    duration: float | None
    probed_duration: float | None = None  # remembered from an earlier probe of the file


@dataclass(frozen=True)
class SessionSnapshot:
    id: str
    started_at: datetime | None
    segments: tuple[SegmentRef, ...]
    pauses: tuple[tuple[datetime, datetime], ...] = ()


@dataclass
class StageOutput:
    output_key: str | None
    result: dict[str, Any] = field(default_factory=dict)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@lru_cache(maxsize=PROBE_CACHE_ENTRIES)
def _probed_duration(path: str, size: int, mtime_ns: int) -> float:
    """Probe once per file version: chunk passes re-plan the session for every segment."""
    return probe(Path(path)).duration


def probe_duration(path: Path) -> float:
    """Duration of a stored segment, from the per-process cache when the file is unchanged."""
    try:
        stat = path.stat()
    except OSError:
        return probe(path).duration  # raises the MediaError naming the file
    return _probed_duration(str(path), stat.st_size, stat.st_mtime_ns)


def build_timeline(
    snapshot: SessionSnapshot,
    storage: Storage,
    *,
    cut_pauses: bool,
    needed: frozenset[str] = frozenset({"audio", "video"}),
    probed: dict[str, float] | None = None,
) -> Timeline:
    """Resolve and probe every segment, then plan where it goes on the output timeline.

    Segments of a kind the stage does not read (``needed``) only shape the timeline (where
    pauses are): a broken one there falls back to its declared duration, so the stage that
    reads it is the one that fails and names it. A segment probed before (its
    ``probed_duration``) is not probed again: probing every video file after the session
    ends would take seconds. New probe results are added to ``probed`` (storage key ->
    seconds) for the caller to remember; the stage that reads a file still checks it whole.
    """
    origin = _aware(snapshot.started_at) if snapshot.started_at else None
    inputs: list[SegmentInput] = []
    for ref in snapshot.segments:
        path = storage.path(ref.storage_key)
        if not path.is_file():
            raise MediaError(
                f"segment {ref.file!r} is missing from storage ({ref.storage_key})", path=ref.file
            )
        measured = ref.probed_duration
        if measured is None:
            try:
                measured = probe_duration(path)
            except MediaError:
                if ref.kind in needed or ref.duration is None:
                    raise
                measured = ref.duration
            else:
                if probed is not None:
                    probed[ref.storage_key] = measured
        duration = measured if ref.duration is None else min(ref.duration, measured)
        offset: float | None = None
        if ref.started_at is not None and origin is not None:
            offset = max(0.0, (_aware(ref.started_at) - origin).total_seconds())
        inputs.append(
            SegmentInput(
                kind=cast(Kind, ref.kind),
                path=str(path),
                started_at=offset,
                duration=max(0.0, duration),
            )
        )
    pauses = []
    if origin is not None:
        # Clock skew must not fail a session: clip to its start, drop inverted intervals.
        for a, b in snapshot.pauses:
            start = max(0.0, (_aware(a) - origin).total_seconds())
            end = max(0.0, (_aware(b) - origin).total_seconds())
            if end > start:
                pauses.append((start, end))
    return plan_timeline(inputs, cut_pauses=cut_pauses, pauses=pauses)


def segment_identities(snapshot: SessionSnapshot, storage: Storage) -> dict[str, str]:
    """Path -> sha256 of every segment: what chunk signatures use as the file's identity."""
    return {str(storage.path(ref.storage_key)): ref.sha256 for ref in snapshot.segments}


def audio_chunk_store(snapshot: SessionSnapshot, storage: Storage) -> ChunkStore:
    return ChunkStore(storage.output_path(storage.derived_key(snapshot.id, AUDIO_CHUNKS_DIR)))


def encode_audio_chunks(
    snapshot: SessionSnapshot,
    storage: Storage,
    settings: Settings,
    keep_going: Callable[[], bool],
    probed: dict[str, float] | None = None,
) -> IncrementalResult:
    """While recording: encode the chunks of audio that can no longer change, and store them.

    Purely an optimisation for the concat_audio stage, which reuses every stored chunk whose
    signature still matches and encodes the rest (see build_timeline for ``probed``).
    """
    timeline = build_timeline(
        snapshot,
        storage,
        cut_pauses=settings.cut_pauses,
        needed=frozenset({"audio"}),
        probed=probed,
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


def concat_audio(
    snapshot: SessionSnapshot,
    storage: Storage,
    settings: Settings,
    progress: ProgressFn,
    probed: dict[str, float] | None = None,
) -> StageOutput:
    """The session's audio track: stored chunks reused, the rest encoded in parallel, remuxed.

    The chunk folder is removed afterwards, and after a failure caused by the input (which
    a retry cannot fix), so only ``audio.m4a`` stays in the derived folder. See
    build_timeline for ``probed``.
    """
    store = audio_chunk_store(snapshot, storage)
    key = storage.derived_key(snapshot.id, AUDIO_OUTPUT)
    try:
        timeline = build_timeline(
            snapshot,
            storage,
            cut_pauses=settings.cut_pauses,
            needed=frozenset({"audio"}),
            probed=probed,
        )
        if not timeline.has_audio:
            store.clear()
            return StageOutput(output_key=None, result={"skipped": "session has no audio segments"})
        out = concat_audio_chunked(
            timeline,
            storage.output_path(key),
            sample_rate=settings.audio_sample_rate,
            bitrate=settings.audio_bitrate,
            progress=progress,
            aac_coder=settings.audio_aac_coder,
            workers=settings.audio_workers,
            chunk_seconds=settings.audio_chunk_s,
            store=store,
            identities=segment_identities(snapshot, storage),
        )
    except (MediaError, ValueError):
        store.clear()
        raise
    store.clear()
    result: dict[str, Any] = {
        "duration": out.duration,
        "segments": len(timeline.of_kind("audio")),
        "cuts": [list(c) for c in timeline.cuts],
    }
    if isinstance(out, ChunkedAudioResult):
        result["chunks"] = {"total": out.chunks, "reused": out.reused, "encoded": out.encoded}
    return StageOutput(output_key=key, result=result)


def merge(
    snapshot: SessionSnapshot,
    storage: Storage,
    settings: Settings,
    progress: ProgressFn,
    audio_key: str | None,
) -> StageOutput:
    from workers.media.merge import merge as mux

    timeline = build_timeline(snapshot, storage, cut_pauses=settings.cut_pauses)
    if not timeline.has_audio and not timeline.has_video:
        raise MediaError(f"session {snapshot.id!r} has no media to merge")
    audio = storage.path(audio_key) if audio_key else None
    key = storage.derived_key(snapshot.id, merged_output_name(snapshot.id))
    out = mux(
        timeline,
        audio,
        storage.output_path(key),
        fps=settings.video_fps,
        crf=settings.video_crf,
        preset=settings.video_preset,
        copy_video=settings.merge_copy_video,
        progress=progress,
    )
    return StageOutput(
        output_key=key,
        result={
            "duration": out.duration,
            "has_video": out.has_video,
            "has_audio": out.has_audio,
            "video_copied": out.video_copied,
            "video_codec": out.video_codec,
            "fallback_reason": out.fallback_reason,
        },
    )


def compressed_output_name(session_id: str) -> str:
    return f"{session_id}-compressed.mp4"


def compress(
    snapshot: SessionSnapshot,
    storage: Storage,
    settings: Settings,
    progress: ProgressFn,
    merged_key: str,
) -> StageOutput:
    """The small copy for sharing and archive: screen-tuned H.264, still stretches dropped."""
    from workers.media.compress import compress as shrink

    if not settings.compress:
        return StageOutput(output_key=None, result={"skipped": "compression is turned off"})
    merged = storage.path(merged_key)
    if not probe(merged).has_video:
        return StageOutput(output_key=None, result={"skipped": "session has no video"})
    key = storage.derived_key(snapshot.id, compressed_output_name(snapshot.id))
    out = shrink(
        merged, storage.output_path(key), preset=settings.compress_preset, progress=progress
    )
    return StageOutput(
        output_key=key,
        result={
            "preset": out.preset,
            "size": out.size,
            "source_size": out.source_size,
            "ratio": out.ratio,
            "frames_in": out.frames_in,
            "frames_out": out.frames_out,
        },
    )


def _describe_output(storage: Storage, key: str) -> dict[str, Any]:
    path = storage.path(key)
    info = probe(path)
    return {
        "key": key,
        "path": str(path),
        "size": path.stat().st_size,
        "sha256": sha256_file(path),
        "duration": info.duration,
        "video_codec": info.video_codec,
        "audio_codec": info.audio_codec,
    }


def finalize(
    snapshot: SessionSnapshot, storage: Storage, merged_key: str, compressed_key: str | None
) -> StageOutput:
    """Check the outputs really play and write the session's outputs manifest."""
    outputs = {"mp4": _describe_output(storage, merged_key)}
    if compressed_key is not None:
        outputs["compressed"] = _describe_output(storage, compressed_key)
    info_duration = outputs["mp4"]["duration"]
    manifest = {
        "session_id": snapshot.id,
        "outputs": outputs,
        "finalized_at": datetime.now(UTC).isoformat(),
    }
    key = storage.derived_key(snapshot.id, MANIFEST_OUTPUT)
    with storage.atomic_path(key) as tmp:
        Path(tmp).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return StageOutput(output_key=merged_key, result={"manifest": key, "duration": info_duration})
