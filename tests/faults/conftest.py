"""Fixtures of the fault suite: a fresh database and a private Redis per scenario."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import FaultSystem
from tests.support.services import RedisServer, create_database, drop_database


@pytest.fixture
def system(tmp_path: Path, redis_server: RedisServer) -> Iterator[FaultSystem]:
    """A deployment of its own: nothing another test left in the database or the broker
    can count against the scenario's checks."""
    url = create_database()
    faults = FaultSystem(root=tmp_path, database_url=url, broker_url=redis_server.url)
    try:
        yield faults
    finally:
        faults.stop_all()
        drop_database(url)
