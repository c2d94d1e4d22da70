"""Turning events into state: sessions and segments rows, and the start of processing.

Each event is applied in one transaction together with its row in ``events``; the unique
(session, seq) makes a re-sent event a no-op.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from celery import Celery
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as DbSession

from shared import models
from shared.db import session_scope
from shared.diagnostics import describe, describe_invalid, quoted
from shared.events import Event, SessionStartedPayload
from shared.ids import InvalidNameError
from shared.models import SessionStatus
from shared.options import SessionOptions
from shared.receipts import write_receipt
from shared.routing import (
    TASK_AUDIO_CHUNKS,
    TASK_CHAPTER_SAMPLES,
    TASK_COMPRESS_PART,
    TASK_LIVE_FRAGMENT,
    TASK_TRANSCRIPT_PIECES,
    background_priority,
    priority_value,
)
from shared.settings import Settings
from shared.storage import Storage, StorageError
from workers import audiochunks, chapterparts, parts, transcriptparts
from workers.dispatch import send_all
from workers.jobs import insert_ignore
from workers.media import MediaError
from workers.pipeline import Stage, start
from workers.snapshot import remember_probes
from workers.stages.context import probe_duration

log = logging.getLogger(__name__)

MAX_REJECTION_CHARS = 2000  # of the line logged (and returned) for a refused event


def ingest(app: Celery, settings: Settings, event: dict[str, Any]) -> str:
    """Apply one capture-agent event; start processing once the session is complete.

    An invalid event is rejected (logged, not retried: it can never become valid). After the
    commit: the receipt of a stored segment, then the first stages' tasks or a chunk pass.
    """
    try:
        parsed = Event.model_validate(event)
    except ValidationError as exc:
        reason = rejection(event, exc)
        log.error("%s", reason)
        return reason
    chunk_request: int | None = None
    part_wanted = live_wanted = False
    pieces_wanted = samples_wanted = False
    due: list[Stage] = []
    with session_scope(settings.database_url) as db:
        session = lock_session(db, parsed.session_id)
        fresh = record_event(db, parsed)
        if fresh:
            late = parsed.type == "segment.stored" and session.status != (
                SessionStatus.RECORDING.value
            )
            apply_event(db, session, parsed)
            if late:  # the session was settled without it (workers.incomplete)
                note = (f"segment {parsed.segment().file!r} arrived after the session was "
                        "processed without it: it is in storage, not in the outputs")  # fmt: skip
                session.warnings = [*(session.warnings or []), note]
                log.warning("session %s: %s", session.id, note)
            if wants_chunk_pass(settings, session, parsed):
                chunk_request = audiochunks.request(db, session.id)
            if settings.compress and settings.compress_parts and wants_part(session, parsed):
                segment = parsed.segment()
                part_wanted = parts.request(db, session.id, segment.file, segment.sha256)
            live_wanted = settings.live_view and wants_live_pass(session, parsed)
            if wants_pieces(session, parsed):  # some audio may have settled
                options = SessionOptions.from_json(session.options)
                pieces_wanted = transcriptparts.wanted(settings, options)
            if wants_part(session, parsed):  # a video segment: its chapter samples
                options = SessionOptions.from_json(session.options)
                samples_wanted = chapterparts.wanted(settings, options)
        if ready_to_process(db, session):
            due = start_processing(db, session)
    if parsed.type == "segment.stored":
        confirm_segment(settings, parsed)
        probe_segment(settings, parsed)
    # Work done while recording: a lost message costs only time (the next one, or the stage
    # after the end, covers it), so a failed send is logged, never raised.
    segment_args = [session.id, parsed.segment().file] if parsed.type == "segment.stored" else []
    now, background = priority_value(session.priority), background_priority(session.priority)
    # The live view is watched as it happens: its pass (a remux, a few tenths of a second)
    # goes at the session's priority, ahead of the chunk passes queued before it. The rest
    # is background work: one priority step after the stages of sessions of the same
    # priority, so a session that ended (concat_audio, merge: the audio queue too) never
    # waits behind the passes of sessions still recording.
    if live_wanted:  # a hole in the live view, not in the outputs
        live_args: list[str | None] = [*segment_args] or [session.id, None]  # None: it ended
        _request(app, TASK_LIVE_FRAGMENT, live_args, now, "live fragments", session.id)
    if part_wanted:
        _request(app, TASK_COMPRESS_PART, segment_args, background, "the part", session.id)
    if pieces_wanted:
        _request(app, TASK_TRANSCRIPT_PIECES, [session.id], background,
                 "transcript pieces", session.id)  # fmt: skip
    if samples_wanted:
        _request(app, TASK_CHAPTER_SAMPLES, segment_args, background, "chapter samples",
                 session.id)  # fmt: skip
    if due:
        send_all(app, settings.database_url, session, due)
    elif chunk_request is not None:  # once processing starts, the stage encodes it all
        _request(app, TASK_AUDIO_CHUNKS, [session.id, chunk_request], background,
                 "audio chunks", session.id)  # fmt: skip
    return "applied" if fresh else "duplicate"


def _request(app: Celery, task: str, args: list[Any], priority: int, what: str,
             session_id: str) -> None:  # fmt: skip
    """Send optional work's task; a failure to send is logged (see the caller)."""
    try:
        app.send_task(task, args=args, priority=priority)
    except Exception as exc:
        log.warning("could not request %s of %s: %s", what, session_id, describe(exc))


