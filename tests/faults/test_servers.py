"""The fault tests' own servers (``tests/support/servers.py``) do what the fault tests rely on:
killed and started again on the same port, they keep what they should and lose what they
should, and their helpers read the queues the way kombu's Redis transport writes them.
"""

from __future__ import annotations

import psycopg
import pytest
import redis
from celery import Celery
from kombu import Connection, Exchange, Queue
from sqlalchemy import create_engine, text

from shared.broker import transport_options
from shared.routing import QUEUE_DEFAULT, TASK_INGEST_EVENT, priority_value
from shared.settings import Settings
from tests.support.servers import PostgresServer, RedisServer
from workers.config import celery_config

pytestmark = pytest.mark.integration


def send_events(url: str, priorities: list[str]) -> None:
    """Send one ingest task per priority the way the agent does (the workers' own config)."""
    client = Celery("servers-test", set_as_current=False)
    client.conf.update(celery_config(Settings(broker_url=url)))
    try:
        for n, priority in enumerate(priorities):
            client.send_task(
                TASK_INGEST_EVENT,
                args=[{"type": "heartbeat", "session_id": "s", "seq": n}],
                priority=priority_value(priority),
            )
    finally:
        client.close()


def test_messages_in_their_priority_lists_survive_sigkill(own_redis: RedisServer) -> None:
    send_events(own_redis.url, ["high", "normal", "normal", "low"])
    expected = {"default": 1, "default:3": 2, "default:6": 1, "default:9": 0}
    assert own_redis.queue_lengths(QUEUE_DEFAULT) == expected
    assert own_redis.queue_length(QUEUE_DEFAULT) == 4
    assert sorted(e["seq"] for e in own_redis.messages(QUEUE_DEFAULT)) == [0, 1, 2, 3]
    port = own_redis.port

    own_redis.kill()
    assert not own_redis.running
    with pytest.raises(redis.ConnectionError):
        own_redis.client().ping()
    own_redis.start()

    assert own_redis.port == port
    assert own_redis.queue_lengths(QUEUE_DEFAULT) == expected


def test_an_unacknowledged_message_stays_unacked_across_a_restart(own_redis: RedisServer) -> None:
    send_events(own_redis.url, ["normal"])
    queue = Queue(QUEUE_DEFAULT, Exchange("sessionpipe", type="direct"), QUEUE_DEFAULT)
    options = transport_options(Settings(broker_url=own_redis.url))
    assert (own_redis.unacked(), own_redis.unacked_index()) == (0, 0)
    with Connection(own_redis.url, transport_options=options) as conn:
        message = queue(conn.default_channel).get(no_ack=False)
        assert message is not None
        assert own_redis.queue_length(QUEUE_DEFAULT) == 0
        assert (own_redis.unacked(), own_redis.unacked_index()) == (1, 1)
        assert own_redis.unacked_tasks() == [TASK_INGEST_EVENT]

        own_redis.restart()

        assert (own_redis.unacked(), own_redis.unacked_index()) == (1, 1)
        assert own_redis.queue_length(QUEUE_DEFAULT) == 0
        message.ack()  # on a new connection: the consumer's old one died with the server
        assert (own_redis.unacked(), own_redis.unacked_index()) == (0, 0)


def test_without_appendonly_a_restarted_server_is_empty(redis_server: RedisServer) -> None:
    send_events(redis_server.url, ["normal"])
    assert redis_server.queue_length(QUEUE_DEFAULT) == 1
    redis_server.restart()
    assert redis_server.queue_length(QUEUE_DEFAULT) == 0


def test_postgres_stopped_immediately_comes_back_on_its_port_with_committed_rows(
    own_postgres: PostgresServer,
) -> None:
    url = own_postgres.create_database("faults_check")
    assert url == f"postgresql+psycopg://postgres@127.0.0.1:{own_postgres.port}/faults_check"
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (n int)"))
            conn.execute(text("INSERT INTO t VALUES (1), (2)"))
        port = own_postgres.port

        own_postgres.stop_immediate()
        assert not own_postgres.running
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(own_postgres.dsn("faults_check"), connect_timeout=2)
        own_postgres.start()

        assert own_postgres.port == port
        engine.dispose()  # the pool's connections died with the server
        with engine.connect() as conn:
            assert conn.execute(text("SELECT sum(n) FROM t")).scalar_one() == 3
        assert "automatic recovery" in own_postgres.log()  # it really was a crash stop
    finally:
        engine.dispose()


def test_postgres_cleanup_stops_the_cluster_and_removes_its_files() -> None:
    server = PostgresServer()
    workdir, port = server.workdir, server.port
    try:
        server.start()
        assert server.running
        assert (workdir / "socket" / f".s.PGSQL.{port}").exists()  # its own socket folder
    finally:
        server.cleanup()
    assert not workdir.exists()
    assert not server.running
