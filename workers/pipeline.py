"""The stage graph: which stage runs after which, and how a ready stage is put on its queue.

Each stage is one job row per session (``workers.jobs``) and one Celery task, routed to its
queue by ``shared.routing.TASK_ROUTES``. A stage becomes ready when every stage it runs
*after* has succeeded; stages with no ordering between them run side by side, each on its
own queue. The rule for handing on, which makes a lost or doubled hand-on harmless:

- The stage that succeeds locks the session row, marks its job succeeded and creates the
  job rows of the stages that became ready, in one transaction; after the commit it sends
  their tasks (``workers.dispatch``, whose sweeper sends whatever a lost send left
  pending). With the lock, of two predecessors finishing at once the later one sees both
  succeeded, so a stage with several predecessors is never forgotten.
- Sending is at least once: a redelivered or repeated task that finds its job succeeded
  sends the ready successors again, and a task finding its job taken or finished stops.
- Enrichment stages (transcript, chapters, summary) are *optional*: one that fails or is
  cancelled never fails the session, and the stages after it run with what there is (the
  summary of a session whose transcript failed is made from its chapters). A failed
  optional stage hands on like a succeeded one.
- The ``index`` stage (search: ``workers.search``) runs after the summary, and so after
  everything it indexes, and *again* whenever one of its ``refresh_after`` stages
  (transcript, chapters, summary) succeeds anew after it ran (an operator re-ran
  enrichment): that fresh success makes its finished job pending again, once the stages it
  runs after are settled (so a bulk requeue of transcript and summary indexes once, after
  the summary). Only a fresh success does this (:func:`hand_on` with ``fresh``); the
  re-sent hand-on of a repeated task sends such a stage again only while it is pending.
- A session is *playable* once its merge succeeded, *completed* when every required stage
  succeeded and every optional one has finished (succeeded, skipped or failed), *failed*
  when a required stage failed or was cancelled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from shared.models import UNSUCCESSFUL_STATUSES, Job, JobStatus, Session, SessionStatus
from shared.routing import (
    TASK_CHAPTERS,
    TASK_COMPRESS,
    TASK_CONCAT_AUDIO,
    TASK_FINALIZE,
    TASK_INDEX,
    TASK_MERGE,
    TASK_SUMMARY,
    TASK_TRANSCRIPT,
)
from workers.jobs import ensure_job, get_job, reset_for_retry

log = logging.getLogger(__name__)


class Stage(StrEnum):
    CONCAT_AUDIO = "concat_audio"
    MERGE = "merge"
    COMPRESS = "compress"
    FINALIZE = "finalize"
    TRANSCRIPT = "transcript"
    CHAPTERS = "chapters"
    SUMMARY = "summary"
    INDEX = "index"


@dataclass(frozen=True)
class StageSpec:
    stage: Stage
    task: str  # Celery task name; its queue comes from shared.routing
    after: tuple[Stage, ...] = ()  # ready once every one of these succeeded
    # Sent at the highest priority whatever the session's: a stage of milliseconds that
    # completes work already done. On the default queue behind a backlog of events it held
    # finished sessions back for minutes (bench/RESULTS.md, load).
    urgent: bool = False
    # Enrichment: failing never fails the session, and its successors still run.
    optional: bool = False
    # Runs again when one of these succeeds anew after it finished (see the module's rules).
    refresh_after: tuple[Stage, ...] = ()
    # Its work reads the session's enrichment documents from the database (the runner
    # loads them into the StageContext).
    reads_documents: bool = False


GRAPH: Final[tuple[StageSpec, ...]] = (
    StageSpec(Stage.CONCAT_AUDIO, TASK_CONCAT_AUDIO),
    StageSpec(Stage.MERGE, TASK_MERGE, after=(Stage.CONCAT_AUDIO,)),
    # The audio track is on the output timeline already: transcribe it while the video is
    # still being muxed. Chapters need the playable MP4; neither waits for the compression.
    StageSpec(Stage.TRANSCRIPT, TASK_TRANSCRIPT, after=(Stage.CONCAT_AUDIO,), optional=True),
    StageSpec(Stage.CHAPTERS, TASK_CHAPTERS, after=(Stage.MERGE,), optional=True),
    StageSpec(Stage.COMPRESS, TASK_COMPRESS, after=(Stage.MERGE,)),
    StageSpec(Stage.SUMMARY, TASK_SUMMARY, after=(Stage.TRANSCRIPT, Stage.CHAPTERS), optional=True),
    # Search: what the enrichment stages found, indexed (workers.search).
    StageSpec(
        Stage.INDEX,
        TASK_INDEX,
        after=(Stage.SUMMARY,),
        optional=True,
        refresh_after=(Stage.TRANSCRIPT, Stage.CHAPTERS, Stage.SUMMARY),
        reads_documents=True,
    ),
    StageSpec(Stage.FINALIZE, TASK_FINALIZE, after=(Stage.MERGE, Stage.COMPRESS), urgent=True),
)
SPECS: Final[dict[Stage, StageSpec]] = {spec.stage: spec for spec in GRAPH}
STAGES: Final[tuple[Stage, ...]] = tuple(spec.stage for spec in GRAPH)  # a topological order
ROOTS: Final[tuple[Stage, ...]] = tuple(spec.stage for spec in GRAPH if not spec.after)
REQUIRED: Final[frozenset[str]] = frozenset(s.stage.value for s in GRAPH if not s.optional)
OPTIONAL: Final[frozenset[str]] = frozenset(s.stage.value for s in GRAPH if s.optional)
#: The stage whose success makes a session playable (the MP4 exists).
PLAYABLE_STAGE: Final = Stage.MERGE


def _check_graph() -> None:
    """Every predecessor is listed before its stage, so GRAPH's order is topological."""
    seen: set[Stage] = set()
    for spec in GRAPH:
        missing = [s.value for s in spec.after if s not in seen]
        if missing:
            raise RuntimeError(f"stage {spec.stage.value} runs after unlisted stages {missing}")
        seen.add(spec.stage)


