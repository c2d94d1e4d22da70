"""Getting every job the database says must run to a worker: send after commit, and sweep.

The rule, which makes a lost message, a lost send or a dead worker a delay and never a loss:

- A job row is created (pending) in the same transaction as the state that makes it due.
  Its message is sent *after* the commit; success is noted in ``jobs.dispatched_at``. A
  send that fails (the broker blinked) is only logged: the row still says it must run.
- Every worker runs a :class:`Sweeper` (a Celery bootstep; the embedded worker too), which
  every ``sweep_interval_s``:
  1. makes pending again the running jobs whose holder stopped heartbeating for
     ``job_lease_s`` (``jobs.requeue_stale``: the worker died);
  2. sends the pending jobs whose message never left (``dispatched_at`` NULL) for
     ``dispatch_grace_s`` (``jobs.unsent``), and those whose message was due
     ``redispatch_s`` ago and is still unclaimed while their queue is empty: it was lost on
     the broker, not waiting behind a backlog (``jobs.overdue``, ``workers.backlog``);
  3. with a webhook URL configured, sends the completion webhook deliveries no message
     carries, by the same two windows (``workers.webhook.due``);
  4. settles the ended sessions still waiting for announced segments past
     ``missing_segments_wait_s`` (``workers.incomplete``: processed with a gap, or failed).
- A message delivered twice is harmless: the claim (``workers.jobs.claim``) lets one
  execution run the job, the other finds it taken or finished and stops. So "exactly once
  in effect" needs only "at least once" here, and every sweep is safe to run anywhere,
  any number of times at once.
"""

from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from celery import Celery, bootsteps
from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from shared.db import session_scope
from shared.diagnostics import describe
from shared.models import Session
from shared.routing import PRIORITY_VALUES, TASK_ROUTES, Priority, priority_value
from shared.settings import Settings, get_settings
from workers import jobs, webhook
from workers.backlog import Backlog, read_backlog
from workers.pipeline import SPECS, Stage

log = logging.getLogger(__name__)

SWEEP_JITTER = 0.2  # each sweep waits the interval +- this fraction: workers spread out
SWEEP_STOP_TIMEOUT_S = 10.0


def stage_priority(session: Session, stage: Stage) -> int:
    """The broker priority of a stage's message: the session's, or the highest for a
    stage that only completes work already done (``StageSpec.urgent``)."""
    if SPECS[stage].urgent:
        return PRIORITY_VALUES[Priority.HIGH]
    return priority_value(session.priority)


def send(app: Celery, session: Session, stage: Stage) -> bool:
    """Put a stage's task on its queue (routing from the app's task_routes); False if the
    broker refused (logged: the sweeper sends it later)."""
    try:
        app.send_task(SPECS[stage].task, args=[session.id], priority=stage_priority(session, stage))
    except Exception as exc:
        log.warning(
            "could not send %s for session %s (the sweeper will): %s",
            stage.value,
            session.id,
            describe(exc),
        )
        return False
    log.info("sent %s for session %s", stage.value, session.id)
    return True


def send_all(app: Celery, database_url: str, session: Session, stages: list[Stage]) -> None:
    """Send the stages' tasks (after the commit that made them pending) and note it."""
    sent = [stage.value for stage in stages if send(app, session, stage)]
    if not sent:
        return
    try:
        with session_scope(database_url) as db:
            jobs.mark_dispatched(db, session.id, sent)
    except Exception as exc:  # the messages are out; unnoted, the sweeper sends them twice
        log.warning("could not note the dispatch of %s: %s", sent, describe(exc))


def queue_of(stage: Stage) -> str:
    return TASK_ROUTES[SPECS[stage].task]["queue"]


def stranded(
    db: DbSession,
    settings: Settings,
    backlog: Backlog,
    *,
    grace: timedelta | None = None,
    redispatch: timedelta | None = None,
) -> list[tuple[str, str]]:
    """Pending jobs no message carries: never sent, or overdue with their queue empty (an
    unreadable broker counts as empty: a needless copy is harmless, a lost job is not)."""
    grace = grace if grace is not None else timedelta(seconds=settings.dispatch_grace_s)
    redispatch = (
        redispatch if redispatch is not None else timedelta(seconds=settings.redispatch_s)
    )
    due = jobs.unsent(db, grace=grace)
    for session_id, stage in jobs.overdue(db, redispatch=redispatch):
        if not backlog.waiting(queue_of(Stage(stage))) and (session_id, stage) not in due:
            due.append((session_id, stage))
    return due


