"""Sessions that ended without all their segments: wait a while, then gap or fail.

A session starts processing once it has ended and every segment it announced
(``session.ended``'s ``segment_count``) is stored (``workers.ingest.ready_to_process``). An
agent may still be uploading the last ones (a slow network, a machine asleep), so an ended
session waits; but a segment that is never stored (a file lost on the Mac, an agent
uninstalled) would keep it waiting forever. The rule, applied by every worker's sweeper
(``workers.dispatch.sweep``):

- An ended session whose announced segments are not all stored
  ``missing_segments_wait_s`` after the workers received its ``session.ended`` is settled:
- ``missing_segments = "gap"`` (the default): it is processed with what arrived. The
  timeline leaves silence and holds the last frame where the missing segments were, so
  nothing after them moves; the session carries a warning naming what is missing
  (``sessions.warnings``, shown by ``status``, ``show`` and the API).
- ``missing_segments = "fail"``: its first stages are created failed with that reason, so
  the session fails (and its webhook says so) without processing half a recording.

Both happen in one transaction with the session row locked and the condition checked
again, so two sweepers settle a session once, and a segment stored meanwhile wins: the
session is then simply complete. A segment stored after its session was settled is kept
in storage and the database but is not in the outputs (a warning says so at ingest).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from celery import Celery
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session as DbSession

from shared import models
from shared.db import session_scope
from shared.settings import Settings
from shared.storage import Storage
from workers import assembly, live, parts, webhook
from workers.dispatch import send_all
from workers.jobs import now

log = logging.getLogger(__name__)

SESSION_ENDED: Final = "session.ended"
#: At most this many missing segment numbers are named in a warning.
MAX_NAMED: Final = 20


@dataclass(frozen=True)
class Settled:
    session_id: str
    policy: str  # "gap" | "fail"
    reason: str


def missing_description(expected: int, stored_indexes: list[int]) -> str:
    """'2 of 7 announced segments never arrived (numbers 3, 5)'."""
    stored = set(stored_indexes)
    missing = [i for i in range(expected) if i not in stored]
    count = max(0, expected - len(stored_indexes))
    text = f"{count} of {expected} announced segments never arrived"
    if missing and len(missing) == count:
        named = ", ".join(str(i) for i in missing[:MAX_NAMED])
        more = f" and {len(missing) - MAX_NAMED} more" if len(missing) > MAX_NAMED else ""
        text += f" (segment numbers {named}{more})"
    return text


def overdue(db: DbSession, *, wait: timedelta) -> list[str]:
    """Ended sessions still waiting for segments past ``wait`` after their end was received."""
    ended = (
        select(models.Event.session_id, func.max(models.Event.received_at).label("at"))
        .where(models.Event.type == SESSION_ENDED)
        .group_by(models.Event.session_id)
        .subquery()
    )
    stored = (
        select(models.Segment.session_id, func.count().label("n"))
        .group_by(models.Segment.session_id)
        .subquery()
    )
    rows = db.execute(
        select(models.Session.id)
        .join(ended, ended.c.session_id == models.Session.id)
        .outerjoin(stored, stored.c.session_id == models.Session.id)
        .where(
            models.Session.status == models.SessionStatus.RECORDING.value,
            models.Session.expected_segments.is_not(None),
            func.coalesce(stored.c.n, 0) < models.Session.expected_segments,
            ended.c.at <= now() - wait,
        )
    ).scalars()
    return list(rows)


def settle(app: Celery, settings: Settings) -> list[Settled]:
    """One pass of the rule: settle every overdue session; what was done."""
    wait = timedelta(seconds=settings.missing_segments_wait_s)
    with session_scope(settings.database_url) as db:
        candidates = overdue(db, wait=wait)
    done: list[Settled] = []
    for session_id in candidates:
        settled = _settle_one(app, settings, session_id, wait)
        if settled is not None:
            done.append(settled)
            log.warning("session %s: %s (%s)", session_id, settled.reason, settled.policy)
    return done


def _settle_one(
    app: Celery, settings: Settings, session_id: str, wait: timedelta
) -> Settled | None:
    from workers.ingest import lock_session, start_processing

    policy = settings.missing_segments
    hooks: list[int | None] = []
    with session_scope(settings.database_url) as db:
        session = lock_session(db, session_id)
        if session_id not in overdue(db, wait=wait):  # settled, or complete, meanwhile
            return None
        assert session.expected_segments is not None
        indexes = list(db.execute(
            select(models.Segment.index).where(models.Segment.session_id == session_id)
        ).scalars())  # fmt: skip
        reason = missing_description(session.expected_segments, indexes)
        due = start_processing(db, session)
        if policy == "fail":
            reason = f"failed: {reason} within {wait.total_seconds():g} s of its end"
            db.execute(
                update(models.Job)
                .where(
                    models.Job.session_id == session_id,
                    models.Job.stage.in_([stage.value for stage in due]),
                    models.Job.status == models.JobStatus.PENDING.value,
                )
                .values(status=models.JobStatus.FAILED.value, error=reason, finished_at=now())
            )
            session.status = models.SessionStatus.FAILED.value
            hooks.append(webhook.record(db, settings, session_id, "failed"))
            due = []
        else:
            reason = f"{reason}: processed with a gap where they belong"
        session.warnings = [*(session.warnings or []), reason]
    if due:
        send_all(app, settings.database_url, session, due)
    if policy == "fail":
        parts.discard_all(Storage(settings.storage), session_id)
        live.discard(Storage(settings.storage), session_id)
        assembly.discard(Storage(settings.storage), session_id)
    webhook.send(app, settings.database_url, [d for d in hooks if d is not None])
    return Settled(session_id, policy, reason)
