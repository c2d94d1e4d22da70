"""Bulk requeue (``sessionpipe jobs requeue --stage X [--status S] [--since T]``): every job
a ``jobs list`` filter selects, pending again and sent.

The rules:

- Jobs are selected by the same filters as ``sessionpipe jobs list``
  (:class:`workers.joblist.JobFilter`); at least one of stage, session or since must be
  given, so a bare ``jobs requeue`` never re-runs everything.
- The status defaults to ``failed``. Succeeded (or skipped) work runs again only when
  ``--status succeeded`` (``skipped``) is asked for explicitly; ``cancelled`` and ``pending``
  (a message lost: sent again) may be asked for too. ``running`` never: a running job
  belongs to a live execution, and one whose worker died is requeued by the sweeper
  (``workers.dispatch``); ``jobs requeue SESSION STAGE --force`` takes over a single one.
- Each session is reopened in one transaction, every selected job of it through
  :func:`workers.jobs.reopen` conditional on the job being exactly as it was listed (its
  status and ``updated_at``): a job that changed meanwhile is left alone and reported.
- ``priority`` (high, normal, low) becomes the session's priority in that transaction: it is
  a session's, not a job's (``sessions.priority``), so the requeued stages' messages, the
  stages after them and any re-send by the sweeper all carry it
  (``workers.dispatch.stage_priority``).
- The tasks are sent after the commit (``workers.dispatch.send_all``); a send the broker
  refuses is left to the sweeper, as everywhere.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime

from celery import Celery
from sqlalchemy import select

from shared import models
from shared.clock import as_utc
from shared.db import session_scope
from shared.models import JobStatus
from shared.routing import Priority, parse_priority
from workers import jobs
from workers.dispatch import send_all
from workers.joblist import JobFilter
from workers.pipeline import Stage, session_outcome
from workers.status import stage_status

DEFAULT_STATUS = JobStatus.FAILED.value
#: Statuses a bulk requeue may select (as ``jobs list`` shows them).
BULK_STATUSES: tuple[str, ...] = (
    JobStatus.FAILED.value,
    JobStatus.CANCELLED.value,
    JobStatus.PENDING.value,
    JobStatus.SUCCEEDED.value,
    "skipped",
)


@dataclass(frozen=True)
class Requeued:
    """One selected job: requeued (or, on a dry run, what would be)."""

    session_id: str
    stage: str
    previous_status: str  # as listed: failed, cancelled, pending, succeeded or skipped
    priority: str  # the session's priority its messages carry
    updated_at: datetime  # when the job last changed, as it was listed

    def as_dict(self) -> dict[str, str]:
        row = asdict(self)
        row["updated_at"] = as_utc(self.updated_at).isoformat()
        return row


@dataclass
class BulkResult:
    requeued: list[Requeued] = field(default_factory=list)
    changed: list[Requeued] = field(default_factory=list)  # moved on meanwhile: left alone
    sessions: dict[str, models.Session] = field(default_factory=dict)  # to send, after commit

    @property
    def session_ids(self) -> list[str]:
        return sorted({row.session_id for row in self.requeued})


def parse(
    *,
    status: str | None,
    stage: str | None,
    session: str | None,
    since: str | None,
    priority: str | None,
) -> tuple[JobFilter, Priority | None]:
    """The bulk form's options, checked; ValueError naming what is wrong."""
    if stage is None and session is None and since is None:
        raise ValueError("a bulk requeue needs at least one of --stage, --session, --since")
    wanted = status if status is not None else DEFAULT_STATUS
    if wanted == JobStatus.RUNNING.value:
        raise ValueError(
            "running jobs are not bulk-requeued (the sweeper requeues a dead worker's); "
            "take one over with `jobs requeue SESSION STAGE --force`"
        )
    query = JobFilter.parse(status=wanted, stage=stage, session=session, since=since)
    if wanted not in BULK_STATUSES:  # pragma: no cover - JobFilter.parse refused it already
        raise ValueError(f"unknown status {wanted!r}: use one of {', '.join(BULK_STATUSES)}")
    return query, (parse_priority(priority) if priority is not None else None)


def select_jobs(database_url: str, query: JobFilter) -> list[Requeued]:
    """Every job ``query`` selects, by session then stage order of creation (no limit)."""
    stmt = query.where(
        select(models.Job, models.Session.priority)
        .join(models.Session, models.Session.id == models.Job.session_id)
        .order_by(models.Job.session_id, models.Job.id)
    )
    with session_scope(database_url) as db:
        rows = [
            Requeued(job.session_id, job.stage, stage_status(job), priority, job.updated_at)
            for job, priority in db.execute(stmt).all()
        ]
    return [row for row in rows if row.previous_status == query.status]


def requeue(
    database_url: str,
    query: JobFilter,
    *,
    priority: Priority | None = None,
    dry_run: bool = False,
) -> BulkResult:
    """Reopen the selected jobs (one transaction per session); send with :func:`send`."""
    result = BulkResult()
    selected = select_jobs(database_url, query)
    if priority is not None:
        selected = [_with_priority(row, priority.value) for row in selected]
    if dry_run:
        result.requeued = selected
        return result
    by_session: dict[str, list[Requeued]] = {}
    for row in selected:
        by_session.setdefault(row.session_id, []).append(row)
    for session_id, rows in by_session.items():
        with session_scope(database_url) as db:
            reopened: models.Session | None = None
            for row in rows:
                from_status = (
                    JobStatus.SUCCEEDED if row.previous_status == "skipped"
                    else JobStatus(row.previous_status)
                )  # fmt: skip
                session = jobs.reopen(
                    db,
                    session_id,
                    row.stage,
                    from_statuses=(from_status,),
                    unchanged_since=row.updated_at,
                )
                if session is None:
                    result.changed.append(row)
                    continue
                reopened = session
                result.requeued.append(row)
            if reopened is not None:
                if priority is not None:
                    reopened.priority = priority.value
                result.sessions[session_id] = reopened
    return result


def _with_priority(row: Requeued, priority: str) -> Requeued:
    return Requeued(row.session_id, row.stage, row.previous_status, priority, row.updated_at)


def send(app: Celery, database_url: str, result: BulkResult) -> None:
    """After the commits: each reopened session's requeued stages, at its priority."""
    for session_id, session in result.sessions.items():
        stages = [Stage(row.stage) for row in result.requeued if row.session_id == session_id]
        send_all(app, database_url, session, stages)


def outcomes(database_url: str, session_ids: list[str]) -> dict[str, str | None]:
    """Each session's outcome now ('completed', 'failed', or None while it runs)."""
    with session_scope(database_url) as db:
        found = db.execute(
            select(models.Session).where(models.Session.id.in_(session_ids))
        ).scalars()
        return {session.id: session_outcome(list(session.jobs)) for session in found}
