"""A session as the stages see it, read from the database; probe results written back.

The snapshot is read in the transaction that claims a job (or takes the audio chunk lock),
so it holds every segment counted before.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session as DbSession

from shared import models
from shared.db import session_scope
from shared.options import SessionOptions
from workers.stages.context import SegmentRef, SessionSnapshot


def _parse_time(value: object) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def load_snapshot(db: DbSession, session: models.Session) -> SessionSnapshot:
    """The session's segments (in order) and pauses, as the stages see them."""
    segments = db.execute(
        select(models.Segment)
        .where(models.Segment.session_id == session.id)
        .order_by(models.Segment.index)
    ).scalars()
    refs = tuple(
        SegmentRef(
            kind=s.kind,
            file=s.file,
            storage_key=s.storage_key,
            sha256=s.sha256,
            started_at=s.started_at,
            duration=s.duration,
            probed_duration=s.probed_duration,
        )
        for s in segments
    )
    return SessionSnapshot(
        id=session.id,
        started_at=session.started_at,
        segments=refs,
        pauses=tuple(pauses(db, session)),
        options=SessionOptions.from_json(session.options),
    )


def remember_probes(database_url: str, session_id: str, probed: dict[str, float]) -> None:
    """Store durations measured by probing, so later stages need not probe those files."""
    if not probed:
        return
    with session_scope(database_url) as db:
        for key, seconds in probed.items():
            db.execute(
                update(models.Segment)
                .where(
                    models.Segment.session_id == session_id,
                    models.Segment.storage_key == key,
                    models.Segment.probed_duration.is_(None),
                )
                .values(probed_duration=seconds)
            )


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
