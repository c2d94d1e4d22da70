"""The real services of the integration tests: the shared PostgreSQL and Redis, celery workers.

Nothing here skips: a service that does not answer fails the test (`make test` starts them).
Servers a test kills and starts again are its own: :mod:`tests.support.servers`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import redis
from sqlalchemy import select

from shared import models
from shared.db import session_scope
from shared.routing import QUEUES
from shared.settings import Settings
from tests.support import ROOT
from tests.support.cli import clean_env

# Moved to tests.support.servers; still importable from here.
from tests.support.servers import RedisServer as RedisServer
from tests.support.servers import free_port as free_port
from tests.support.waiting import wait_for

PG_ADMIN_DSN = os.environ.get(
    "SESSIONPIPE_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=test"
)
#: The shared Redis server's database of the suite (``redis_url``). Two checkouts testing at
#: once on one machine must each set other databases here and below.
REDIS_TEST_URL = os.environ.get("SESSIONPIPE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
#: A second database on it, for the recorder's end-to-end test (``redis13``).
REDIS_E2E_URL = os.environ.get(
    "SESSIONPIPE_TEST_REDIS_E2E_URL", "redis://127.0.0.1:6379/13"
)
WORKER_START_TIMEOUT_S = 60.0
SESSION_WAIT_S = 240.0


def create_database() -> str:
    """A fresh, empty PostgreSQL database; returns its SQLAlchemy URL."""
    name = f"sessionpipe_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    params = dict(item.split("=", 1) for item in PG_ADMIN_DSN.split())
    return (
        f"postgresql+psycopg://{params.get('user', 'postgres')}@{params.get('host')}:"
        f"{params.get('port', '5432')}/{name}"
    )


def drop_database(url: str) -> None:
    from shared.db import dispose_engines

    dispose_engines(url)
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def flushed_redis(url: str) -> redis.Redis:
    """A client of ``url``'s database, emptied (fails if Redis does not answer)."""
    client = redis.Redis.from_url(url)
    client.ping()
    client.flushdb()
    return client


#: Short leases and sweeps, so tests of lost workers and messages finish in seconds.
FAST_RECOVERY_ENV: dict[str, str] = {
    "SESSIONPIPE_JOB_LEASE_S": "6",
    "SESSIONPIPE_JOB_HEARTBEAT_S": "1",
    "SESSIONPIPE_SWEEP_INTERVAL_S": "1",
    "SESSIONPIPE_DISPATCH_GRACE_S": "2",
    "SESSIONPIPE_REDISPATCH_S": "60",
}


def service_env(*, home: Path, database_url: str, broker_url: str) -> dict[str, str]:
    """Environment of a worker (or any process that talks to the database and the broker)."""
    return clean_env(
        SESSIONPIPE_HOME=str(home),
        SESSIONPIPE_DATABASE_URL=database_url,
        SESSIONPIPE_BROKER_URL=broker_url,
        SESSIONPIPE_STORAGE_ROOT=str(home / "storage"),
        SESSIONPIPE_TASK_MAX_RETRIES="2",
        **FAST_RECOVERY_ENV,
    )


def settings_for(*, home: Path, database_url: str, broker_url: str) -> Settings:
    """The in-process settings matching :func:`service_env`."""
    return Settings(
        home=home, database_url=database_url, broker_url=broker_url, storage_root=home / "storage"
    )


class WorkerProcess:
    """A real `celery -A workers.app worker` subprocess."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        *,
        queues: str = ",".join(QUEUES),
        concurrency: int = 2,
    ) -> None:
        self.log_path = log_path
        self.env = env  # what other processes of the same system run with
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers.app",
                "worker",
                "-Q",
                queues,
                "-c",
                str(concurrency),
                "--loglevel",
                "INFO",
                "--without-mingle",
                "--without-gossip",
                "-n",
                f"test-{uuid.uuid4().hex[:8]}@%h",
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a process group of its own: discard() kills it whole
        )
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"celery worker exited early:\n{self.log()}")
            if b" ready." in log_path.read_bytes():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"celery worker did not become ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Celery's warm shutdown (SIGTERM): running tasks finish first (seconds even idle)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.discard()
        self._log.close()

    def discard(self) -> None:
        """Kill the worker and its pool processes at once and reap it: for the end of a test,
        whose checks are done (a warm shutdown would only wait for work nobody looks at)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._log.close()


def wait_for_session(
    database_url: str, session_id: str, worker: WorkerProcess, timeout: float = SESSION_WAIT_S
) -> list[models.Job]:
    """The session's job rows once every stage succeeded or one failed.

    Fails with the end of the worker's log when the session is still running at ``timeout``.
    """
    from workers.pipeline import STAGES

    stages = {stage.value for stage in STAGES}

    def outcome() -> list[models.Job] | None:
        with session_scope(database_url) as db:
            jobs = list(
                db.execute(select(models.Job).where(models.Job.session_id == session_id)).scalars()
            )
        finished = {j.stage for j in jobs if j.status == "succeeded"}
        if finished == stages or any(j.status == "failed" for j in jobs):
            return jobs
        return None

    try:
        return wait_for(outcome, timeout, f"session {session_id} to finish", poll=0.1)
    except AssertionError as error:
        raise AssertionError(f"{error}; worker log:\n{worker.log()[-4000:]}") from None
