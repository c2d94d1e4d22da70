"""The ``summary`` stage: keywords per chapter and per session, and a summary.

Runs after the transcript and the chapters (either may have been skipped or have failed:
it summarises what there is). Offline by default: YAKE keywords and an extractive
TextRank summary. With an LLM provider configured and the session not opting out, the
model writes the summary, the keywords and the chapter titles; a rate limit delays the job
(the task retries later), and once no retry is left, or on any other provider failure,
the offline result is kept and the summary records the provider's error. Writes
``<id>.summary.json`` and the summary document, and the chapters document again with
their keywords (and the model's titles).
"""

from __future__ import annotations

import json
from dataclasses import replace

from workers.enrich.documents import Chapter, EnrichUnavailable, Summary, Transcript
from workers.enrichment import KIND_CHAPTERS, KIND_SUMMARY
from workers.stages.context import StageContext, StageOutput

STAGE = "summary"


def summary_name(session_id: str) -> str:
    return f"{session_id}.summary.json"


def build_summary(ctx: StageContext) -> StageOutput:
    options, settings, session_id = ctx.options, ctx.settings, ctx.snapshot.id
    if not options.runs(STAGE):
        return StageOutput.skipped("not asked for by this session")
    transcript_key, chapters_key = ctx.outputs.get("transcript"), ctx.outputs.get("chapters")
    transcript = Transcript.from_json(ctx.read_json(transcript_key)) if transcript_key else None
    chapters = (
        [Chapter.from_json(c) for c in ctx.read_json(chapters_key)["chapters"]]
        if chapters_key
        else []
    )
    if (transcript is None or not transcript.segments) and not chapters:
        return StageOutput.skipped("no transcript and no chapters to summarise")
    try:
        from workers.enrich.summarize import offline_enrichment
    except (EnrichUnavailable, ImportError) as exc:
        return StageOutput.skipped(str(exc))
    summary, chapters = offline_enrichment(
        transcript,
        chapters,
        language=options.language,
        summary_sentences=settings.summary_sentences,
    )
    if options.llm:
        summary, chapters = _with_llm(ctx, transcript, chapters, summary)
    ctx.progress(1.0)
    document = summary.to_json()
    key = ctx.write_text(summary_name(session_id), json.dumps(document))
    documents = {KIND_SUMMARY: document}
    if chapters:
        documents[KIND_CHAPTERS] = {"chapters": [c.to_json() for c in chapters]}
    return StageOutput(
        output_key=key,
        result={
            "provider": summary.provider,
            "provider_error": summary.provider_error,
            "keywords": list(summary.keywords),
        },
        documents=documents,
    )


def _with_llm(
    ctx: StageContext, transcript: Transcript | None, chapters: list[Chapter], offline: Summary
) -> tuple[Summary, list[Chapter]]:
    """The model's summary, keywords and titles; the offline ones when it fails.

    A rate limit is raised on (transient: the job is delayed) unless this is the last try.
    """
    from workers.enrich.llm import ProviderFailed, ProviderRateLimited, llm_enrichment
    from workers.enrich.llmconfig import llm_config

    try:
        summary = llm_enrichment(llm_config(ctx.settings), transcript, chapters, offline)
    except ProviderRateLimited as exc:
        if not ctx.last_try:
            raise
        reason = f"rate limited until the last retry: {exc}"
        return replace(offline, provider_error=reason), chapters
    except ProviderFailed as exc:
        return replace(offline, provider_error=str(exc)), chapters
    if len(summary.chapter_titles) == len(chapters):
        chapters = [
            replace(c, title=title, title_source="llm")
            for c, title in zip(chapters, summary.chapter_titles, strict=True)
        ]
    return summary, chapters
