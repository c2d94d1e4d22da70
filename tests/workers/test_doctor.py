"""``sessionpipe doctor``: each invariant it checks is found when broken, and --fix repairs
only what is safe."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

from celery import Celery
from sqlalchemy import update

from shared import models
from shared.db import session_scope
from shared.settings import Settings
from shared.storage import Storage
from workers import doctor, jobs
from workers.config import celery_config
from workers.pipeline import STAGES

OLD = timedelta(hours=1)
MADE_OUTPUTS = ("concat_audio", "merge", "compress")


def _settings(tmp_path: Path, sqlite_url: str) -> Settings:
    return Settings(home=tmp_path, database_url=sqlite_url)


def _broken_system(settings: Settings) -> Storage:
    storage = Storage(settings.storage)
    with session_scope(settings.database_url) as db:
        for sid, status in (("stranded", "processing"), ("done", "processing")):
            db.add(models.Session(id=sid, name="", status=status, priority="normal"))
        db.flush()
        jobs.ensure_job(db, "stranded", "concat_audio")  # pending, never sent
        stale = jobs.claim(db, "stranded", "merge", "dead", lease=OLD)
        assert stale is not None
        for stage in (s.value for s in STAGES):  # every stage done; compress's output is lost
            claim = jobs.claim(db, "done", stage, "t", lease=OLD)
            assert claim is not None
            key = f"sessions/done/derived/{stage}.out" if stage in MADE_OUTPUTS else None
            jobs.succeed(db, claim.job_id, claim.owner, output_key=key, result={})
        db.execute(update(models.Job).values(updated_at=jobs.now() - 2 * OLD))
    for stage in ("concat_audio", "merge"):  # compress's output is missing
        path = storage.path(f"sessions/done/derived/{stage}.out")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    dead_temp = storage.path("sessions/done/derived") / ".merge.out.tmp-99999"
    dead_temp.write_bytes(b"half")
    os.utime(dead_temp, (time.time() - 2 * OLD.total_seconds(),) * 2)
    orphan = storage.path("sessions/ghost/derived/ghost.mp4")
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"x")
    return storage


def test_doctor_finds_every_broken_invariant(tmp_path: Path, sqlite_url: str) -> None:
    settings = _settings(tmp_path, sqlite_url)
    _broken_system(settings)
    report = doctor.check(settings)
    found = sorted((f.kind, f.session_id, f.stage) for f in report.findings)
    assert found == [
        ("missing-output", "done", "compress"),
        ("orphan", "ghost", None),
        ("stale", "stranded", "merge"),
        ("status", "done", None),
        ("stranded", "stranded", "concat_audio"),
        ("temp-file", None, None),
    ]
    assert not report.healthy and not report.idle
    assert report.jobs == {"pending": 1, "running": 1, "succeeded": len(STAGES)}
    assert report.queues == {"all": 0}


def test_doctor_fix_does_the_safe_repairs_only(tmp_path: Path, sqlite_url: str) -> None:
    settings = _settings(tmp_path, sqlite_url)
    storage = _broken_system(settings)
    app = Celery("doctor-test", set_as_current=False)
    app.config_from_object(celery_config(settings))
    after = doctor.fix(app, settings, doctor.check(settings))
    assert sorted(after.fixed) == sorted(
        [
            "requeued merge of stranded (its worker died)",
            "sent concat_audio of stranded",
            "sent merge of stranded",
            "session done marked completed",
            f"deleted {storage.path('sessions/done/derived') / '.merge.out.tmp-99999'}",
        ]
    )
    # What an operator must decide stays reported; the two jobs now wait in the queue.
    assert sorted(f.kind for f in after.findings) == ["missing-output", "orphan"]
    assert after.queues == {"all": 2}
    assert storage.path("sessions/ghost/derived/ghost.mp4").exists()


def test_a_healthy_idle_system(tmp_path: Path, sqlite_url: str) -> None:
    report = doctor.check(_settings(tmp_path, sqlite_url))
    assert report.healthy and report.idle and report.findings == []


def test_an_unreachable_broker_is_a_finding_not_a_crash(tmp_path: Path, sqlite_url: str) -> None:
    from tests.support.services import free_port

    settings = Settings(
        home=tmp_path, database_url=sqlite_url, broker_url=f"redis://127.0.0.1:{free_port()}/0"
    )
    report = doctor.check(settings)
    assert [f.kind for f in report.findings] == ["broker"]
    assert "127.0.0.1" in report.findings[0].detail or "refused" in report.findings[0].detail
    assert not report.healthy
