"""``sessionpipe doctor``: the pipeline's invariants, checked on a live system, and safe repairs.

What must hold (the fault suite asserts the same through this module):

- every job the database says must run is running under a live heartbeat, or pending with
  its message out (``workers.dispatch``); otherwise it is *stranded* or *stale*;
- a session's status agrees with its jobs (completed when every stage succeeded, failed
  when one failed or was cancelled);
- every succeeded job's output exists in storage;
- no temporary file (``shared.atomicfile``) is older than a lease: its writer is dead;
- no derived outputs belong to a session the database does not know (orphans).

The broker's backlog (messages waiting per queue, messages delivered and not acknowledged)
is reported alongside; it is not a fault by itself. ``--fix`` does only what is always safe:
re-send stranded jobs (and webhook deliveries) and requeue stale ones (one sweep), set
session statuses from their jobs, and delete dead temporary files. Missing and orphaned
outputs are only reported: an operator decides (``sessionpipe jobs retry`` re-makes an
output).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from celery import Celery
from sqlalchemy import func, select

from shared import models
from shared.atomicfile import LEGACY_PART_SUFFIX, TEMP_MARK
from shared.clock import as_utc, utcnow
from shared.db import session_scope
from shared.models import JobStatus, SessionStatus
from shared.settings import Settings
from shared.storage import DERIVED_DIR, SESSIONS_DIR, Storage
from workers import dispatch, jobs
from workers.backlog import Backlog, read_backlog
from workers.pipeline import session_outcome


@dataclass(frozen=True)
class Finding:
    kind: str  # stranded | stale | status | missing-output | temp-file | orphan | broker
    detail: str
    session_id: str | None = None
    stage: str | None = None
    path: str | None = None


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    jobs: dict[str, int] = field(default_factory=dict)  # by status
    sessions: dict[str, int] = field(default_factory=dict)  # by status
    duplicate_jobs: int = 0  # (session, stage) pairs with more than one row: never expected
    oldest_pending_s: float | None = None
    queues: dict[str, int] = field(default_factory=dict)  # messages waiting, per queue
    unacked: int | None = None  # delivered, not acknowledged (Redis); None: not known
    fixed: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.findings and self.duplicate_jobs == 0

    @property
    def idle(self) -> bool:
        """Nothing left to do anywhere: no job pending or running, no message waiting."""
        busy = self.jobs.get(JobStatus.PENDING.value, 0) + self.jobs.get(
            JobStatus.RUNNING.value, 0
        )
        return busy == 0 and not any(self.queues.values()) and not self.unacked

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "healthy": self.healthy, "idle": self.idle}


def check(settings: Settings, *, temp_age: timedelta | None = None) -> Report:
    """Every invariant above, read from the database, storage and broker."""
    report = Report()
    lease = timedelta(seconds=settings.job_lease_s)
    backlog = read_backlog(settings)
    with session_scope(settings.database_url) as db:
        _count(db, report)
        for session_id, stage in dispatch.stranded(db, settings, backlog):
            report.findings.append(
                Finding("stranded", "pending, and no message carries it", session_id, stage)
            )
        cutoff = jobs.now() - lease
        stale = db.execute(
            select(models.Job.session_id, models.Job.stage).where(
                models.Job.status == JobStatus.RUNNING.value, models.Job.updated_at < cutoff
            )
        ).all()
        for session_id, stage in stale:
            report.findings.append(
                Finding("stale", "running, and no heartbeat for a lease", session_id, stage)
            )
        known = _check_sessions(db, report, Storage(settings.storage))
    _check_storage(report, Storage(settings.storage), known, temp_age or lease)
    _check_broker(report, backlog)
    return report


def _count(db: Any, report: Report) -> None:
    for status, count in db.execute(
        select(models.Job.status, func.count()).group_by(models.Job.status)
    ).all():
        report.jobs[status] = count
    for status, count in db.execute(
        select(models.Session.status, func.count()).group_by(models.Session.status)
    ).all():
        report.sessions[status] = count
    report.duplicate_jobs = len(
        db.execute(
            select(models.Job.session_id, models.Job.stage)
            .group_by(models.Job.session_id, models.Job.stage)
            .having(func.count() > 1)
        ).all()
    )
    oldest = db.execute(
        select(func.min(models.Job.created_at)).where(
            models.Job.status == JobStatus.PENDING.value
        )
    ).scalar_one()
    if oldest is not None:
        report.oldest_pending_s = (utcnow() - as_utc(oldest)).total_seconds()


def _check_sessions(db: Any, report: Report, storage: Storage) -> set[str]:
    known: set[str] = set()
    for session in db.execute(select(models.Session)).scalars():
        known.add(session.id)
        outcome = session_outcome(list(session.jobs)) if session.jobs else None
        if outcome is not None and session.status != outcome:
            report.findings.append(
                Finding("status", f"is {session.status}, its jobs say {outcome}", session.id)
            )
        for job in session.jobs:
            missing = job.output_key and not storage.path(job.output_key).exists()
            if job.status == JobStatus.SUCCEEDED.value and missing:
                report.findings.append(
                    Finding(
                        "missing-output",
                        f"succeeded, but {job.output_key} is not in storage",
                        session.id,
                        job.stage,
                    )
                )
            if job.status == JobStatus.FAILED.value and not job.error:
                report.findings.append(
                    Finding("status", "failed without a reason", session.id, job.stage)
                )
    return known


def _is_temp(path: Path) -> bool:
    return path.name.startswith(".") and (
        TEMP_MARK in path.name or path.name.endswith(LEGACY_PART_SUFFIX)
    )


def _check_storage(report: Report, storage: Storage, known: set[str], age: timedelta) -> None:
    root = storage.path(SESSIONS_DIR)
    if not root.is_dir():
        return
    cutoff = time.time() - age.total_seconds()
    for path in root.rglob(".*"):
        if path.is_file() and _is_temp(path) and path.stat().st_mtime < cutoff:
            report.findings.append(
                Finding("temp-file", "left by a writer that died", path=str(path))
            )
    for folder in sorted(root.iterdir()):
        if folder.name not in known and (folder / DERIVED_DIR).is_dir():
            report.findings.append(
                Finding(
                    "orphan",
                    "derived outputs of a session the database does not know",
                    session_id=folder.name,
                    path=str(folder / DERIVED_DIR),
                )
            )


def _check_broker(report: Report, backlog: Backlog) -> None:
    report.queues = dict(backlog.queues)
    report.unacked = backlog.unacked
    if backlog.error:
        report.findings.append(Finding("broker", f"cannot be read: {backlog.error}"))


def fix(app: Celery, settings: Settings, report: Report) -> Report:
    """The safe repairs for what ``report`` found; returns a fresh check afterwards."""
    fixed: list[str] = []
    result = dispatch.sweep(app, settings)
    fixed += [f"requeued {stage} of {sid} (its worker died)" for sid, stage in result.requeued]
    fixed += [f"sent {stage} of {sid}" for sid, stage in result.sent]
    fixed += [f"sent webhook delivery {delivery_id}" for delivery_id in result.webhooks]
    with session_scope(settings.database_url) as db:
        for finding in report.findings:
            if finding.kind != "status" or finding.session_id is None or finding.stage:
                continue
            session = db.get(models.Session, finding.session_id)
            if session is None or not session.jobs:
                continue
            outcome = session_outcome(list(session.jobs))
            if outcome is not None and session.status != outcome:
                session.status = SessionStatus(outcome).value
                fixed.append(f"session {session.id} marked {outcome}")
    for finding in report.findings:
        if finding.kind == "temp-file" and finding.path:
            Path(finding.path).unlink(missing_ok=True)
            fixed.append(f"deleted {finding.path}")
    after = check(settings)
    after.fixed = fixed
    return after
