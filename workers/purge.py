"""``sessionpipe jobs purge --older-than 30d``: the rows of sessions that are over and whose
files are gone.

Job rows are a session's history, and the database is the source of truth: a session
without its job rows would look un-run (``status`` shows no stages) while its media is still
served from storage. So purge never deletes some of a session's rows; it deletes a whole
session, and only one every check of ``sessionpipe doctor`` stays true without:

- **settled**: it has jobs, none pending or running, and its status is the outcome they
  give (completed or failed: a stage of it can only run again if an operator reopens it);
- **old**: neither it nor any of its jobs or webhook deliveries changed since the cutoff;
- **no webhook still due**: none undelivered with posts left (``webhook_max_attempts``);
- **no files**: nothing of it is left in storage (``sessions/<id>/``: segments, derived
  outputs, receipts). Deleting the rows of a session whose outputs exist would make them
  orphans (a ``doctor`` finding) and leave its originals where retention can no longer find
  them. Files are never deleted here: retention (``workers.retention``) deletes originals,
  and an operator (or the store's lifecycle rules) the rest; purge then forgets the session.

A session that is old and settled but still has files is listed as *kept*, with the reason.
What goes, in one transaction per session with its row locked (as hand-ons, ingest and
``workers.jobs.reopen`` lock it, so none of them interleaves): its jobs, segments,
enrichment documents, webhook deliveries, audio chunk state, parts, search moments (its
index: ``workers.search``; the foreign key would cascade too), then the session row. Its
``events`` rows stay: they are the ingest's memory of what it received, so a late re-sent
event is still recognised as a duplicate and applies nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import delete, select
from sqlalchemy.orm import Session as DbSession

from shared import models
from shared.clock import as_utc, utcnow
from shared.db import session_scope
from shared.models import JobStatus
from shared.storage import SESSIONS_DIR, Storage, StorageError
from workers.jobs import affected
from workers.pipeline import session_outcome

SECONDS_PER_UNIT: Final[dict[str, int]] = {
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86_400,
    "w": 7 * 86_400,
}
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
BUSY_STATUSES: Final = (JobStatus.PENDING.value, JobStatus.RUNNING.value)
#: What a session's purge deletes, children first (each has a ``session_id`` column).
SESSION_TABLES: Final = (
    models.Job,
    models.Segment,
    models.EnrichmentDocument,
    models.WebhookDelivery,
    models.AudioChunkState,
    models.Part,
    models.SearchMoment,
)

PURGED: Final = "purged"
WOULD_PURGE: Final = "would purge"
KEPT: Final = "kept"


def parse_cutoff(text: str, *, now: datetime | None = None) -> datetime:
    """``--older-than``: a duration back from now (``30d``, ``12h``, ``90m``, ``2w``, ``45s``)
    or an ISO 8601 time; ValueError naming it otherwise (or when it is not in the past)."""
    moment = now or utcnow()
    match = DURATION.match(text)
    if match:
        seconds = float(match.group(1)) * SECONDS_PER_UNIT[match.group(2)]
        if seconds <= 0:
            raise ValueError(f"--older-than {text!r} must be longer than 0")
        return moment - timedelta(seconds=seconds)
    try:
        cutoff = as_utc(datetime.fromisoformat(text))
    except ValueError:
        raise ValueError(
            f"--older-than {text!r} is neither a duration (e.g. 30d, 12h, 90m) "
            "nor an ISO 8601 time"
        ) from None
    if cutoff > moment:
        raise ValueError(f"--older-than {text!r} is in the future")
    return cutoff


@dataclass(frozen=True)
class PurgeAction:
    session_id: str
    status: str  # the session's: completed or failed
    last_change: datetime  # the latest change of the session, its jobs or deliveries
    jobs: int  # job rows (deleted, or that would be)
    action: str  # purged | would purge | kept
    reason: str | None = None  # why it was kept

    def as_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "status": self.status,
            "last_change": as_utc(self.last_change).isoformat(),
            "jobs": self.jobs,
            "action": self.action,
            "reason": self.reason,
        }


def candidates(database_url: str, cutoff: datetime) -> list[str]:
    """Sessions completed or failed and unchanged since ``cutoff`` (each is checked again,
    under its lock, before anything goes)."""
    finished = (models.SessionStatus.COMPLETED.value, models.SessionStatus.FAILED.value)
    with session_scope(database_url) as db:
        return list(
            db.execute(
                select(models.Session.id)
                .where(models.Session.status.in_(finished), models.Session.updated_at < cutoff)
                .order_by(models.Session.updated_at, models.Session.id)
            ).scalars()
        )


def purge(
    database_url: str,
    storage: Storage,
    *,
    cutoff: datetime,
    webhook_max_attempts: int,
    dry_run: bool = False,
) -> list[PurgeAction]:
    """Purge every session the rules above allow; one action per old, settled session."""
    actions = []
    for session_id in candidates(database_url, cutoff):
        with session_scope(database_url) as db:
            action = _purge_one(
                db, storage, session_id, cutoff, webhook_max_attempts, dry_run=dry_run
            )
        if action is not None:
            actions.append(action)
    return actions


def _purge_one(
    db: DbSession,
    storage: Storage,
    session_id: str,
    cutoff: datetime,
    webhook_max_attempts: int,
    *,
    dry_run: bool,
) -> PurgeAction | None:
    """In its own transaction, the session row locked: None when it is not (or no longer)
    old and settled, else what was done."""
    session = db.execute(
        select(models.Session).where(models.Session.id == session_id).with_for_update()
    ).scalar_one_or_none()
    if session is None:
        return None  # purged meanwhile
    jobs = list(session.jobs)
    if not jobs or any(job.status in BUSY_STATUSES for job in jobs):
        return None
    if session_outcome(jobs) != session.status:
        return None  # not settled, or its status disagrees (`doctor --fix` first)
    deliveries = list(
        db.execute(
            select(models.WebhookDelivery).where(models.WebhookDelivery.session_id == session_id)
        ).scalars()
    )
    changes = [session.updated_at, *(j.updated_at for j in jobs)]
    changes += [d.updated_at for d in deliveries]
    last_change = max(as_utc(when) for when in changes)
    if last_change >= cutoff:
        return None
    due = [
        d for d in deliveries if d.delivered_at is None and d.attempts < webhook_max_attempts
    ]
    if due:
        return None  # its webhook is still to be posted (workers.webhook)
    action = PurgeAction(session_id, session.status, last_change, len(jobs), WOULD_PURGE)
    reason = _files_left(storage, session_id)
    if reason is not None:
        return PurgeAction(session_id, session.status, last_change, len(jobs), KEPT, reason)
    if dry_run:
        return action
    deleted_jobs = affected(
        db,
        delete(models.Job).where(
            models.Job.session_id == session_id, models.Job.status.not_in(BUSY_STATUSES)
        ),
    )
    if deleted_jobs != len(jobs):  # pragma: no cover - the lock makes this impossible
        raise RuntimeError(f"session {session_id}: its jobs changed while it was locked")
    for table in SESSION_TABLES[1:]:
        db.execute(delete(table).where(table.session_id == session_id))
    db.execute(delete(models.Session).where(models.Session.id == session_id))
    return PurgeAction(session_id, session.status, last_change, len(jobs), PURGED)


def _files_left(storage: Storage, session_id: str) -> str | None:
    """Why the session's storage is not empty, or None when nothing of it is left."""
    key = f"{SESSIONS_DIR}/{session_id}"
    try:
        folder = storage.path(key)
    except StorageError as exc:  # e.g. a symlink in its place: not ours to judge
        return str(exc)
    if not folder.is_dir():
        return None
    files = sum(1 for path in folder.rglob("*") if path.is_file() or path.is_symlink())
    return f"{files} file(s) still in storage under {key}/" if files else None
