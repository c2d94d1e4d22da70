"""The ``chapters`` stage: where the screen really changes, titled from the text on it.

Reads the playable MP4 (the ``merge`` output), so chapter times are on the output
timeline. Titles come from the screen (OCR); a chapter whose screen has no text is titled
from the transcript when that stage has already finished, else by the summary stage,
which runs after both (and adds keywords and, with an LLM, the model's titles). Writes
``<id>.chapters.json`` and the chapters document.
"""

from __future__ import annotations

import json
from functools import partial

from workers.enrich.chaptering import detect_chapters
from workers.enrich.documents import EnrichUnavailable, Transcript
from workers.enrichment import KIND_CHAPTERS
from workers.media import probe
from workers.stages.context import NOT_ASKED, StageContext, StageOutput

STAGE = "chapters"


def chapters_name(session_id: str) -> str:
    return f"{session_id}.chapters.json"


def build_chapters(ctx: StageContext) -> StageOutput:
    options, settings, session_id = ctx.options, ctx.settings, ctx.snapshot.id
    if not options.runs(STAGE):
        return StageOutput.skipped(NOT_ASKED)
    merged_key = ctx.output_of("merge", needed_by=STAGE)
    merged = ctx.storage.path(merged_key)
    if probe(merged).video_codec is None:
        return StageOutput.skipped("session has no video")
    transcript_key = ctx.outputs.get("transcript")  # present when it finished first
    transcript = Transcript.from_json(ctx.read_json(transcript_key)) if transcript_key else None
    detect = partial(
        detect_chapters,
        merged,
        transcript=transcript,
        min_chapter_s=settings.chapter_min_s,
        sample_fps=settings.chapter_sample_fps,
        progress=ctx.progress,
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
    return StageOutput(output_key=key, result=result, documents={KIND_CHAPTERS: document})
