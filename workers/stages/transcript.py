"""The ``transcript`` stage: speech to text of the session's audio track, with word times.

It transcribes the ``concat_audio`` output, which is already on the output timeline (the
playable MP4's audio, pauses cut and holes filled), so every time in the transcript is a
time in the MP4. Writes ``<id>.transcript.json`` and ``<id>.vtt`` next to the MP4 and the
transcript document to the database.
"""

from __future__ import annotations

import json

from workers.enrich.documents import EnrichUnavailable
from workers.enrich.transcribe import transcribe
from workers.enrich.webvtt import to_webvtt
from workers.enrich.whispermodel import load_model
from workers.enrichment import KIND_TRANSCRIPT
from workers.stages.context import NOT_ASKED, StageContext, StageOutput

STAGE = "transcript"


def transcript_name(session_id: str) -> str:
    return f"{session_id}.transcript.json"


def subtitles_name(session_id: str) -> str:
    return f"{session_id}.vtt"


def build_transcript(ctx: StageContext) -> StageOutput:
    options, settings, session_id = ctx.options, ctx.settings, ctx.snapshot.id
    if not options.runs(STAGE):
        return StageOutput.skipped(NOT_ASKED)
    audio_key = ctx.outputs.get("concat_audio")
    if audio_key is None:
        return StageOutput.skipped("session has no audio")
    try:
        model = load_model(
            settings.whisper_model_dir,
            sha256=settings.whisper_model_sha256,
            cpu_threads=settings.whisper_threads,
        )
    except EnrichUnavailable as exc:  # faster-whisper or the model package is missing
        return StageOutput.skipped(str(exc))
    transcript = transcribe(
        ctx.storage.path(audio_key),
        model=model,
        language=options.language,
        beam_size=settings.whisper_beam_size,
        progress=ctx.progress,
    )
    document = transcript.to_json()
    key = ctx.write_text(transcript_name(session_id), json.dumps(document))
    vtt_key = ctx.write_text(subtitles_name(session_id), to_webvtt(transcript))
    return StageOutput(
        output_key=key,
        result={
            "language": transcript.language,
            "segments": len(transcript.segments),
            "words": sum(len(s.words) for s in transcript.segments),
            "model": transcript.model,
            "subtitles": vtt_key,
        },
        documents={KIND_TRANSCRIPT: document},
    )
