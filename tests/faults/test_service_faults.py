"""The broker and the database blink while sessions are in flight (scenarios 4 and 5).

Both once stranded work for ever: a stage committed its success, then could not send the
next stage's message, and nothing sent a pending job again. Now the sweeper does; these
kill the real servers mid-flight and count what comes out.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.harness import SCALE, FaultSystem
from tests.support.servers import PostgresServer, RedisServer

pytestmark = pytest.mark.integration

IN_FLIGHT = 4 * SCALE  # sessions shipped before the fault
OUTAGE_S = 3.0  # how long the server stays down: a fault's length, not a synchronisation


def _running(system: FaultSystem) -> bool:
    return any(job.status == "running" for job in system.jobs())


def test_redis_killed_and_restarted_with_sessions_in_flight(
    system: FaultSystem, own_redis: RedisServer
) -> None:
    media, other = system.start_workers()
    folders = [system.record(f"redis-{i}") for i in range(IN_FLIGHT)]
    agents = [system.ship_async(f, agent=f"a{i % 2}") for i, f in enumerate(folders)]
    system._wait(lambda: _running(system), 120, "a stage to be running")
    own_redis.kill()
    time.sleep(OUTAGE_S)
    own_redis.start()
    for agent in agents:  # the agents kept their events and publish them once it is back
        out, _ = agent.communicate(timeout=240)
        assert agent.returncode == 0, out
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
    for i in range(IN_FLIGHT):
        system.ship(system.record(f"pg-{i}"))
    system._wait(lambda: _running(system), 120, "a stage to be running")
    own_postgres.stop_immediate()
    time.sleep(OUTAGE_S)
    own_postgres.start()
    system.assert_nothing_lost()
    for worker in system.workers:
        assert worker.alive
        assert "PendingRollbackError" not in worker.log()
