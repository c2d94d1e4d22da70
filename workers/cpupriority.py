"""A worker's CPU priority, from the queues it consumes (the rule: ``QUEUE_NICENESS``).

A worker started with ``-Q media`` lowers its own niceness to the media queue's before its
pool starts, so every pool process inherits it; one consuming several queues takes the most
urgent one's (the lowest niceness), and one consuming every queue (the embedded default's
in-process worker, which is the user's own command) is left as it is. Niceness only rises
here: a process may always lower its own priority, never raise it without privilege, and a
worker someone started with ``nice -n 15`` keeps its 15.

Linux's scheduler weighs niceness only between processes of one *autogroup* (a session,
when ``kernel.sched_autogroup_enabled`` is on, the default of desktop and many server
kernels) and one cgroup: a worker started in a session of its own (``setsid``, a service
manager, the test and bench harnesses) would compete with the others as an equal whatever
its niceness. So a worker that leads its own session also sets its autogroup's niceness
(``/proc/self/autogroup``; the group holds only the worker and its pool). Containers are
cgroups: docker-compose.yml gives the media and enrich workers smaller CPU shares to match.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
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


#: Where Linux shows and takes the niceness of this process's autogroup.
AUTOGROUP = Path("/proc/self/autogroup")


def autogroup_niceness(path: Path = AUTOGROUP) -> int | None:
    """The niceness of this process's autogroup (``/autogroup-25 nice 0``), or None where
    there is none to read (not Linux, autogroups off)."""
    try:
        return int(path.read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def lower_autogroup_priority(niceness: int, path: Path = AUTOGROUP) -> int | None:
    """For a session leader: raise its autogroup's niceness to ``niceness`` if lower (the
    group is this process and its children only); the group's niceness after, None when
    this process shares its session or has no autogroup."""
    if os.getsid(0) != os.getpid():
        return None  # the group holds others of the session too: theirs is not ours to set
    current = autogroup_niceness(path)
    if current is None or niceness <= current:
        return current
    try:
        path.write_text(str(niceness))
    except OSError as exc:  # a kernel without autogroup writes, a read-only /proc
        log.info("cannot set the autogroup's niceness: %s", exc)
        return current
    return autogroup_niceness(path)


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
        group = lower_autogroup_priority(wanted)
        if wanted:
            log.info(
                "worker of %s runs at niceness %d (its autogroup: %s)",
                ", ".join(queues),
                now,
                "shared with its session" if group is None else group,
            )
