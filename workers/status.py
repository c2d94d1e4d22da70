"""A session's state as one plain dict: what ``sessionpipe status --json`` prints.

It is also every ``GET /sessions/{id}`` of the status API, so it is one statement whatever
the session's size, in autocommit (``shared.db.read_scope``: one snapshot, no BEGIN/COMMIT
round trips): the session row, its job rows joined, its segment count counted by the
database (a long session has hundreds of segments: loading them took most of a request's
time, and the separate queries and transaction most of the rest, bench/RESULTS.md).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from shared import models
from shared.db import read_scope
from shared.ids import validate_session_id
from shared.storage import Storage
from workers.pipeline import STAGES, is_playable, session_outcome


class UnknownSessionError(LookupError):
    pass


def skip_reason(job: models.Job) -> str | None:
    """Why a succeeded job did nothing (a disabled or inapplicable stage), or None."""
    reason = (job.result or {}).get("skipped")
    return str(reason) if reason is not None else None


def stage_status(job: models.Job) -> str:
    """A job's status as people read it: a succeeded job that did nothing is 'skipped'."""
    if job.status == models.JobStatus.SUCCEEDED.value and skip_reason(job) is not None:
        return "skipped"
    return job.status


def session_status(
    database_url: str, storage: Storage, session_id: str, *, with_paths: bool = True
) -> dict[str, Any]:
    """The report; ``with_paths=False`` leaves each stage's ``output_path`` None (the API
    serves links instead, and resolving a path costs a few system calls)."""
    validate_session_id(session_id)
    segments = (
        select(func.count(models.Segment.id))
        .where(models.Segment.session_id == session_id)
        .scalar_subquery()
    )
    query = (
        select(models.Session, segments, models.Job)
        .outerjoin(models.Job, models.Job.session_id == models.Session.id)
        .where(models.Session.id == session_id)
    )
    with read_scope(database_url) as db:
        rows = db.execute(query).all()
        if not rows:
            raise UnknownSessionError(f"unknown session {session_id!r}")
        session, segment_count = rows[0][0], rows[0][1]
        jobs = [job for _, _, job in rows if job is not None]
        order = {stage.value: i for i, stage in enumerate(STAGES)}
        jobs.sort(key=lambda job: order.get(job.stage, len(order)))
        return {
            "session_id": session.id,
            "name": session.name,
            "status": session.status,
            "outcome": session_outcome(jobs),
            # The MP4 plays (merge done) long before enrichment and compression finish.
            "playable": is_playable(jobs),
            "complete": session_outcome(jobs) == "completed",
            "priority": session.priority,
            "started_at": session.started_at.isoformat() if session.started_at else None,
            "ended_at": session.ended_at.isoformat() if session.ended_at else None,
            "segments": segment_count,
            "expected_segments": session.expected_segments,
            "warnings": list(session.warnings or []),
            "stages": [
                {
                    "stage": job.stage,
                    "status": stage_status(job),
                    "attempts": job.attempts,
                    "progress": job.progress,
                    "error": job.error,
                    "duration_s": job.duration_s,
                    "output_key": job.output_key,
                    "output_path": (
                        str(storage.path(job.output_key))
                        if job.output_key and with_paths
                        else None
                    ),
                    "result": job.result,
                }
                for job in jobs
            ],
        }
