"""The broker and the database blink while sessions are in flight (scenarios 4 and 5).

Both once stranded work for ever: a stage committed its success, then could not send the
next stage's message, and nothing sent a pending job again. Now the sweeper does; these
kill the real servers mid-flight and count what comes out.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.faults.harness import SCALE, SLOW_COMPRESS, FaultSystem
from tests.support.servers import PostgresServer, RedisServer

pytestmark = pytest.mark.integration

IN_FLIGHT = 4 * SCALE  # sessions shipped before the fault
OUTAGE_S = 3.0  # how long the server stays down: a fault's length, not a synchronisation


def _in_flight(system: FaultSystem, prefix: str) -> list[subprocess.Popen[str]]:
    """A slow session and quick ones shipped by agents of their own; returns the agents once
    the slow one's compress runs, so tasks are running (and messages unacknowledged) when
    the fault hits, and later hand-ons may meet it."""
    slow = system.record(f"{prefix}-slow", SLOW_COMPRESS)
    folders = [system.record(f"{prefix}-{i}") for i in range(IN_FLIGHT)]  # before: it takes time
    system.ship(slow)
    agents = [system.ship_async(f, agent=f"a{i}") for i, f in enumerate(folders)]
    system.wait_mid(f"{prefix}-slow")
    return agents


def _shipped(agents: list[subprocess.Popen[str]]) -> None:
    for agent in agents:  # the agents kept their events and published them when they could
        out, _ = agent.communicate(timeout=300)
        assert agent.returncode == 0, out


def test_redis_killed_and_restarted_with_sessions_in_flight(
    system: FaultSystem, own_redis: RedisServer
) -> None:
    media, other = system.start_workers()
    agents = _in_flight(system, "redis")
    own_redis.kill()
    time.sleep(OUTAGE_S)
    own_redis.start()
    _shipped(agents)
    canary = system.record("redis-canary")
    system.ship(canary)  # the workers consume again
    system.assert_nothing_lost()
    assert media.alive and other.alive, "the workers must reconnect, not exit"
    for worker in (media, other):
        assert "Unrecoverable error" not in worker.log()


def test_postgres_stopped_immediately_and_started_with_tasks_running(
    pg_system: FaultSystem, own_postgres: PostgresServer
) -> None:
    system = pg_system
    system.start_workers()
    agents = _in_flight(system, "pg")
    own_postgres.stop_immediate()
    time.sleep(OUTAGE_S)
    own_postgres.start()
    _shipped(agents)
    system.assert_nothing_lost()
    for worker in system.workers:
        assert worker.alive
        assert "PendingRollbackError" not in worker.log()
