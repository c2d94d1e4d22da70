"""``sessionpipe jobs requeue`` in bulk: the jobs a ``jobs list`` filter selects (failed by
default) pending again and sent at the session's (new) priority; a job that changed since it
was listed is left alone; a dry run changes nothing; bad input exits 2 naming it."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from sqlalchemy import select, update
from typer.testing import CliRunner

from shared import models
from shared.db import session_scope
from shared.routing import PRIORITY_VALUES, Priority
from shared.settings import Settings, reset_settings
from tests.support.cli import clean_env, run
from workers import jobs, requeue
from workers.cli import cli
from workers.config import celery_config
from workers.pipeline import STAGES

LEASE = timedelta(seconds=60)
OLD = timedelta(days=2)


def _job(db: Any, sid: str, stage: str, outcome: str, result: dict[str, Any] | None = None) -> None:
    claim = jobs.claim(db, sid, stage, f"t-{sid}-{stage}", lease=LEASE)
    assert claim is not None
    if outcome == "failed":
        jobs.fail(db, claim.job_id, claim.owner, "MediaError: broken")
    elif outcome == "cancelled":
        jobs.cancel(db, sid, stage)
    else:
        jobs.succeed(db, claim.job_id, claim.owner, output_key=None, result=result or {})


def seed(url: str) -> None:
    """old: merge failed two days ago; new: merge failed now; enrich: transcript failed
    (optional), merge succeeded; cancelled: merge cancelled; skipped: transcript skipped."""
    with session_scope(url) as db:
        for sid, status in (
            ("old", "failed"), ("new", "failed"), ("enrich", "processing"),
            ("cancelled", "failed"), ("skipped", "processing"),
        ):  # fmt: skip
            db.add(models.Session(id=sid, name="", status=status, priority="low"))
        db.flush()
        for sid in ("old", "new", "enrich", "cancelled", "skipped"):
            _job(db, sid, "concat_audio", "succeeded")
        _job(db, "old", "merge", "failed")
        _job(db, "new", "merge", "failed")
        _job(db, "enrich", "merge", "succeeded")
        _job(db, "enrich", "transcript", "failed")
        _job(db, "cancelled", "merge", "cancelled")
        _job(db, "skipped", "transcript", "succeeded", {"skipped": "not asked for"})
        old = jobs.now() - OLD
        db.execute(update(models.Job).where(models.Job.session_id == "old").values(updated_at=old))


def statuses(url: str) -> dict[tuple[str, str], str]:
    with session_scope(url) as db:
        rows = db.execute(select(models.Job.session_id, models.Job.stage, models.Job.status))
        return {(sid, stage): status for sid, stage, status in rows}


def test_parse_refuses_what_a_bulk_requeue_must_not_do() -> None:
    def parse(**options: str) -> Any:
        values: dict[str, str | None] = {
            "status": None, "stage": None, "session": None, "since": None, "priority": None,
        }  # fmt: skip
        values.update(options)
        return requeue.parse(**values)

    query, priority = parse(stage="merge")
    assert (query.status, query.stage, priority) == ("failed", "merge", None)  # the default
    assert parse(stage="merge", priority="high")[1] is Priority.HIGH
    for options, named in (
        ({}, "at least one of --stage, --session, --since"),
        ({"stage": "slides"}, "unknown stage 'slides'"),
        ({"stage": "merge", "status": "running"}, "running jobs are not bulk-requeued"),
        ({"stage": "merge", "priority": "urgent"}, "unknown priority 'urgent'"),
        ({"since": "yesterday"}, "not an ISO 8601 time"),
    ):
        with pytest.raises(ValueError, match=named):
            parse(**options)


@pytest.fixture
def settings(tmp_path: Path, sqlite_url: str) -> Settings:
    """The embedded default's database and filesystem broker, in tmp_path."""
    seed(sqlite_url)
    return Settings(home=tmp_path, database_url=sqlite_url)


def _app(settings: Settings) -> Celery:
    app = Celery("requeue-test", set_as_current=False)
    app.config_from_object(celery_config(settings))
    return app


def _queued(settings: Settings) -> list[tuple[str, str, int]]:
    """(task, session, priority) of the messages waiting in the embedded broker."""
    out = []
    for path in sorted((settings.broker_folder / "queue").glob("*")):
        message = json.loads(path.read_text())
        body = json.loads(__import__("base64").b64decode(message["body"]))
        out.append(
            (message["headers"]["task"], body[0][0], message["properties"]["priority"])
        )
    return sorted(out)


