"""Redis dies (SIGKILL) and comes back on its port while a real celery worker is in the middle
of a task whose message it has not acknowledged yet (``task_acks_late``).

The worker must reconnect and go on consuming: a celery 5.7.0 worker exits instead
("Unrecoverable error: AttributeError("'NoneType' object has no attribute 'hostname'")": its
consumer closes the connection it has just collected, and kombu, restoring the unacknowledged
message on close, finds no connection), which is why ``pyproject.toml`` pins celery 5.6.3.

The task in flight goes on in its pool process through the outage and finishes; its job
runs once. Its message (in kombu's ``unacked`` hash, which survives the kill: Redis runs
with its append-only file, as in docker-compose.yml) takes one of two ways, depending on
whether Redis is back before the worker has torn down its lost connection:

- not yet (the usual case): it stays in ``unacked`` until the task ends, and the worker
  acknowledges it over its new connection;
- already: the worker puts it back in its queue while tearing down ("Restoring 1
  unacknowledged message(s)"), receives it again, and the claim on the job row skips the
  duplicate ("skipped: compress is running") and acknowledges it.

Either way no copy is left to be delivered again after the visibility timeout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import select

from capture_agent.emit import EventEmitter
from shared import models
from shared.db import session_scope
from shared.migrate import upgrade
from shared.routing import TASK_COMPRESS
from shared.storage import Storage
from synthetic.plan import SyntheticSpec
from synthetic.session import record_synthetic_session
from tests.support.servers import RedisServer
from tests.support.services import (
    WorkerProcess,
    create_database,
    drop_database,
    service_env,
    settings_for,
    wait_for_session,
)
from tests.support.shipping import ship_session_dir
from tests.support.waiting import wait_for
from workers.pipeline import STAGES as PIPELINE_STAGES

pytestmark = pytest.mark.integration

STAGES = {stage.value for stage in PIPELINE_STAGES}
#: A session whose compressed copy takes seconds (every frame differs, 720p), so the worker
#: is still running ``compress``, its message unacknowledged, when Redis is back.
LONG = SyntheticSpec(
    duration=40.0, segment_seconds=10.0, audio_holes=(), width=1280, height=720, fps=30
)
#: A session processed in a second or two: proof that the worker consumes again.
CANARY = SyntheticSpec(
    duration=4.0, segment_seconds=2.0, audio_holes=(), width=160, height=96, fps=10
)
STARTED_AT = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
T = TypeVar("T")


def record(tmp_path: Path, session_id: str, spec: SyntheticSpec) -> Path:
    return record_synthetic_session(
        tmp_path / session_id, session_id=session_id, name=session_id, spec=spec,
        started_at=STARTED_AT,
    )  # fmt: skip


def job_states(database_url: str, session_id: str) -> dict[str, str]:
    with session_scope(database_url) as db:
        jobs = db.execute(select(models.Job).where(models.Job.session_id == session_id)).scalars()
        return {job.stage: job.status for job in jobs}


def after_outage(worker: WorkerProcess) -> str | None:
    """ "died", "reconnected", or None while the worker is still trying."""
    log = worker.log()
    if "Unrecoverable error" in log or worker.proc.poll() is not None:
        return "died"
    if log.count("Connected to redis://") >= 2:  # once at start, once more when back
        return "reconnected"
    return None


@pytest.fixture
def database_url() -> Iterator[str]:
    """A database of the test's own on the shared PostgreSQL, migrated: the workers' sweeper
    must find no job another test left behind."""
    url = create_database()
    try:
        upgrade(url)
        yield url
    finally:
        drop_database(url)


def test_worker_holding_an_unacked_task_survives_a_redis_restart(
    tmp_path: Path, database_url: str, own_redis: RedisServer
) -> None:
    long_id, canary_id = "redis-restart-long", "redis-restart-canary"
    long_folder = record(tmp_path, long_id, LONG)
    canary_folder = record(tmp_path, canary_id, CANARY)
    home = tmp_path / "home"
    settings = settings_for(home=home, database_url=database_url, broker_url=own_redis.url)
    storage = Storage(settings.storage)
    worker = WorkerProcess(
        service_env(home=home, database_url=database_url, broker_url=own_redis.url),
        tmp_path / "worker.log",
    )

    def log_tail() -> str:
        log = worker.log()
        fatal = "".join(line for line in log.splitlines(True) if "Unrecoverable error" in line)
        return f"{fatal}worker log (end):\n{log[-4000:]}"

    def wait(predicate: Callable[[], T | None], timeout: float, what: str) -> T:
        try:
            return wait_for(predicate, timeout, what, poll=0.1)
        except AssertionError as error:
            raise AssertionError(f"{error}; {log_tail()}") from None

    try:
        emitter = EventEmitter(settings)
        ship_session_dir(long_folder, storage, emitter)
        emitter.close()
        wait(
            lambda: (
                job_states(database_url, long_id).get("compress") == "running"
                and TASK_COMPRESS in own_redis.unacked_tasks()
            ),
            120,
            "compress to run with its message unacknowledged",
        )

        own_redis.kill()
        own_redis.start()  # same port; the AOF brings back the queues and `unacked`
        # The fault happened as intended: the task ran through the outage (and still runs).
        assert job_states(database_url, long_id)["compress"] == "running"

        outcome = wait(lambda: after_outage(worker), 60, "the worker to reconnect or give up")
        assert outcome == "reconnected", f"the worker died after the Redis restart: {log_tail()}"
        assert "Unrecoverable error" not in worker.log(), log_tail()

        # It consumes again: a session sent after the restart is processed from start to end
        # (a step of it may wait in the busy pool process until the compress in flight ends).
        emitter = EventEmitter(settings)
        ship_session_dir(canary_folder, storage, emitter)
        emitter.close()
        canary = wait_for_session(database_url, canary_id, worker, timeout=90)
        assert {j.stage: j.status for j in canary} == dict.fromkeys(STAGES, "succeeded")

        # The task in flight finishes, once, and its message is acknowledged: no copy is left
        # in `unacked` or in the queue to be delivered again.
        jobs = {j.stage: j for j in wait_for_session(database_url, long_id, worker, timeout=120)}
        assert {s: j.status for s, j in jobs.items()} == dict.fromkeys(STAGES, "succeeded")
        assert jobs["compress"].attempts == 1
        wait(
            lambda: (
                TASK_COMPRESS not in own_redis.unacked_tasks()
                and own_redis.queue_length("media") == 0
            ),
            30,
            "the compress message to be acknowledged",
        )
        assert worker.proc.poll() is None, log_tail()
        assert "Unrecoverable error" not in worker.log(), log_tail()
    finally:
        worker.discard()
