"""Broker connection options, identical for the producer (capture agent) and the workers."""

from __future__ import annotations

from typing import Any

from shared.embedded_broker import TRANSPORT as EMBEDDED_TRANSPORT
from shared.routing import PRIORITY_STEPS
from shared.settings import Settings

REDIS_RESTORE_THROTTLE = 1


def broker_transport(settings: Settings) -> str | None:
    """Celery's ``broker_transport``: the embedded default's own, else what the URL says."""
    return EMBEDDED_TRANSPORT if settings.embedded_broker else None


def transport_options(settings: Settings) -> dict[str, Any]:
    if settings.embedded_broker:
        folder = settings.broker_folder
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
        }
    if settings.broker_url.startswith(("redis://", "rediss://")):
        return {
            "priority_steps": PRIORITY_STEPS,
            "sep": ":",
            "queue_order_strategy": "priority",
            "visibility_timeout": settings.broker_visibility_timeout_s,
            # Look for messages past their visibility timeout on every 10-second tick, not
            # every tenth (kombu >= 5.7): a dead worker's message returns that much sooner.
            "unacked_restore_throttle": REDIS_RESTORE_THROTTLE,
        }
    return {}