def test_failed_jobs_of_one_stage_and_only_those(settings: Settings) -> None:
    url = settings.database_url
    before = statuses(url)
    query, _ = requeue.parse(status=None, stage="merge", session=None, since=None, priority=None)
    result = requeue.requeue(url, query)
    assert sorted((r.session_id, r.stage, r.previous_status) for r in result.requeued) == [
        ("new", "merge", "failed"),
        ("old", "merge", "failed"),
    ]
    after = statuses(url)
    assert after[("old", "merge")] == after[("new", "merge")] == "pending"
    changed = {key for key in after if after[key] != before[key]}
    assert changed == {("old", "merge"), ("new", "merge")}  # transcript, cancelled: untouched
    with session_scope(url) as db:
        assert db.get(models.Session, "old").status == "processing"  # type: ignore[union-attr]
    requeue.send(_app(settings), url, result)
    low = PRIORITY_VALUES[Priority.LOW]  # the sessions' own priority
    assert _queued(settings) == [
        ("sessionpipe.merge", "new", low),
        ("sessionpipe.merge", "old", low),
    ]
    with session_scope(url) as db:
        sent = db.execute(
            select(models.Job.dispatched_at).where(
                models.Job.stage == "merge", models.Job.session_id.in_(["old", "new"])
            )
        ).scalars()
        assert all(when is not None for when in sent)


def test_since_and_a_new_priority_reach_the_session_and_the_message(settings: Settings) -> None:
    url = settings.database_url
    since = (jobs.now() - OLD / 2).isoformat()
    query, priority = requeue.parse(
        status=None, stage=None, session=None, since=since, priority="high"
    )
    result = requeue.requeue(url, query, priority=priority)
    # failed since a day ago: new's merge and enrich's transcript; old's merge is older
    assert sorted((r.session_id, r.stage, r.priority) for r in result.requeued) == [
        ("enrich", "transcript", "high"),
        ("new", "merge", "high"),
    ]
    assert statuses(url)[("old", "merge")] == "failed"
    with session_scope(url) as db:
        prio = dict(db.execute(select(models.Session.id, models.Session.priority)).all())
    assert prio == {"old": "low", "new": "high", "enrich": "high", "cancelled": "low",
                    "skipped": "low"}  # fmt: skip
    requeue.send(_app(settings), url, result)
    high = PRIORITY_VALUES[Priority.HIGH]
    assert _queued(settings) == [
        ("sessionpipe.merge", "new", high),
        ("sessionpipe.transcript", "enrich", high),
    ]


def test_skipped_and_cancelled_only_when_asked(settings: Settings) -> None:
    url = settings.database_url
    for status, expected in (("skipped", ("skipped", "transcript")),
                             ("cancelled", ("cancelled", "merge"))):  # fmt: skip
        query, _ = requeue.parse(
            status=status, stage=None, session=expected[0], since=None, priority=None
        )
        result = requeue.requeue(url, query)
        assert [(r.session_id, r.stage, r.previous_status) for r in result.requeued] == [
            (*expected, status)
        ]
        assert statuses(url)[expected] == "pending"
    # succeeded (not skipped) work of those sessions was left alone
    assert statuses(url)[("skipped", "concat_audio")] == "succeeded"


def test_a_job_that_changed_since_it_was_listed_is_left_alone(settings: Settings) -> None:
    url = settings.database_url
    query, _ = requeue.parse(status=None, stage="merge", session=None, since=None, priority=None)
    listed = requeue.select_jobs(url, query)
    with session_scope(url) as db:  # someone retried and it failed again meanwhile
        assert jobs.reopen(db, "new", "merge", from_statuses=(models.JobStatus.FAILED,))
    with session_scope(url) as db:
        claim = jobs.claim(db, "new", "merge", "again", lease=LEASE)
        assert claim is not None
        jobs.fail(db, claim.job_id, claim.owner, "MediaError: still broken")
    result = requeue.BulkResult()
    with session_scope(url) as db:
        for row in listed:
            session = jobs.reopen(
                db, row.session_id, row.stage,
                from_statuses=(models.JobStatus.FAILED,), unchanged_since=row.updated_at,
            )  # fmt: skip
            (result.requeued if session else result.changed).append(row)
    assert [r.session_id for r in result.changed] == ["new"]
    assert [r.session_id for r in result.requeued] == ["old"]
    assert statuses(url)[("new", "merge")] == "failed"


