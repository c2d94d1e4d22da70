"""The stage graph: which stage runs after which, and how a ready stage is put on its queue.

Each stage is one job row per session (``workers.jobs``) and one Celery task, routed to its
queue by ``shared.routing.TASK_ROUTES``. A stage becomes ready when every stage it runs
*after* has succeeded; stages with no ordering between them run side by side, each on its
own queue. The rule for handing on, which makes a lost or doubled hand-on harmless:

- The stage that succeeds locks the session row, marks its job succeeded and creates the
  job rows of the stages that became ready, in one transaction; after the commit it sends
  their tasks. With the lock, of two predecessors finishing at once the later one sees both
  succeeded, so a stage with several predecessors is never forgotten.
- Sending is at least once: a redelivered or repeated task that finds its job succeeded
  sends the ready successors again, and a task finding its job taken or finished stops.
- A session is *completed* when every stage succeeded, *failed* when one failed or was
  cancelled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Final

from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from shared.db import session_scope
from shared.models import UNSUCCESSFUL_STATUSES, Job, JobStatus, Session, SessionStatus
from shared.routing import (
    TASK_COMPRESS,
    TASK_CONCAT_AUDIO,
    TASK_FINALIZE,
    TASK_MERGE,
    priority_value,
)
from workers.jobs import ensure_job, requeue_stale

log = logging.getLogger(__name__)


class Stage(StrEnum):
    CONCAT_AUDIO = "concat_audio"
    MERGE = "merge"
    COMPRESS = "compress"
    FINALIZE = "finalize"


@dataclass(frozen=True)
class StageSpec:
    stage: Stage
    task: str  # Celery task name; its queue comes from shared.routing
    after: tuple[Stage, ...] = ()  # ready once every one of these succeeded


GRAPH: Final[tuple[StageSpec, ...]] = (
    StageSpec(Stage.CONCAT_AUDIO, TASK_CONCAT_AUDIO),
    StageSpec(Stage.MERGE, TASK_MERGE, after=(Stage.CONCAT_AUDIO,)),
    StageSpec(Stage.COMPRESS, TASK_COMPRESS, after=(Stage.MERGE,)),
    StageSpec(Stage.FINALIZE, TASK_FINALIZE, after=(Stage.MERGE, Stage.COMPRESS)),
)
SPECS: Final[dict[Stage, StageSpec]] = {spec.stage: spec for spec in GRAPH}
STAGES: Final[tuple[Stage, ...]] = tuple(spec.stage for spec in GRAPH)  # a topological order
ROOTS: Final[tuple[Stage, ...]] = tuple(spec.stage for spec in GRAPH if not spec.after)


def _check_graph() -> None:
    """Every predecessor is listed before its stage, so GRAPH's order is topological."""
    seen: set[Stage] = set()
    for spec in GRAPH:
        missing = [s.value for s in spec.after if s not in seen]
        if missing:
            raise RuntimeError(f"stage {spec.stage.value} runs after unlisted stages {missing}")
        seen.add(spec.stage)


_check_graph()


def successors(stage: Stage) -> tuple[Stage, ...]:
    return tuple(spec.stage for spec in GRAPH if stage in spec.after)


def ready_after(stage: Stage, succeeded: set[str]) -> tuple[Stage, ...]:
    """The successors of ``stage`` whose predecessors have all succeeded."""
    return tuple(s for s in successors(stage) if all(p.value in succeeded for p in SPECS[s].after))


# -- in the caller's transaction --------------------------------------------------------------
def lock_session(db: DbSession, session_id: str) -> Session | None:
    """The session row, locked until commit: hand-ons of one session serialise on it."""
    return db.execute(
        select(Session).where(Session.id == session_id).with_for_update()
    ).scalar_one_or_none()


def _statuses(db: DbSession, session_id: str) -> dict[str, str]:
    rows = db.execute(select(Job.stage, Job.status).where(Job.session_id == session_id)).all()
    return {stage: status for stage, status in rows}


def _pending(db: DbSession, session_id: str, stages: tuple[Stage, ...]) -> list[Stage]:
    """Create the stages' job rows; the ones still pending, which must be sent."""
    due = []
    for stage in stages:
        job, _ = ensure_job(db, session_id, stage.value)
        if job.status == JobStatus.PENDING.value:
            due.append(stage)
    return due


def start(db: DbSession, session_id: str) -> list[Stage]:
    """Processing starts: job rows for the stages that run first; the ones to send."""
    return _pending(db, session_id, ROOTS)


def hand_on(db: DbSession, session_id: str, stage: Stage) -> list[Stage]:
    """After ``stage`` succeeded (session row locked): the successors to send.

    Marks the session completed when every stage has succeeded.
    """
    statuses = _statuses(db, session_id)
    succeeded = {s for s, status in statuses.items() if status == JobStatus.SUCCEEDED.value}
    if all(s.value in succeeded for s in STAGES):
        session = db.get(Session, session_id)
        if session is not None:
            session.status = SessionStatus.COMPLETED.value
    return _pending(db, session_id, ready_after(stage, succeeded))


def session_outcome(jobs: list[Job]) -> str | None:
    """'completed', 'failed' or None (still going) from a session's job rows."""
    if any(job.status in UNSUCCESSFUL_STATUSES for job in jobs):
        return "failed"
    succeeded = {job.stage for job in jobs if job.status == JobStatus.SUCCEEDED.value}
    return "completed" if all(s.value in succeeded for s in STAGES) else None


# -- sending (after the commit) ---------------------------------------------------------------
def send(app: Celery, session: Session, stage: Stage) -> None:
    """Put a stage's task on its queue (routing comes from the app's task_routes)."""
    app.send_task(SPECS[stage].task, args=[session.id], priority=priority_value(session.priority))
    log.info("sent %s for session %s", stage.value, session.id)


def send_all(app: Celery, session: Session, stages: list[Stage]) -> None:
    for stage in stages:
        send(app, session, stage)


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
