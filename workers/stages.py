"""What each stage does, given a session snapshot: I/O around the pure media engine.

No Celery here: ``workers.tasks`` wraps these with claiming, retries and progress.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from shared.settings import Settings
from shared.storage import Storage, sha256_file
from workers.media.errors import MediaError
from workers.media.probe import probe
from workers.media.timeline import Kind, SegmentInput, Timeline, plan_timeline

AUDIO_OUTPUT = "audio.m4a"
MANIFEST_OUTPUT = "outputs.json"
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


def build_timeline(
    snapshot: SessionSnapshot,
    storage: Storage,
    *,
    cut_pauses: bool,
    needed: frozenset[str] = frozenset({"audio", "video"}),
) -> Timeline:
    """Resolve and probe every segment, then plan where it goes on the output timeline.

    Segments of a kind the stage does not read (``needed``) only shape the timeline (where
    pauses are): a broken one there falls back to its declared duration, so the stage that
    reads it is the one that fails and names it.
    """
    origin = _aware(snapshot.started_at) if snapshot.started_at else None
    inputs: list[SegmentInput] = []
    for ref in snapshot.segments:
        path = storage.path(ref.storage_key)
        if not path.is_file():
            raise MediaError(
                f"segment {ref.file!r} is missing from storage ({ref.storage_key})", path=ref.file
            )
        try:
            probed = probe(path).duration
        except MediaError:
            if ref.kind in needed or ref.duration is None:
                raise
            probed = ref.duration
        duration = probed if ref.duration is None else min(ref.duration, probed)
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
        pauses = [
            ((_aware(a) - origin).total_seconds(), (_aware(b) - origin).total_seconds())
            for a, b in snapshot.pauses
        ]
    return plan_timeline(inputs, cut_pauses=cut_pauses, pauses=pauses)


def concat_audio(
    snapshot: SessionSnapshot, storage: Storage, settings: Settings, progress: ProgressFn
) -> StageOutput:
    from workers.media.audio import concat_audio as encode_audio

    timeline = build_timeline(
        snapshot, storage, cut_pauses=settings.cut_pauses, needed=frozenset({"audio"})
    )
    if not timeline.has_audio:
        return StageOutput(output_key=None, result={"skipped": "session has no audio segments"})
    key = storage.derived_key(snapshot.id, AUDIO_OUTPUT)
    out = encode_audio(
        timeline,
        storage.output_path(key),
        sample_rate=settings.audio_sample_rate,
        bitrate=settings.audio_bitrate,
        progress=progress,
    )
    return StageOutput(
        output_key=key,
        result={
            "duration": out.duration,
            "segments": len(timeline.of_kind("audio")),
            "cuts": [list(c) for c in timeline.cuts],
        },
    )


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
        progress=progress,
    )
    return StageOutput(
        output_key=key,
        result={"duration": out.duration, "has_video": out.has_video, "has_audio": out.has_audio},
    )


def finalize(snapshot: SessionSnapshot, storage: Storage, merged_key: str) -> StageOutput:
    """Check the merged file really plays and write the session's outputs manifest."""
    merged = storage.path(merged_key)
    info = probe(merged)
    manifest = {
        "session_id": snapshot.id,
        "outputs": {
            "mp4": {
                "key": merged_key,
                "path": str(merged),
                "size": merged.stat().st_size,
                "sha256": sha256_file(merged),
                "duration": info.duration,
                "video_codec": info.video_codec,
                "audio_codec": info.audio_codec,
            }
        },
        "finalized_at": datetime.now(UTC).isoformat(),
    }
    key = storage.derived_key(snapshot.id, MANIFEST_OUTPUT)
    with storage.atomic_path(key) as tmp:
        Path(tmp).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return StageOutput(output_key=merged_key, result={"manifest": key, "duration": info.duration})
