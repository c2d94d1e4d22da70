"""Fixtures for the real services: PostgreSQL, Redis and celery worker subprocesses.

They fail, never skip, when a service is unreachable: `make test` starts them first.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from shared.migrate import upgrade
from shared.routing import QUEUES
from shared.settings import Settings

PG_ADMIN_DSN = os.environ.get(
    "SESSIONPIPE_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=test"
)
REDIS_TEST_URL = os.environ.get("SESSIONPIPE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
ROOT = Path(__file__).resolve().parent.parent
WORKER_START_TIMEOUT_S = 60.0


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, migrated to head."""
    name = f"sessionpipe_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    params = dict(item.split("=", 1) for item in PG_ADMIN_DSN.split())
    url = (
        f"postgresql+psycopg://{params.get('user', 'postgres')}@{params.get('host')}:"
        f"{params.get('port', '5432')}/{name}"
    )
    upgrade(url)
    yield url
    from shared.db import engine_for

    engine_for(url).dispose()
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_url() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_TEST_URL)
    client.ping()
    client.flushdb()
    yield REDIS_TEST_URL
    client.flushdb()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    upgrade(url)
    return url


def service_env(*, home: Path, database_url: str, broker_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONPIPE_")}
    env.update(
        SESSIONPIPE_HOME=str(home),
        SESSIONPIPE_DATABASE_URL=database_url,
        SESSIONPIPE_BROKER_URL=broker_url,
        SESSIONPIPE_STORAGE_ROOT=str(home / "storage"),
        SESSIONPIPE_TASK_MAX_RETRIES="2",
        PYTHONPATH=str(ROOT),
    )
    return env


def settings_for(*, home: Path, database_url: str, broker_url: str) -> Settings:
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
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
