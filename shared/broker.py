"""Broker connection options, identical for the producer (capture agent) and the workers;
and the workers' message decoder, which refuses messages nested too deeply to be handled."""

from __future__ import annotations

from typing import Any

from kombu.serialization import registry
from kombu.utils import json as kombu_json

from shared.embedded_broker import TRANSPORT as EMBEDDED_TRANSPORT
from shared.jsontree import containers
from shared.routing import PRIORITY_STEPS
from shared.settings import Settings

REDIS_RESTORE_THROTTLE = 1
#: Nesting of a task message's decoded body (arguments and all) that a worker accepts.
#: Celery's main process pickles a task's arguments to hand them to a pool process, and
#: pickle recurses: a body nested some 500 levels deep made that raise RecursionError, an
#: "unrecoverable error" that shut the whole worker down. Events nest 8 levels at most
#: (shared.events.MAX_EVENT_DEPTH) inside a body's 3.
MAX_MESSAGE_DEPTH = 32
JSON_CONTENT_TYPE = "application/json"


def nested_deeper_than(value: object, limit: int) -> bool:
    """Whether ``value`` has more than ``limit`` levels of lists and dicts (``[[]]`` has 2),
    found without recursion."""
    return any(depth >= limit for depth, _ in containers(value))


def bounded_json_loads(data: str | bytes) -> Any:
    """kombu's JSON decoding, refusing a body nested deeper than MAX_MESSAGE_DEPTH.

    Raising here makes kombu report a DecodeError: the worker logs the message ("Can't
    decode message body", with its start) and acknowledges it, and goes on.
    """
    try:
        value = kombu_json.loads(data)
    except RecursionError:
        raise ValueError("message body nested too deeply to decode") from None
    if nested_deeper_than(value, MAX_MESSAGE_DEPTH):
        raise ValueError(f"message body nested deeper than {MAX_MESSAGE_DEPTH} levels")
    return value


def use_bounded_json() -> None:
    """Decode JSON messages in this process with :func:`bounded_json_loads` (the workers)."""
    registry.register(
        "json",
        kombu_json.dumps,
        bounded_json_loads,
        content_type=JSON_CONTENT_TYPE,
        content_encoding="utf-8",
    )


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