_check_graph()


def successors(stage: Stage) -> tuple[Stage, ...]:
    return tuple(spec.stage for spec in GRAPH if stage in spec.after)


def settled(statuses: dict[str, str]) -> set[str]:
    """Stages a successor may run after: succeeded, or optional and finished unsuccessfully."""
    return {
        stage
        for stage, status in statuses.items()
        if status == JobStatus.SUCCEEDED.value
        or (stage in OPTIONAL and status in UNSUCCESSFUL_STATUSES)
    }


def ready_after(stage: Stage, done: set[str]) -> tuple[Stage, ...]:
    """The successors of ``stage`` whose predecessors are all ``done`` (see :func:`settled`)."""
    return tuple(s for s in successors(stage) if all(p.value in done for p in SPECS[s].after))


def outcome(statuses: dict[str, str]) -> str | None:
    """'completed', 'failed' or None (still going) from a session's stage statuses."""
    if any(statuses.get(s) in UNSUCCESSFUL_STATUSES for s in REQUIRED):
        return "failed"
    done = settled(statuses)
    return "completed" if all(s.value in done for s in STAGES) else None


# -- in the caller's transaction --------------------------------------------------------------
def lock_session(db: DbSession, session_id: str) -> Session | None:
    """The session row, locked until commit: hand-ons of one session serialise on it."""
    return db.execute(
        select(Session).where(Session.id == session_id).with_for_update()
    ).scalar_one_or_none()


def _statuses(db: DbSession, session_id: str) -> dict[str, str]:
    rows = db.execute(select(Job.stage, Job.status).where(Job.session_id == session_id)).all()
    return {stage: status for stage, status in rows}


def _pending(db: DbSession, session_id: str, stages: tuple[Stage, ...]) -> list[Stage]:
    """Create the stages' job rows; the ones still pending, which must be sent."""
    due = []
    for stage in stages:
        job, _ = ensure_job(db, session_id, stage.value)
        if job.status == JobStatus.PENDING.value:
            due.append(stage)
    return due


def start(db: DbSession, session_id: str) -> list[Stage]:
    """Processing starts: job rows for the stages that run first; the ones to send."""
    return _pending(db, session_id, ROOTS)


#: What a refresh (``StageSpec.refresh_after``) makes pending again: a finished job. A
#: cancelled one stays cancelled (an operator stopped it).
REFRESHABLE: Final = (JobStatus.SUCCEEDED, JobStatus.FAILED)


def _refresh(
    db: DbSession, session_id: str, stage: Stage, done: set[str], *, fresh: bool
) -> list[Stage]:
    """The stages ``stage`` refreshes (``StageSpec.refresh_after``) that are to be sent: made
    pending again by its fresh success, or (a re-sent hand-on) still pending from it."""
    due = []
    for spec in GRAPH:
        if stage not in spec.refresh_after or not all(p.value in done for p in spec.after):
            continue
        name = spec.stage.value
        if fresh and reset_for_retry(db, session_id, name, from_statuses=REFRESHABLE):
            due.append(spec.stage)
            continue
        job = get_job(db, session_id, name)
        if job is not None and job.status == JobStatus.PENDING.value:
            due.append(spec.stage)
    return due


def hand_on(db: DbSession, session_id: str, stage: Stage, *, fresh: bool = False) -> list[Stage]:
    """After ``stage`` succeeded, or failed as an optional stage (session row locked): the
    successors to send; with ``fresh`` (this execution's own success, not a re-sent
    hand-on) also the stages it refreshes.

    Marks the session completed once every stage is done (:func:`outcome`).
    """
    statuses = _statuses(db, session_id)
    done = settled(statuses)
    refreshed = _refresh(db, session_id, stage, done, fresh=fresh)
    if refreshed:
        statuses = _statuses(db, session_id)
    if outcome(statuses) == "completed":
        session = db.get(Session, session_id)
        if session is not None:
            session.status = SessionStatus.COMPLETED.value
    due = _pending(db, session_id, ready_after(stage, done))
    return due + [s for s in refreshed if s not in due]


def session_outcome(jobs: list[Job]) -> str | None:
    """'completed', 'failed' or None (still going) from a session's job rows."""
    return outcome({job.stage: job.status for job in jobs})


def is_playable(jobs: list[Job]) -> bool:
    """The playable MP4 exists: its stage succeeded."""
    return any(
        j.stage == PLAYABLE_STAGE.value and j.status == JobStatus.SUCCEEDED.value for j in jobs
    )
