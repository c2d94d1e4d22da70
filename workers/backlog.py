"""What waits on the broker: messages per queue, and delivered-but-unacknowledged ones.

Read by ``sessionpipe doctor`` (reported) and by the sweeper (``workers.dispatch``), which
sends an overdue job's message again only when its queue is empty: a message that waits
behind a backlog is not lost, and a second copy would only lengthen the backlog.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.diagnostics import describe
from shared.routing import PRIORITY_STEPS, QUEUES
from shared.settings import Settings

#: The embedded broker keeps every queue in one folder: its count is under this name.
ALL_QUEUES = "all"
# kombu's Redis transport: a queue's priority lists, and delivered, unacknowledged messages.
REDIS_PRIORITY_SEP = ":"
REDIS_UNACKED_KEY = "unacked"
REDIS_SOCKET_TIMEOUT_S = 5


@dataclass
class Backlog:
    queues: dict[str, int] = field(default_factory=dict)  # messages waiting, per queue
    unacked: int | None = None  # delivered, not acknowledged (Redis); None: not known
    error: str | None = None  # why the broker could not be read (then nothing is known)

    def waiting(self, queue: str) -> int | None:
        """Messages waiting in ``queue``; None when the broker cannot say."""
        if queue in self.queues:
            return self.queues[queue]
        return self.queues.get(ALL_QUEUES)


def read_backlog(settings: Settings) -> Backlog:
    """The broker's backlog; empty (unknown) for a broker this cannot read."""
    backlog = Backlog()
    if settings.embedded_broker:
        folder = settings.broker_folder / "queue"
        waiting = [p for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
        backlog.queues[ALL_QUEUES] = len(waiting)
        return backlog
    if not settings.broker_url.startswith(("redis://", "rediss://")):
        return backlog
    import redis

    client = redis.Redis.from_url(
        settings.broker_url,
        socket_connect_timeout=REDIS_SOCKET_TIMEOUT_S,
        socket_timeout=REDIS_SOCKET_TIMEOUT_S,
    )
    try:
        for queue in QUEUES:
            names = [queue] + [f"{queue}{REDIS_PRIORITY_SEP}{s}" for s in PRIORITY_STEPS[1:]]
            backlog.queues[queue] = sum(int(client.llen(name)) for name in names)
        backlog.unacked = int(client.hlen(REDIS_UNACKED_KEY))
    except redis.RedisError as exc:  # down: the sweep still requeues; sends will fail
        return Backlog(error=describe(exc))
    finally:
        client.close()
    return backlog