@dataclass
class SweepResult:
    requeued: list[tuple[str, str]] = field(default_factory=list)  # running jobs of dead workers
    sent: list[tuple[str, str]] = field(default_factory=list)
    unsent: list[tuple[str, str]] = field(default_factory=list)  # the broker refused
    webhooks: list[int] = field(default_factory=list)  # deliveries sent again
    # Ended sessions whose missing segments were waited for long enough (workers.incomplete).
    incomplete: list[str] = field(default_factory=list)


def sweep(
    app: Celery,
    settings: Settings,
    *,
    grace: timedelta | None = None,
    redispatch: timedelta | None = None,
    lease: timedelta | None = None,
) -> SweepResult:
    """One pass of the rule above; the windows default to the settings."""
    lease = lease if lease is not None else timedelta(seconds=settings.job_lease_s)
    result = SweepResult()
    with session_scope(settings.database_url) as db:
        result.requeued = jobs.requeue_stale(db, lease=lease)
    backlog = read_backlog(settings)
    with session_scope(settings.database_url) as db:
        due = stranded(db, settings, backlog, grace=grace, redispatch=redispatch)
        due += [item for item in result.requeued if item not in due]  # sent in this pass
        ids = sorted({session_id for session_id, _ in due})
        sessions = {
            s.id: s for s in db.execute(select(Session).where(Session.id.in_(ids))).scalars()
        }
    for session_id, stage in due:
        session = sessions.get(session_id)
        if session is None:  # deleted meanwhile (its jobs go with it)
            continue
        ok = send(app, session, Stage(stage))
        (result.sent if ok else result.unsent).append((session_id, stage))
        if ok:
            with session_scope(settings.database_url) as db:
                jobs.mark_dispatched(db, session_id, [stage])
    if settings.webhook_url:
        result.webhooks = _resend_webhooks(app, settings, grace=grace, redispatch=redispatch)
    from workers import incomplete  # it sends through this module

    result.incomplete = [s.session_id for s in incomplete.settle(app, settings)]
    for session_id, stage in result.requeued:
        log.warning("job %s of %s lost its worker: made pending again", stage, session_id)
    for session_id, stage in result.sent:
        log.warning("job %s of %s had no message out (unsent or lost): sent", stage, session_id)
    return result


def _resend_webhooks(
    app: Celery,
    settings: Settings,
    *,
    grace: timedelta | None,
    redispatch: timedelta | None,
) -> list[int]:
    """Webhook deliveries whose message never left or was lost, sent again (logged)."""
    with session_scope(settings.database_url) as db:
        due = webhook.due(
            db,
            grace=grace if grace is not None else timedelta(seconds=settings.dispatch_grace_s),
            redispatch=(
                redispatch if redispatch is not None
                else timedelta(seconds=settings.redispatch_s)
            ),
            max_attempts=settings.webhook_max_attempts,
        )  # fmt: skip
    sent = webhook.send(app, settings.database_url, due)
    for delivery_id in sent:
        log.warning("webhook delivery %s had no message out (unsent or lost): sent", delivery_id)
    return sent


class Sweeper(bootsteps.StartStopStep):
    """Runs :func:`sweep` in a thread of every worker (main process), every interval.

    Added to the worker blueprint in ``workers.app``; a failing sweep (database or broker
    away) is logged and tried again at the next interval.
    """

    label = "sessionpipe sweeper"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, parent: Any) -> None:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._loop, args=(parent.app,), name="sessionpipe-sweeper", daemon=True
        )
        self._thread.start()

    def stop(self, parent: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(SWEEP_STOP_TIMEOUT_S)

    def shutdown(self, parent: Any) -> None:
        self.stop(parent)

    def _loop(self, app: Celery) -> None:
        settings = get_settings()
        interval = settings.sweep_interval_s
        while not self._stop.wait(interval * (1 + SWEEP_JITTER * (2 * random.random() - 1))):
            try:
                sweep(app, settings)
            except Exception as exc:
                log.warning("sweep failed (next in %.0f s): %s", interval, describe(exc))
