"""``sessionpipe jobs list``: every filter, the JSON lines scripts read, bad filters named;
``sessionpipe status --watch`` until the session is done."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from shared import models
from shared.db import session_scope
from shared.settings import reset_settings
from workers import jobs
from workers.cli import cli
from workers.joblist import JobFilter, list_jobs
from workers.pipeline import STAGES

LEASE = timedelta(seconds=60)


@pytest.fixture
def database(sqlite_url: str) -> str:
    with session_scope(sqlite_url) as db:
        for sid in ("a", "b"):
            db.add(models.Session(id=sid, name="", status="processing", priority="normal"))
        db.flush()
        for sid, stage, outcome in (
            ("a", "merge", {"duration": 1.0}),
            ("a", "compress", {"skipped": "compression is turned off"}),
            ("b", "merge", None),
        ):
            claim = jobs.claim(db, sid, stage, f"t-{sid}-{stage}", lease=LEASE)
            assert claim is not None
            if outcome is None:
                jobs.fail(db, claim.job_id, claim.owner, "MediaError: broken")
            else:
                jobs.succeed(db, claim.job_id, claim.owner, output_key=None, result=outcome)
        jobs.ensure_job(db, "b", "transcript")
        old = jobs.now() - timedelta(days=2)
        db.execute(update(models.Job).where(models.Job.session_id == "a").values(updated_at=old))
    return sqlite_url


def listed(database: str, **filters: str) -> list[tuple[str, str, str]]:
    rows = list_jobs(database, JobFilter.parse(**filters), limit=50)
    return sorted((r["session_id"], r["stage"], r["status"]) for r in rows)


def test_each_filter(database: str) -> None:
    assert len(listed(database)) == 4
    assert listed(database, status="failed") == [("b", "merge", "failed")]
    assert listed(database, status="skipped") == [("a", "compress", "skipped")]
    assert listed(database, status="succeeded") == [("a", "merge", "succeeded")]
    merges = [("a", "merge", "succeeded"), ("b", "merge", "failed")]
    assert listed(database, stage="merge") == merges
    assert [s for s, _, _ in listed(database, session="a")] == ["a", "a"]
    since = (jobs.now() - timedelta(days=1)).isoformat()
    assert {s for s, _, _ in listed(database, since=since)} == {"b"}


@pytest.mark.parametrize(
    ("filters", "named"),
    [
        ({"status": "done"}, "unknown status 'done'"),
        ({"stage": "slides"}, "unknown stage 'slides'"),
        ({"since": "yesterday"}, "not an ISO 8601 time"),
        ({"session": "../etc"}, "session"),
    ],
)
def test_bad_filters_are_named(filters: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        JobFilter.parse(**filters)


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    """The command reads the settings the runner's environment gives, not cached ones."""
    reset_settings()
    yield
    reset_settings()


def test_the_command_prints_json_lines(database: str, tmp_path: Path, fresh_settings: None) -> None:
    result = CliRunner().invoke(
        cli,
        ["jobs", "list", "--stage", "merge", "--json"],
        env={"SESSIONPIPE_DATABASE_URL": database, "SESSIONPIPE_HOME": str(tmp_path)},
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert {(r["session_id"], r["status"]) for r in rows} == {("a", "succeeded"), ("b", "failed")}
    assert {"attempts", "error", "updated_at", "duration_s"} <= set(rows[0])
    bad = CliRunner().invoke(
        cli,
        ["jobs", "list", "--status", "done"],
        env={"SESSIONPIPE_DATABASE_URL": database, "SESSIONPIPE_HOME": str(tmp_path)},
    )
    assert bad.exit_code == 2 and "unknown status 'done'" in bad.output


def test_status_watch_redraws_until_the_session_completes(
    sqlite_url: str, tmp_path: Path, fresh_settings: None
) -> None:
    with session_scope(sqlite_url) as db:
        db.add(models.Session(id="w", name="", status="processing", priority="normal"))
        db.flush()
        for stage in STAGES:
            jobs.ensure_job(db, "w", stage.value)
        db.execute(
            update(models.Job)
            .where(models.Job.stage == "transcript")
            .values(status="running", progress=0.5)
        )

    def finish_later() -> None:
        time.sleep(1.0)
        with session_scope(sqlite_url) as db:
            db.execute(update(models.Job).values(status="succeeded", progress=1.0))
            db.execute(update(models.Session).values(status="completed"))

    worker = threading.Thread(target=finish_later)
    worker.start()
    result = CliRunner().invoke(
        cli,
        ["status", "w", "--watch", "--json"],
        env={"SESSIONPIPE_DATABASE_URL": sqlite_url, "SESSIONPIPE_HOME": str(tmp_path)},
    )
    worker.join()
    assert result.exit_code == 0, result.output
    # it was still going when the command started (a transcript running): only waiting for
    # the change made in the thread can have given this
    final = json.loads(result.stdout)  # the bars went to stderr
    assert final["outcome"] == "completed"
    assert "100%" in result.stderr and "w (completed" in result.stderr
