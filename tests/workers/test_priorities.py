"""Priorities on the real Redis broker: a high-priority message overtakes queued low ones."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import select

from capture_agent.emit import EventEmitter
from shared import models
from shared.db import session_scope
from shared.events import Event
from tests.support.services import WorkerProcess, service_env, settings_for

pytestmark = pytest.mark.integration

LOW_COUNT = 6


def test_high_priority_is_served_before_queued_low_priority(
    tmp_path: Path, pg_url: str, redis_url: str
) -> None:
    home = tmp_path / "home"
    settings = settings_for(home=home, database_url=pg_url, broker_url=redis_url)
    emitter = EventEmitter(settings)
    for seq in range(1, LOW_COUNT + 1):
        emitter.emit(Event(type="heartbeat", session_id="prio", seq=seq), priority="low")
    emitter.emit(Event(type="heartbeat", session_id="prio", seq=100), priority="high")
    emitter.close()

    env = service_env(home=home, database_url=pg_url, broker_url=redis_url)
    worker = WorkerProcess(env, tmp_path / "worker.log", queues="default", concurrency=1)
    try:
        deadline = time.monotonic() + 60
        order: list[int] = []
        while time.monotonic() < deadline and len(order) < LOW_COUNT + 1:
            with session_scope(pg_url) as db:
                order = list(
                    db.execute(
                        select(models.Event.seq)
                        .where(models.Event.session_id == "prio")
                        .order_by(models.Event.id)
                    ).scalars()
                )
            time.sleep(0.2)
    finally:
        worker.discard()
    assert len(order) == LOW_COUNT + 1, worker.log()[-3000:]
    assert order[0] == 100, f"high priority should come first, got {order}"
    assert order[1:] == list(range(1, LOW_COUNT + 1))
