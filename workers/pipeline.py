"""The stage graph: what runs after what, and how the next stage is put on its queue.

Also the bookkeeping of incremental audio encoding, which runs beside the graph while a
session records: ``audio_chunk_state`` rows, changed only by conditional UPDATEs so two chunk
tasks of one session never encode at the same time and the concat_audio stage can take over.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from enum import StrEnum
from typing import Any, cast

from celery import Celery
from sqlalchemy import CursorResult, Executable, case, or_, select, update
from sqlalchemy.orm import Session as DbSession

from shared.db import session_scope
from shared.models import AudioChunkState, Job, JobStatus, Session
from shared.routing import (
    TASK_AUDIO_CHUNKS,
    TASK_COMPRESS,
    TASK_CONCAT_AUDIO,
    TASK_FINALIZE,
    TASK_MERGE,
    priority_value,
)
from workers.jobs import ensure_job, insert_ignore, now, requeue_stale

log = logging.getLogger(__name__)


class Stage(StrEnum):
    CONCAT_AUDIO = "concat_audio"
    MERGE = "merge"
    COMPRESS = "compress"
    FINALIZE = "finalize"


STAGES: tuple[Stage, ...] = (Stage.CONCAT_AUDIO, Stage.MERGE, Stage.COMPRESS, Stage.FINALIZE)
FIRST_STAGE = STAGES[0]
TASK_OF_STAGE: dict[Stage, str] = {
    Stage.CONCAT_AUDIO: TASK_CONCAT_AUDIO,
    Stage.MERGE: TASK_MERGE,
    Stage.COMPRESS: TASK_COMPRESS,
    Stage.FINALIZE: TASK_FINALIZE,
}


def next_stage(stage: Stage) -> Stage | None:
    index = STAGES.index(stage)
    return STAGES[index + 1] if index + 1 < len(STAGES) else None


def prepare(db: DbSession, session_id: str, stage: Stage) -> bool:
    """Make sure the stage's job row exists; True when it still needs to be sent."""
    job, _ = ensure_job(db, session_id, stage.value)
    return job.status == JobStatus.PENDING.value


def send(app: Celery, session: Session, stage: Stage) -> None:
    """Put a stage's task on its queue (routing comes from the app's task_routes)."""
    app.send_task(
        TASK_OF_STAGE[stage], args=[session.id], priority=priority_value(session.priority)
    )
    log.info("sent %s for session %s", stage.value, session.id)


def requeue_stale_jobs(
    app: Celery, database_url: str, *, lease: timedelta
) -> list[tuple[str, str]]:
    """Send again every running job whose worker died (no progress for ``lease``)."""
    with session_scope(database_url) as db:
        reset = requeue_stale(db, lease=lease)
        sessions = {sid: db.get(Session, sid) for sid, _ in reset}
    for session_id, stage in reset:
        session = sessions[session_id]
        if session is not None:
            log.warning("job %s of %s lost its worker: sent again", stage, session_id)
            send(app, session, Stage(stage))
    return reset


def session_outcome(jobs: list[Job]) -> str | None:
    """'completed', 'failed' or None (still going) from a session's job rows."""
    by_stage = {job.stage: job for job in jobs}
    if any(job.status in (JobStatus.FAILED.value, JobStatus.CANCELLED.value) for job in jobs):
        return "failed"
    last = by_stage.get(STAGES[-1].value)
    if last is not None and last.status == JobStatus.SUCCEEDED.value:
        return "completed"
    return None


# -- incremental audio ------------------------------------------------------------------------
# Not a stage: it has no job row and its work is optional, since concat_audio encodes
# whatever is missing. Routed to the audio queue with concat_audio (shared.routing).


def send_audio_chunks(app: Celery, session: Session, request: int) -> None:
    """Ask for a chunk pass covering the ``request``-th stored audio segment."""
    app.send_task(
        TASK_AUDIO_CHUNKS,
        args=[session.id, request],
        priority=priority_value(session.priority),
    )


def _affected(db: DbSession, stmt: Executable) -> int:
    """Rows a conditional UPDATE touched: how a transition knows it won."""
    return cast(CursorResult[Any], db.execute(stmt)).rowcount


