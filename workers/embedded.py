"""A real Celery worker inside this process, for the one-machine embedded default.

It consumes the same queues through the same broker abstraction (the filesystem transport
under the home folder), so retries, countdowns and routing behave as they do with Redis.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from celery import Celery
from celery.worker import WorkController
from celery.worker.consumer import Consumer

from shared.embedded_broker import call_consumer
from shared.routing import QUEUES

EMBEDDED_CONCURRENCY = 2
STARTUP_TIMEOUT_S = 30.0
SHUTDOWN_TIMEOUT_S = 30.0


class _WakingConsumer(Consumer):
    """A consumer whose queued calls (a pool thread's acknowledgement) wake its loop."""

    def call_soon(self, p: Any, *args: Any, **kwargs: Any) -> Any:
        promise = super().call_soon(p, *args, **kwargs)
        call_consumer()
        return promise


class _ReadyWorkController(WorkController):
    """WorkController that tells us when its consumer is ready to take tasks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.ready = threading.Event()
        super().__init__(*args, **kwargs)

    def on_consumer_ready(self, consumer: Any) -> None:
        super().on_consumer_ready(consumer)
        self.ready.set()


@contextmanager
def embedded_worker(
    app: Celery, *, concurrency: int = EMBEDDED_CONCURRENCY, queues: Sequence[str] = QUEUES
) -> Iterator[WorkController]:
    app.finalize()
    # The pool's threads look tasks up in the *current* app, which is thread-local and falls
    # back to the default app: make ours the default, or a task would run as a copy bound to
    # an unconfigured app and send its next stage (or its retry) to a broker nobody reads.
    app.set_current()
    app.set_default()
    worker = _ReadyWorkController(
        app=app,
        pool_cls="threads",
        concurrency=concurrency,
        queues=list(queues),
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
        loglevel="WARNING",
        hostname="embedded@sessionpipe",
        consumer_cls=_WakingConsumer,
    )
    thread = threading.Thread(target=worker.start, name="sessionpipe-worker", daemon=True)
    thread.start()
    if not worker.ready.wait(STARTUP_TIMEOUT_S):
        worker.stop(in_sighandler=False)
        raise RuntimeError("the embedded Celery worker did not start")
    try:
        yield worker
    finally:
        worker.stop(in_sighandler=False)
        thread.join(SHUTDOWN_TIMEOUT_S)
