"""``GET /sessions/{id}/events``: a session's progress as server-sent events.

The rule: the database is the only source, so the stream reads it. Each open stream reads
the session's job rows every ``EVENT_POLL_S`` (``SETTLED_POLL_S`` once the session has an
outcome: a retry may still wake it; a settled stream sleeps up to that long after the server
is told to stop) and sends a ``status`` event whenever what it reads
differs from what it sent last; the first event is the current state, so a client that
connects (or reconnects) late misses nothing. A comment line every ``KEEPALIVE_S`` keeps
proxies from closing a quiet stream. A client that only waits for the end closes the stream
when an event's ``outcome`` is not null.

An event's data is one JSON object::

    {"session_id", "status", "outcome", "playable", "complete",
     "stages": [{"stage", "status", "progress", "attempts", "error"}]}

The read is one indexed query per poll (the session and its job rows), run in the thread
pool; the stream ends when the client goes (Starlette cancels it on disconnect).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any, Final

import anyio
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from shared import models
from shared.db import session_scope
from shared.diagnostics import describe
from workers.pipeline import STAGES, is_playable, session_outcome
from workers.status import UnknownSessionError, stage_status

#: Seconds between reads of a session still going: a progress change reaches the browser
#: within this (plus the read, a few ms).
EVENT_POLL_S: Final = 0.2
#: Seconds between reads of a settled session (completed or failed; a retry may reopen it).
SETTLED_POLL_S: Final = 2.0
#: Seconds of silence after which a comment line is sent.
KEEPALIVE_S: Final = 15.0
#: How long a browser's EventSource waits before reconnecting after a dropped stream (ms).
RECONNECT_MS: Final = 2000
MEDIA_TYPE: Final = "text/event-stream"
#: Headers of the stream: never cached, never buffered by a proxy (nginx honours the last).
STREAM_HEADERS: Final = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}

log = logging.getLogger(__name__)

_ORDER: Final = {stage.value: i for i, stage in enumerate(STAGES)}


def snapshot(database_url: str, session_id: str) -> dict[str, Any]:
    """The event data of a session now (UnknownSessionError if there is none)."""
    with session_scope(database_url) as db:
        status = db.execute(
            select(models.Session.status).where(models.Session.id == session_id)
        ).scalar_one_or_none()
        if status is None:
            raise UnknownSessionError(f"unknown session {session_id!r}")
        jobs = list(
            db.execute(select(models.Job).where(models.Job.session_id == session_id)).scalars()
        )
        jobs.sort(key=lambda job: _ORDER.get(job.stage, len(_ORDER)))
        outcome = session_outcome(jobs)
        return {
            "session_id": session_id,
            "status": status,
            "outcome": outcome,
            "playable": is_playable(jobs),
            "complete": outcome == "completed",
            "stages": [
                {
                    "stage": job.stage,
                    "status": stage_status(job),
                    "progress": job.progress,
                    "attempts": job.attempts,
                    "error": job.error,
                }
                for job in jobs
            ],
        }


def format_event(data: dict[str, Any], *, event: str, event_id: int) -> str:
    """One server-sent event (the JSON is one line: no newline inside a data field)."""
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def stream(
    database_url: str,
    session_id: str,
    first: dict[str, Any],
    *,
    stopping: threading.Event | None = None,
    poll_s: float = EVENT_POLL_S,
    settled_poll_s: float = SETTLED_POLL_S,
    keepalive_s: float = KEEPALIVE_S,
) -> AsyncIterator[str]:
    """The events of one client: ``first`` (read by the caller, so an unknown session is a
    404 before the stream starts), then every change; the stream ends when ``stopping`` is
    set (the server is stopping: an open stream would otherwise hold it until its graceful
    shutdown times out; the browser reconnects to the next server by itself)."""
    yield f"retry: {RECONNECT_MS}\n\n"
    last = first
    event_id = 1
    yield format_event(first, event="status", event_id=event_id)
    sent_at = time.monotonic()
    while True:
        await anyio.sleep(poll_s if last["outcome"] is None else settled_poll_s)
        if stopping is not None and stopping.is_set():
            return
        try:
            now = await run_in_threadpool(snapshot, database_url, session_id)
        except SQLAlchemyError as exc:  # the database blinked: keep the stream, read again
            log.warning("events of %s: database unavailable: %s", session_id, describe(exc))
            continue
        except UnknownSessionError:  # deleted while watched: say so and end
            yield format_event({"session_id": session_id, "deleted": True}, event="deleted",
                               event_id=event_id + 1)  # fmt: skip
            return
        if now != last:
            event_id += 1
            last = now
            yield format_event(now, event="status", event_id=event_id)
            sent_at = time.monotonic()
        elif time.monotonic() - sent_at >= keepalive_s:
            yield ": keepalive\n\n"
            sent_at = time.monotonic()