def _chunk_state(db: DbSession, session_id: str) -> AudioChunkState:
    insert_ignore(
        db,
        AudioChunkState,
        {
            "session_id": session_id,
            "requested": 0,
            "covered": 0,
            "closed": False,
            "chunks_encoded": 0,
        },
        ["session_id"],
    )
    return db.execute(
        select(AudioChunkState)
        .where(AudioChunkState.session_id == session_id)
        .execution_options(populate_existing=True)
    ).scalar_one()


def audio_chunk_state(db: DbSession, session_id: str) -> AudioChunkState:
    """The session's row (created on first use)."""
    return _chunk_state(db, session_id)


def request_audio_chunks(db: DbSession, session_id: str) -> int:
    """Count one more stored audio segment; returns the count a chunk pass must cover.

    Runs in the ingest transaction, so a pass that reads the count also sees the segment.
    """
    _chunk_state(db, session_id)
    db.execute(
        update(AudioChunkState)
        .where(AudioChunkState.session_id == session_id)
        .values(requested=AudioChunkState.requested + 1, updated_at=now())
    )
    return _chunk_state(db, session_id).requested


def acquire_audio_chunks(
    db: DbSession, session_id: str, owner: str, *, lease: timedelta
) -> int | None:
    """Take the session's chunk lock for ``owner``; the request count the pass covers.

    None when the stage has taken over (closed) or another live pass holds the lock. Read
    the snapshot in the same transaction, after this, so it holds every counted segment.
    """
    _chunk_state(db, session_id)
    at = now()
    taken = _affected(
        db,
        update(AudioChunkState)
        .where(
            AudioChunkState.session_id == session_id,
            AudioChunkState.closed.is_(False),
            or_(
                AudioChunkState.owner.is_(None),
                AudioChunkState.owner == owner,
                AudioChunkState.lease_until < at,
            ),
        )
        .values(owner=owner, lease_until=at + lease, updated_at=at)
        .execution_options(synchronize_session=False),
    )
    if taken != 1:
        return None
    return _chunk_state(db, session_id).requested


def renew_audio_chunks(db: DbSession, session_id: str, owner: str, *, lease: timedelta) -> bool:
    """Extend the lease before writing a chunk; False = stop (closed, or the lock was lost)."""
    at = now()
    return (
        _affected(
            db,
            update(AudioChunkState)
            .where(
                AudioChunkState.session_id == session_id,
                AudioChunkState.owner == owner,
                AudioChunkState.closed.is_(False),
            )
            .values(lease_until=at + lease, updated_at=at)
            .execution_options(synchronize_session=False),
        )
        == 1
    )


def release_audio_chunks(
    db: DbSession, session_id: str, owner: str, *, covered: int | None, encoded: int
) -> bool:
    """Give the lock back, recording what the pass covered; True = run another pass.

    Another pass is due when segments were counted after this one read the count and the
    stage has not taken over: their tasks saw the lock held and rely on this one.
    """
    values: dict[str, object] = {
        "owner": None,
        "lease_until": None,
        "updated_at": now(),
        "chunks_encoded": AudioChunkState.chunks_encoded + encoded,
    }
    if covered is not None:
        values["covered"] = case(
            (AudioChunkState.covered < covered, covered), else_=AudioChunkState.covered
        )
    released = _affected(
        db,
        update(AudioChunkState)
        .where(AudioChunkState.session_id == session_id, AudioChunkState.owner == owner)
        .values(**values)
        .execution_options(synchronize_session=False),
    )
    state = _chunk_state(db, session_id)
    return released == 1 and covered is not None and not state.closed and state.requested > covered


def close_audio_chunks(db: DbSession, session_id: str) -> None:
    """The concat_audio stage takes over: no chunk pass may write after this commits."""
    _chunk_state(db, session_id)
    db.execute(
        update(AudioChunkState)
        .where(AudioChunkState.session_id == session_id)
        .values(closed=True, updated_at=now())
    )


def audio_chunks_busy(db: DbSession, session_id: str) -> bool:
    """Whether a live chunk pass still holds the lock (it stops before its next write)."""
    state = _chunk_state(db, session_id)
    if state.owner is None or state.lease_until is None:
        return False
    until = state.lease_until
    if until.tzinfo is None:  # SQLite hands back naive UTC
        until = until.replace(tzinfo=now().tzinfo)
    return until > now()