def rejection(event: object, exc: ValidationError) -> str:
    """One bounded line naming a refused event (its id, type and session, as sent) and why."""
    fields = event if isinstance(event, dict) else {}
    name = (
        f"event {quoted(fields.get('event_id'))} ({quoted(fields.get('type'))}) of session "
        f"{quoted(fields.get('session_id'))}"
        if fields
        else f"event {quoted(event)}"
    )
    return f"rejected {name}: {describe_invalid(exc)}"[:MAX_REJECTION_CHARS]


def probe_segment(settings: Settings, event: Event) -> None:
    """Measure a stored segment's duration now, while the rest of the session still ships,
    so the stages after the session's end plan without probing it (the file is usually
    still in the page cache from the checksum). A file that cannot be probed is left to
    the stage that reads it, which fails naming it."""
    segment = event.segment()
    try:
        seconds = probe_duration(Storage(settings.storage).path(segment.key))
    except (MediaError, StorageError, InvalidNameError):
        return
    remember_probes(settings.database_url, event.session_id, {segment.key: seconds})


def confirm_segment(settings: Settings, event: Event) -> None:
    """Receipt for the agent (it may delete its local copy): only for verified content.

    Written after the commit and for duplicates too, so a lost receipt is restored.
    """
    segment = event.segment()
    storage = Storage(settings.storage)
    try:
        verified = storage.verify(segment.key, segment.sha256)
    except (StorageError, InvalidNameError) as exc:  # e.g. a symlink put in its place
        log.error("segment %r of session %r: %s; no receipt", segment.file, event.session_id, exc)
        return
    if verified:
        write_receipt(storage, event.session_id, segment.index, segment.sha256)
    else:
        log.warning(
            "segment %s of %s does not match its checksum in storage; no receipt",
            segment.file,
            event.session_id,
        )


def _parse_time(value: object) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def lock_session(db: DbSession, session_id: str) -> models.Session:
    """Create the session row if needed and lock it, so ingests of one session serialise."""
    insert_ignore(
        db,
        models.Session,
        {
            "id": session_id,
            "name": "",
            "status": SessionStatus.RECORDING.value,
            "priority": "normal",
        },
        ["id"],
    )
    return db.execute(
        select(models.Session).where(models.Session.id == session_id).with_for_update()
    ).scalar_one()


