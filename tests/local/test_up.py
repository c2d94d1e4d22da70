"""``make up`` (``sessionpipe/up.py`` + the Procfile, run by honcho).

Unit: the environment's precedence, secrets generated only when set nowhere (into a 0600
file, never the checkout), ``.env.example``'s placeholder refused.

Integration: ``python -m sessionpipe.up`` (what ``make up`` runs after installing and
making sure of the services) against the real Redis (the API tests' database,
``SESSIONPIPE_TEST_REDIS_API_URL``: they never run at the same time) and a fresh, empty
PostgreSQL database: it migrates the database, becomes ``honcho start``, the API answers
``/healthz`` and the generated token, every worker answers a ping, Flower asks for its
credentials; then SIGINT to honcho stops everything it started, and nothing is left over.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
import redis
from celery import Celery

from sessionpipe import up
from shared.settings import Settings
from tests.support import ROOT
from tests.support.cli import clean_env
from tests.support.servers import free_port
from tests.support.services import create_database, drop_database
from tests.support.waiting import wait_for
from workers.config import celery_config

REDIS_UP_URL: Final = os.environ.get(
    "SESSIONPIPE_TEST_REDIS_API_URL", "redis://127.0.0.1:6379/11"
)
#: Each worker's node name, as the Procfile's ``-n QUEUE@%h`` makes it.
WORKER_NODES: Final = tuple(
    f"{queue}@{socket.gethostname()}" for queue in ("media", "audio", "enrich", "default")
)
START_TIMEOUT_S: Final = 45.0
#: honcho sends SIGTERM, then SIGKILL after its KILL_WAIT (5 s): well within this.
STOP_TIMEOUT_S: Final = 15.0
REQUEST_TIMEOUT_S: Final = 5.0
PING_TIMEOUT_S: Final = 1.0
POLL_S: Final = 0.25


# -- unit -------------------------------------------------------------------------------------
def test_precedence_defaults_local_file_dotenv_environment(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / up.LOCAL_ENV_NAME).write_text("FLOWER_PASSWORD=from-local\nFLOWER_USER=local\n")
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# comment\nexport FLOWER_USER='from-dotenv'\n"
        "SESSIONPIPE_BROKER_URL=redis://dotenv:6379/1\nSESSIONPIPE_API_TOKEN=\"t-dotenv\"\n"
    )
    environ = {"SESSIONPIPE_HOME": str(home), "SESSIONPIPE_BROKER_URL": "redis://env:6379/2"}
    resolved = up.resolve(environ, dotenv)
    env = resolved.env
    assert env["SESSIONPIPE_BROKER_URL"] == "redis://env:6379/2"  # environment wins
    assert env["SESSIONPIPE_API_TOKEN"] == "t-dotenv"  # then .env
    assert env["FLOWER_USER"] == "from-dotenv"
    assert env["FLOWER_PASSWORD"] == "from-local"  # then the generated file
    assert env["SESSIONPIPE_DATABASE_URL"] == up.DEFAULTS["SESSIONPIPE_DATABASE_URL"]
    assert "127.0.0.1" in env["SESSIONPIPE_DATABASE_URL"]
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert resolved.generated == {}


def test_missing_secrets_are_generated_into_a_private_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    resolved = up.resolve({"SESSIONPIPE_HOME": str(home)}, tmp_path / "no.env")
    assert set(resolved.generated) == set(up.SECRETS)
    token = resolved.generated["SESSIONPIPE_API_TOKEN"]
    assert len(token) >= up.SECRET_BYTES and token != resolved.generated["FLOWER_PASSWORD"]
    up.write_generated(resolved.local_env, resolved.generated)
    assert resolved.local_env == home / up.LOCAL_ENV_NAME
    assert stat.S_IMODE(resolved.local_env.stat().st_mode) == up.LOCAL_ENV_MODE
    # the next start reads them back and makes nothing new
    again = up.resolve({"SESSIONPIPE_HOME": str(home)}, tmp_path / "no.env")
    assert again.generated == {} and again.env["SESSIONPIPE_API_TOKEN"] == token


def test_an_empty_value_is_unset_and_the_placeholder_is_refused(tmp_path: Path) -> None:
    environ = {"SESSIONPIPE_HOME": str(tmp_path), "SESSIONPIPE_API_TOKEN": ""}
    assert "SESSIONPIPE_API_TOKEN" in up.resolve(environ, tmp_path / "no.env").generated
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"FLOWER_PASSWORD={up.PLACEHOLDER}\n")
    with pytest.raises(up.UpError, match="FLOWER_PASSWORD"):
        up.resolve({"SESSIONPIPE_HOME": str(tmp_path)}, dotenv)


def test_the_default_secrets_file_is_never_committed() -> None:
    default = ROOT / up.DEFAULT_HOME / up.LOCAL_ENV_NAME
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(default)], cwd=ROOT, check=False
    )
    assert ignored.returncode == 0, f"{default} is not gitignored"


# -- integration ------------------------------------------------------------------------------
def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_line = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat_line.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _get(url: str, headers: dict[str, str] | None = None) -> int | None:
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers or {}), timeout=REQUEST_TIMEOUT_S
        ) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


@pytest.fixture
def empty_database() -> Iterator[str]:
    """A fresh PostgreSQL database, not migrated: ``make up`` migrates it."""
    url = create_database()
    yield url
    drop_database(url)


@pytest.mark.integration
def test_make_up_starts_every_service_and_stops_cleanly(
    tmp_path: Path, empty_database: str
) -> None:
    broker = redis.Redis.from_url(REDIS_UP_URL)
    broker.flushdb()
    home = tmp_path / "home"
    api_port, flower_port = free_port(), free_port()
    env = clean_env(
        SESSIONPIPE_HOME=str(home),
        SESSIONPIPE_DATABASE_URL=empty_database,
        SESSIONPIPE_BROKER_URL=REDIS_UP_URL,
        SESSIONPIPE_API_PORT=str(api_port),
        FLOWER_PORT=str(flower_port),
    )
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as log:
        honcho = subprocess.Popen(
            [sys.executable, "-m", "sessionpipe.up", "--dotenv", str(tmp_path / "no.env")],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    started: set[int] = set()
    ping = Celery("up-test", set_as_current=False)  # configured as the workers are
    ping.config_from_object(
        celery_config(Settings(home=home, database_url=empty_database, broker_url=REDIS_UP_URL))
    )
    try:

        def running(what: str) -> None:
            assert honcho.poll() is None, f"make up exited ({what}):\n{log_path.read_text()}"
            started.update(_descendants(honcho.pid))

        def healthy() -> bool:
            running("waiting for /healthz")
            return _get(f"http://127.0.0.1:{api_port}/healthz") == 200

        wait_for(healthy, START_TIMEOUT_S, "the API's /healthz to answer 200", poll=POLL_S)
        secrets = up.read_env_file(home / up.LOCAL_ENV_NAME)
        assert set(secrets) == set(up.SECRETS)
        assert secrets["SESSIONPIPE_API_TOKEN"] in log_path.read_text()  # printed once
        sessions = f"http://127.0.0.1:{api_port}/sessions"
        assert _get(sessions) == 401
        bearer = {"Authorization": f"Bearer {secrets['SESSIONPIPE_API_TOKEN']}"}
        assert _get(sessions, bearer) == 200

        def all_pong() -> bool:
            running("waiting for the workers")
            replies = ping.control.ping(destination=list(WORKER_NODES), timeout=PING_TIMEOUT_S)
            return {node for reply in replies for node in reply} == set(WORKER_NODES)

        wait_for(all_pong, START_TIMEOUT_S, f"{', '.join(WORKER_NODES)} to answer a ping")

        def flower_status(headers: dict[str, str] | None = None) -> int | None:
            running("waiting for Flower")
            return _get(f"http://127.0.0.1:{flower_port}/api/workers", headers)

        assert wait_for(flower_status, START_TIMEOUT_S, "Flower", poll=POLL_S) == 401
        pair = f"{secrets['FLOWER_USER']}:{secrets['FLOWER_PASSWORD']}".encode()
        basic = {"Authorization": "Basic " + base64.b64encode(pair).decode()}
        assert flower_status(basic) == 200
        started.update(_descendants(honcho.pid))
        # four workers (their pool children too), the API, Flower
        assert len(started) >= len(WORKER_NODES) + 2

        honcho.send_signal(signal.SIGINT)  # Ctrl-C in the terminal of `make up`
        honcho.wait(timeout=STOP_TIMEOUT_S)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while any(_alive(pid) for pid in started) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        assert [pid for pid in started if _alive(pid)] == [], log_path.read_text()[-4000:]
        assert "Traceback" not in log_path.read_text()
    finally:
        if honcho.poll() is None:
            os.killpg(honcho.pid, signal.SIGKILL)
            honcho.wait()
        for pid in started:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        ping.close()
        broker.flushdb()
        broker.close()
