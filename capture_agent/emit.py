"""Sending events to the workers through the broker, by task name.

The agent never imports ``workers``: it shares only the task names, routes and broker
options from ``shared``.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from shared.broker import transport_options
from shared.events import Event
from shared.routing import QUEUE_DEFAULT, TASK_INGEST_EVENT, TASK_ROUTES, priority_value
from shared.settings import Settings

PUBLISH_RETRY_POLICY: dict[str, Any] = {
    "max_retries": 3,
    "interval_start": 0.2,
    "interval_step": 0.5,
    "interval_max": 2.0,
}


class EventEmitter:
    def __init__(self, settings: Settings) -> None:
        self._app = Celery("capture-agent", set_as_current=False)
        self._app.conf.update(
            broker_url=settings.broker_url,
            broker_transport_options=transport_options(settings),
            broker_connection_retry_on_startup=True,
            task_routes=TASK_ROUTES,
            task_serializer="json",
            accept_content=["json"],
        )

    def emit(self, event: Event, *, priority: str = "normal") -> None:
        """Publish one event; raises kombu's OperationalError if the broker is unreachable."""
        self._app.send_task(
            TASK_INGEST_EVENT,
            args=[event.model_dump(mode="json")],
            queue=QUEUE_DEFAULT,
            priority=priority_value(priority),
            retry=True,
            retry_policy=PUBLISH_RETRY_POLICY,
        )

    def close(self) -> None:
        self._app.close()
