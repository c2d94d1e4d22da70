"""``sessionpipe jobs purge --older-than``: only sessions that are over, unchanged since the
cutoff and without files go, rows and all; everything else stays, and ``sessionpipe doctor``
finds the system healthy afterwards (SQLite, and a PostgreSQL database of the test's own:
doctor checks a whole database)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from shared import models
from shared.db import session_scope
from shared.migrate import upgrade
from shared.settings import Settings
from shared.storage import Storage
from tests.support.cli import clean_env, run
from tests.support.services import create_database, drop_database
from workers import doctor, jobs, purge, search
from workers.pipeline import STAGES
from workers.search.moments import Moment

LEASE = timedelta(seconds=60)
AGE = timedelta(days=40)
MAX_ATTEMPTS = 12


@pytest.fixture
def own_pg(request: pytest.FixtureRequest) -> Iterator[str]:
    url = create_database()
    upgrade(url)
    yield url
    drop_database(url)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url: str = request.getfixturevalue("sqlite_url")
    else:
        url = request.getfixturevalue("own_pg")
    return url


def _finish(db: Any, sid: str, stage: str, outcome: str, key: str | None = None) -> None:
    claim = jobs.claim(db, sid, stage, f"t-{sid}-{stage}", lease=LEASE)
    assert claim is not None
    if outcome == "failed":
        jobs.fail(db, claim.job_id, claim.owner, "MediaError: broken")
    else:
        jobs.succeed(db, claim.job_id, claim.owner, output_key=key, result={})


def seed(settings: Settings) -> None:
    """old-done, old-failed: over 40 days ago, no files (purged); new-done: over yesterday;
    old-busy: its first job still pending (sent just now); old-files: over, but its MP4 is
    in storage; old-hook: over, its webhook not yet posted."""
    url = settings.database_url
    key = "sessions/old-files/derived/old-files.mp4"
    with session_scope(url) as db:
        for sid, status in (
            ("old-done", "completed"), ("old-failed", "failed"), ("new-done", "completed"),
            ("old-busy", "processing"), ("old-files", "completed"), ("old-hook", "completed"),
        ):  # fmt: skip
            db.add(models.Session(id=sid, name="", status=status, priority="normal"))
        db.flush()
        for sid in ("old-done", "new-done", "old-files", "old-hook"):
            for stage in STAGES:
                made = key if sid == "old-files" and stage.value == "merge" else None
                _finish(db, sid, stage.value, "succeeded", made)
        _finish(db, "old-failed", "concat_audio", "succeeded")
        _finish(db, "old-failed", "merge", "failed")
        jobs.ensure_job(db, "old-busy", "concat_audio")
        jobs.mark_dispatched(db, "old-busy", ["concat_audio"])
        db.add(models.Segment(session_id="old-done", index=0, kind="audio", file="a.m4a",
                              storage_key="sessions/old-done/segments/a.m4a", sha256="0" * 64,
                              size=1))  # fmt: skip
        db.add(models.EnrichmentDocument(session_id="old-done", kind="summary", document={}))
        for sid in ("old-done", "new-done"):  # both indexed for search
            search.replace(db, sid, [Moment("spoken", 1.0, 2.0, "purged words")])
        db.add(models.WebhookDelivery(session_id="old-done", event="complete",
                                      idempotency_key="old-done:complete", attempts=1,
                                      delivered_at=jobs.now() - AGE))  # fmt: skip
        db.add(models.WebhookDelivery(session_id="old-hook", event="complete",
                                      idempotency_key="old-hook:complete", attempts=0))  # fmt: skip
        db.add(models.Event(event_id="e-old-done", session_id="old-done", seq=1,
                            type="heartbeat", schema_version=1, payload={}))  # fmt: skip
    path = Storage(settings.storage).path(key)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"mp4")
    old, recent = jobs.now() - AGE, jobs.now() - timedelta(days=1)
    with session_scope(url) as db:
        for table in (models.Session, models.Job, models.WebhookDelivery):
            db.execute(update(table).values(updated_at=old))
        db.execute(
            update(models.Session).where(models.Session.id == "new-done").values(updated_at=recent)
        )
        db.execute(
            update(models.Job).where(models.Job.session_id == "new-done").values(updated_at=recent)
        )


def sessions(url: str) -> set[str]:
    with session_scope(url) as db:
        return set(db.execute(select(models.Session.id)).scalars())


def rows_of(url: str, session_id: str) -> dict[str, int]:
    with session_scope(url) as db:
        return {
            table.__tablename__: db.execute(
                select(func.count()).select_from(table).where(table.session_id == session_id)
            ).scalar_one()
            for table in (models.Job, models.Segment, models.EnrichmentDocument,
                          models.WebhookDelivery, models.Event, models.SearchMoment)
        }  # fmt: skip


@pytest.mark.parametrize(
    ("text", "back"),
    [("30d", timedelta(days=30)), ("12h", timedelta(hours=12)), ("90m", timedelta(minutes=90)),
     ("2w", timedelta(weeks=2)), ("1.5d", timedelta(hours=36))],
)  # fmt: skip
def test_durations(text: str, back: timedelta) -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    assert purge.parse_cutoff(text, now=now) == now - back


def test_times_and_bad_input() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    assert purge.parse_cutoff("2026-11-01T00:00:00+00:00", now=now) == datetime(
        2026, 11, 1, tzinfo=UTC
    )
    for text, named in (
        ("30x", "'30x' is neither a duration"),
        ("0d", "must be longer than 0"),
        ("2027-01-01T00:00:00+00:00", "is in the future"),
    ):
        with pytest.raises(ValueError, match=named):
            purge.parse_cutoff(text, now=now)


def test_only_settled_old_sessions_without_files_go(database: str, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, database_url=database)
    seed(settings)
    storage = Storage(settings.storage)
    assert doctor.check(settings).healthy, doctor.check(settings).findings
    everything = sessions(database)
    cutoff = purge.parse_cutoff("30d")

    dry = purge.purge(database, storage, cutoff=cutoff, webhook_max_attempts=MAX_ATTEMPTS,
                      dry_run=True)  # fmt: skip
    assert {(a.session_id, a.action) for a in dry} == {
        ("old-done", "would purge"), ("old-failed", "would purge"), ("old-files", "kept"),
    }  # fmt: skip
    assert sessions(database) == everything  # a dry run changes nothing

    done = purge.purge(database, storage, cutoff=cutoff, webhook_max_attempts=MAX_ATTEMPTS)
    by_id = {a.session_id: a for a in done}
    assert {sid: a.action for sid, a in by_id.items()} == {
        "old-done": "purged", "old-failed": "purged", "old-files": "kept",
    }  # fmt: skip
    assert by_id["old-done"].jobs == len(STAGES) and by_id["old-failed"].jobs == 2
    assert "sessions/old-files/" in (by_id["old-files"].reason or "")
    assert sessions(database) == everything - {"old-done", "old-failed"}
    # every row of it went, but the ingest's memory of its events
    assert rows_of(database, "old-done") == {
        "jobs": 0, "segments": 0, "enrichment_documents": 0, "webhook_deliveries": 0,
        "events": 1, "search_moments": 0,
    }  # fmt: skip
    assert rows_of(database, "new-done")["jobs"] == len(STAGES)
    # search finds only what is left (on SQLite, the FTS5 index lost the rows too)
    hits = search.search(database, search.parse_query("purged words"))
    assert [hit.session_id for hit in hits] == ["new-done"]
    report = doctor.check(settings)
    assert report.healthy, report.findings
    # nothing more to do: a second purge finds only the session it keeps
    again = purge.purge(database, storage, cutoff=cutoff, webhook_max_attempts=MAX_ATTEMPTS)
    assert [(a.session_id, a.action) for a in again] == [("old-files", "kept")]


def test_a_session_whose_webhook_is_given_up_may_go(sqlite_url: str, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, database_url=sqlite_url)
    seed(settings)
    cutoff = purge.parse_cutoff("30d")
    storage = Storage(settings.storage)
    assert "old-hook" not in {
        a.session_id for a in purge.purge(sqlite_url, storage, cutoff=cutoff,
                                          webhook_max_attempts=MAX_ATTEMPTS, dry_run=True)
    }  # fmt: skip
    purged = purge.purge(sqlite_url, storage, cutoff=cutoff, webhook_max_attempts=1, dry_run=True)
    assert "old-hook" not in {a.session_id for a in purged}  # 0 attempts of 1: still due
    with session_scope(sqlite_url) as db:
        db.execute(
            update(models.WebhookDelivery)
            .where(models.WebhookDelivery.session_id == "old-hook")
            .values(attempts=MAX_ATTEMPTS, updated_at=jobs.now() - AGE)
        )
    given_up = purge.purge(sqlite_url, storage, cutoff=cutoff, webhook_max_attempts=MAX_ATTEMPTS,
                           dry_run=True)  # fmt: skip
    assert ("old-hook", "would purge") in {(a.session_id, a.action) for a in given_up}


@pytest.mark.integration
def test_the_command(tmp_path: Path, own_pg: str) -> None:
    home = tmp_path / "home"
    settings = Settings(home=home, database_url=own_pg)
    seed(settings)
    env = clean_env(SESSIONPIPE_HOME=str(home), SESSIONPIPE_DATABASE_URL=own_pg)
    argv = [sys.executable, "-m", "sessionpipe.cli", "jobs", "purge"]
    dry = run([*argv, "--older-than", "30d", "--dry-run"], env)
    assert dry.returncode == 0, dry.stderr
    assert "would purge 2 session(s)" in dry.stdout and "kept 1 session(s)" in dry.stdout
    result = run([*argv, "--older-than", "30d", "--json"], env)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted((r["session_id"], r["action"]) for r in rows) == [
        ("old-done", "purged"), ("old-failed", "purged"), ("old-files", "kept"),
    ]  # fmt: skip
    assert {"status", "last_change", "jobs", "reason"} <= set(rows[0])
    checked = run([sys.executable, "-m", "sessionpipe.cli", "doctor", "--json"], env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert json.loads(checked.stdout)["healthy"]
    bad = run([*argv, "--older-than", "30x"], env)
    assert bad.returncode == 2 and "'30x' is neither a duration" in bad.stderr
