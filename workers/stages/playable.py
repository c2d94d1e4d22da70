"""The ``merge`` stage: the playable MP4 (video copied when exact, the audio track muxed).

Two ways to the same packets at the same times (``tests/workers/media/test_assemble.py``):

- **Finished from its assembly** (``workers.assembly``): when pieces of the MP4 were
  appended while the session recorded, only the pieces still missing are appended (the
  last video segments, with the finished audio track's packets) and the file is moved into
  place: the wait after the end does not grow with the session.
- **In one run** (``workers.media.mux_playable``): every packet after the end, index first
  (``+faststart``). Used when nothing was assembled (a session shipped at once), when
  assembly is off, when a forced frame rate or a re-encode is needed, or when the assembly
  cannot serve; ``assembly_fallback`` in the result says why.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from workers import assembly
from workers.media import MediaError, mux_playable
from workers.media.fragment import FragmentError
from workers.media.timeline import Timeline
from workers.media.videocopy import CopyNotExact
from workers.stages.context import StageContext, StageOutput, plan_context

log = logging.getLogger(__name__)


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
    output = storage.output_path(key)
    reason = _assembly_refused(ctx, timeline)
    if reason is None:
        try:
            return StageOutput(output_key=key, result=_assembled(ctx, timeline, audio, output))
        except (assembly.AssemblyUnusable, CopyNotExact, FragmentError) as exc:
            reason = str(exc)
            log.info("playable MP4 of %s in one run: %s", snapshot.id, reason)
    assembly.discard(storage, snapshot.id)
    out = mux_playable(
        timeline,
        audio,
        output,
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
            "assembly_fallback": reason,
        },
    )


def _assembly_refused(ctx: StageContext, timeline: Timeline) -> str | None:
    """Why the assembled file cannot be the playable MP4, or None."""
    settings = ctx.settings
    if not settings.playable_assembly:
        return "assembly is turned off"
    if not settings.merge_copy_video or settings.video_fps is not None:
        return "the video is re-encoded (copying is off or a frame rate is forced)"
    if not timeline.has_video:
        return "the session has no video"
    return None


def _assembled(
    ctx: StageContext, timeline: Timeline, audio: Path | None, output: Path
) -> dict[str, Any]:
    done = assembly.finish(ctx.settings, ctx.snapshot, timeline, audio, output)
    ctx.progress(1.0)
    codec = _video_codec(output)
    return {
        "duration": timeline.duration,
        "has_video": True,
        "has_audio": audio is not None,
        "video_copied": True,
        "video_codec": codec,
        "fallback_reason": None,
        "assembly_fallback": None,
        "assembled": {
            "pieces": done.pieces,
            "appended_while_recording": done.appended_before,
            "indexed": done.indexed,
        },
    }


def _video_codec(path: Path) -> str | None:
    from workers.media.probe import open_input

    with open_input(path) as container:
        streams = container.streams.video
        return streams[0].codec_context.name if streams else None
