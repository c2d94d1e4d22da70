"""Sending events to the workers through the broker, by task name.

The agent never imports ``workers``: it shares only the task names, routes and broker
options from ``shared``. Publishing either succeeds (the broker has the message) or raises;
the outbox keeps the event until it succeeds, so a raise only means "try again later".
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from shared.broker import broker_transport, transport_options
from shared.events import Event
from shared.routing import QUEUE_DEFAULT, TASK_INGEST_EVENT, TASK_ROUTES, priority_value
from shared.settings import Settings

PUBLISH_RETRY_POLICY: dict[str, Any] = {
    "max_retries": 3,
    "interval_start": 0.2,
    "interval_step": 0.5,
    "interval_max": 2.0,
}
# A broker that does not answer must fail the publish (the outbox retries), not hang it.
REDIS_SOCKET_OPTIONS: dict[str, Any] = {"socket_connect_timeout": 5, "socket_timeout": 15}


class EventEmitter:
    def __init__(self, settings: Settings) -> None:
        options = transport_options(settings)
        if settings.broker_url.startswith(("redis://", "rediss://")):
            options = {**REDIS_SOCKET_OPTIONS, **options}
        self._app = Celery("capture-agent", set_as_current=False)
        self._app.conf.update(
            broker_url=settings.broker_url,
            broker_transport=broker_transport(settings),
            broker_transport_options=options,
            broker_connection_retry_on_startup=True,
            broker_connection_timeout=5,
            task_routes=TASK_ROUTES,
            task_serializer="json",
            accept_content=["json"],
        )

    def emit(self, event: Event, *, priority: str = "normal", retry: bool = True) -> None:
        """Publish one event; raises (kombu's OperationalError) if the broker is unreachable.

        ``retry=False`` fails on the first error: for best-effort events (heartbeats).
        """
        self._app.send_task(
            TASK_INGEST_EVENT,
            args=[event.model_dump(mode="json")],
            queue=QUEUE_DEFAULT,
            priority=priority_value(priority),
            retry=retry,
            retry_policy=PUBLISH_RETRY_POLICY,
        )

    def close(self) -> None:
        self._app.close()
