"""The ``summary`` stage: keywords per chapter and per session, and a summary.

It also titles, from the transcript, the chapters whose screen had no text and that the
chapters stage could not title from speech (it ran before the transcript existed).

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
import os
from dataclasses import replace

from shared.settings import Settings
from workers.enrich.chaptering import transcript_title
from workers.enrich.documents import Chapter, EnrichUnavailable, Summary, Transcript
from workers.enrich.llm import LlmConfig, ProviderFailed, ProviderRateLimited, llm_enrichment
from workers.enrich.llm.config import API_KEY_ENV, DEFAULT_MODELS
from workers.enrich.summarize import offline_enrichment
from workers.enrichment import KIND_CHAPTERS, KIND_SUMMARY
from workers.stages.context import NOT_ASKED, StageContext, StageOutput

STAGE = "summary"


def summary_name(session_id: str) -> str:
    return f"{session_id}.summary.json"


def build_summary(ctx: StageContext) -> StageOutput:
    options, settings, session_id = ctx.options, ctx.settings, ctx.snapshot.id
    if not options.runs(STAGE):
        return StageOutput.skipped(NOT_ASKED)
    transcript_key, chapters_key = ctx.outputs.get("transcript"), ctx.outputs.get("chapters")
    transcript = Transcript.from_json(ctx.read_json(transcript_key)) if transcript_key else None
    chapters = (
        [Chapter.from_json(c) for c in ctx.read_json(chapters_key)["chapters"]]
        if chapters_key
        else []
    )
    if (transcript is None or not transcript.segments) and not chapters:
        return StageOutput.skipped("no transcript and no chapters to summarise")
    if transcript is not None:  # the chapters stage may have run before the transcript existed
        chapters = titled_from_speech(chapters, transcript)
    try:
        summary, chapters = offline_enrichment(
            transcript,
            chapters,
            language=options.language,
            summary_sentences=settings.summary_sentences,
        )
    except EnrichUnavailable as exc:  # yake or sumy is not installed
        return StageOutput.skipped(str(exc))
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


def titled_from_speech(chapters: list[Chapter], transcript: Transcript) -> list[Chapter]:
    """Chapters whose screen had no title, titled from what was said in them."""
    titled = []
    for chapter in chapters:
        spoken = transcript_title(transcript, chapter.start, chapter.end)
        if chapter.title_source == "none" and spoken:
            chapter = replace(chapter, title=spoken, title_source="transcript")
        titled.append(chapter)
    return titled


def llm_config(settings: Settings) -> LlmConfig:
    """The provider path's configuration from the settings (ValueError when unusable)."""
    provider = settings.llm_provider
    if provider == "none":
        raise ValueError("no LLM provider is configured")
    key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else ""
    return LlmConfig(
        provider=provider,
        model=settings.llm_model or DEFAULT_MODELS[provider],
        api_key=key or os.environ.get(API_KEY_ENV[provider], ""),
        base_url=settings.llm_base_url,
        timeout_s=settings.llm_timeout_s,
        max_attempts=settings.llm_max_attempts,
        max_backoff_s=settings.llm_max_backoff_s,
        total_timeout_s=settings.llm_total_timeout_s,
        context_tokens=settings.llm_context_tokens,
        max_chunks=settings.llm_max_chunks,
    )


def _with_llm(
    ctx: StageContext, transcript: Transcript | None, chapters: list[Chapter], offline: Summary
) -> tuple[Summary, list[Chapter]]:
    """The model's summary, keywords and titles; the offline ones when it fails.

    A rate limit is raised on (transient: the job is delayed) unless this is the last try.
    """
    try:
        config = llm_config(ctx.settings)
        summary = llm_enrichment(
            config, transcript, chapters, offline, language=ctx.options.language
        )
    except ProviderRateLimited as exc:
        if not ctx.last_try:
            raise
        reason = f"rate limited until the last retry: {exc}"
        return replace(offline, provider_error=reason), chapters
    except (ProviderFailed, EnrichUnavailable, ValueError) as exc:  # ValueError: the config
        return replace(offline, provider_error=str(exc)), chapters
    if len(summary.chapter_titles) == len(chapters):
        chapters = [
            replace(c, title=title, title_source="llm")
            for c, title in zip(chapters, summary.chapter_titles, strict=True)
        ]
    return summary, chapters
