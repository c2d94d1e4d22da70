"""The ``compress`` stage: the small copy for sharing and archive, made from the playable MP4."""

from __future__ import annotations

from workers.media import compress_video, probe
from workers.stages.context import StageContext, StageOutput


def compressed_output_name(session_id: str) -> str:
    return f"{session_id}-compressed.mp4"


def build_compressed(ctx: StageContext) -> StageOutput:
    """Screen-tuned H.264 with still stretches dropped; skipped without video or when off."""
    if not ctx.settings.compress:
        return StageOutput.skipped("compression is turned off")
    merged = ctx.storage.path(ctx.output_of("merge", needed_by="compress"))
    if not probe(merged).has_video:
        return StageOutput.skipped("session has no video")
    key = ctx.storage.derived_key(ctx.snapshot.id, compressed_output_name(ctx.snapshot.id))
    out = compress_video(
        merged,
        ctx.storage.output_path(key),
        preset=ctx.settings.compress_preset,
        progress=ctx.progress,
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