def test_dry_run_changes_nothing(settings: Settings, fresh_settings: None) -> None:
    url = settings.database_url
    before = statuses(url)
    result = CliRunner().invoke(
        cli,
        ["jobs", "requeue", "--stage", "merge", "--priority", "high", "--dry-run", "--json"],
        env={"SESSIONPIPE_DATABASE_URL": url, "SESSIONPIPE_HOME": str(settings.home)},
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted((r["session_id"], r["previous_status"], r["priority"]) for r in rows) == [
        ("new", "failed", "high"),
        ("old", "failed", "high"),
    ]
    assert all(r["dry_run"] for r in rows)
    assert statuses(url) == before
    with session_scope(url) as db:
        assert db.get(models.Session, "new").priority == "low"  # type: ignore[union-attr]
    assert not (settings.broker_folder / "queue").exists() or _queued(settings) == []


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    reset_settings()
    yield
    reset_settings()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--stage", "slides"], "unknown stage 'slides'"),
        (["--stage", "merge", "--status", "done"], "unknown status 'done'"),
        (["--stage", "merge", "--priority", "urgent"], "unknown priority 'urgent'"),
        ([], "at least one of --stage"),
        (["old"], "needs both SESSION and STAGE"),
        (["old", "merge", "--stage", "merge"], "not both"),
        (["--stage", "merge", "--force"], "--force is for one job"),
    ],
)
def test_bad_input_exits_2_naming_it(
    settings: Settings, fresh_settings: None, args: list[str], named: str
) -> None:
    result = CliRunner().invoke(
        cli,
        ["jobs", "requeue", *args],
        env={"SESSIONPIPE_DATABASE_URL": settings.database_url,
             "SESSIONPIPE_HOME": str(settings.home), "COLUMNS": "200"},
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert named in " ".join(result.output.split())


# -- the real entry point, on PostgreSQL and Redis ---------------------------------------------
def _redis_messages(url: str) -> list[tuple[str, str, int]]:
    """(task, session, priority) of every message waiting on the Redis broker."""
    client = redis.Redis.from_url(url)
    out = []
    for key in client.keys("*"):
        if client.type(key) != b"list":
            continue
        for raw in client.lrange(key, 0, -1):
            message = json.loads(raw)
            body = json.loads(__import__("base64").b64decode(message["body"]))
            out.append(
                (message["headers"]["task"], body[0][0], message["properties"]["priority"])
            )
    return sorted(out)


@pytest.mark.integration
def test_the_command_requeues_on_postgresql_and_the_message_carries_the_priority(
    tmp_path: Path, pg_url: str, redis_url: str
) -> None:
    # the run's database is shared: this test's sessions have their own names
    with session_scope(pg_url) as db:
        for sid in ("bulk-pg-a", "bulk-pg-b"):
            db.add(models.Session(id=sid, name="", status="failed", priority="normal"))
        db.flush()
        for sid in ("bulk-pg-a", "bulk-pg-b"):
            _job(db, sid, "concat_audio", "succeeded")
            _job(db, sid, "compress", "failed")
    env = clean_env(
        SESSIONPIPE_HOME=str(tmp_path / "home"),
        SESSIONPIPE_DATABASE_URL=pg_url,
        SESSIONPIPE_BROKER_URL=redis_url,
    )
    argv = [sys.executable, "-m", "sessionpipe.cli", "jobs", "requeue"]
    result = run(
        [*argv, "--stage", "compress", "--session", "bulk-pg-a", "--priority", "high", "--json"],
        env,
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["session_id"], r["stage"], r["previous_status"], r["priority"]) for r in rows] == [
        ("bulk-pg-a", "compress", "failed", "high")
    ]
    with session_scope(pg_url) as db:
        a = db.get(models.Session, "bulk-pg-a")
        job = jobs.get_job(db, "bulk-pg-a", "compress")
        other = jobs.get_job(db, "bulk-pg-b", "compress")
        assert a is not None and job is not None and other is not None
        assert (a.priority, a.status) == ("high", "processing")
        assert job.status == "pending" and job.dispatched_at is not None
        assert other.status == "failed"
    assert _redis_messages(redis_url) == [
        ("sessionpipe.compress", "bulk-pg-a", PRIORITY_VALUES[Priority.HIGH])
    ]
    bad = run([*argv, "--stage", "compress", "--status", "running"], env)
    assert bad.returncode == 2 and "running jobs are not bulk-requeued" in bad.stderr


@pytest.mark.integration
def test_on_the_embedded_default_a_worker_runs_until_the_sessions_settle(tmp_path: Path) -> None:
    """A failed transcript requeued through the real command: the embedded worker runs it
    (skipped: the tests ask for no enrichment) and the session completes."""
    home = tmp_path / "home"
    env = clean_env(SESSIONPIPE_HOME=str(home))
    migrate = run([sys.executable, "-m", "sessionpipe.cli", "db", "upgrade"], env)
    assert migrate.returncode == 0, migrate.stderr
    url = f"sqlite:///{home / 'sessionpipe.db'}"
    with session_scope(url) as db:
        db.add(models.Session(id="emb", name="", status="completed", priority="normal"))
        db.flush()
        for stage in STAGES:
            outcome = "failed" if stage.value == "transcript" else "succeeded"
            _job(db, "emb", stage.value, outcome)
    result = run(
        [sys.executable, "-m", "sessionpipe.cli", "jobs", "requeue", "--stage", "transcript"],
        env,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "requeued 1 job(s) of 1 session(s)" in result.stdout
    after = statuses(url)
    assert after[("emb", "transcript")] == "succeeded"
    with session_scope(url) as db:
        job = jobs.get_job(db, "emb", "transcript")
        assert job is not None and "not asked for" in (job.result or {})["skipped"]
        session = db.get(models.Session, "emb")
        assert session is not None and session.status == "completed"
