"""The stage runner: claim a stage's job, run its work, record the outcome, hand on.

``run_stage`` is what every stage task does (``workers.tasks`` only names the stage):

1. In one transaction: claim the job row (``workers.jobs.claim``) and read the session's
   snapshot. A job already taken or finished stops here; a succeeded one re-sends its ready
   successors (a repeated task may be the recovery of a hand-on whose message was lost).
2. Run the stage's work (``workers.stages.WORK``) with a progress callback that writes at
   most once a second and raises :class:`Cancelled` when an operator cancelled the job.
3. Success: lock the session, mark the job succeeded and create the ready successors' job
   rows (``workers.pipeline.hand_on``) in one transaction, then send their tasks.
   Failure: the job records the reason, as failed when the retry policy
   (``workers.retry``) gives up, as retrying otherwise; the exception goes on to the task,
   whose base class retries it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy.orm import Session as DbSession

from shared import models
from shared.db import session_scope
from shared.diagnostics import describe
from shared.ids import validate_session_id
from shared.models import JobStatus, SessionStatus
from shared.settings import get_settings
from shared.storage import Storage
from workers import jobs, pipeline
from workers.media import Cancelled
from workers.pipeline import Stage
from workers.retry import will_retry
from workers.snapshot import load_snapshot, remember_probes
from workers.stages import WORK, StageContext

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 1.0  # progress writes to the database per job, at most


class TaskRequest(Protocol):
    id: str | None
    retries: int


class RunningTask(Protocol):
    """What the runner needs of a bound Celery task."""

    request: TaskRequest

    @property
    def app(self) -> Any: ...

    def retry_limit(self) -> int: ...


class Progress:
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


def _set_session_status(db: DbSession, session_id: str, status: SessionStatus) -> None:
    session = db.get(models.Session, session_id)
    if session is not None:
        session.status = status.value


def run_stage(
    task: RunningTask,
    session_id: str,
    stage: Stage,
    *,
    take_over: Callable[[str, str], Callable[[], None]] | None = None,
) -> str:
    """Run ``stage`` for a session as the bound ``task``.

    ``take_over(database_url, session_id)`` runs after the claim, before the work, and
    returns the wait for other writers of the stage's scratch files (the audio stage stops
    the chunk passes of its session this way), which the work calls before deleting them.
    """
    settings = get_settings()
    url = settings.database_url
    validate_session_id(session_id)
    task_id = str(task.request.id)
    due: list[Stage] = []
    with session_scope(url) as db:
        session = db.get(models.Session, session_id)
        if session is None:
            log.error("%s: unknown session %r", stage.value, session_id)
            return f"unknown session {session_id!r}"
        lease = timedelta(seconds=settings.job_lease_s)
        claimed = jobs.claim(db, session_id, stage.value, task_id, lease=lease)
        if claimed is None:
            job = jobs.get_job(db, session_id, stage.value)
            status = job.status if job else "missing"
            if status == JobStatus.SUCCEEDED.value:
                pipeline.lock_session(db, session_id)
                due = pipeline.hand_on(db, session_id, stage)
        else:
            snapshot = load_snapshot(db, session)
            outputs = {job.stage: job.output_key for job in session.jobs}
    if claimed is None:
        pipeline.send_all(task.app, session, due)
        return f"skipped: {stage.value} is {status}"

    ctx = StageContext(
        snapshot=snapshot,
        storage=Storage(settings.storage),
        settings=settings,
        progress=Progress(url, claimed.job_id, task_id),
        outputs=outputs,
    )
    try:
        if take_over is not None:
            ctx.wait_for_writers = take_over(url, session_id)
        out = WORK[stage](ctx)
    except Cancelled:
        log.info("%s for %s cancelled", stage.value, session_id)
        return "cancelled"
    except Exception as exc:
        with session_scope(url) as db:
            if will_retry(exc, task.request.retries, task.retry_limit()):
                jobs.note_retry(db, claimed.job_id, task_id, describe(exc))
            else:
                jobs.fail(db, claimed.job_id, task_id, describe(exc))
                _set_session_status(db, session_id, SessionStatus.FAILED)
                log.error("%s for %s failed: %s", stage.value, session_id, describe(exc))
        raise
    remember_probes(url, session_id, ctx.probed)  # later stages plan without probing

    with session_scope(url) as db:
        session = pipeline.lock_session(db, session_id)
        if jobs.succeed(db, claimed.job_id, task_id, output_key=out.output_key, result=out.result):
            due = pipeline.hand_on(db, session_id, stage)
    if session is not None:
        pipeline.send_all(task.app, session, due)
    return f"{stage.value} succeeded"
