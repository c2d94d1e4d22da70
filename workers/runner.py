"""The stage runner: claim a stage's job, run its work, record the outcome, hand on.

``run_stage`` is what every stage task does (``workers.tasks`` only names the stage):

1. In one transaction: claim the job row (``workers.jobs.claim``) and read the session's
   snapshot. A job already taken or finished stops here; a succeeded one re-sends its ready
   successors (a repeated task may be the recovery of a hand-on whose message was lost).
2. Run the stage's work (``workers.stages.WORK``) under a heartbeat (a thread touching the
   job row every ``job_heartbeat_s``), with a progress callback that writes at most once a
   second; both stop the work (:class:`Cancelled`) once the job is no longer this
   execution's (an operator cancelled it, or it was taken over after its lease).
3. Success: lock the session, mark the job succeeded and create the ready successors' job
   rows (``workers.pipeline.hand_on``) in one transaction, then send their tasks.
   The stage's enrichment documents and search moments (``workers.search.replace``:
   the session's old ones deleted, the new ones inserted) are stored in that transaction
   too.
   Failure: the job records the reason, as failed when the retry policy
   (``workers.retry``) gives up, else pending again with its retry due (the sweeper sends
   it if the retry message is lost); the exception goes on to the task, whose base class
   retries it. A failed required stage fails the session; a failed optional one
   (enrichment) hands on like a success, so what comes after it still runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy.orm import Session as DbSession

from shared import models
from shared.clock import utcnow
from shared.db import session_scope
from shared.diagnostics import describe
from shared.ids import validate_session_id
from shared.models import JobStatus, SessionStatus
from shared.settings import get_settings
from shared.storage import Storage
from workers import assembly, dispatch, enrichment, jobs, live, parts, pipeline, search, webhook
from workers.media import Cancelled
from workers.pipeline import Stage
from workers.retry import retry_delay_seconds, will_retry
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
    """Throttled progress writer that stops the work once this execution lost its job.

    The job is lost when an operator cancelled it or, after a heartbeat could not reach the
    database for a whole lease, another worker took it over; either way :class:`Cancelled`
    is raised at the next report, and the owner-conditional finish could not win anyway.
    """

    def __init__(self, database_url: str, job_id: int, owner: str) -> None:
        self.database_url, self.job_id, self.owner = database_url, job_id, owner
        self._last = 0.0
        self.lost = threading.Event()

    def __call__(self, fraction: float) -> None:
        if self.lost.is_set():
            raise Cancelled(f"job {self.job_id} is no longer held by this worker")
        now = time.monotonic()
        if now - self._last < PROGRESS_INTERVAL_S:
            return
        self._last = now
        self.beat(fraction)

    def beat(self, fraction: float | None = None) -> None:
        """Touch the job row (the heartbeat), with progress when given."""
        with session_scope(self.database_url) as db:
            held = jobs.report_progress(db, self.job_id, self.owner, fraction)
        if not held:
            self.lost.set()
            raise Cancelled(f"job {self.job_id} is no longer held by this worker")


@contextmanager
def heartbeat(progress: Progress, interval_s: float) -> Iterator[None]:
    """Beat every ``interval_s`` in a thread while the work runs, whether or not it reports
    progress, so a long step without progress never looks like a dead worker."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            try:
                progress.beat()
            except Cancelled:
                return
            except Exception as exc:  # the database blinked: the lease outlasts a few misses
                log.warning("heartbeat of job %s failed: %s", progress.job_id, describe(exc))

    thread = threading.Thread(target=loop, name=f"heartbeat-{progress.job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _set_session_status(db: DbSession, session_id: str, status: SessionStatus) -> None:
    session = db.get(models.Session, session_id)
    if session is not None:
        session.status = status.value


def _webhooks(db: DbSession, settings: Any, session_id: str, stage: Stage) -> list[int | None]:
    """The webhook deliveries a hand-on makes due (session row locked): playable once the
    MP4 exists, complete once every stage is done."""
    hooks = []
    if stage == pipeline.PLAYABLE_STAGE:
        hooks.append(webhook.record(db, settings, session_id, "playable"))
    session = db.get(models.Session, session_id)
    if session is not None and session.status == SessionStatus.COMPLETED.value:
        hooks.append(webhook.record(db, settings, session_id, "complete"))
    return hooks


def _send_webhooks(task: RunningTask, hooks: list[int | None]) -> None:
    """After the commit; a lost send is sent later by the sweeper (workers.webhook)."""
    delivery_ids = [delivery_id for delivery_id in hooks if delivery_id is not None]
    if delivery_ids:
        webhook.send(task.app, get_settings().database_url, delivery_ids)


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
    retries = task.request.retries
    due: list[Stage] = []
    hooks: list[int | None] = []
    with session_scope(url) as db:
        session = db.get(models.Session, session_id)
        if session is None:
            log.error("%s: unknown session %r", stage.value, session_id)
            return f"unknown session {session_id!r}"
        lease = timedelta(seconds=settings.job_lease_s)
        claimed = jobs.claim(db, session_id, stage.value, task_id, lease=lease, try_number=retries)
        if claimed is None:
            job = jobs.get_job(db, session_id, stage.value)
            status = job.status if job else "missing"
            if status == JobStatus.SUCCEEDED.value:
                pipeline.lock_session(db, session_id)
                due = pipeline.hand_on(db, session_id, stage)
        else:
            snapshot = load_snapshot(db, session)
            outputs = {job.stage: job.output_key for job in session.jobs}
            results = {job.stage: dict(job.result or {}) for job in session.jobs}
            documents = (
                enrichment.load(db, session_id) if pipeline.SPECS[stage].reads_documents else {}
            )
    if claimed is None:
        dispatch.send_all(task.app, url, session, due)
        return f"skipped: {stage.value} is {status}"

    # One line per execution: the fault suite counts these against the attempts column.
    log.info("%s of %s: attempt %d (%s)", stage.value, session_id, claimed.attempt, task_id)
    progress = Progress(url, claimed.job_id, claimed.owner)
    ctx = StageContext(
        snapshot=snapshot,
        storage=Storage(settings.storage),
        settings=settings,
        progress=progress,
        outputs=outputs,
        results=results,
        documents=documents,
        last_try=retries >= task.retry_limit(),
    )
    try:
        with heartbeat(progress, settings.job_heartbeat_s):
            if take_over is not None:
                ctx.wait_for_writers = take_over(url, session_id)
            out = WORK[stage](ctx)
    except Cancelled:
        log.info("%s for %s stopped: cancelled or taken over", stage.value, session_id)
        return "cancelled"
    except Exception as exc:
        discard = False
        with session_scope(url) as db:
            if will_retry(exc, retries, task.retry_limit()):
                retry_at = utcnow() + timedelta(seconds=retry_delay_seconds(exc, retries))
                jobs.release_for_retry(
                    db, claimed.job_id, claimed.owner, describe(exc), retry_at=retry_at
                )
            else:
                session = pipeline.lock_session(db, session_id)
                failed = jobs.fail(db, claimed.job_id, claimed.owner, describe(exc))
                if pipeline.SPECS[stage].optional:
                    due = pipeline.hand_on(db, session_id, stage) if failed else []
                    hooks = _webhooks(db, settings, session_id, stage)
                else:
                    _set_session_status(db, session_id, SessionStatus.FAILED)
                    hooks = [webhook.record(db, settings, session_id, "failed")]
                    discard = True
                log.error("%s for %s failed: %s", stage.value, session_id, describe(exc))
        if discard:  # the session failed: its scratch files go (a retry makes them again)
            parts.discard_all(ctx.storage, session_id)
            live.discard(ctx.storage, session_id)
            assembly.discard(ctx.storage, session_id)
        if due and session is not None:
            dispatch.send_all(task.app, url, session, due)
        _send_webhooks(task, hooks)
        raise
    remember_probes(url, session_id, ctx.probed)  # later stages plan without probing

    with session_scope(url) as db:
        session = pipeline.lock_session(db, session_id)
        won = jobs.succeed(
            db, claimed.job_id, claimed.owner, output_key=out.output_key, result=out.result
        )
        if won:
            enrichment.store(db, session_id, out.documents)
            if out.moments is not None:
                search.replace(db, session_id, out.moments)
            due = pipeline.hand_on(db, session_id, stage, fresh=True)
            hooks = _webhooks(db, settings, session_id, stage)
    if session is not None:
        dispatch.send_all(task.app, url, session, due)
    _send_webhooks(task, hooks)
    return f"{stage.value} succeeded" if won else f"{stage.value} done, but no longer held"
