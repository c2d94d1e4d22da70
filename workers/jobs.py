"""Job rows: the idempotency key (one per session and stage) and their state transitions.

Every transition is a conditional UPDATE, so two deliveries of the same task can never both
run a stage: the first claims the row, the second sees it taken (or finished) and stops.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Executable, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session as DbSession

from shared.clock import as_utc, utcnow
from shared.models import TERMINAL_STATUSES, Job, JobStatus

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
    return affected(db, stmt) > 0


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


def claim(
    db: DbSession, session_id: str, stage: str, task_id: str, *, lease: timedelta
) -> Claim | None:
    """Take the job for this task, or return None when the work is done or owned elsewhere.

    Claimable: a pending job; a running job held by this same task id (a Celery retry or a
    redelivery after the worker died); a running job whose lease ran out.
    """
    job, _ = ensure_job(db, session_id, stage)
    status = JobStatus(job.status)
    if status in TERMINAL_STATUSES:
        return None
    if status is JobStatus.RUNNING and job.task_id != task_id:
        updated = as_utc(job.updated_at)
        if now() - updated < lease:
            return None
    job_id, attempt = job.id, job.attempts + 1
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.status == job.status, Job.attempts == job.attempts)
        .values(
            status=JobStatus.RUNNING.value,
            task_id=task_id,
            attempts=attempt,
            started_at=job.started_at or now(),
            updated_at=now(),
            error=None,
            finished_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    if affected(db, stmt) != 1:
        return None
    return Claim(job_id=job_id, attempt=attempt)


def _finish(db: DbSession, job_id: int, task_id: str, status: JobStatus, **values: Any) -> bool:
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.task_id == task_id, Job.status == JobStatus.RUNNING.value)
        .values(status=status.value, updated_at=now(), **values)
    )
    return affected(db, stmt) == 1


def succeed(
    db: DbSession, job_id: int, task_id: str, *, output_key: str | None, result: dict[str, Any]
) -> bool:
    return _finish(
        db,
        job_id,
        task_id,
        JobStatus.SUCCEEDED,
        output_key=output_key,
        result=result,
        progress=1.0,
        finished_at=now(),
    )


def fail(db: DbSession, job_id: int, task_id: str, error: str) -> bool:
    return _finish(
        db, job_id, task_id, JobStatus.FAILED, error=error[:MAX_ERROR_CHARS], finished_at=now()
    )


def note_retry(db: DbSession, job_id: int, task_id: str, error: str) -> bool:
    """Keep the job owned by this task while it waits for its retry, with the reason shown."""
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.task_id == task_id)
        .values(error=f"retrying: {error}"[:MAX_ERROR_CHARS], updated_at=now())
    )
    return affected(db, stmt) == 1


def report_progress(db: DbSession, job_id: int, task_id: str, fraction: float) -> JobStatus:
    """Store progress; return the job's status so a cancelled job can stop its work."""
    db.execute(
        update(Job)
        .where(Job.id == job_id, Job.task_id == task_id, Job.status == JobStatus.RUNNING.value)
        .values(progress=max(0.0, min(1.0, fraction)), updated_at=now())
    )
    status = db.execute(select(Job.status).where(Job.id == job_id)).scalar_one()
    return JobStatus(status)


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
) -> bool:
    """Operator retry/requeue: the job becomes pending again (a fresh claim can take it)."""
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
            finished_at=None,
            updated_at=now(),
        )
    )
    return affected(db, stmt) == 1


def requeue_stale(db: DbSession, *, lease: timedelta) -> list[tuple[str, str]]:
    """Running jobs untouched for ``lease`` lost their worker: make them pending again.

    Each row is reset by a conditional UPDATE on its old ``updated_at``, so a worker that
    reports progress at the same moment keeps its job.
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
                task_id=None,
                updated_at=now(),
                error=f"requeued: no progress for {int(lease.total_seconds())} s (worker lost)",
            )
            .execution_options(synchronize_session=False)
        )
        if affected(db, stmt) == 1:
            reset.append((session_id, stage))
    return reset
