"""Real services for the capture agent tests: a private redis-server, a moto S3 server.

Each test gets its own redis-server on a free port (no persistence) so it can be killed and
restarted on the same port, and a moto server that can be stopped and started again with
its objects intact (the state lives in this process).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from capture_agent.settings import AgentSettings
from tests.conftest import ROOT

T = TypeVar("T")
CAPTURE_AGENT = [sys.executable, "-c", "from capture_agent.cli import main; main()"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(predicate: Callable[[], T], timeout: float, what: str, poll: float = 0.05) -> T:
    """Poll until ``predicate`` returns something truthy; fail naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


class RedisServer:
    """A throwaway redis-server on a fixed free port: kill it and start it again there."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, db=0, socket_connect_timeout=1)

    def start(self) -> None:
        log = (self.workdir / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for(self._ping, 20, f"redis-server on port {self.port}")

    def _ping(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.ConnectionError:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def messages(self) -> list[dict[str, Any]]:
        """Every event waiting in the celery ``default`` queue (all priority lists)."""
        client = self.client()
        events: list[dict[str, Any]] = []
        for key in sorted(client.keys("default*")):
            if client.type(key) != b"list":
                continue
            for raw in client.lrange(key, 0, -1):
                message = json.loads(raw)
                body = message["body"]
                if message["properties"].get("body_encoding") == "base64":
                    body = base64.b64decode(body)
                args = json.loads(body)[0]
                events.append(args[0])
        return events


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.kill()


def write_segment(path: Path, size: int, seed: int) -> Path:
    """A segment whose content does not matter to the test: deterministic bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    block = hashlib.sha256(f"{seed}".encode()).digest() * 2048  # 64 KiB
    with path.open("wb") as handle:
        left = size
        while left > 0:
            handle.write(block[: min(left, len(block))])
            left -= len(block)
    return path


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def agent_settings(state: Path, storage: str, **overrides: Any) -> AgentSettings:
    """Fast retries and no heartbeats unless a test asks for them."""
    values: dict[str, Any] = {
        "state_dir": state,
        "storage": storage,
        "retry_base_s": 0.05,
        "retry_cap_s": 0.5,
        "heartbeat_s": 3600.0,
        "idle_poll_s": 0.05,
        "receipt_poll_s": 0.1,
    }
    values.update(overrides)
    return AgentSettings(**values)


def agent_env(home: Path, *, broker_url: str, **agent: str) -> dict[str, str]:
    """Environment for a ``capture-agent`` subprocess."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SESSIONPIPE_") and not k.startswith("AWS_")
    }
    env.update(
        SESSIONPIPE_HOME=str(home),
        SESSIONPIPE_BROKER_URL=broker_url,
        PYTHONPATH=str(ROOT),
        COLUMNS="200",
    )
    env.update({f"SESSIONPIPE_AGENT_{k.upper()}": v for k, v in agent.items()})
    return env


def by_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]