def record_event(db: DbSession, event: Event) -> bool:
    """Store the event; False when this (session, seq) or event id was already received."""
    try:
        with db.begin_nested():
            db.add(
                models.Event(
                    event_id=event.event_id,
                    session_id=event.session_id,
                    seq=event.seq,
                    type=event.type,
                    schema_version=event.schema_version,
                    payload=event.payload,
                    emitted_at=event.emitted_at,
                )
            )
    except IntegrityError:
        return False
    return True


def apply_event(db: DbSession, session: models.Session, event: Event) -> None:
    payload = event.payload
    if event.type == "session.started":
        session.name = str(payload.get("name", ""))[:512]
        session.started_at = _parse_time(payload.get("started_at")) or event.emitted_at
        session.priority = str(payload.get("priority", session.priority))
        options = SessionStartedPayload.model_validate(payload).options.to_json()
        session.options = options or None
    elif event.type == "segment.stored":
        segment = event.segment()
        insert_ignore(
            db,
            models.Segment,
            {
                "session_id": session.id,
                "index": segment.index,
                "kind": segment.kind,
                "file": segment.file,
                "storage_key": segment.key,
                "sha256": segment.sha256,
                "size": segment.size,
                "started_at": segment.started_at,
                "duration": segment.duration,
            },
            ["session_id", "file"],
        )
    elif event.type == "session.ended":
        session.ended_at = _parse_time(payload.get("ended_at")) or event.emitted_at
        count = payload.get("segment_count")
        session.expected_segments = int(count) if isinstance(count, int) else None
    # session.paused / session.resumed / heartbeat are kept in the events table only.


def wants_chunk_pass(settings: Settings, session: models.Session, event: Event) -> bool:
    """A fresh segment of a session still recording: some audio may have settled (an audio
    segment), or a piece of the playable MP4 may be final (either kind: a piece waits for
    the next video segment and for its audio; ``workers.assembly``).

    Once processing has started the concat_audio and merge stages do everything left.
    """
    if event.type != "segment.stored" or session.status != SessionStatus.RECORDING.value:
        return False
    if event.segment().kind == "audio":
        return settings.audio_incremental or settings.playable_assembly
    return settings.playable_assembly


def wants_pieces(session: models.Session, event: Event) -> bool:
    """A fresh audio segment of a session still recording: a transcript piece may have
    settled (``workers.transcriptparts``); once processing has started the transcript stage
    makes the rest."""
    if event.type != "segment.stored" or session.status != SessionStatus.RECORDING.value:
        return False
    return event.segment().kind == "audio"


def wants_part(session: models.Session, event: Event) -> bool:
    """A fresh video segment of a session still recording: its compressed part can be made
    now (``workers.parts``); once processing has started the compress stage makes the rest.
    """
    if event.type != "segment.stored" or session.status != SessionStatus.RECORDING.value:
        return False
    return event.segment().kind == "video"


def wants_live_pass(session: models.Session, event: Event) -> bool:
    """A fresh segment of either kind of a session still recording (a video segment's
    fragment waits for its audio), or the end of the recording (``workers.livemaker``)."""
    if event.type == "session.ended":
        return True
    return event.type == "segment.stored" and session.status == SessionStatus.RECORDING.value


def ready_to_process(db: DbSession, session: models.Session) -> bool:
    if session.ended_at is None or session.expected_segments is None:
        return False
    stored = db.execute(
        select(func.count())
        .select_from(models.Segment)
        .where(models.Segment.session_id == session.id)
    ).scalar_one()
    return stored >= session.expected_segments


def start_processing(db: DbSession, session: models.Session) -> list[Stage]:
    """Mark the session processing and create its first jobs; the stages to send."""
    if session.status == SessionStatus.RECORDING.value:
        session.status = SessionStatus.PROCESSING.value
    if session.started_at is None:
        session.started_at = db.execute(
            select(func.min(models.Segment.started_at)).where(
                models.Segment.session_id == session.id
            )
        ).scalar_one()
    return start(db, session.id)
