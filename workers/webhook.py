"""Completion webhooks: tell a receiver when a session is playable, complete or failed.

The rule, as for jobs: the delivery row is written in the transaction that changes the
session (``record``), and its task is sent after the commit (``send``, which notes
``dispatched_at``); the task posts the document and records the outcome. A receiver that is
down gets it later: a failed post is retried with backoff (``WEBHOOK_RETRY_*``) up to
``webhook_max_attempts`` posts in all. A lost send is only a delay: the sweeper
(``workers.dispatch``) sends again an undelivered delivery with posts left (``due``) whose
task never left for ``dispatch_grace_s``, or which saw neither a send nor a post for
``redispatch_s`` (its retry message was lost; longer than the longest retry countdown, so
a retry still waiting is not doubled). Every post of one delivery carries the same
``Idempotency-Key``, so a receiver drops a repeat (a retry after a post whose answer was
lost, or a re-send racing a late message).

Signature: ``X-Sessionpipe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>`` over
``f"{t}.{body}"`` with ``SESSIONPIPE_WEBHOOK_SECRET``; a receiver recomputes it, compares in
constant time and refuses an old ``t`` (a replay).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from datetime import timedelta
from typing import Any, Final

from celery import Celery
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session as DbSession

from shared import models
from shared.clock import utcnow
from shared.db import session_scope
from shared.diagnostics import describe
from shared.routing import TASK_WEBHOOK
from shared.settings import Settings
from workers.jobs import insert_ignore
from workers.pipeline import is_playable, session_outcome

log = logging.getLogger(__name__)

EVENTS: Final = ("playable", "complete", "failed")
SIGNATURE_HEADER: Final = "X-Sessionpipe-Signature"
MAX_ERROR_CHARS: Final = 500


class WebhookFailed(ConnectionError):
    """The receiver did not take the delivery (down, timed out, or not 2xx): retry later."""


def idempotency_key(session_id: str, event: str) -> str:
    return f"{session_id}:{event}"


def record(db: DbSession, settings: Settings, session_id: str, event: str) -> int | None:
    """In the caller's transaction: the delivery of ``event``; its id when newly recorded
    (send its task after the commit), None when none is configured or it exists already."""
    if not settings.webhook_url:
        return None
    if event not in EVENTS:
        raise ValueError(f"unknown webhook event {event!r}")
    key = idempotency_key(session_id, event)
    inserted = insert_ignore(
        db,
        models.WebhookDelivery,
        {"session_id": session_id, "event": event, "idempotency_key": key, "attempts": 0},
        ["session_id", "event"],
    )
    if not inserted:
        return None
    return db.execute(
        select(models.WebhookDelivery.id).where(models.WebhookDelivery.idempotency_key == key)
    ).scalar_one()


def send(app: Celery, database_url: str, delivery_ids: list[int]) -> list[int]:
    """After the commit: put each delivery's task on the broker and note it; the ones sent.
    A send the broker refuses is only logged: the sweeper sends it later (``due``)."""
    sent = []
    for delivery_id in delivery_ids:
        try:
            app.send_task(TASK_WEBHOOK, args=[delivery_id])
        except Exception as exc:
            log.warning(
                "could not send webhook delivery %s (the sweeper will): %s",
                delivery_id,
                describe(exc),
            )
            continue
        log.info("sent webhook delivery %s", delivery_id)
        sent.append(delivery_id)
    if not sent:
        return sent
    try:
        with session_scope(database_url) as db:
            db.execute(
                update(models.WebhookDelivery)
                .where(
                    models.WebhookDelivery.id.in_(sent),
                    models.WebhookDelivery.delivered_at.is_(None),
                )
                .values(dispatched_at=utcnow())
            )
    except Exception as exc:  # the messages are out; unnoted, the sweeper sends them twice
        log.warning("could not note the dispatch of webhook deliveries %s: %s", sent, describe(exc))
    return sent


def due(
    db: DbSession, *, grace: timedelta, redispatch: timedelta, max_attempts: int
) -> list[int]:
    """Undelivered deliveries with posts left that no message carries, oldest first: never
    sent for ``grace``, or neither sent nor posted for ``redispatch`` (see the rule above)."""
    delivery = models.WebhookDelivery
    moment = utcnow()
    rows = db.execute(
        select(delivery.id)
        .where(
            delivery.delivered_at.is_(None),
            delivery.attempts < max_attempts,
            or_(
                and_(delivery.dispatched_at.is_(None), delivery.updated_at < moment - grace),
                and_(
                    delivery.dispatched_at < moment - redispatch,
                    delivery.updated_at < moment - redispatch,
                ),
            ),
        )
        .order_by(delivery.updated_at, delivery.id)
    ).scalars()
    return list(rows)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, *, now: float, tolerance_s: float) -> bool:
    """What a receiver does (tests use it): the signature matches and is recent."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    fresh = abs(now - timestamp) <= tolerance_s
    return fresh and hmac.compare_digest(expected, parts.get("v1", ""))


def document(db: DbSession, delivery: models.WebhookDelivery) -> dict[str, Any]:
    session = db.get(models.Session, delivery.session_id)
    jobs = list(session.jobs) if session is not None else []
    return {
        "event": delivery.event,
        "session_id": delivery.session_id,
        "idempotency_key": delivery.idempotency_key,
        "status": session.status if session is not None else None,
        "playable": is_playable(jobs),
        "complete": session_outcome(jobs) == "completed",
        "outputs": {j.stage: j.output_key for j in jobs if j.output_key},
        "errors": {j.stage: j.error for j in jobs if j.status == "failed"},
        "sent_at": utcnow().isoformat(),
    }


def deliver(settings: Settings, delivery_id: int) -> str:
    """Post one delivery; WebhookFailed (transient) when the receiver did not take it."""
    url, secret = settings.webhook_url, settings.webhook_secret
    with session_scope(settings.database_url) as db:
        delivery = db.get(models.WebhookDelivery, delivery_id)
        if delivery is None:
            return f"no webhook delivery {delivery_id}"
        if delivery.delivered_at is not None:
            return "already delivered"
        if delivery.attempts >= settings.webhook_max_attempts:  # a re-sent task's own retries
            return f"given up after {delivery.attempts} posts"
        if not url:
            return "no webhook URL configured"
        body = json.dumps(document(db, delivery), sort_keys=True).encode()
        key = delivery.idempotency_key
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("Idempotency-Key", key)
    if secret is not None:
        signature = sign(secret.get_secret_value(), int(time.time()), body)
        request.add_header(SIGNATURE_HEADER, signature)
    error: str | None = None
    try:
        with urllib.request.urlopen(request, timeout=settings.webhook_timeout_s) as answer:
            if not 200 <= answer.status < 300:
                error = f"HTTP {answer.status}"
    except urllib.error.HTTPError as exc:
        error = f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:  # refused, timed out, unreachable
        error = describe(exc)
    with session_scope(settings.database_url) as db:
        values: dict[str, Any] = {
            "attempts": models.WebhookDelivery.attempts + 1,
            "last_error": error[:MAX_ERROR_CHARS] if error else None,
            "updated_at": utcnow(),
        }
        if error is None:
            values["delivered_at"] = utcnow()
        db.execute(
            update(models.WebhookDelivery)
            .where(models.WebhookDelivery.id == delivery_id)
            .values(**values)
        )
    if error is not None:
        raise WebhookFailed(f"webhook {key} to {redacted(url)}: {error}")
    return f"delivered {key}"


def redacted(url: str) -> str:
    """The URL without its query (a token may be in it)."""
    return url.split("?", 1)[0]
