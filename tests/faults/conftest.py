"""Fixtures of the fault suite: a deployment of its own per scenario.

A fresh database and a private Redis (AOF, fsync always: the scenarios may kill it), so
nothing another test left in the database or the broker counts against the checks.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import FaultSystem
from tests.support.servers import PostgresServer, RedisServer
from tests.support.services import create_database, drop_database


@pytest.fixture(scope="session")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Recordings of the larger synthetic sessions, made once per run (FaultSystem.record)."""
    return tmp_path_factory.mktemp("fault-recordings")


@pytest.fixture
def system(tmp_path: Path, own_redis: RedisServer, recordings: Path) -> Iterator[FaultSystem]:
    """Workers and agents on the machine's PostgreSQL (a fresh database) and a private Redis."""
    url = create_database()
    faults = FaultSystem(
        root=tmp_path, database_url=url, broker_url=own_redis.url, templates=recordings
    )
    try:
        yield faults
    finally:
        faults.stop_all()
        drop_database(url)


@pytest.fixture
def pg_system(
    tmp_path: Path, own_redis: RedisServer, own_postgres: PostgresServer, recordings: Path
) -> Iterator[FaultSystem]:
    """The same on a PostgreSQL cluster of the scenario's own, which it may stop."""
    url = own_postgres.create_database(f"faults_{uuid.uuid4().hex[:8]}")
    faults = FaultSystem(
        root=tmp_path, database_url=url, broker_url=own_redis.url, templates=recordings
    )
    try:
        yield faults
    finally:
        faults.stop_all()
