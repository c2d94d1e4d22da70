"""Sending after the commit, and the sweeper: a lost send or a dead worker is only a delay."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from celery import Celery
from sqlalchemy import update

from shared import models
from shared.db import session_scope
from shared.routing import PRIORITY_VALUES, Priority
from shared.settings import Settings
from tests.support.services import free_port
from workers import dispatch, jobs
from workers.config import celery_config
from workers.pipeline import Stage

SID = "dispatch-me"


def _app(settings: Settings) -> Celery:
    app = Celery("dispatch-test", set_as_current=False)
    app.config_from_object(celery_config(settings))
    return app


@pytest.fixture
def settings(tmp_path: Path, sqlite_url: str) -> Settings:
    """The embedded default: SQLite and the filesystem broker, both in tmp_path."""
    settings = Settings(home=tmp_path, database_url=sqlite_url)
    with session_scope(sqlite_url) as db:
        db.add(models.Session(id=SID, name="", status="processing", priority="high"))
    return settings


def _queued(settings: Settings) -> list[str]:
    """Task names of the messages waiting in the embedded broker."""
    folder = settings.broker_folder / "queue"
    names = []
    for path in sorted(folder.glob("*")):
        message = json.loads(path.read_text())
        names.append(message["headers"]["task"])
    return names


def _job(settings: Settings, stage: str) -> models.Job:
    with session_scope(settings.database_url) as db:
        job = jobs.get_job(db, SID, stage)
        assert job is not None
        return job


def test_a_refused_send_leaves_the_job_for_the_sweeper(settings: Settings) -> None:
    with session_scope(settings.database_url) as db:
        jobs.ensure_job(db, SID, Stage.MERGE.value)
        session = db.get(models.Session, SID)
    assert session is not None
    down = settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{free_port()}/0"})
    broken = _app(down)
    broken.conf.broker_connection_timeout = 0.5
    broken.conf.task_publish_retry_policy = {"max_retries": 1, "interval_start": 0}
    dispatch.send_all(broken, settings.database_url, session, [Stage.MERGE])  # does not raise
    assert _job(settings, "merge").dispatched_at is None

    app = _app(settings)
    result = dispatch.sweep(app, settings, grace=timedelta(0))
    assert result.sent == [(SID, "merge")] and result.unsent == []
    assert _queued(settings) == ["sessionpipe.merge"]
    assert _job(settings, "merge").dispatched_at is not None
    # Sent: the next sweeps leave it alone until it is overdue.
    assert dispatch.sweep(app, settings, grace=timedelta(0)).sent == []
    assert _queued(settings) == ["sessionpipe.merge"]


def test_a_sent_job_is_not_sent_again_within_the_redispatch_window(settings: Settings) -> None:
    app = _app(settings)
    with session_scope(settings.database_url) as db:
        jobs.ensure_job(db, SID, Stage.CONCAT_AUDIO.value)
        session = db.get(models.Session, SID)
    assert session is not None
    dispatch.send_all(app, settings.database_url, session, [Stage.CONCAT_AUDIO])
    assert dispatch.sweep(app, settings, grace=timedelta(0)).sent == []
    for path in (settings.broker_folder / "queue").glob("*"):
        path.unlink()  # lost on the broker
    lost = dispatch.sweep(app, settings, grace=timedelta(0), redispatch=timedelta(seconds=-1))
    assert lost.sent == [(SID, "concat_audio")]
    assert _queued(settings) == ["sessionpipe.concat_audio"]


def test_a_dead_workers_job_is_requeued_and_sent_in_one_sweep(settings: Settings) -> None:
    app = _app(settings)
    with session_scope(settings.database_url) as db:
        claim = jobs.claim(db, SID, Stage.COMPRESS.value, "dead", lease=timedelta(minutes=2))
        assert claim is not None
        db.execute(
            update(models.Job)
            .where(models.Job.id == claim.job_id)
            .values(updated_at=jobs.now() - timedelta(minutes=5))
        )
    result = dispatch.sweep(app, settings, lease=timedelta(minutes=2))
    assert result.requeued == [(SID, "compress")] and result.sent == [(SID, "compress")]
    job = _job(settings, "compress")
    assert job.status == "pending" and job.owner is None and "no heartbeat" in (job.error or "")
    assert _queued(settings) == ["sessionpipe.compress"]


def test_an_overdue_job_behind_a_backlog_is_not_sent_again(settings: Settings) -> None:
    """Its message is not lost, only waiting: a copy would lengthen the backlog."""
    app = _app(settings)
    with session_scope(settings.database_url) as db:
        jobs.ensure_job(db, SID, Stage.MERGE.value)
        session = db.get(models.Session, SID)
    assert session is not None
    dispatch.send_all(app, settings.database_url, session, [Stage.MERGE])
    overdue = timedelta(seconds=-1)
    assert dispatch.sweep(app, settings, redispatch=overdue).sent == []  # still queued
    for path in (settings.broker_folder / "queue").glob("*"):
        path.unlink()  # the broker lost it
    assert dispatch.sweep(app, settings, redispatch=overdue).sent == [(SID, "merge")]


def test_finalize_goes_first_whatever_the_sessions_priority(settings: Settings) -> None:
    with session_scope(settings.database_url) as db:
        session = db.get(models.Session, SID)
        assert session is not None
        session.priority = "low"
    assert dispatch.stage_priority(session, Stage.FINALIZE) == PRIORITY_VALUES[Priority.HIGH]
    assert dispatch.stage_priority(session, Stage.MERGE) == PRIORITY_VALUES[Priority.LOW]
