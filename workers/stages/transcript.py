"""The ``transcript`` stage: speech to text of the session's audio track, with word times.

Its audio is on the output timeline (the playable MP4's audio, pauses cut and holes filled),
so every time in the transcript is a time in the MP4: the pieces transcribed while the session
recorded, the rest of them transcribed now, stitched (``workers.transcriptparts``); or, when
pieces cannot serve (``pieces_fallback`` in the result says why), the ``concat_audio`` output
transcribed whole. Writes ``<id>.transcript.json`` and ``<id>.vtt`` next to the MP4 and the
transcript document to the database.
"""

from __future__ import annotations

import json
import time
from typing import Any

from workers import parts, transcriptparts
from workers.enrich.documents import EnrichError, EnrichUnavailable
from workers.enrich.transcribe import transcribe
from workers.enrich.webvtt import to_webvtt
from workers.enrichment import KIND_TRANSCRIPT
from workers.media import MediaError
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
        recognizer = transcriptparts.load_recognizer(settings, options)
    except EnrichUnavailable as exc:  # faster-whisper or the model package is missing
        return StageOutput.skipped(str(exc))
    began = time.monotonic()
    pieces: dict[str, Any] | None = None
    try:
        assembled = transcriptparts.assemble(
            settings, ctx.storage, ctx.snapshot, recognizer,
            owner=parts.new_owner(f"transcript:{session_id}"[:40]),
            probed=ctx.probed, progress=ctx.progress,
        )  # fmt: skip
    except (MediaError, EnrichError) as exc:  # a piece's audio could not be read
        assembled = f"a piece could not be made: {exc}"
    if isinstance(assembled, str):
        fallback: str | None = assembled
        transcript = transcribe(
            ctx.storage.path(audio_key),
            model=recognizer.model,
            language=recognizer.language,
            beam_size=recognizer.beam_size,
            progress=ctx.progress,
        )
    else:
        fallback, transcript, pieces = None, assembled.stitched.transcript, assembled.summary()
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
            "pieces": pieces,
            "pieces_fallback": fallback,
            "seconds": round(time.monotonic() - began, 3),
        },
        documents={KIND_TRANSCRIPT: document},
    )
