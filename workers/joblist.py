"""Job listings for people and scripts (``sessionpipe jobs list``): filters checked before
the query, one plain dict per job.

Filters are validated, not passed through: a status or stage that does not exist is an
error naming the choices, a session id must be a valid id, a time must be ISO 8601.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVarTuple

from sqlalchemy import Select, select

from shared.clock import as_utc
from shared.db import session_scope
from shared.ids import validate_session_id
from shared.models import Job, JobStatus
from workers.pipeline import Stage
from workers.status import stage_status

Ts = TypeVarTuple("Ts")


@dataclass(frozen=True)
class JobFilter:
    status: str | None = None  # a JobStatus value, or "skipped"
    stage: str | None = None
    session: str | None = None
    since: datetime | None = None

    @classmethod
    def parse(
        cls,
        *,
        status: str | None = None,
        stage: str | None = None,
        session: str | None = None,
        since: str | None = None,
    ) -> JobFilter:
        statuses = [s.value for s in JobStatus] + ["skipped"]
        if status is not None and status not in statuses:
            raise ValueError(f"unknown status {status!r}: use one of {', '.join(statuses)}")
        stages = [s.value for s in Stage]
        if stage is not None and stage not in stages:
            raise ValueError(f"unknown stage {stage!r}: use one of {', '.join(stages)}")
        if session is not None:
            validate_session_id(session)
        when = None
        if since is not None:
            try:
                when = as_utc(datetime.fromisoformat(since))
            except ValueError:
                raise ValueError(f"--since {since!r} is not an ISO 8601 time") from None
        return cls(status=status, stage=stage, session=session, since=when)

    def where(self, stmt: Select[*Ts]) -> Select[*Ts]:
        """``stmt`` (a select from ``jobs``) narrowed to these filters. Succeeded and skipped
        share a column value: tell them apart on the rows (``stage_status``)."""
        if self.status == "skipped" or self.status == JobStatus.SUCCEEDED.value:
            stmt = stmt.where(Job.status == JobStatus.SUCCEEDED.value)
        elif self.status is not None:
            stmt = stmt.where(Job.status == self.status)
        if self.stage is not None:
            stmt = stmt.where(Job.stage == self.stage)
        if self.session is not None:
            stmt = stmt.where(Job.session_id == self.session)
        if self.since is not None:
            stmt = stmt.where(Job.updated_at >= self.since)
        return stmt


def list_jobs(database_url: str, query: JobFilter, *, limit: int) -> list[dict[str, Any]]:
    """The jobs matching ``query``, most recently changed first, at most ``limit``.

    A skipped job is a succeeded one whose result says why it did nothing, so those two
    are told apart after the query: a listing of either may hold fewer than ``limit``.
    """
    stmt = query.where(select(Job).order_by(Job.updated_at.desc(), Job.id.desc()).limit(limit))
    with session_scope(database_url) as db:
        rows = [_row(job) for job in db.execute(stmt).scalars()]
    if query.status is not None:  # succeeded and skipped share a column value
        rows = [row for row in rows if row["status"] == query.status]
    return rows


def _row(job: Job) -> dict[str, Any]:
    return {
        "session_id": job.session_id,
        "stage": job.stage,
        "status": stage_status(job),
        "attempts": job.attempts,
        "progress": job.progress,
        "error": job.error,
        "created_at": as_utc(job.created_at).isoformat(),
        "updated_at": as_utc(job.updated_at).isoformat(),
        "started_at": as_utc(job.started_at).isoformat() if job.started_at else None,
        "finished_at": as_utc(job.finished_at).isoformat() if job.finished_at else None,
        "duration_s": job.duration_s,
    }
