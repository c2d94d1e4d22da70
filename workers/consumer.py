"""The workers' message consumer: Celery's own, refusing a message it could not hand on.

Celery's main process copies a task message's headers (and decoded arguments) into the
request it pickles for a pool process, and pickle recurses: headers nested some 500 levels
deep (any client can add headers to a message) made that raise RecursionError, an
"unrecoverable error" that shut the whole worker down. Such a message is logged, naming
its task and id, and acknowledged, and the worker goes on. Bodies are bounded where they
are decoded (shared.broker.bounded_json_loads). Selected by ``worker_consumer``
(workers.config).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery.worker.consumer import Consumer

from shared.broker import MAX_MESSAGE_DEPTH, nested_deeper_than
from shared.diagnostics import quoted

log = logging.getLogger(__name__)


class GuardedConsumer(Consumer):
    def create_task_handler(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        handle: Callable[[Any], Any] = super().create_task_handler(*args, **kwargs)

        def on_task_received(message: Any) -> Any:
            headers = message.headers
            if nested_deeper_than(headers, MAX_MESSAGE_DEPTH):
                fields = headers if isinstance(headers, dict) else {}
                log.error(
                    "refused message %s of task %s: headers nested deeper than %d levels",
                    quoted(fields.get("id")),
                    quoted(fields.get("task")),
                    MAX_MESSAGE_DEPTH,
                )
                message.ack()
                return None
            return handle(message)

        return on_task_received
