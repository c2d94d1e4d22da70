"""A session's enrichment documents in the database, and the one document that shows them.

The stages make the documents (``workers.stages``: transcript, chapters, summary); the
runner stores them with the stage's success in the same transaction (:func:`store`), so a
document is present exactly when its stage succeeded. :func:`enrichment_document` is what
``sessionpipe show --json`` prints (and the status API will serve)::

    {"session_id", "duration", "playable", "complete",
     "chapters": [{"start", "end", "title", "title_source", "keywords": [...],
                   "segments": [first, last + 1]}],
     "transcript": {"language", "segments": [{"start", "end", "text",
                                              "words": [{"start", "end", "word"}]}]},
     "summary", "keywords": [...], "summary_provider", "warnings": [...],
     "stages": {stage: {"status", "progress", "attempts", "error", "skipped"}}}

Times are seconds on the output timeline (the playable MP4's clock). A chapter's
``segments`` are the indices of the transcript segments said during it (those whose middle
lies in it). Fields are only ever added to it: scripts read it.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any, Final

from sqlalchemy import select, update
from sqlalchemy.orm import Session as DbSession

from shared import models
from shared.db import session_scope
from shared.ids import validate_session_id
from workers.jobs import insert_ignore
from workers.pipeline import STAGES, Stage, is_playable, session_outcome
from workers.status import UnknownSessionError, skip_reason, stage_status

#: The kinds of document, one per (session, kind).
KIND_TRANSCRIPT: Final = "transcript"
KIND_CHAPTERS: Final = "chapters"
KIND_SUMMARY: Final = "summary"
KINDS: Final = (KIND_TRANSCRIPT, KIND_CHAPTERS, KIND_SUMMARY)


def store(db: DbSession, session_id: str, documents: dict[str, dict[str, Any]]) -> None:
    """Write (or replace) documents of a session, in the caller's transaction."""
    for kind, document in documents.items():
        if kind not in KINDS:
            raise ValueError(f"unknown enrichment document kind {kind!r}")
        inserted = insert_ignore(
            db,
            models.EnrichmentDocument,
            {"session_id": session_id, "kind": kind, "document": document},
            ["session_id", "kind"],
        )
        if not inserted:
            db.execute(
                update(models.EnrichmentDocument)
                .where(
                    models.EnrichmentDocument.session_id == session_id,
                    models.EnrichmentDocument.kind == kind,
                )
                .values(document=document)
            )


def load(db: DbSession, session_id: str) -> dict[str, dict[str, Any]]:
    rows = db.execute(
        select(models.EnrichmentDocument.kind, models.EnrichmentDocument.document).where(
            models.EnrichmentDocument.session_id == session_id
        )
    ).all()
    return {kind: document for kind, document in rows}


def enrichment_document(database_url: str, session_id: str) -> dict[str, Any]:
    """The ``show --json`` document of a session (UnknownSessionError if there is none)."""
    validate_session_id(session_id)
    with session_scope(database_url) as db:
        session = db.get(models.Session, session_id)
        if session is None:
            raise UnknownSessionError(f"unknown session {session_id!r}")
        jobs = list(session.jobs)
        documents = load(db, session_id)
        document = _compose(session_id, jobs, documents)
        document["warnings"] = [*(session.warnings or []), *document["warnings"]]
        return document


def _compose(
    session_id: str, jobs: list[models.Job], documents: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    by_stage = {job.stage: job for job in jobs}
    merge = by_stage.get(Stage.MERGE.value)
    duration = (merge.result or {}).get("duration") if merge is not None else None
    transcript = documents.get(KIND_TRANSCRIPT, {})
    chapters = documents.get(KIND_CHAPTERS, {}).get("chapters", [])
    middles = [(s["start"] + s["end"]) / 2 for s in transcript.get("segments", [])]
    summary = documents.get(KIND_SUMMARY, {})
    warnings = []
    chapters_job = by_stage.get(Stage.CHAPTERS.value)
    no_ocr = (chapters_job.result or {}).get("ocr") if chapters_job is not None else None
    if no_ocr:
        warnings.append(f"screen text not read, chapters titled from the speech: {no_ocr}")
    if summary.get("provider_error"):
        warnings.append(f"LLM provider failed, offline summary kept: {summary['provider_error']}")
    for stage in STAGES:
        job = by_stage.get(stage.value)
        if job is not None and job.status in (
            models.JobStatus.FAILED.value,
            models.JobStatus.CANCELLED.value,
        ):
            warnings.append(f"{stage.value} {job.status}: {job.error or 'no reason recorded'}")
    return {
        "session_id": session_id,
        "duration": duration,
        "playable": is_playable(jobs),
        "complete": session_outcome(jobs) == "completed",
        "chapters": [
            {
                "start": c["start"],
                "end": c["end"],
                "title": c.get("title", ""),
                "title_source": c.get("title_source", "none"),
                "keywords": list(c.get("keywords", [])),
                "segments": _said_during(middles, c["start"], c["end"]),
            }
            for c in chapters
        ],
        "transcript": {
            "language": transcript.get("language"),
            "segments": list(transcript.get("segments", [])),
        },
        "summary": summary.get("summary", ""),
        "keywords": list(summary.get("keywords", [])),
        "summary_provider": summary.get("provider"),
        "warnings": warnings,
        "stages": {
            stage.value: {
                "status": stage_status(job),
                "progress": job.progress,
                "attempts": job.attempts,
                "error": job.error,
                "skipped": skip_reason(job),
            }
            for stage in STAGES
            if (job := by_stage.get(stage.value)) is not None
        },
    }


def _said_during(middles: list[float], start: float, end: float) -> list[int]:
    """[first, last + 1) of the segments (in time order) whose middle lies in [start, end);
    empty ([k, k]) when nothing was said."""
    return [bisect_left(middles, start), bisect_left(middles, end)]
