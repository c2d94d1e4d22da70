"""Servers of a test's own, for fault tests: kill them, start them again on the same port.

- :class:`RedisServer`: a ``redis-server`` on a free port. With ``appendonly`` (the default)
  every write is in its append-only file before Redis answers (``appendfsync always``), so a
  published message, and the ``unacked`` hash of kombu's Redis transport, survive SIGKILL.
  It reads the queues as kombu's Redis transport lays them out (priority sub-lists).
- :class:`PostgresServer`: a PostgreSQL cluster of its own (``initdb`` in a temporary
  folder, trust auth, a free port, its Unix socket inside the folder), stopped the hard way
  with :meth:`PostgresServer.stop_immediate` and started again on the same port. Made for
  speed, not durability across a machine crash: ``initdb --no-sync`` and ``fsync = off``
  (a commit still reaches the OS before it returns, so it survives a killed server).

The fixtures (``own_redis``, ``own_postgres``, and ``redis_server``, the throwaway Redis
that comes back empty) are in ``tests/conftest.py``.
"""

from __future__ import annotations

import base64
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import psycopg
import redis
from kombu.transport.redis import Channel as RedisChannel
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.broker import transport_options
from shared.routing import PRIORITY_STEPS
from shared.settings import Settings
from tests.support.waiting import wait_for

START_TIMEOUT_S = 30.0
#: Where Debian puts each PostgreSQL version's programs; ``SESSIONPIPE_TEST_PG_BIN`` wins.
PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
#: The OS user a cluster runs as when the tests run as root (PostgreSQL refuses root).
PG_OS_USER = "postgres"
_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except FileNotFoundError:
        return "(no log)"


class RedisServer:
    """A redis-server of the test's own on a fixed free port, in ``workdir``.

    ``appendonly=True`` (the default): every write reaches the append-only file before Redis
    answers, so :meth:`kill` loses nothing and :meth:`restart` brings the data back.
    ``appendonly=False``: no persistence at all, the server comes back empty.
    """

    def __init__(self, workdir: Path, *, appendonly: bool = True) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.port = free_port()
        self.log_path = workdir / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None
        # How kombu's Redis transport names the lists of a queue (the same options as ours).
        options = transport_options(Settings(broker_url=self.url))
        self._sep: str = options["sep"]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self) -> redis.Redis:
        """A client that fails at once when the server is down (redis-py retries by default)."""
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            db=0,
            socket_connect_timeout=1,
            socket_timeout=5,
            retry=Retry(NoBackoff(), 0),
        )

    def start(self) -> None:
        """Start the server (again, on the same port) and wait until it answers."""
        if self.running:
            raise RuntimeError(f"redis-server on port {self.port} is already running")
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.appendonly
            else ["--appendonly", "no"]
        )
        argv = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            *persistence,
            "--dir",
            str(self.workdir),
        ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._answers, START_TIMEOUT_S, f"redis-server on port {self.port}")

    def _answers(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"redis-server on port {self.port} exited:\n{_tail(self.log_path)}")
        try:
            return bool(self.client().ping())
        except redis.ConnectionError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final save (what survives is what the AOF holds)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        """:meth:`kill`, then :meth:`start` on the same port."""
        self.kill()
        self.start()

    def log(self) -> str:
        return _tail(self.log_path, 100_000)

    # What kombu's Redis transport keeps: one list per queue and priority step (``default``
    # for step 0, ``default:3``, ``default:6``, ``default:9``), and the messages delivered
    # but not acknowledged in the ``unacked`` hash, indexed by delivery time in
    # ``unacked_index``.

    def queue_keys(self, queue: str) -> list[str]:
        """The lists holding ``queue``'s messages, highest priority first."""
        return [f"{queue}{self._sep}{step}" if step else queue for step in PRIORITY_STEPS]

    def queue_lengths(self, queue: str) -> dict[str, int]:
        """Messages waiting in each of ``queue``'s lists, by key."""
        client = self.client()
        return {key: int(client.llen(key)) for key in self.queue_keys(queue)}

    def queue_length(self, queue: str) -> int:
        """Messages waiting in ``queue`` (every priority)."""
        return sum(self.queue_lengths(queue).values())

    def unacked(self) -> int:
        """Messages delivered to a consumer and not acknowledged yet."""
        return int(self.client().hlen(RedisChannel.unacked_key))

    def unacked_index(self) -> int:
        """Entries of the index kombu restores unacknowledged messages from."""
        return int(self.client().zcard(RedisChannel.unacked_index_key))

    def unacked_tasks(self) -> list[str]:
        """Task names of the unacknowledged messages."""
        names = []
        for raw in self.client().hvals(RedisChannel.unacked_key):
            message = json.loads(raw)[0]  # [message, exchange, routing key]
            names.append(message["headers"]["task"])
        return sorted(names)

    def messages(self, queue: str = "default") -> list[dict[str, Any]]:
        """The first argument (an event) of every task waiting in ``queue``."""
        client = self.client()
        events: list[dict[str, Any]] = []
        for key in self.queue_keys(queue):
            for raw in client.lrange(key, 0, -1):
                message = json.loads(raw)
                body = message["body"]
                if message["properties"].get("body_encoding") == "base64":
                    body = base64.b64decode(body)
                args = json.loads(body)[0]
                events.append(args[0])
        return events


