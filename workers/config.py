"""Celery configuration in one place: queues, routes, reliability and priority settings."""

from __future__ import annotations

from typing import Any

from kombu import Exchange, Queue

from shared.broker import broker_transport, transport_options
from shared.routing import (
    PRIORITY_VALUES,
    QUEUE_DEFAULT,
    QUEUES,
    TASK_ROUTES,
)
from shared.settings import Settings

WORKER_PREFETCH = 1  # media tasks are long: never hold a second one while busy


def celery_config(settings: Settings) -> dict[str, Any]:
    exchange = Exchange("sessionpipe", type="direct")
    return {
        "broker_url": settings.broker_url,
        "broker_transport": broker_transport(settings),
        "broker_transport_options": transport_options(settings),
        "broker_connection_retry_on_startup": True,
        "task_queues": [Queue(name, exchange, routing_key=name) for name in QUEUES],
        "task_default_queue": QUEUE_DEFAULT,
        "task_default_exchange": "sessionpipe",
        "task_default_routing_key": QUEUE_DEFAULT,
        "task_routes": TASK_ROUTES,
        "task_default_priority": PRIORITY_VALUES["normal"],
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        # State lives in the jobs table; Celery results would be a second, weaker copy.
        "task_ignore_result": True,
        # A task whose worker dies is redelivered; the job row makes the rerun idempotent.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": WORKER_PREFETCH,
        # Refuses messages too deeply nested to hand to a pool process (workers.consumer).
        "worker_consumer": "workers.consumer:GuardedConsumer",
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_track_started": True,
        "worker_enable_remote_control": not settings.embedded_broker,
        "timezone": "UTC",
        "enable_utc": True,
    }
