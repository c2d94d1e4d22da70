"""The ``sessionpipe show --json`` document: its shape (scripts rely on it), the chapters'
transcript segments, the skipped and failed stages, and the warnings a person must see."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session as DbSession

from shared import models
from shared.db import session_scope
from workers import enrichment, jobs
from workers.status import UnknownSessionError

SESSION = "doc-1"
LEASE = timedelta(seconds=60)
TRANSCRIPT = {
    "language": "en",
    "segments": [
        {"start": 1.0, "end": 3.0, "text": "One.",
         "words": [{"start": 1.0, "end": 1.5, "word": "One."}]},
        {"start": 17.0, "end": 19.0, "text": "Two.", "words": []},
        {"start": 19.5, "end": 21.0, "text": "Three.", "words": []},
    ],
}  # fmt: skip
CHAPTERS = {
    "chapters": [
        {"start": 0.0, "end": 16.0, "title": "First", "title_source": "transcript",
         "screen_text": "", "keywords": ["one"]},
        {"start": 16.0, "end": 30.0, "title": "Second", "title_source": "transcript",
         "screen_text": "", "keywords": []},
        {"start": 30.0, "end": 40.0, "title": "Quiet", "title_source": "none",
         "screen_text": "", "keywords": []},
    ]
}  # fmt: skip
SUMMARY = {"summary": "One, two, three.", "keywords": ["one", "two"], "provider": "offline",
           "provider_error": "429 until the last retry", "chapter_titles": []}  # fmt: skip


def finish(db: DbSession, stage: str, status: str, result: dict[str, object]) -> None:
    claim = jobs.claim(db, SESSION, stage, f"t-{stage}", lease=LEASE)
    assert claim is not None
    if status == "succeeded":
        jobs.succeed(db, claim.job_id, claim.owner, output_key=None, result=result)
    else:
        jobs.fail(db, claim.job_id, claim.owner, "EnrichError: broken")


def test_the_document_holds_what_show_promises(sqlite_url: str) -> None:
    with session_scope(sqlite_url) as db:
        db.add(models.Session(id=SESSION, name="", status="processing", priority="normal"))
        db.flush()
        finish(db, "concat_audio", "succeeded", {})
        finish(db, "merge", "succeeded", {"duration": 40.0})
        finish(db, "transcript", "succeeded", {})
        finish(db, "chapters", "succeeded", {"ocr": "tesseract is not installed"})
        finish(db, "compress", "succeeded", {"skipped": "compression is turned off"})
        finish(db, "summary", "succeeded", {})
        enrichment.store(
            db, SESSION, {"transcript": TRANSCRIPT, "chapters": CHAPTERS, "summary": SUMMARY}
        )
        enrichment.store(db, SESSION, {"summary": SUMMARY})  # a rerun replaces, never adds
    document = enrichment.enrichment_document(sqlite_url, SESSION)
    assert set(document) >= {
        "session_id", "duration", "chapters", "transcript", "summary", "keywords", "stages"
    }  # fmt: skip
    assert (document["session_id"], document["duration"]) == (SESSION, 40.0)
    assert document["playable"] and not document["complete"]  # finalize has not run
    assert [
        (c["start"], c["end"], c["title"], c["keywords"], c["segments"])
        for c in document["chapters"]
    ] == [
        (0.0, 16.0, "First", ["one"], [0, 1]),
        (16.0, 30.0, "Second", [], [1, 3]),
        (30.0, 40.0, "Quiet", [], [3, 3]),  # nothing was said
    ]
    assert document["transcript"] == TRANSCRIPT
    assert (document["summary"], document["keywords"]) == ("One, two, three.", ["one", "two"])
    assert document["stages"]["compress"]["status"] == "skipped"
    assert document["stages"]["compress"]["skipped"] == "compression is turned off"
    assert "finalize" not in document["stages"]
    warnings = " ".join(document["warnings"])
    assert "tesseract is not installed" in warnings and "429 until the last retry" in warnings


def test_a_failed_enrichment_stage_is_a_warning_and_an_unknown_session_an_error(
    sqlite_url: str,
) -> None:
    with session_scope(sqlite_url) as db:
        db.add(models.Session(id=SESSION, name="", status="processing", priority="normal"))
        db.flush()
        finish(db, "transcript", "failed", {})
    document = enrichment.enrichment_document(sqlite_url, SESSION)
    assert document["transcript"] == {"language": None, "segments": []}
    assert document["warnings"] == ["transcript failed: EnrichError: broken"]
    with pytest.raises(UnknownSessionError):
        enrichment.enrichment_document(sqlite_url, "nobody")
    with pytest.raises(ValueError, match="kind"), session_scope(sqlite_url) as db:
        enrichment.store(db, SESSION, {"slides": {}})
