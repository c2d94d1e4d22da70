"""Job-row state machine on both databases: the idempotency the whole pipeline relies on."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from shared import models
from shared.db import session_scope
from shared.models import JobStatus
from workers import jobs

LEASE = timedelta(hours=1)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def db_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    return url


def _session(url: str, session_id: str) -> None:
    with session_scope(url) as db:
        db.merge(models.Session(id=session_id, name="t", status="processing", priority="normal"))


def test_second_delivery_does_not_claim_a_running_job(
    db_url: str, request: pytest.FixtureRequest
) -> None:
    sid = f"claim-{request.node.name[-20:].strip('[]')}"
    _session(db_url, sid)
    with session_scope(db_url) as db:
        first = jobs.claim(db, sid, "merge", "task-a", lease=LEASE)
    with session_scope(db_url) as db:
        second = jobs.claim(db, sid, "merge", "task-b", lease=LEASE)
        same_task_again = jobs.claim(db, sid, "merge", "task-a", lease=LEASE)
    assert first is not None and first.attempt == 1
    assert second is None
    assert same_task_again is not None and same_task_again.attempt == 2
    with session_scope(db_url) as db:
        assert jobs.succeed(db, first.job_id, "task-a", output_key="k", result={})
        assert jobs.claim(db, sid, "merge", "task-c", lease=LEASE) is None
        count = db.execute(
            select(func.count()).select_from(models.Job).where(models.Job.session_id == sid)
        ).scalar_one()
    assert count == 1


def test_stale_running_job_can_be_taken_over(db_url: str) -> None:
    sid = "stale-" + db_url.split(":")[0][:6]
    _session(db_url, sid)
    with session_scope(db_url) as db:
        assert jobs.claim(db, sid, "concat_audio", "dead-worker", lease=LEASE) is not None
    with session_scope(db_url) as db:
        db.execute(
            update(models.Job)
            .where(models.Job.session_id == sid)
            .values(updated_at=jobs.now() - timedelta(hours=2))
        )
    with session_scope(db_url) as db:
        taken = jobs.claim(db, sid, "concat_audio", "new-worker", lease=LEASE)
    assert taken is not None and taken.attempt == 2


def test_failed_job_stays_failed_until_an_operator_retries(db_url: str) -> None:
    sid = "failed-" + db_url.split(":")[0][:6]
    _session(db_url, sid)
    with session_scope(db_url) as db:
        claim = jobs.claim(db, sid, "merge", "t1", lease=LEASE)
        assert claim is not None
        assert jobs.fail(db, claim.job_id, "t1", "MediaError: bad.mp4 is corrupt")
    with session_scope(db_url) as db:
        assert jobs.claim(db, sid, "merge", "t2", lease=LEASE) is None
        assert jobs.reset_for_retry(db, sid, "merge")
    with session_scope(db_url) as db:
        again = jobs.claim(db, sid, "merge", "t3", lease=LEASE)
    assert again is not None and again.attempt == 2


def test_cancel_is_seen_by_progress_reports(db_url: str) -> None:
    sid = "cancel-" + db_url.split(":")[0][:6]
    _session(db_url, sid)
    with session_scope(db_url) as db:
        claim = jobs.claim(db, sid, "merge", "t1", lease=LEASE)
        assert claim is not None
        assert jobs.report_progress(db, claim.job_id, "t1", 0.5) is JobStatus.RUNNING
    with session_scope(db_url) as db:
        assert jobs.cancel(db, sid) == 1
    with session_scope(db_url) as db:
        assert jobs.report_progress(db, claim.job_id, "t1", 0.6) is JobStatus.CANCELLED
        assert not jobs.succeed(db, claim.job_id, "t1", output_key=None, result={})


def test_requeue_stale_resets_only_jobs_without_recent_progress(db_url: str) -> None:
    sid = "reap-" + db_url.split(":")[0][:6]
    _session(db_url, sid)
    with session_scope(db_url) as db:
        dead = jobs.claim(db, sid, "merge", "dead-worker", lease=LEASE)
        alive = jobs.claim(db, sid, "compress", "busy-worker", lease=LEASE)
        assert dead is not None and alive is not None
        db.execute(
            update(models.Job)
            .where(models.Job.id == dead.job_id)
            .values(updated_at=jobs.now() - timedelta(hours=2))
        )
    with session_scope(db_url) as db:
        reset = jobs.requeue_stale(db, lease=LEASE)
    assert reset == [(sid, "merge")]
    with session_scope(db_url) as db:
        merge = jobs.get_job(db, sid, "merge")
        compress = jobs.get_job(db, sid, "compress")
        assert (
            merge is not None and merge.status == "pending" and "no progress" in (merge.error or "")
        )
        assert compress is not None and compress.status == "running"
        again = jobs.claim(db, sid, "merge", "new-worker", lease=LEASE)
    assert again is not None and again.attempt == 2
