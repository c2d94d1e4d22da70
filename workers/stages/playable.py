"""The ``merge`` stage: the playable MP4 (video copied when exact, the audio track muxed)."""

from __future__ import annotations

from workers.media import MediaError, mux_playable
from workers.stages.context import StageContext, StageOutput, plan_context


def merged_output_name(session_id: str) -> str:
    return f"{session_id}.mp4"


def build_playable(ctx: StageContext) -> StageOutput:
    snapshot, storage, settings = ctx.snapshot, ctx.storage, ctx.settings
    timeline = plan_context(ctx)
    if not timeline.has_audio and not timeline.has_video:
        raise MediaError(f"session {snapshot.id!r} has no media to merge")
    audio_key = ctx.outputs.get("concat_audio")
    audio = storage.path(audio_key) if audio_key else None
    key = storage.derived_key(snapshot.id, merged_output_name(snapshot.id))
    out = mux_playable(
        timeline,
        audio,
        storage.output_path(key),
        fps=settings.video_fps,
        crf=settings.video_crf,
        preset=settings.video_preset,
        copy_video=settings.merge_copy_video,
        progress=ctx.progress,
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
