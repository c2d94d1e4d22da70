"""The ``chapters`` stage: where the screen really changes, titled from the text on it.

Reads the playable MP4 (the ``merge`` output), so chapter times are on the output
timeline; its samples come from the video segments', sampled while the session recorded and
placed where the MP4 shows them (``workers.chapterparts``), or, when those cannot serve
(``samples_fallback`` in the result says why), from sampling the MP4 itself. Titles come
from the screen (OCR); a chapter whose screen has no text is titled from the transcript
when that stage has already finished, else by the summary stage, which runs after both (and
adds keywords and, with an LLM, the model's titles). Writes ``<id>.chapters.json`` and the
chapters document.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Final

from workers import chapterparts, parts
from workers.enrich.chaptering import detect_chapters
from workers.enrich.documents import EnrichError, EnrichUnavailable, Transcript
from workers.enrichment import KIND_CHAPTERS
from workers.media import MediaError, probe
from workers.stages.context import NOT_ASKED, StageContext, StageOutput, plan_context

STAGE = "chapters"
#: Share of the progress bar for gathering the segments' samples (making missing ones).
SAMPLES_SHARE: Final = 0.3


def chapters_name(session_id: str) -> str:
    return f"{session_id}.chapters.json"


def build_chapters(ctx: StageContext) -> StageOutput:
    options, session_id = ctx.options, ctx.snapshot.id
    if not options.runs(STAGE):
        return StageOutput.skipped(NOT_ASKED)
    merged_key = ctx.output_of("merge", needed_by=STAGE)
    merged = ctx.storage.path(merged_key)
    info = probe(merged)
    if info.video_codec is None:
        chapterparts.discard(ctx.storage, session_id)
        return StageOutput.skipped("session has no video")
    try:
        return _chapters(ctx, merged, info.duration)
    finally:
        chapterparts.discard(ctx.storage, session_id)  # the samples: a retry makes them again


def _samples(ctx: StageContext, duration: float) -> chapterparts.Gathered | str:
    """The segments' samples on the output timeline, or why they cannot serve."""
    storage, session_id = ctx.storage, ctx.snapshot.id
    try:
        timeline = plan_context(ctx, needed=frozenset({"video"}))
        by_path = {
            str(storage.path(ref.storage_key)): parts.SegmentSource(
                session_id, ref.file, ref.storage_key, ref.sha256
            )
            for ref in ctx.snapshot.segments
            if ref.kind == "video"
        }
        video = [(s.path, by_path[s.path]) for s in timeline.segments if s.kind == "video"]
        return chapterparts.gather(
            ctx.settings, storage, session_id, timeline, video, duration=duration,
            owner=parts.new_owner(f"chapters:{session_id}"[:40]),
            heartbeat=lambda done: ctx.progress(done * SAMPLES_SHARE),
        )  # fmt: skip
    except (MediaError, EnrichError) as exc:  # a segment that cannot be sampled
        return f"a segment's samples could not be made: {exc}"


def _chapters(ctx: StageContext, merged: Path, duration: float) -> StageOutput:
    settings, session_id = ctx.settings, ctx.snapshot.id
    transcript_key = ctx.outputs.get("transcript")  # present when it finished first
    transcript = Transcript.from_json(ctx.read_json(transcript_key)) if transcript_key else None
    gathered = _samples(ctx, duration)
    sampled = gathered.sampled if isinstance(gathered, chapterparts.Gathered) else None
    detect = partial(
        detect_chapters,
        merged,
        transcript=transcript,
        min_chapter_s=settings.chapter_min_s,
        sample_fps=settings.chapter_sample_fps,
        progress=ctx.progress,
        sampled=sampled,
    )
    try:
        chapters, no_ocr = detect(ocr=True), None
    except EnrichUnavailable as exc:  # no tesseract here: chapters titled from the speech
        chapters, no_ocr = detect(ocr=False), str(exc)
    document = {"chapters": [c.to_json() for c in chapters]}
    key = ctx.write_text(chapters_name(session_id), json.dumps(document))
    result: dict[str, object] = {"chapters": len(chapters), "titles": [c.title for c in chapters]}
    if no_ocr:
        result["ocr"] = no_ocr
    if isinstance(gathered, chapterparts.Gathered):
        result["samples"] = {
            "segments": gathered.segments,
            "made_by_stage": gathered.made,
            "scores_reused": gathered.scores.reused,
            "scores_computed": gathered.scores.computed,
        }
        result["samples_fallback"] = None
    else:
        result["samples_fallback"] = gathered
    return StageOutput(output_key=key, result=result, documents={KIND_CHAPTERS: document})
