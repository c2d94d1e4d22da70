"""A worker's CPU priority, from the queues it consumes (the rule: ``QUEUE_NICENESS``).

A worker started with ``-Q media`` lowers its own niceness to the media queue's before its
pool starts, so every pool process inherits it; one consuming several queues takes the most
urgent one's (the lowest niceness), and one consuming every queue (the embedded default's
in-process worker, which is the user's own command) is left as it is. Niceness only rises
here: a process may always lower its own priority, never raise it without privilege, and a
worker someone started with ``nice -n 15`` keeps its 15.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

from celery import bootsteps

from shared.routing import QUEUE_NICENESS, QUEUES
from shared.settings import get_settings

log = logging.getLogger(__name__)


def niceness_for(queues: Iterable[str]) -> int:
    """The niceness of a worker consuming these queues: the most urgent queue's; 0 (the
    normal priority) for a queue without a rule or for no queue named."""
    values = [QUEUE_NICENESS.get(name, 0) for name in queues]
    return min(values, default=0)


def consumed_queues(worker: Any) -> list[str]:
    """The queues a Celery worker consumes: those selected by ``-Q``, else all of ours."""
    selected = worker.app.amqp.queues.consume_from
    return sorted(selected) if selected else list(QUEUES)


def lower_priority(niceness: int) -> int:
    """Raise this process's niceness to ``niceness`` if it is lower; the niceness after."""
    current = os.nice(0)
    if niceness > current:
        current = os.nice(niceness - current)
    return current


class CpuPriority(bootsteps.Step):
    """Sets the worker's niceness when the worker is built, before its pool forks."""

    label = "sessionpipe cpu priority"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        if not get_settings().worker_niceness or not hasattr(os, "nice"):
            return
        queues = consumed_queues(parent)
        wanted = niceness_for(queues)
        now = lower_priority(wanted)
        if wanted:
            log.info("worker of %s runs at niceness %d", ", ".join(queues), now)