def pg_bin() -> Path:
    """The folder of PostgreSQL's server programs (``initdb``, ``pg_ctl``)."""
    configured = os.environ.get("SESSIONPIPE_TEST_PG_BIN")
    if configured:
        return Path(configured)
    found = sorted(
        (Path(p) for p in glob.glob(PG_BIN_GLOB) if (Path(p) / "pg_ctl").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1]
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).parent
    raise RuntimeError(
        f"no PostgreSQL server programs (pg_ctl) in {PG_BIN_GLOB} or on PATH; "
        "set SESSIONPIPE_TEST_PG_BIN"
    )


class PostgresServer:
    """A PostgreSQL cluster of the test's own on a fixed free port.

    ``workdir`` (default: a new temporary folder, removed by :meth:`cleanup`) holds the
    cluster (``data/``), its Unix socket (``socket/``) and its log. When the tests run as
    root the cluster's programs run as the ``postgres`` user, who then owns ``workdir``; it
    must be reachable by that user (a folder under pytest's ``tmp_path`` is not).
    """

    def __init__(self, workdir: Path | None = None) -> None:
        self._own_workdir = workdir is None
        if workdir is None:
            workdir = Path(tempfile.mkdtemp(prefix="sessionpipe-pg-"))
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data = self.workdir / "data"
        self.socket_dir = self.workdir / "socket"
        self.log_path = self.workdir / "postgres.log"
        self.bin = pg_bin()
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.workdir, PG_OS_USER, PG_OS_USER)
        self.socket_dir.mkdir(exist_ok=True)
        if self._as_postgres:
            shutil.chown(self.socket_dir, PG_OS_USER, PG_OS_USER)

    # -- running the cluster's programs ------------------------------------------------

    def _run(self, program: str, *args: str, timeout: float = 60) -> str:
        """Run one of PostgreSQL's programs (as ``postgres`` when root); its output."""
        argv = [str(self.bin / program), *args]
        output = self.workdir / f"{program}.out"
        user: dict[str, Any] = (
            {"user": PG_OS_USER, "group": PG_OS_USER, "extra_groups": []}
            if self._as_postgres
            else {}
        )
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
        # Output to a file, not a pipe: the postmaster pg_ctl starts must not hold our pipe.
        with output.open("wb") as out:
            result = subprocess.run(
                argv,
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
                **user,
            )
        text = output.read_text(errors="replace")
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} exited with {result.returncode}:\n{text}\n"
                f"server log:\n{_tail(self.log_path)}"
            )
        return text

    def _initdb(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        settings = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.socket_dir}'",
            # Speed over durability: a commit is written to the OS before it returns
            # (synchronous_commit stays on), so it survives a killed server, not a lost machine.
            "fsync": "off",
            "full_page_writes": "off",
            "max_connections": "50",
            "shared_buffers": "16MB",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# tests/support/servers.py\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    # -- the life cycle ----------------------------------------------------------------

    @property
    def initialized(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    @property
    def running(self) -> bool:
        """The postmaster answers connections."""
        try:
            with psycopg.connect(self.dsn(), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def start(self) -> None:
        """Start the cluster (created on the first call) on its port; wait until it answers."""
        if not self.initialized:
            self._initdb()
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-w", "-t", "60", "start",
            timeout=90,
        )  # fmt: skip
        wait_for(lambda: self.running, START_TIMEOUT_S, f"PostgreSQL on port {self.port}")

    def stop_immediate(self) -> None:
        """Stop at once, as a crash would: no checkpoint, clients cut off (recovery on start)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def stop(self) -> None:
        """A clean shutdown (``-m fast``): open sessions are ended, then a checkpoint."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def _postmaster_alive(self) -> bool:
        pid_file = self.data / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def cleanup(self) -> None:
        """Stop the cluster if it runs, and remove its files (``workdir`` too if ours)."""
        try:
            if self.initialized and self._postmaster_alive():
                self.stop_immediate()
        finally:
            shutil.rmtree(self.workdir if self._own_workdir else self.data, ignore_errors=True)

    def log(self) -> str:
        return _tail(self.log_path, 100_000)

    # -- databases ---------------------------------------------------------------------

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq DSN for ``dbname`` over TCP."""
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def url(self, name: str) -> str:
        """The SQLAlchemy URL of database ``name``."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def create_database(self, name: str) -> str:
        """Create an empty database ``name``; its SQLAlchemy URL."""
        if not _DB_NAME.match(name):
            raise ValueError(f"not a plain database name: {name!r}")
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)
