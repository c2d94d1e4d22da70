"""The ``compress`` stage: the small copy for sharing and archive.

Two ways to the same pictures at the same times (``tests/workers/media/test_parts.py``):

- **From parts** (``workers.parts``), when the playable MP4's video was copied from the
  segments: each video segment compressed on its own, mostly while the session recorded,
  joined by stream copy at the places the playable MP4 has them, with the session's
  finished audio (``finalize`` deletes the parts once the copy is recorded). After the
  session ends only the parts still missing are made (spread over every media worker that
  takes part tasks), then a remux.
- **Whole**: the playable MP4 compressed in one run. Used when the parts path does not
  apply (parts turned off, the playable video was re-encoded, parts that cannot be joined
  exactly, a part that failed) and says why in the result's ``parts_fallback``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from workers import compressparts, parts
from workers.media import CompressResult, compress_video, probe
from workers.media.merge import mux_copied
from workers.media.timeline import Timeline
from workers.media.videocopy import CopyNotExact
from workers.stages.context import StageContext, StageOutput, plan_context

log = logging.getLogger(__name__)

#: Share of the stage's progress the parts take when some are still to be made; the join
#: (a remux) takes the rest.
PARTS_SHARE = 0.9


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
    output = ctx.storage.output_path(key)
    reason = _parts_refused(ctx)
    if reason is None:
        try:
            return StageOutput(output_key=key, result=_from_parts(ctx, merged, output))
        except (CopyNotExact, parts.PartFailed) as exc:
            reason = str(exc)
            log.info("compressed copy of %s in one run: %s", ctx.snapshot.id, reason)
    out = compress_video(
        merged, output, preset=ctx.settings.compress_preset, progress=ctx.progress
    )
    return StageOutput(output_key=key, result={**_summary(out), "parts_fallback": reason})


def _parts_refused(ctx: StageContext) -> str | None:
    """Why the parts path does not apply, or None."""
    if not ctx.settings.compress_parts:
        return "parts are turned off"
    merge = ctx.results.get("merge") or {}
    if not merge.get("video_copied"):
        return "the playable MP4's video was re-encoded, not copied from the segments"
    return None


def _summary(out: CompressResult) -> dict[str, Any]:
    return {
        "preset": out.preset,
        "size": out.size,
        "source_size": out.source_size,
        "ratio": out.ratio,
        "frames_in": out.frames_in,
        "frames_out": out.frames_out,
    }


def _from_parts(ctx: StageContext, merged: Path, output: Path) -> dict[str, Any]:
    """Gather every video segment's part, join them with the finished audio; the result."""
    timeline = plan_context(ctx)
    storage, session_id = ctx.storage, ctx.snapshot.id
    by_path = {
        str(storage.path(ref.storage_key)): parts.SegmentSource(
            session_id, ref.file, ref.storage_key, ref.sha256
        )
        for ref in ctx.snapshot.segments
        if ref.kind == "video"
    }
    video = [s for s in timeline.segments if s.kind == "video"]
    sources = [by_path[s.path] for s in video]
    keys, made_here = compressparts.gather(
        ctx.settings, storage, sources,
        owner=parts.new_owner(f"compress:{session_id}"[:40]),
        preset=ctx.settings.compress_preset,
        heartbeat=lambda done: ctx.progress(done * PARTS_SHARE),
    )  # fmt: skip
    by_file = {source.file: source for source in sources}
    joined = _with_parts(timeline, {
        s.path: str(storage.path(keys[by_path[s.path].file])) for s in video
    })  # fmt: skip
    audio_key = ctx.outputs.get("concat_audio")
    audio = storage.path(audio_key) if audio_key else None

    def join_progress(fraction: float) -> None:
        ctx.progress(PARTS_SHARE + (1 - PARTS_SHARE) * fraction)

    mux_copied(joined, audio, output, join_progress)
    frames_in = frames_out = 0
    for file in by_file:
        state = parts.state(ctx.settings.database_url, session_id, file)
        result = (state.result if state is not None else None) or {}
        frames_in += int(result.get("frames_in", 0))
        frames_out += int(result.get("frames_out", 0))
    size, source_size = output.stat().st_size, merged.stat().st_size
    return {
        "preset": ctx.settings.compress_preset,
        "size": size,
        "source_size": source_size,
        "ratio": size / source_size if source_size else 0.0,
        "frames_in": frames_in,
        "frames_out": frames_out,
        "parts": len(sources),
        "parts_made_by_stage": made_here,
        "parts_fallback": None,
    }


def _with_parts(timeline: Timeline, paths: dict[str, str]) -> Timeline:
    """The timeline with each video segment's file replaced by its part."""
    return dataclasses.replace(
        timeline,
        segments=tuple(
            dataclasses.replace(s, path=paths[s.path]) if s.path in paths else s
            for s in timeline.segments
        ),
    )
