"""The stage graph: what runs after what, and how the next stage is put on its queue."""

from __future__ import annotations

import logging
from enum import StrEnum

from celery import Celery
from sqlalchemy.orm import Session as DbSession

from shared.models import Job, JobStatus, Session
from shared.routing import (
    TASK_CONCAT_AUDIO,
    TASK_FINALIZE,
    TASK_MERGE,
    priority_value,
)
from workers.jobs import ensure_job

log = logging.getLogger(__name__)


class Stage(StrEnum):
    CONCAT_AUDIO = "concat_audio"
    MERGE = "merge"
    FINALIZE = "finalize"


STAGES: tuple[Stage, ...] = (Stage.CONCAT_AUDIO, Stage.MERGE, Stage.FINALIZE)
FIRST_STAGE = STAGES[0]
TASK_OF_STAGE: dict[Stage, str] = {
    Stage.CONCAT_AUDIO: TASK_CONCAT_AUDIO,
    Stage.MERGE: TASK_MERGE,
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


def session_outcome(jobs: list[Job]) -> str | None:
    """'completed', 'failed' or None (still going) from a session's job rows."""
    by_stage = {job.stage: job for job in jobs}
    if any(job.status in (JobStatus.FAILED.value, JobStatus.CANCELLED.value) for job in jobs):
        return "failed"
    last = by_stage.get(STAGES[-1].value)
    if last is not None and last.status == JobStatus.SUCCEEDED.value:
        return "completed"
    return None
