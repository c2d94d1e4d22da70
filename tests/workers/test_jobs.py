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
        # The same message delivered again while its first delivery still runs.
        redelivered = jobs.claim(db, sid, "merge", "task-a", lease=LEASE)
    assert first is not None and first.attempt == 1
    assert second is None and redelivered is None
    with session_scope(db_url) as db:
        assert jobs.succeed(db, first.job_id, first.owner, output_key="k", result={})
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
        assert jobs.fail(db, claim.job_id, claim.owner, "MediaError: bad.mp4 is corrupt")
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
        assert jobs.report_progress(db, claim.job_id, claim.owner, 0.5)
    with session_scope(db_url) as db:
        assert jobs.cancel(db, sid) == 1
    with session_scope(db_url) as db:
        assert not jobs.report_progress(db, claim.job_id, claim.owner, 0.6)
        assert not jobs.succeed(db, claim.job_id, claim.owner, output_key=None, result={})
        job = jobs.get_job(db, sid, "merge")
        assert job is not None and job.status == JobStatus.CANCELLED.value


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
            merge is not None
            and merge.status == "pending"
            and "no heartbeat" in (merge.error or "")
        )
        assert compress is not None and compress.status == "running"
        again = jobs.claim(db, sid, "merge", "new-worker", lease=LEASE)
    assert again is not None and again.attempt == 2


def _of(sid: str, rows: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Only this test's session: the PostgreSQL database is shared by the module's tests."""
    return [row for row in rows if row[0] == sid]


def _age(db_url: str, job_id: int, **values: object) -> None:
    with session_scope(db_url) as db:
        db.execute(update(models.Job).where(models.Job.id == job_id).values(**values))


def test_a_taken_over_execution_can_neither_heartbeat_nor_finish(db_url: str) -> None:
    """A worker cut off for longer than its lease comes back to find its job re-run."""
    sid = "takeover-" + db_url.split(":")[0][:6]
    _session(db_url, sid)
    with session_scope(db_url) as db:
        old = jobs.claim(db, sid, "compress", "task-a", lease=LEASE)
    assert old is not None
    _age(db_url, old.job_id, updated_at=jobs.now() - timedelta(hours=2))
    with session_scope(db_url) as db:
        # The same message redelivered after the lease: same task id, another execution.
        new = jobs.claim(db, sid, "compress", "task-a", lease=LEASE)
    assert new is not None and new.attempt == 2 and new.owner != old.owner
    with session_scope(db_url) as db:
        assert not jobs.report_progress(db, old.job_id, old.owner, None)
        assert not jobs.succeed(db, old.job_id, old.owner, output_key="old", result={})
        assert jobs.succeed(db, new.job_id, new.owner, output_key="new", result={})
        job = jobs.get_job(db, sid, "compress")
    assert job is not None and job.output_key == "new" and job.attempts == 2


def test_a_later_try_of_the_same_task_takes_a_job_its_failed_try_still_holds(
    db_url: str,
) -> None:
    """The try failed while the database was down, so it could not release the job."""
    sid = "trylater-" + db_url.split(":")[0][:6]
    _session(db_url, sid)
    with session_scope(db_url) as db:
        first = jobs.claim(db, sid, "merge", "task-a", lease=LEASE, try_number=0)
    with session_scope(db_url) as db:
        other_task = jobs.claim(db, sid, "merge", "task-b", lease=LEASE, try_number=1)
        retry = jobs.claim(db, sid, "merge", "task-a", lease=LEASE, try_number=1)
    assert first is not None and other_task is None
    assert retry is not None and retry.attempt == 2
    with session_scope(db_url) as db:
        assert jobs.claim(db, sid, "merge", "task-a", lease=LEASE, try_number=1) is None


def test_release_for_retry_makes_the_job_pending_with_its_retry_due(db_url: str) -> None:
    sid = "release-" + db_url.split(":")[0][:6]
    _session(db_url, sid)
    retry_at = jobs.now() + timedelta(seconds=30)
    with session_scope(db_url) as db:
        claim = jobs.claim(db, sid, "merge", "task-a", lease=LEASE)
        assert claim is not None
        assert jobs.release_for_retry(
            db, claim.job_id, claim.owner, "OperationalError: x", retry_at=retry_at
        )
        job = jobs.get_job(db, sid, "merge")
        assert job is not None and job.status == "pending" and job.owner is None
        assert (job.error or "").startswith("retrying: OperationalError")
        # Due in the future: not stranded, even with no grace at all.
        assert _of(sid, jobs.unsent(db, grace=timedelta(0))) == []
        assert _of(sid, jobs.overdue(db, redispatch=timedelta(seconds=1))) == []
        assert _of(sid, jobs.overdue(db, redispatch=timedelta(seconds=-60))) == [(sid, "merge")]
        again = jobs.claim(db, sid, "merge", "task-a", lease=LEASE, try_number=1)
    assert again is not None and again.attempt == 2


def test_unsent_and_overdue_find_jobs_no_message_may_carry(db_url: str) -> None:
    sid = "dispatch-" + db_url.split(":")[0][:6]
    _session(db_url, sid)
    grace, redispatch = timedelta(seconds=30), timedelta(minutes=15)
    with session_scope(db_url) as db:
        for stage in ("concat_audio", "merge", "compress", "finalize"):
            jobs.ensure_job(db, sid, stage)
        assert _of(sid, jobs.unsent(db, grace=grace)) == []  # within the grace
        assert jobs.mark_dispatched(db, sid, ["merge", "compress"]) == 2
    old = jobs.now() - timedelta(hours=1)
    with session_scope(db_url) as db:
        db.execute(update(models.Job).where(models.Job.session_id == sid).values(updated_at=old))
        db.execute(
            update(models.Job)
            .where(models.Job.session_id == sid, models.Job.stage == "compress")
            .values(dispatched_at=old)
        )
    with session_scope(db_url) as db:
        unsent = _of(sid, jobs.unsent(db, grace=grace))
        overdue = _of(sid, jobs.overdue(db, redispatch=redispatch))
    # concat_audio and finalize were never sent; compress was sent an hour ago and is still
    # pending (lost, or behind a backlog); merge was sent just now.
    assert sorted(unsent) == [(sid, "concat_audio"), (sid, "finalize")]
    assert overdue == [(sid, "compress")]


def test_insert_ignore_says_whether_it_inserted_on_both_databases(db_url: str) -> None:
    """(On PostgreSQL the driver's row count for this statement is -1: it told every caller
    "not inserted" until insert_ignore asked for RETURNING instead.)"""
    with session_scope(db_url) as db:
        db.add(models.Session(id="ins", name="", status="processing", priority="normal"))
        db.flush()
        assert jobs.ensure_job(db, "ins", "merge")[1] is True
        assert jobs.ensure_job(db, "ins", "merge")[1] is False
        assert jobs.insert_ignore(
            db, models.EnrichmentDocument, {"session_id": "ins", "kind": "summary",
                                            "document": {}}, ["session_id", "kind"],
        ) is True  # fmt: skip
