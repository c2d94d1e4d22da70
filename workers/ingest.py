"""Turning events into state: sessions and segments rows, and the start of processing.

Each event is applied in one transaction together with its row in ``events``; the unique
(session, seq) makes a re-sent event a no-op.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as DbSession

from shared import models
from shared.events import Event
from shared.models import SessionStatus
from workers.jobs import insert_ignore
from workers.pipeline import FIRST_STAGE, prepare


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


def wants_audio_chunks(session: models.Session, event: Event) -> bool:
    """A fresh audio segment of a session still recording: some audio may have settled.

    Once processing has started the concat_audio stage encodes everything left itself.
    """
    if event.type != "segment.stored" or session.status != SessionStatus.RECORDING.value:
        return False
    return event.segment().kind == "audio"


def ready_to_process(db: DbSession, session: models.Session) -> bool:
    if session.ended_at is None or session.expected_segments is None:
        return False
    stored = db.execute(
        select(func.count())
        .select_from(models.Segment)
        .where(models.Segment.session_id == session.id)
    ).scalar_one()
    return stored >= session.expected_segments


def start_processing(db: DbSession, session: models.Session) -> bool:
    """Mark the session processing and create the first job; True if it must be sent."""
    if session.status == SessionStatus.RECORDING.value:
        session.status = SessionStatus.PROCESSING.value
    if session.started_at is None:
        session.started_at = db.execute(
            select(func.min(models.Segment.started_at)).where(
                models.Segment.session_id == session.id
            )
        ).scalar_one()
    return prepare(db, session.id, FIRST_STAGE)


def pauses(db: DbSession, session: models.Session) -> list[tuple[datetime, datetime]]:
    """Explicit pause intervals from the agent's session.paused / session.resumed events."""
    rows = db.execute(
        select(models.Event.type, models.Event.emitted_at, models.Event.payload)
        .where(
            models.Event.session_id == session.id,
            models.Event.type.in_(["session.paused", "session.resumed"]),
        )
        .order_by(models.Event.seq)
    ).all()
    result: list[tuple[datetime, datetime]] = []
    paused_at: datetime | None = None
    for kind, emitted_at, payload in rows:
        at = _parse_time(payload.get("at")) or emitted_at
        if kind == "session.paused" and paused_at is None:
            paused_at = at
        elif kind == "session.resumed" and paused_at is not None and at is not None:
            result.append((paused_at, at))
            paused_at = None
    return result
