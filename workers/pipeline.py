"""The stage graph: which stage runs after which, and how a ready stage is put on its queue.

Each stage is one job row per session (``workers.jobs``) and one Celery task, routed to its
queue by ``shared.routing.TASK_ROUTES``. A stage becomes ready when every stage it runs
*after* has succeeded; stages with no ordering between them run side by side, each on its
own queue. The rule for handing on, which makes a lost or doubled hand-on harmless:

- The stage that succeeds locks the session row, marks its job succeeded and creates the
  job rows of the stages that became ready, in one transaction; after the commit it sends
  their tasks (``workers.dispatch``, whose sweeper sends whatever a lost send left
  pending). With the lock, of two predecessors finishing at once the later one sees both
  succeeded, so a stage with several predecessors is never forgotten.
- Sending is at least once: a redelivered or repeated task that finds its job succeeded
  sends the ready successors again, and a task finding its job taken or finished stops.
- A session is *completed* when every stage succeeded, *failed* when one failed or was
  cancelled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from shared.models import UNSUCCESSFUL_STATUSES, Job, JobStatus, Session, SessionStatus
from shared.routing import (
    TASK_COMPRESS,
    TASK_CONCAT_AUDIO,
    TASK_FINALIZE,
    TASK_MERGE,
)
from workers.jobs import ensure_job

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
    # Sent at the highest priority whatever the session's: a stage of milliseconds that
    # completes work already done. On the default queue behind a backlog of events it held
    # finished sessions back for minutes (bench/RESULTS.md, load).
    urgent: bool = False


GRAPH: Final[tuple[StageSpec, ...]] = (
    StageSpec(Stage.CONCAT_AUDIO, TASK_CONCAT_AUDIO),
    StageSpec(Stage.MERGE, TASK_MERGE, after=(Stage.CONCAT_AUDIO,)),
    StageSpec(Stage.COMPRESS, TASK_COMPRESS, after=(Stage.MERGE,)),
    StageSpec(Stage.FINALIZE, TASK_FINALIZE, after=(Stage.MERGE, Stage.COMPRESS), urgent=True),
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
