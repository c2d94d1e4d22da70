r"""Job rows: the idempotency key (one per session and stage) and their state transitions.

Every transition is a conditional UPDATE, so two deliveries of the same task can never both
run a stage: the first claims the row, the second sees it taken (or finished) and stops.

    pending --claim--> running --succeed--> succeeded
       ^                  |  +--fail--> failed          (operator: cancel -> cancelled;
       |                  |                              retry/requeue -> pending)
       +--release_for_retry (transient failure)
       +--requeue_stale (no heartbeat for the lease: its worker died)

A running job is held by one execution's ``owner`` token: only it heartbeats
(``report_progress``) or finishes the job, so an execution that lost its job (cancelled, or
taken over after its lease) can never overwrite the outcome. A pending job records when its
message went out (``dispatched_at``); ``unsent`` and ``overdue`` find the ones whose
message never left or may be lost, for the sweeper (``workers.dispatch``) to send.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Executable, inspect, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session as DbSession

from shared.clock import as_utc, utcnow
from shared.models import TERMINAL_STATUSES, Job, JobStatus, Session, SessionStatus

MAX_ERROR_CHARS = 4000


def affected(db: DbSession, stmt: Executable) -> int:
    """Rows touched by an INSERT/UPDATE: how every conditional transition knows it won."""
    return cast(CursorResult[Any], db.execute(stmt)).rowcount


def now() -> datetime:
    return utcnow()


def insert_ignore(
    db: DbSession, model: Any, values: dict[str, Any], index_elements: list[str]
) -> bool:
    """INSERT unless a row with the same unique key exists; True when a row was inserted."""
    dialect = db.get_bind().dialect.name
    if dialect == "postgresql":
        stmt: Any = (
            postgresql.insert(model)
            .values(**values)
            .on_conflict_do_nothing(index_elements=index_elements)
        )
    elif dialect == "sqlite":
        stmt = (
            sqlite.insert(model)
            .values(**values)
            .on_conflict_do_nothing(index_elements=index_elements)
        )
    else:  # pragma: no cover - only PostgreSQL and SQLite are supported
        raise RuntimeError(f"unsupported database dialect {dialect}")
    # RETURNING, not the row count: psycopg reports -1 for this statement through the ORM.
    primary_key = list(inspect(model).primary_key)
    return db.execute(stmt.returning(*primary_key)).first() is not None


def ensure_job(db: DbSession, session_id: str, stage: str) -> tuple[Job, bool]:
    created = insert_ignore(
        db,
        Job,
        {
            "session_id": session_id,
            "stage": stage,
            "status": JobStatus.PENDING.value,
            "attempts": 0,
            "progress": 0.0,
        },
        ["session_id", "stage"],
    )
    job = db.execute(
        select(Job)
        .where(Job.session_id == session_id, Job.stage == stage)
        .execution_options(populate_existing=True)
    ).scalar_one()
    return job, created


def get_job(db: DbSession, session_id: str, stage: str) -> Job | None:
    return db.execute(
        select(Job)
        .where(Job.session_id == session_id, Job.stage == stage)
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


@dataclass(frozen=True)
class Claim:
    job_id: int
    attempt: int
    owner: str  # the token every later transition of this execution is conditional on


OWNER_SEP = "/"


def owner_token(task_id: str, try_number: int) -> str:
    """A claim token unique to one execution: the task id, its try number, a random part.

    Two executions never share a token, even the same message delivered twice, so only the
    one that claimed a job can heartbeat or finish it.
    """
    return f"{task_id}{OWNER_SEP}{try_number}{OWNER_SEP}{uuid.uuid4().hex[:8]}"


def _earlier_try(owner: str | None, task_id: str, try_number: int) -> bool:
    """Whether ``owner`` is an earlier try of the same Celery task, which is over: Celery
    sends a task's retry only after that try raised."""
    if not owner:
        return False
    held_task, _, rest = owner.rpartition(OWNER_SEP)[0].rpartition(OWNER_SEP)
    return held_task == task_id and rest.isdigit() and int(rest) < try_number


