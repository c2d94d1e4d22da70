"""The real thing: a celery worker subprocess on Redis and PostgreSQL, fed by the agent."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from capture_agent.emit import EventEmitter
from shared import events, models
from shared.db import session_scope
from shared.settings import Settings
from shared.storage import Storage
from synthetic.plan import SyntheticSpec
from synthetic.session import record_synthetic_session
from tests.support.media import decode, first_onset, rms
from tests.support.services import WorkerProcess, service_env, settings_for, wait_for_session
from tests.support.shipping import ship_session_dir
from workers.pipeline import STAGES as PIPELINE_STAGES

pytestmark = pytest.mark.integration

SESSION_WAIT_S = 240.0
SPEC = SyntheticSpec(
    duration=16.0, segment_seconds=4.0, audio_holes=((6.0, 10.0),), width=320, height=180, fps=15
)
STAGES = {stage.value for stage in PIPELINE_STAGES}


def record(tmp_path: Path, session_id: str) -> Path:
    return record_synthetic_session(
        tmp_path / session_id,
        session_id=session_id,
        name=session_id,
        spec=SPEC,
        started_at=datetime(2026, 11, 21, 10, 0, tzinfo=UTC),
    )


def test_agent_events_become_a_synced_mp4_once(
    tmp_path: Path, worker_system: tuple[Settings, WorkerProcess]
) -> None:
    settings, worker = worker_system
    folder = record(tmp_path, "integration-ok")
    emitter = EventEmitter(settings)
    storage = Storage(settings.storage)
    ship_session_dir(folder, storage, emitter)
    jobs = wait_for_session(settings.database_url, "integration-ok", worker)
    assert {j.stage: j.status for j in jobs} == dict.fromkeys(STAGES, "succeeded"), worker.log()
    assert all(j.attempts == 1 for j in jobs)

    merged = next(j for j in jobs if j.stage == "merge")
    assert merged.output_key is not None
    output = storage.path(merged.output_key)
    decoded = decode(output)
    assert decoded.video_codecs == ["h264"] and decoded.audio_codecs == ["aac"]
    assert decoded.audio_duration is not None and decoded.video_duration is not None
    assert abs(decoded.audio_duration - decoded.video_duration) < 0.050
    assert abs(decoded.audio_duration - SPEC.duration) < 0.1
    assert decoded.audio is not None and decoded.sample_rate is not None
    rate = decoded.sample_rate
    hole = decoded.audio[int(6.2 * rate) : int(9.8 * rate)]
    assert rms(hole) < 1e-3, "the microphone hole must be silence"
    onset = first_onset(decoded.audio, rate, start_s=9.5)
    assert onset is not None and abs(onset - 10.0) <= 1024 / rate, onset
    manifest = json.loads(storage.path("sessions/integration-ok/derived/outputs.json").read_text())
    assert manifest["outputs"]["mp4"]["key"] == merged.output_key
    compressed = storage.path(manifest["outputs"]["compressed"]["key"])
    small = decode(compressed)
    assert small.video_codecs == ["h264"] and small.audio_codecs == ["aac"]
    assert compressed.stat().st_size < output.stat().st_size

    # The same events again, plus a new one to know when the worker has seen them all.
    mtime = output.stat().st_mtime_ns
    ship_session_dir(folder, storage, emitter)
    count = len(SPEC_SEGMENTS(folder))
    emitter.emit(events.Event(type="heartbeat", session_id="integration-ok", seq=count + 2))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with session_scope(settings.database_url) as db:
            seen = db.execute(
                select(func.count())
                .select_from(models.Event)
                .where(models.Event.session_id == "integration-ok")
            ).scalar_one()
        if seen == count + 3:
            break
        time.sleep(0.3)
    assert seen == count + 3
    time.sleep(2.0)  # give any (wrongly) re-sent stage time to run
    with session_scope(settings.database_url) as db:
        again = list(
            db.execute(
                select(models.Job).where(models.Job.session_id == "integration-ok")
            ).scalars()
        )
        segments = db.execute(
            select(func.count())
            .select_from(models.Segment)
            .where(models.Segment.session_id == "integration-ok")
        ).scalar_one()
    assert len(again) == len(STAGES) and all(
        j.attempts == 1 and j.status == "succeeded" for j in again
    )
    assert segments == count
    assert output.stat().st_mtime_ns == mtime
    derived = sorted(p.name for p in output.parent.iterdir())
    assert derived == sorted(
        ["audio.m4a", "integration-ok.mp4", "integration-ok-compressed.mp4", "outputs.json"]
    )
    emitter.close()


def SPEC_SEGMENTS(folder: Path) -> list[dict[str, object]]:  # noqa: N802 - reads like a constant
    return json.loads((folder / "session.json").read_text())["segments"]


def test_corrupt_segment_fails_merge_naming_the_file(
    tmp_path: Path, worker_system: tuple[Settings, WorkerProcess]
) -> None:
    settings, worker = worker_system
    bad = record(tmp_path, "integration-bad")
    video = sorted(bad.glob("*.mp4"))[1]
    video.write_bytes(os.urandom(video.stat().st_size))  # random bytes under a real name
    good = record(tmp_path, "integration-good")
    emitter = EventEmitter(settings)
    storage = Storage(settings.storage)
    ship_session_dir(bad, storage, emitter)
    ship_session_dir(good, storage, emitter)

    bad_jobs = {
        j.stage: j for j in wait_for_session(settings.database_url, "integration-bad", worker)
    }
    assert bad_jobs["merge"].status == "failed"
    assert video.name in (bad_jobs["merge"].error or "")
    assert "finalize" not in bad_jobs
    assert not (storage.root / "sessions/integration-bad/derived/integration-bad.mp4").exists()
    with session_scope(settings.database_url) as db:
        session = db.get(models.Session, "integration-bad")
        assert session is not None and session.status == "failed"

    good_jobs = wait_for_session(settings.database_url, "integration-good", worker)
    assert {j.status for j in good_jobs} == {"succeeded"}
    emitter.close()


def test_job_of_a_dead_worker_is_sent_again_and_the_session_completes(
    tmp_path: Path, worker_system: tuple[Settings, WorkerProcess]
) -> None:
    from sqlalchemy import delete, update

    from workers.jobs import now

    settings, worker = worker_system
    folder = record(tmp_path, "integration-reap")
    emitter = EventEmitter(settings)
    storage = Storage(settings.storage)
    ship_session_dir(folder, storage, emitter)
    emitter.close()
    assert {
        j.status for j in wait_for_session(settings.database_url, "integration-reap", worker)
    } == {"succeeded"}
    merged = storage.path("sessions/integration-reap/derived/integration-reap.mp4")
    # As if the worker running merge had been killed: its row still says running, nothing
    # after it exists, and its output never appeared.
    with session_scope(settings.database_url) as db:
        db.execute(
            update(models.Job)
            .where(models.Job.session_id == "integration-reap", models.Job.stage == "merge")
            .values(
                status="running",
                task_id="killed-worker",
                owner="killed-worker/0/00000000",
                updated_at=now() - timedelta(hours=2),
            )
        )
        db.execute(
            delete(models.Job).where(
                models.Job.session_id == "integration-reap",
                models.Job.stage.in_(["compress", "finalize"]),
            )
        )
    merged.unlink()

    # Nothing is sent: the worker's own sweeper finds the job without a heartbeat.
    jobs = {j.stage: j for j in wait_for_session(settings.database_url, "integration-reap", worker)}
    assert {s: j.status for s, j in jobs.items()} == dict.fromkeys(STAGES, "succeeded")
    assert jobs["merge"].attempts == 2
    assert merged.is_file() and decode(merged).video_codecs == ["h264"]


def test_workers_survive_database_connections_being_dropped(
    tmp_path: Path, worker_system: tuple[Settings, WorkerProcess]
) -> None:
    """As after a PostgreSQL restart: every open connection of the workers is killed."""
    import psycopg

    from tests.support.services import PG_ADMIN_DSN

    settings, worker = worker_system
    emitter = EventEmitter(settings)
    storage = Storage(settings.storage)
    ship_session_dir(record(tmp_path, "integration-db-1"), storage, emitter)
    assert {
        j.status for j in wait_for_session(settings.database_url, "integration-db-1", worker)
    } == {"succeeded"}
    database = settings.database_url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchone()
    assert killed is not None and killed[0] >= 1  # the worker held pooled connections
    ship_session_dir(record(tmp_path, "integration-db-2"), storage, emitter)
    emitter.close()
    jobs = wait_for_session(settings.database_url, "integration-db-2", worker)
    assert {j.status for j in jobs} == {"succeeded"}, worker.log()[-3000:]


def test_audio_is_finished_by_its_own_worker_while_no_media_worker_runs(
    tmp_path: Path, pg_url: str, redis_url: str
) -> None:
    """The audio queue's work (the audio track, then the playable MP4, a stream copy) has a
    worker of its own: it must not wait for a (busy or absent) media worker, which only the
    compressed copy needs."""
    from shared.routing import QUEUE_AUDIO, QUEUE_DEFAULT

    home = tmp_path / "home"
    env = service_env(home=home, database_url=pg_url, broker_url=redis_url)
    settings = settings_for(home=home, database_url=pg_url, broker_url=redis_url)
    worker = WorkerProcess(env, tmp_path / "worker.log", queues=f"{QUEUE_AUDIO},{QUEUE_DEFAULT}")
    try:
        folder = record(tmp_path, "audio-alone")
        emitter = EventEmitter(settings)
        storage = Storage(settings.storage)
        ship_session_dir(folder, storage, emitter)
        emitter.close()
        deadline = time.monotonic() + SESSION_WAIT_S
        stages: dict[str, str] = {}
        while time.monotonic() < deadline:
            with session_scope(settings.database_url) as db:
                jobs = db.execute(
                    select(models.Job).where(models.Job.session_id == "audio-alone")
                ).scalars()
                stages = {j.stage: j.status for j in jobs}
            if stages.get("merge") in ("succeeded", "failed"):
                break
            time.sleep(0.3)
        assert stages.get("concat_audio") == "succeeded", (stages, worker.log()[-4000:])
        assert stages.get("merge") == "succeeded", (stages, worker.log()[-4000:])
        time.sleep(1.0)  # a media task, wrongly taken by this worker, would start by now
        with session_scope(settings.database_url) as db:
            compress = db.execute(
                select(models.Job).where(
                    models.Job.session_id == "audio-alone", models.Job.stage == "compress"
                )
            ).scalar_one()
        assert (compress.status, compress.attempts) == ("pending", 0)
        audio = decode(storage.path("sessions/audio-alone/derived/audio.m4a"))
        assert audio.audio_codecs == ["aac"] and audio.video_codecs == []
        assert audio.audio_duration is not None
        assert abs(audio.audio_duration - SPEC.duration) < 0.1
    finally:
        worker.discard()
