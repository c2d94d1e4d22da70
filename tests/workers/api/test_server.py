"""``sessionpipe api`` as a real uvicorn process on 127.0.0.1, over the real PostgreSQL
(``pg_url``) and Redis (database 11 of the shared server, not the suite's 15 and 13):
auth, health, sessions, Range requests, retry, metrics; and its refusal to start."""

from __future__ import annotations

import json
import os
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from shared.db import session_scope
from shared.routing import TASK_MERGE, TASK_ROUTES
from shared.storage import Storage
from tests.support.api import START_TIMEOUT_S, ApiServer, running_api, start_api
from tests.support.cli import clean_env
from tests.support.servers import free_port
from tests.workers.api.seed import Seeded, seed
from workers.jobs import get_job

pytestmark = pytest.mark.integration

#: The broker of these tests: its own database on the shared Redis (15 and 13 are others').
REDIS_API_URL = os.environ.get("SESSIONPIPE_TEST_REDIS_API_URL", "redis://127.0.0.1:6379/11")
TOKEN = "integration-token-" + uuid.uuid4().hex


@dataclass
class Server:
    api: ApiServer
    prefix: str
    seeded: Seeded
    database_url: str

    @property
    def log(self) -> Path:
        return self.api.log

    def request(self, path: str, **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
        return self.api.request(path, **kwargs)

    def json(self, path: str, **kwargs: Any) -> Any:
        return self.api.json(path, **kwargs)


@pytest.fixture
def server(tmp_path: Path, pg_url: str) -> Iterator[Server]:
    client = redis.Redis.from_url(REDIS_API_URL)
    client.flushdb()
    home = tmp_path / "home"
    prefix = f"api-{uuid.uuid4().hex[:6]}-"
    seeded = seed(pg_url, Storage(home / "storage"), prefix)
    env = clean_env(
        SESSIONPIPE_HOME=str(home),
        SESSIONPIPE_DATABASE_URL=pg_url,
        SESSIONPIPE_BROKER_URL=REDIS_API_URL,
        SESSIONPIPE_STORAGE_ROOT=str(home / "storage"),
        SESSIONPIPE_API_TOKEN=TOKEN,
    )
    try:
        with running_api(env, tmp_path / "api.log") as api:
            yield Server(api, prefix, seeded, pg_url)
    finally:
        client.flushdb()
        client.close()


def test_api_server_end_to_end(server: Server) -> None:
    done, failed = server.prefix + "s-done", server.prefix + "s-failed"
    # Health is open and checks the real database and Redis.
    status, _, body = server.request("/healthz", token=None)
    assert (status, json.loads(body)) == (200, {"database": "ok", "broker": "ok"})
    # Everything else needs the token.
    assert server.request("/sessions", token=None)[0] == 401
    assert server.request("/sessions", token="wrong")[0] == 401
    assert server.request("/metrics", token=None)[0] == 401

    listed = server.json("/sessions?status=failed&limit=200")
    assert failed in [s["session_id"] for s in listed]
    report = server.json(f"/sessions/{done}")
    assert report["media"]["playable"] == f"/sessions/{done}/media/playable"
    assert report["playable"] and report["complete"]
    assert server.json(f"/sessions/{done}/enrichment")["chapters"][0]["title"] == "Intro"
    assert server.request("/sessions/nope-nope")[0] == 404
    assert server.request("/sessions/a..b")[0] == 400

    # Range requests on the real MP4, as a browser seeking in the player makes them.
    data = server.seeded.playable.read_bytes()
    status, headers, body = server.request(
        report["media"]["playable"], Range="bytes=0-99"
    )
    assert (status, body) == (206, data[:100])
    assert headers["content-range"] == f"bytes 0-99/{len(data)}"
    assert headers["accept-ranges"] == "bytes"
    status, _, body = server.request(report["media"]["playable"], Range="bytes=-64")
    assert (status, body) == (206, data[-64:])
    status, headers, _ = server.request(
        report["media"]["playable"], Range=f"bytes={len(data) + 1}-"
    )
    assert (status, headers["content-range"]) == (416, f"bytes */{len(data)}")

    # Retry: the job row is pending again and its message is on Redis database 11.
    status, _, body = server.request(f"/sessions/{failed}/stages/merge/retry", method="POST")
    assert status == 202, body
    with session_scope(server.database_url) as db:
        job = get_job(db, failed, "merge")
        assert job is not None and (job.status, job.dispatched_at is not None) == (
            "pending", True,
        )
    waiting = redis.Redis.from_url(REDIS_API_URL)
    try:
        queue = TASK_ROUTES[TASK_MERGE]["queue"]  # the merge task's queue (and its priorities)
        assert sum(waiting.llen(key) for key in waiting.keys(f"{queue}*")) == 1
    finally:
        waiting.close()
    status, _, _ = server.request(f"/sessions/{failed}/stages/merge/cancel", method="POST")
    assert status == 200
    with session_scope(server.database_url) as db:
        job = get_job(db, failed, "merge")
        assert job is not None and job.status == "cancelled"

    metrics = server.request("/metrics")[2].decode()
    for name in (
        "sessionpipe_jobs{",
        "sessionpipe_stage_duration_seconds_bucket{",
        "sessionpipe_queue_messages{",
        "sessionpipe_oldest_pending_job_age_seconds ",
        "sessionpipe_sessions_playable ",
        "sessionpipe_sessions_complete ",
    ):
        assert name in metrics, name
    assert f'sessionpipe_queue_messages{{queue="{queue}"}} 1.0' in metrics
    assert TOKEN not in server.log.read_text()


@pytest.mark.parametrize(
    ("host", "broker", "why"),
    [
        ("0.0.0.0", None, "would listen on 0.0.0.0"),
        ("127.0.0.1", REDIS_API_URL, "broker is not the embedded default"),
    ],
)
def test_refuses_to_start_without_a_token(
    tmp_path: Path, host: str, broker: str | None, why: str
) -> None:
    env = clean_env(SESSIONPIPE_HOME=str(tmp_path / "home"))
    if broker is not None:
        env["SESSIONPIPE_BROKER_URL"] = broker
    log = tmp_path / "api.log"
    proc = start_api(env, log, "--host", host, "--port", str(free_port()))
    assert proc.wait(START_TIMEOUT_S) == 2
    assert why in " ".join(log.read_text().split())


def _next_status(stream: Any) -> dict[str, Any]:
    """The data of the next ``status`` event on an open event stream."""
    event = None
    while line := stream.readline():
        if line.startswith(b"event: "):
            event = line[7:].strip()
        elif line.startswith(b"data: ") and event == b"status":
            data: dict[str, Any] = json.loads(line[6:])
            return data
    raise AssertionError("the event stream ended")


def test_the_event_stream_follows_the_database_and_ends_when_the_server_stops(
    tmp_path: Path, pg_url: str
) -> None:
    home = tmp_path / "home"
    prefix = f"sse-{uuid.uuid4().hex[:6]}-"
    seed(pg_url, Storage(home / "storage"), prefix)
    running = prefix + "s-running"
    env = clean_env(
        SESSIONPIPE_HOME=str(home), SESSIONPIPE_DATABASE_URL=pg_url,
        SESSIONPIPE_BROKER_URL=REDIS_API_URL, SESSIONPIPE_STORAGE_ROOT=str(home / "storage"),
        SESSIONPIPE_API_TOKEN=TOKEN,
    )  # fmt: skip
    with running_api(env, tmp_path / "api.log") as api:
        assert api.request(f"/sessions/{running}/events", token=None)[0] == 401
        request = urllib.request.Request(
            f"{api.base}/sessions/{running}/events", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        stream = urllib.request.urlopen(request, timeout=30)
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        first = _next_status(stream)
        assert [s["progress"] for s in first["stages"]][:1] == [0.4]
        assert first["outcome"] is None
        with session_scope(pg_url) as db:  # a worker reports progress, then finishes
            job = get_job(db, running, "concat_audio")
            assert job is not None
            job.progress = 0.9
        assert _next_status(stream)["stages"][0]["progress"] == 0.9
        with session_scope(pg_url) as db:
            job = get_job(db, running, "concat_audio")
            assert job is not None
            job.status, job.progress = "succeeded", 1.0
        after = _next_status(stream)["stages"][0]
        assert (after["status"], after["progress"]) == ("succeeded", 1.0)
    # running_api stopped the server (SIGTERM) while the stream was open: the stream ended
    # (rather than holding the graceful stop until it timed out and cancelled the request).
    assert stream.read().strip() == b""  # read to its end: the server ended it
    log = api.log.read_text()
    assert "Waiting for connections to close" in log
    assert "timeout graceful shutdown exceeded" not in log and "Traceback" not in log