def claim(
    db: DbSession,
    session_id: str,
    stage: str,
    task_id: str,
    *,
    lease: timedelta,
    try_number: int = 0,
) -> Claim | None:
    """Take the job for this execution, or return None when it is done or held elsewhere.

    Claimable: a pending job; a running job whose lease ran out (its holder stopped
    heartbeating: it died); a running job held by an earlier try of this same task (the try
    failed and could not release the job, e.g. because the database was down).
    """
    job, _ = ensure_job(db, session_id, stage)
    status = JobStatus(job.status)
    if status in TERMINAL_STATUSES:
        return None
    held = status is JobStatus.RUNNING and not _earlier_try(job.owner, task_id, try_number)
    if held and now() - as_utc(job.updated_at) < lease:
        return None
    job_id, attempt = job.id, job.attempts + 1
    owner = owner_token(task_id, try_number)
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.status == job.status, Job.attempts == job.attempts)
        .values(
            status=JobStatus.RUNNING.value,
            task_id=task_id,
            owner=owner,
            attempts=attempt,
            started_at=job.started_at or now(),
            updated_at=now(),
            error=None,
            finished_at=None,
            dispatched_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    if affected(db, stmt) != 1:
        return None
    return Claim(job_id=job_id, attempt=attempt, owner=owner)


def _held(job_id: int, owner: str) -> Any:
    return update(Job).where(
        Job.id == job_id, Job.owner == owner, Job.status == JobStatus.RUNNING.value
    )


def _finish(db: DbSession, job_id: int, owner: str, status: JobStatus, **values: Any) -> bool:
    stmt = _held(job_id, owner).values(status=status.value, updated_at=now(), **values)
    return affected(db, stmt) == 1


def succeed(
    db: DbSession, job_id: int, owner: str, *, output_key: str | None, result: dict[str, Any]
) -> bool:
    return _finish(
        db,
        job_id,
        owner,
        JobStatus.SUCCEEDED,
        output_key=output_key,
        result=result,
        progress=1.0,
        finished_at=now(),
    )


def fail(db: DbSession, job_id: int, owner: str, error: str) -> bool:
    return _finish(
        db, job_id, owner, JobStatus.FAILED, error=error[:MAX_ERROR_CHARS], finished_at=now()
    )


def release_for_retry(
    db: DbSession, job_id: int, owner: str, error: str, *, retry_at: datetime
) -> bool:
    """A transient failure: the job is pending again, its retry message due at ``retry_at``.

    Pending, not held: whichever message arrives first (the retry, or the sweeper's re-send
    if the retry is lost) claims it.
    """
    stmt = _held(job_id, owner).values(
        status=JobStatus.PENDING.value,
        owner=None,
        error=f"retrying: {error}"[:MAX_ERROR_CHARS],
        updated_at=now(),
        dispatched_at=retry_at,
    )
    return affected(db, stmt) == 1


def report_progress(db: DbSession, job_id: int, owner: str, fraction: float | None) -> bool:
    """Heartbeat, with progress when ``fraction`` is given.

    False when this execution no longer holds the job (an operator cancelled it, or its
    lease ran out and another execution took it over): its work must stop.
    """
    values: dict[str, Any] = {"updated_at": now()}
    if fraction is not None:
        values["progress"] = max(0.0, min(1.0, fraction))
    return affected(db, _held(job_id, owner).values(**values)) == 1


def cancel(db: DbSession, session_id: str, stage: str | None = None) -> int:
    stmt = (
        update(Job)
        .where(
            Job.session_id == session_id,
            Job.status.in_([JobStatus.PENDING.value, JobStatus.RUNNING.value]),
        )
        .values(
            status=JobStatus.CANCELLED.value,
            finished_at=now(),
            updated_at=now(),
            error="cancelled by operator",
        )
    )
    if stage is not None:
        stmt = stmt.where(Job.stage == stage)
    return affected(db, stmt)


def reset_for_retry(
    db: DbSession,
    session_id: str,
    stage: str,
    *,
    from_statuses: tuple[JobStatus, ...] = (JobStatus.FAILED, JobStatus.CANCELLED),
    unchanged_since: datetime | None = None,
) -> bool:
    """Operator retry/requeue: the job becomes pending again (a fresh claim can take it).

    With ``unchanged_since`` (the ``updated_at`` the caller read) only if the job has not
    changed since: a bulk requeue leaves alone a job that moved on after it was listed.
    """
    stmt = (
        update(Job)
        .where(
            Job.session_id == session_id,
            Job.stage == stage,
            Job.status.in_([status.value for status in from_statuses]),
        )
        .values(
            status=JobStatus.PENDING.value,
            error=None,
            progress=0.0,
            task_id=None,
            owner=None,
            finished_at=None,
            updated_at=now(),
            dispatched_at=None,
        )
    )
    if unchanged_since is not None:
        stmt = stmt.where(Job.updated_at == unchanged_since)
    return affected(db, stmt) == 1


def reopen(
    db: DbSession,
    session_id: str,
    stage: str,
    *,
    from_statuses: tuple[JobStatus, ...],
    unchanged_since: datetime | None = None,
) -> Session | None:
    """Operator retry/requeue of one stage (``sessionpipe jobs retry``/``requeue``, the
    status API): its job pending again (:func:`reset_for_retry`) and its session processing
    again.

    The session row is locked first, as a hand-on (``workers.pipeline.lock_session``) and
    a purge (``workers.purge``) lock it, so those serialise with this on one session.
    Returns the session, whose task the caller sends after the commit
    (``workers.dispatch.send_all``), or None when the stage has no job in ``from_statuses``
    (or, with ``unchanged_since``, its job changed since it was read).
    """
    session = db.execute(
        select(Session).where(Session.id == session_id).with_for_update()
    ).scalar_one_or_none()
    if session is None:
        return None
    if not reset_for_retry(
        db, session_id, stage, from_statuses=from_statuses, unchanged_since=unchanged_since
    ):
        return None
    session.status = SessionStatus.PROCESSING.value
    return session


def requeue_stale(db: DbSession, *, lease: timedelta) -> list[tuple[str, str]]:
    """Running jobs untouched for ``lease`` lost their worker: make them pending again.

    A live execution heartbeats far more often than ``lease``, so only a dead one (or one
    cut off from the database that long, which notices at its next heartbeat and stops)
    loses its job. Each row is reset by a conditional UPDATE on its old ``updated_at``, so a
    worker that reports progress at the same moment keeps its job.
    """
    cutoff = now() - lease
    stale = db.execute(
        select(Job.id, Job.session_id, Job.stage, Job.updated_at).where(
            Job.status == JobStatus.RUNNING.value, Job.updated_at < cutoff
        )
    ).all()
    reset: list[tuple[str, str]] = []
    for job_id, session_id, stage, updated_at in stale:
        stmt = (
            update(Job)
            .where(
                Job.id == job_id,
                Job.status == JobStatus.RUNNING.value,
                Job.updated_at == updated_at,
            )
            .values(
                status=JobStatus.PENDING.value,
                owner=None,
                dispatched_at=None,
                updated_at=now(),
                error=f"requeued: no heartbeat for {int(lease.total_seconds())} s (worker lost)",
            )
            .execution_options(synchronize_session=False)
        )
        if affected(db, stmt) == 1:
            reset.append((session_id, stage))
    return reset


def mark_dispatched(db: DbSession, session_id: str, stages: list[str]) -> int:
    """The stages' messages are on the broker now (only pending jobs wait for one)."""
    if not stages:
        return 0
    stmt = (
        update(Job)
        .where(
            Job.session_id == session_id,
            Job.stage.in_(stages),
            Job.status == JobStatus.PENDING.value,
        )
        .values(dispatched_at=now())
        .execution_options(synchronize_session=False)
    )
    return affected(db, stmt)


def unsent(db: DbSession, *, grace: timedelta) -> list[tuple[str, str]]:
    """Pending jobs whose message never left for ``grace`` (the sender died, or the broker
    refused, between the commit and the send): (session id, stage), oldest first."""
    rows = db.execute(
        select(Job.session_id, Job.stage)
        .where(
            Job.status == JobStatus.PENDING.value,
            Job.dispatched_at.is_(None),
            Job.updated_at < now() - grace,
        )
        .order_by(Job.updated_at)
    ).all()
    return [(session_id, stage) for session_id, stage in rows]


def overdue(db: DbSession, *, redispatch: timedelta) -> list[tuple[str, str]]:
    """Pending jobs whose message was due ``redispatch`` ago and is still unclaimed: lost on
    the broker, or waiting behind a backlog (``workers.dispatch`` tells which)."""
    rows = db.execute(
        select(Job.session_id, Job.stage)
        .where(
            Job.status == JobStatus.PENDING.value,
            Job.dispatched_at < now() - redispatch,
        )
        .order_by(Job.dispatched_at)
    ).all()
    return [(session_id, stage) for session_id, stage in rows]
