"""Completion webhooks: signed, one delivery per (session, event) recorded with the state
change, and a receiver that is down when the session finishes still gets them once it is
back (a real worker on Redis and PostgreSQL posting to a real HTTP server on 127.0.0.1)."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from sqlalchemy import select, update

from capture_agent.emit import EventEmitter
from shared import models
from shared.clock import utcnow
from shared.db import session_scope
from shared.migrate import upgrade
from shared.settings import Settings
from shared.storage import Storage
from synthetic.plan import SyntheticSpec
from synthetic.session import record_synthetic_session
from tests.support.servers import free_port
from tests.support.services import (
    WorkerProcess,
    create_database,
    drop_database,
    service_env,
    settings_for,
    wait_for_session,
)
from tests.support.shipping import ship_session_dir
from tests.support.waiting import wait_for
from workers import dispatch, webhook
from workers.config import celery_config

SECRET = "a-test-secret"  # made up for this test
RECEIVER_DOWN_S = 3.0  # the receiver starts this long after the session was shipped
SPEC = SyntheticSpec(
    duration=6.0, segment_seconds=3.0, audio_holes=(), width=160, height=96, fps=10
)


def test_signatures_verify_and_a_changed_body_or_an_old_time_does_not() -> None:
    body = b'{"event": "complete"}'
    header = webhook.sign(SECRET, 1_000_000, body)
    assert webhook.verify(SECRET, header, body, now=1_000_010, tolerance_s=300)
    assert not webhook.verify(SECRET, header, body + b" ", now=1_000_010, tolerance_s=300)
    assert not webhook.verify("other", header, body, now=1_000_010, tolerance_s=300)
    assert not webhook.verify(SECRET, header, body, now=1_000_999, tolerance_s=300)
    assert not webhook.verify(SECRET, "v1=abc", body, now=1_000_000, tolerance_s=300)


def test_one_delivery_per_session_and_event(sqlite_url: str, tmp_path: Path) -> None:
    off = Settings(home=tmp_path, database_url=sqlite_url)
    on = Settings(home=tmp_path, database_url=sqlite_url, webhook_url="http://127.0.0.1:9/x")
    with session_scope(sqlite_url) as db:
        db.add(models.Session(id="s", name="", status="processing", priority="normal"))
        db.flush()
        assert webhook.record(db, off, "s", "playable") is None  # nothing configured
        first = webhook.record(db, on, "s", "playable")
        assert first is not None
        assert webhook.record(db, on, "s", "playable") is None  # already recorded
        with pytest.raises(ValueError, match="unknown webhook event"):
            webhook.record(db, on, "s", "exploded")


class Receiver:
    """An HTTP server that keeps every POST (headers and body)."""

    def __init__(self, port: int) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the http.server API)
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                receiver.posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.posts]


@pytest.mark.integration
def test_a_receiver_that_was_down_gets_playable_and_complete(
    tmp_path: Path, pg_url: str, redis_url: str
) -> None:
    port = free_port()
    home = tmp_path / "home"
    env = service_env(home=home, database_url=pg_url, broker_url=redis_url)
    env.update(
        SESSIONPIPE_WEBHOOK_URL=f"http://127.0.0.1:{port}/hooks",
        SESSIONPIPE_WEBHOOK_SECRET=SECRET,
    )
    settings = settings_for(home=home, database_url=pg_url, broker_url=redis_url)
    worker = WorkerProcess(env, tmp_path / "worker.log")
    receiver = Receiver(port)
    receiver.server.server_close()  # down: its port refuses connections for now
    try:
        folder = record_synthetic_session(
            tmp_path / "s", session_id="hooked", name="hooked", spec=SPEC,
            started_at=datetime(2026, 12, 1, 9, 0, tzinfo=UTC),
        )  # fmt: skip
        ship_session_dir(folder, Storage(settings.storage), EventEmitter(settings))
        wait_for_session(pg_url, "hooked", worker)
        time.sleep(RECEIVER_DOWN_S)
        receiver = Receiver(port)
        receiver.thread.start()

        def both() -> list[dict[str, Any]] | None:
            events = [e for e in receiver.events() if e["session_id"] == "hooked"]
            return events if {e["event"] for e in events} == {"playable", "complete"} else None

        events = wait_for(both, 120, "both webhooks", poll=0.5)
    finally:
        worker.discard()
        receiver.server.shutdown()
    for headers, body in receiver.posts:
        assert webhook.verify(
            SECRET, headers["x-sessionpipe-signature"], body, now=time.time(), tolerance_s=300
        )
        assert headers["idempotency-key"] == json.loads(body)["idempotency_key"]
    complete = next(e for e in events if e["event"] == "complete")
    assert complete["session_id"] == "hooked" and complete["complete"] and complete["playable"]
    with session_scope(pg_url) as db:
        # (the run's database is shared: other tests' sessions may have deliveries too)
        rows = list(
            db.execute(
                select(models.WebhookDelivery).where(models.WebhookDelivery.session_id == "hooked")
            ).scalars()
        )
    assert sorted(r.event for r in rows) == ["complete", "playable"]
    assert all(r.delivered_at is not None and r.attempts >= 2 for r in rows), [
        (r.event, r.attempts, r.last_error) for r in rows
    ]


# -- a delivery whose message was lost ----------------------------------------------------------
def _seed_delivery(url: str, settings: Settings, session_id: str) -> int:
    with session_scope(url) as db:
        db.add(models.Session(id=session_id, name="", status="completed", priority="normal"))
        db.flush()
        delivery_id = webhook.record(db, settings, session_id, "complete")
    assert delivery_id is not None
    return delivery_id


def test_due_finds_the_deliveries_no_message_carries(sqlite_url: str, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, database_url=sqlite_url, webhook_url="http://127.0.0.1:9/")
    ids = {sid: _seed_delivery(sqlite_url, settings, sid)
           for sid in ("unsent", "sent", "lost", "delivered", "exhausted")}  # fmt: skip
    long_ago = utcnow() - timedelta(hours=1)
    recently = utcnow() - timedelta(seconds=5)
    for sid, values in (
        ("sent", {"dispatched_at": utcnow()}),
        ("lost", {"dispatched_at": long_ago, "attempts": 3}),
        ("delivered", {"delivered_at": long_ago}),
        ("exhausted", {"attempts": 12}),
    ):
        with session_scope(sqlite_url) as db:
            db.execute(
                update(models.WebhookDelivery)
                .where(models.WebhookDelivery.id == ids[sid])
                .values(**values)
            )
    with session_scope(sqlite_url) as db:
        db.execute(update(models.WebhookDelivery).values(updated_at=long_ago))
        db.execute(
            update(models.WebhookDelivery)
            .where(models.WebhookDelivery.id == ids["sent"])
            .values(updated_at=recently)
        )

    def due(grace_s: float, redispatch_s: float) -> set[str]:
        with session_scope(sqlite_url) as db:
            found = webhook.due(
                db, grace=timedelta(seconds=grace_s), redispatch=timedelta(seconds=redispatch_s),
                max_attempts=12,
            )  # fmt: skip
        return {sid for sid, delivery_id in ids.items() if delivery_id in found}

    assert due(30, 900) == {"unsent", "lost"}
    assert due(7200, 900) == {"lost"}  # not yet past the grace
    assert due(30, 7200) == {"unsent"}  # its retry may still be waiting
    assert due(0, 60) == {"unsent", "lost"}  # "sent" went out just now: its post is coming


@pytest.mark.integration
def test_the_sweeper_posts_a_delivery_whose_send_was_lost(tmp_path: Path, redis_url: str) -> None:
    """The delivery row is recorded but its task never sent (the broker blinked after the
    commit); one sweep sends it and a real worker posts it, with its idempotency key."""
    url = create_database()  # the sweep looks at every job: a database of this test's own
    try:
        upgrade(url)
        port = free_port()
        home = tmp_path / "home"
        settings = settings_for(home=home, database_url=url, broker_url=redis_url)
        settings = settings.model_copy(update={"webhook_url": f"http://127.0.0.1:{port}/hooks"})
        delivery_id = _seed_delivery(url, settings, "lost-hook")
        env = service_env(home=home, database_url=url, broker_url=redis_url)
        # the worker's own sweeper must not be the one that sends it
        env.update(SESSIONPIPE_WEBHOOK_URL=settings.webhook_url or "",
                   SESSIONPIPE_SWEEP_INTERVAL_S="3600")  # fmt: skip
        receiver = Receiver(port)
        receiver.thread.start()
        worker = WorkerProcess(env, tmp_path / "worker.log", queues="default", concurrency=1)
        try:
            time.sleep(1.0)
            assert receiver.posts == []  # nothing carries it
            app = Celery("sweep-test", set_as_current=False)
            app.config_from_object(celery_config(settings))
            result = dispatch.sweep(app, settings, grace=timedelta(0))
            assert result.webhooks == [delivery_id]
            posts = wait_for(lambda: receiver.posts or None, 60, "the webhook", poll=0.2)
            # delivered: the next sweep sends nothing
            wait_for(lambda: _delivered(url, delivery_id), 30, "delivered_at", poll=0.2)
            assert dispatch.sweep(app, settings, grace=timedelta(0)).webhooks == []
        finally:
            worker.discard()
            receiver.server.shutdown()
    finally:
        drop_database(url)
    headers, body = posts[0]
    assert headers["idempotency-key"] == "lost-hook:complete"
    assert json.loads(body)["event"] == "complete" and len(receiver.posts) == 1


def _delivered(url: str, delivery_id: int) -> bool:
    with session_scope(url) as db:
        delivery = db.get(models.WebhookDelivery, delivery_id)
        return delivery is not None and delivery.delivered_at is not None
