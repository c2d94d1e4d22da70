"""Fixtures used everywhere, and the rule that tells unit tests from integration tests.

**The rule.** A test is an *integration* test, and must carry ``@pytest.mark.integration``
(a module's ``pytestmark = pytest.mark.integration`` when all of it is), when it needs

- the real PostgreSQL or Redis, or servers of its own: the ``pg_url``, ``redis_url``,
  ``redis13``, ``redis_server``, ``own_redis`` or ``own_postgres`` fixtures
  (``INTEGRATION_FIXTURES``), or
- a real process of ours: a Python subprocess (the ``capture-agent``/``sessionpipe``
  commands, a celery worker, a script), ``redis-server``, PostgreSQL's ``initdb``,
  ``pg_ctl`` or ``postgres``, or the recorder's ffmpeg.

Everything else is a unit test: ``make test-unit`` (``pytest -m "not integration"``) runs
those, ``make test-integration`` (``-m integration``) the others, ``make test`` all of them.

**How it is enforced.** Collection fails when a test asks for one of those fixtures without
the marker; at run time the same fixtures fail an unmarked test that reaches them another
way (``request.getfixturevalue``), and starting any of those processes fails a test that is
not marked.

The service fixtures fail, never skip, when a service is unreachable: `make test` starts them.

**Enrichment.** Tests run with ``SESSIONPIPE_ENRICH=none`` (``tests.support.cli.
MEDIA_TESTS_ENV``, here and in every subprocess): the enrichment stages run, as skipped,
except in the enrichment tests (``tests/workers/enrich/``, ``tests/local/``), which ask for
them.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.migrate import upgrade
from shared.settings import Settings
from tests.support.cli import MEDIA_TESTS_ENV
from tests.support.servers import PostgresServer, RedisServer
from tests.support.services import (
    REDIS_E2E_URL,
    REDIS_TEST_URL,
    WorkerProcess,
    create_database,
    drop_database,
    flushed_redis,
    service_env,
    settings_for,
)

os.environ.update(MEDIA_TESTS_ENV)  # before any Settings() is read (settings are read lazily)

INTEGRATION = "integration"
#: Fixtures that reach a real service: a test using one must be marked ``integration``.
INTEGRATION_FIXTURES = frozenset(
    {"pg_database", "pg_url", "redis_url", "redis13", "redis_server", "own_redis", "own_postgres"}
)
#: Programs a unit test may not start (besides any Python interpreter).
INTEGRATION_PROGRAMS = frozenset(
    {"capture-agent", "sessionpipe", "celery", "redis-server", "initdb", "pg_ctl", "postgres"}
)


def is_integration(node: pytest.Item | pytest.Collector) -> bool:
    return node.get_closest_marker(INTEGRATION) is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unmarked = [
        f"{item.nodeid} uses {', '.join(sorted(INTEGRATION_FIXTURES & set(names)))}"
        for item in items
        if (names := getattr(item, "fixturenames", ()))
        and INTEGRATION_FIXTURES & set(names)
        and not is_integration(item)
    ]
    if unmarked:
        raise pytest.UsageError(
            "tests using a real service must be marked integration "
            "(see tests/conftest.py):\n  " + "\n  ".join(unmarked)
        )


def require_integration(request: pytest.FixtureRequest) -> None:
    if not is_integration(request.node):
        pytest.fail(
            f"{request.node.nodeid} reaches {request.fixturename} but is not marked "
            "integration (see tests/conftest.py)",
            pytrace=False,
        )


def _integration_program(args: Any) -> str | None:
    """What ``args`` starts if a unit test may not start it, else None."""
    if isinstance(args, bytes):
        args = args.decode()
    argv = shlex.split(args) if isinstance(args, str) else [str(a) for a in args]
    if not argv:
        return None
    program = Path(argv[0]).name
    if argv[0] == sys.executable or program.startswith("python"):
        return "a Python subprocess"
    if program in INTEGRATION_PROGRAMS:
        return program
    if "-segment_list" in argv:
        return "the recorder's ffmpeg"
    return None


@pytest.fixture(autouse=True)
def _unit_tests_start_no_processes(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test not marked integration fails when it starts one of our processes."""
    if is_integration(request.node):
        return
    execute_child = subprocess.Popen._execute_child  # type: ignore[attr-defined]

    def guarded(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        started = _integration_program(args)
        if started is not None:
            pytest.fail(
                f"{request.node.nodeid} starts {started} ({args!r}) but is not marked "
                "integration (see tests/conftest.py)",
                pytrace=False,
            )
        execute_child(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "_execute_child", guarded)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, migrated to head (use ``pg_url``)."""
    url = create_database()
    upgrade(url)
    yield url
    drop_database(url)


@pytest.fixture
def pg_url(request: pytest.FixtureRequest, pg_database: str) -> str:
    """The run's PostgreSQL database (shared by the run's tests), migrated to head."""
    require_integration(request)
    return pg_database


@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Database 15 of the shared Redis server, emptied before and after the test."""
    require_integration(request)
    client = flushed_redis(REDIS_TEST_URL)
    yield REDIS_TEST_URL
    client.flushdb()


@pytest.fixture
def redis13(request: pytest.FixtureRequest) -> Iterator[str]:
    """Database 13 of the shared Redis server (the recorder's end-to-end test)."""
    require_integration(request)
    client = flushed_redis(REDIS_E2E_URL)
    yield REDIS_E2E_URL
    client.flushdb()


@pytest.fixture
def redis_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server on a free port, which the test may kill and start again empty
    (no persistence: what it held is lost with it)."""
    require_integration(request)
    server = RedisServer(tmp_path / "redis", appendonly=False)
    try:
        server.start()
        yield server
    finally:
        server.kill()


@pytest.fixture
def own_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server on a free port whose data survives a kill (AOF, fsync always):
    kill it and start it again on the same port with ``kill()``/``start()`` or ``restart()``."""
    require_integration(request)
    server = RedisServer(tmp_path / "own-redis")
    try:
        server.start()
        yield server
    finally:
        server.kill()


@pytest.fixture
def own_postgres(request: pytest.FixtureRequest) -> Iterator[PostgresServer]:
    """A private PostgreSQL cluster on a free port, started; the test may stop it the hard way
    (``stop_immediate()``) and ``start()`` it again. Its files are removed afterwards."""
    require_integration(request)
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    upgrade(url)
    return url


@pytest.fixture
def worker_system(
    tmp_path: Path, pg_url: str, redis_url: str
) -> Iterator[tuple[Settings, WorkerProcess]]:
    """A real celery worker on the run's PostgreSQL database and Redis 15, and the settings
    that reach the same database, broker and storage from the test."""
    home = tmp_path / "home"
    env = service_env(home=home, database_url=pg_url, broker_url=redis_url)
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        yield settings_for(home=home, database_url=pg_url, broker_url=redis_url), worker
    finally:
        worker.discard()
