"""Celery tasks: small wrappers that claim a job row, run a stage and hand on to the next.

Retry policy lives in ``workers.retry``; what a stage does lives in ``workers.stages``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from celery import Task
from pydantic import ValidationError
from sqlalchemy import select

from shared import models
from shared.db import session_scope
from shared.events import Event
from shared.ids import validate_session_id
from shared.models import JobStatus, SessionStatus
from shared.routing import TASK_CONCAT_AUDIO, TASK_FINALIZE, TASK_INGEST_EVENT, TASK_MERGE
from shared.settings import get_settings
from shared.storage import Storage
from workers import jobs, stages
from workers.app import app
from workers.ingest import (
    apply_event,
    lock_session,
    pauses,
    ready_to_process,
    record_event,
    start_processing,
)
from workers.media.errors import Cancelled
from workers.pipeline import FIRST_STAGE, Stage, next_stage, prepare, send
from workers.retry import backoff_seconds, is_permanent

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 1.0
INGEST_MAX_RETRIES = 50  # events must not be lost: with the 600 s cap this is about 8 hours


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# -- ingest ---------------------------------------------------------------------------------
@app.task(name=TASK_INGEST_EVENT, bind=True, acks_late=True)
def ingest_event(self: Task, event: dict[str, Any]) -> str:
    """Apply one capture-agent event; start processing once the session is complete."""
    try:
        parsed = Event.model_validate(event)
    except ValidationError as exc:
        log.error("rejected invalid event %r: %s", event.get("event_id"), exc)
        return f"rejected: {exc.error_count()} validation error(s)"
    settings = get_settings()
    try:
        with session_scope(settings.database_url) as db:
            session = lock_session(db, parsed.session_id)
            fresh = record_event(db, parsed)
            if fresh:
                apply_event(db, session, parsed)
            must_send = ready_to_process(db, session) and start_processing(db, session)
        if must_send:
            send(app, session, FIRST_STAGE)
    except Exception as exc:
        if is_permanent(exc):
            raise
        raise self.retry(
            exc=exc, countdown=backoff_seconds(self.request.retries), max_retries=INGEST_MAX_RETRIES
        ) from exc
    return "applied" if fresh else "duplicate"


# -- stages ---------------------------------------------------------------------------------
class _Progress:
    """Throttled progress writer that also notices an operator's cancel."""

    def __init__(self, database_url: str, job_id: int, task_id: str) -> None:
        self.database_url, self.job_id, self.task_id = database_url, job_id, task_id
        self._last = 0.0

    def __call__(self, fraction: float) -> None:
        now = time.monotonic()
        if now - self._last < PROGRESS_INTERVAL_S:
            return
        self._last = now
        with session_scope(self.database_url) as db:
            status = jobs.report_progress(db, self.job_id, self.task_id, fraction)
        if status is JobStatus.CANCELLED:
            raise Cancelled(f"job {self.job_id} was cancelled")


def _snapshot(db: Any, session: models.Session) -> stages.SessionSnapshot:
    segments = (
        db.execute(
            select(models.Segment)
            .where(models.Segment.session_id == session.id)
            .order_by(models.Segment.index)
        )
        .scalars()
        .all()
    )
    refs = tuple(
        stages.SegmentRef(
            kind=s.kind,
            file=s.file,
            storage_key=s.storage_key,
            sha256=s.sha256,
            started_at=s.started_at,
            duration=s.duration,
        )
        for s in segments
    )
    return stages.SessionSnapshot(
        id=session.id,
        started_at=session.started_at,
        segments=refs,
        pauses=tuple(pauses(db, session)),
    )


StageWork = Callable[
    [stages.SessionSnapshot, dict[str, str | None], Callable[[float], None]], stages.StageOutput
]


def run_stage(task: Task, session_id: str, stage: Stage, work: StageWork) -> str:
    settings = get_settings()
    url = settings.database_url
    validate_session_id(session_id)
    task_id = str(task.request.id)
    with session_scope(url) as db:
        session = db.get(models.Session, session_id)
        if session is None:
            log.error("%s: unknown session %r", stage.value, session_id)
            return f"unknown session {session_id!r}"
        claimed = jobs.claim(
            db, session_id, stage.value, task_id, lease=timedelta(seconds=settings.job_lease_s)
        )
        if claimed is None:
            job = jobs.get_job(db, session_id, stage.value)
            done = job is not None and job.status == JobStatus.SUCCEEDED.value
            following = next_stage(stage) if done else None
            must_send = following is not None and prepare(db, session_id, following)
            status = job.status if job else "missing"
        else:
            snapshot = _snapshot(db, session)
            outputs = {job.stage: job.output_key for job in session.jobs}
    if claimed is None:
        if must_send and following is not None:
            send(app, session, following)
        return f"skipped: {stage.value} is {status}"

    try:
        out = work(snapshot, outputs, _Progress(url, claimed.job_id, task_id))
    except Cancelled:
        log.info("%s for %s cancelled", stage.value, session_id)
        return "cancelled"
    except Exception as exc:
        retries_left = task.request.retries < settings.task_max_retries
        if is_permanent(exc) or not retries_left:
            with session_scope(url) as db:
                jobs.fail(db, claimed.job_id, task_id, _describe(exc))
                _set_session_status(db, session_id, SessionStatus.FAILED)
            log.error("%s for %s failed: %s", stage.value, session_id, _describe(exc))
            raise
        with session_scope(url) as db:
            jobs.note_retry(db, claimed.job_id, task_id, _describe(exc))
        raise task.retry(
            exc=exc,
            countdown=backoff_seconds(task.request.retries),
            max_retries=settings.task_max_retries,
        ) from exc

    following = next_stage(stage)
    must_send = False
    with session_scope(url) as db:
        if jobs.succeed(db, claimed.job_id, task_id, output_key=out.output_key, result=out.result):
            if following is None:
                _set_session_status(db, session_id, SessionStatus.COMPLETED)
            else:
                must_send = prepare(db, session_id, following)
        session = db.get(models.Session, session_id)
    if must_send and following is not None and session is not None:
        send(app, session, following)
    return f"{stage.value} succeeded"


def _set_session_status(db: Any, session_id: str, status: SessionStatus) -> None:
    session = db.get(models.Session, session_id)
    if session is not None:
        session.status = status.value


def _storage() -> Storage:
    return Storage(get_settings().storage)


@app.task(name=TASK_CONCAT_AUDIO, bind=True, acks_late=True)
def concat_audio(self: Task, session_id: str) -> str:
    return run_stage(
        self,
        session_id,
        Stage.CONCAT_AUDIO,
        lambda snap, _outs, progress: stages.concat_audio(
            snap, _storage(), get_settings(), progress
        ),
    )


@app.task(name=TASK_MERGE, bind=True, acks_late=True)
def merge(self: Task, session_id: str) -> str:
    return run_stage(
        self,
        session_id,
        Stage.MERGE,
        lambda snap, outs, progress: stages.merge(
            snap, _storage(), get_settings(), progress, audio_key=outs.get(Stage.CONCAT_AUDIO.value)
        ),
    )


@app.task(name=TASK_FINALIZE, bind=True, acks_late=True)
def finalize(self: Task, session_id: str) -> str:
    def work(
        snap: stages.SessionSnapshot,
        outs: dict[str, str | None],
        _progress: Callable[[float], None],
    ) -> stages.StageOutput:
        merged = outs.get(Stage.MERGE.value)
        if merged is None:
            raise stages.MediaError(f"session {snap.id!r} has no merged output to finalize")
        return stages.finalize(snap, _storage(), merged)

    return run_stage(self, session_id, Stage.FINALIZE, work)
