"""Flower, the operators' dashboard, is locked: a real ``celery flower`` against the real
Redis answers 401 to a request without credentials (its API too: unauthenticated Flower was
CVE-2022-30034) and, with them, lists the running worker, which sends task events.

Flower 2.2 leaves ``/metrics`` and ``/healthcheck`` open by design (Prometheus scrapes
them): task and worker names, no control. docker-compose publishes Flower on 127.0.0.1
only."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from shared.settings import Settings
from tests.support import ROOT
from tests.support.servers import free_port
from tests.support.services import WorkerProcess
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

USER, PASSWORD = "operator", "a-test-password"  # made up for this test; nothing secret
FLOWER_START_S = 60.0
WORKER_LISTED_S = 60.0


def get(url: str, *, auth: bool, post: bool = False) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=b"{}" if post else None)
    if auth:
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_flower_refuses_strangers_and_shows_the_workers(
    tmp_path: Path, worker_system: tuple[Settings, WorkerProcess]
) -> None:
    _settings, worker = worker_system
    port = free_port()
    log = (tmp_path / "flower.log").open("wb")
    flower = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers.app", "flower", f"--port={port}",
         "--address=127.0.0.1", f"--basic-auth={USER}:{PASSWORD}"],
        cwd=ROOT, env=worker.env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:

        def answering() -> int | None:
            try:
                return get(f"{base}/", auth=False)[0]
            except OSError:
                return None

        assert wait_for(answering, FLOWER_START_S, "flower to answer", poll=0.5) == 401
        for path in ("/api/workers", "/api/tasks", "/workers", "/tasks"):
            assert get(base + path, auth=False)[0] == 401, path
        # nobody may start a task through it
        apply = f"{base}/api/task/async-apply/sessionpipe.merge"
        assert get(apply, auth=False, post=True)[0] == 401

        def listed() -> dict[str, object] | None:
            status, body = get(f"{base}/api/workers?refresh=1", auth=True)
            workers = json.loads(body) if status == 200 else {}
            return workers if any(name.startswith("test-") for name in workers) else None

        workers = wait_for(listed, WORKER_LISTED_S, "the worker in flower", poll=1.0)
        name = next(n for n in workers if n.startswith("test-"))
        assert "sessionpipe.merge" in json.dumps(workers[name])  # its registered tasks
    finally:
        flower.terminate()
        flower.wait(timeout=30)
        log.close()
