"""Celery tasks: small wrappers that claim a job row, run a stage and hand on to the next.

Retry policy lives in ``workers.retry``; what a stage does lives in ``workers.stages``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from celery import Task
from pydantic import ValidationError
from sqlalchemy import select, update

from shared import models
from shared.db import session_scope
from shared.events import Event
from shared.ids import validate_session_id
from shared.models import JobStatus, SessionStatus
from shared.receipts import write_receipt
from shared.routing import (
    TASK_AUDIO_CHUNKS,
    TASK_COMPRESS,
    TASK_CONCAT_AUDIO,
    TASK_FINALIZE,
    TASK_INGEST_EVENT,
    TASK_MERGE,
    TASK_REAP_STALE_JOBS,
)
from shared.settings import Settings, get_settings
from shared.storage import Storage
from workers import jobs, stages
from workers.app import app
from workers.ingest import (
    apply_event,
    lock_session,
    pauses,
    ready_to_process,
    record_event,
    start_processing,
    wants_audio_chunks,
)
from workers.media.errors import Cancelled
from workers.pipeline import (
    FIRST_STAGE,
    Stage,
    acquire_audio_chunks,
    audio_chunk_state,
    audio_chunks_busy,
    close_audio_chunks,
    next_stage,
    prepare,
    release_audio_chunks,
    renew_audio_chunks,
    request_audio_chunks,
    requeue_stale_jobs,
    send,
    send_audio_chunks,
)
from workers.retry import backoff_seconds, is_permanent

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 1.0
INGEST_MAX_RETRIES = 50  # events must not be lost: with the 600 s cap this is about 8 hours
# A chunk pass renews its lease before writing each chunk (a chunk takes about a second), so
# a pass that died blocks the session's chunking, and the stage's take-over, this long.
AUDIO_CHUNK_LEASE_S = 60.0
AUDIO_CHUNK_RETRY_S = 2.0  # countdown when another pass holds the session's chunk lock
# Retries on a held lock: together with the countdown, well past a dead holder's lease.
AUDIO_CHUNK_MAX_RETRIES = 60
AUDIO_CHUNK_MAX_PASSES = 1000  # passes of one task while segments keep arriving
TAKE_OVER_POLL_S = 0.05  # how often concat_audio checks whether a chunk pass has stopped


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# -- ingest ---------------------------------------------------------------------------------
@app.task(name=TASK_INGEST_EVENT, bind=True, acks_late=True)
def ingest_event(self: Task, event: dict[str, Any]) -> str:
    """Apply one capture-agent event; start processing once the session is complete."""
    try:
        parsed = Event.model_validate(event)
    except ValidationError as exc:
        log.error("rejected invalid event %r: %s", event.get("event_id"), exc)
        return f"rejected: {exc.error_count()} validation error(s)"
    settings = get_settings()
    try:
        chunk_request: int | None = None
        with session_scope(settings.database_url) as db:
            session = lock_session(db, parsed.session_id)
            fresh = record_event(db, parsed)
            if fresh:
                apply_event(db, session, parsed)
                if settings.audio_incremental and wants_audio_chunks(session, parsed):
                    chunk_request = request_audio_chunks(db, session.id)
            must_send = ready_to_process(db, session) and start_processing(db, session)
        if parsed.type == "segment.stored":
            _confirm_segment(settings, parsed)
        if must_send:
            send(app, session, FIRST_STAGE)
        elif chunk_request is not None:  # when processing starts, the stage encodes it all
            send_audio_chunks(app, session, chunk_request)
    except Exception as exc:
        if is_permanent(exc):
            raise
        raise self.retry(
            exc=exc, countdown=backoff_seconds(self.request.retries), max_retries=INGEST_MAX_RETRIES
        ) from exc
    return "applied" if fresh else "duplicate"


def _confirm_segment(settings: Settings, event: Event) -> None:
    """Receipt for the agent (it may delete its local copy): only for verified content.

    Written after the commit and for duplicates too, so a lost receipt is restored.
    """
    segment = event.segment()
    storage = Storage(settings.storage)
    if storage.verify(segment.key, segment.sha256):
        write_receipt(storage, event.session_id, segment.index, segment.sha256)
    else:
        log.warning(
            "segment %s of %s does not match its checksum in storage; no receipt",
            segment.file,
            event.session_id,
        )


# -- stages ---------------------------------------------------------------------------------
class _Progress:
    """Throttled progress writer that also notices an operator's cancel."""

    def __init__(self, database_url: str, job_id: int, task_id: str) -> None:
        self.database_url, self.job_id, self.task_id = database_url, job_id, task_id
        self._last = 0.0

    def __call__(self, fraction: float) -> None:
        now = time.monotonic()
        if now - self._last < PROGRESS_INTERVAL_S:
            return
        self._last = now
        with session_scope(self.database_url) as db:
            status = jobs.report_progress(db, self.job_id, self.task_id, fraction)
        if status is JobStatus.CANCELLED:
            raise Cancelled(f"job {self.job_id} was cancelled")


def _snapshot(db: Any, session: models.Session) -> stages.SessionSnapshot:
    segments = (
        db.execute(
            select(models.Segment)
            .where(models.Segment.session_id == session.id)
            .order_by(models.Segment.index)
        )
        .scalars()
        .all()
    )
    refs = tuple(
        stages.SegmentRef(
            kind=s.kind,
            file=s.file,
            storage_key=s.storage_key,
            sha256=s.sha256,
            started_at=s.started_at,
            duration=s.duration,
            probed_duration=s.probed_duration,
        )
        for s in segments
    )
    return stages.SessionSnapshot(
        id=session.id,
        started_at=session.started_at,
        segments=refs,
        pauses=tuple(pauses(db, session)),
    )


StageWork = Callable[
    [stages.SessionSnapshot, dict[str, str | None], Callable[[float], None]], stages.StageOutput
]


def run_stage(task: Task, session_id: str, stage: Stage, work: StageWork) -> str:
    settings = get_settings()
    url = settings.database_url
    validate_session_id(session_id)
    task_id = str(task.request.id)
    with session_scope(url) as db:
        session = db.get(models.Session, session_id)
        if session is None:
            log.error("%s: unknown session %r", stage.value, session_id)
            return f"unknown session {session_id!r}"
        claimed = jobs.claim(
            db, session_id, stage.value, task_id, lease=timedelta(seconds=settings.job_lease_s)
        )
        if claimed is None:
            job = jobs.get_job(db, session_id, stage.value)
            done = job is not None and job.status == JobStatus.SUCCEEDED.value
            following = next_stage(stage) if done else None
            must_send = following is not None and prepare(db, session_id, following)
            status = job.status if job else "missing"
        else:
            snapshot = _snapshot(db, session)
            outputs = {job.stage: job.output_key for job in session.jobs}
    if claimed is None:
        if must_send and following is not None:
            send(app, session, following)
        return f"skipped: {stage.value} is {status}"

    try:
        out = work(snapshot, outputs, _Progress(url, claimed.job_id, task_id))
    except Cancelled:
        log.info("%s for %s cancelled", stage.value, session_id)
        return "cancelled"
    except Exception as exc:
        retries_left = task.request.retries < settings.task_max_retries
        if is_permanent(exc) or not retries_left:
            with session_scope(url) as db:
                jobs.fail(db, claimed.job_id, task_id, _describe(exc))
                _set_session_status(db, session_id, SessionStatus.FAILED)
            log.error("%s for %s failed: %s", stage.value, session_id, _describe(exc))
            raise
        with session_scope(url) as db:
            jobs.note_retry(db, claimed.job_id, task_id, _describe(exc))
        raise task.retry(
            exc=exc,
            countdown=backoff_seconds(task.request.retries),
            max_retries=settings.task_max_retries,
        ) from exc

    following = next_stage(stage)
    must_send = False
    with session_scope(url) as db:
        if jobs.succeed(db, claimed.job_id, task_id, output_key=out.output_key, result=out.result):
            if following is None:
                _set_session_status(db, session_id, SessionStatus.COMPLETED)
            else:
                must_send = prepare(db, session_id, following)
        session = db.get(models.Session, session_id)
    if must_send and following is not None and session is not None:
        send(app, session, following)
    return f"{stage.value} succeeded"


def _remember_probes(database_url: str, session_id: str, probed: dict[str, float]) -> None:
    """Store durations measured by probing, so later stages need not probe those files."""
    if not probed:
        return
    with session_scope(database_url) as db:
        for key, seconds in probed.items():
            db.execute(
                update(models.Segment)
                .where(
                    models.Segment.session_id == session_id,
                    models.Segment.storage_key == key,
                    models.Segment.probed_duration.is_(None),
                )
                .values(probed_duration=seconds)
            )


def _set_session_status(db: Any, session_id: str, status: SessionStatus) -> None:
    session = db.get(models.Session, session_id)
    if session is not None:
        session.status = status.value


def _storage() -> Storage:
    return Storage(get_settings().storage)


# -- incremental audio ----------------------------------------------------------------------
class _LockHeld(Exception):
    """Another chunk pass holds the session's lock and has not covered this request yet."""


@app.task(name=TASK_AUDIO_CHUNKS, bind=True, acks_late=True)
def audio_chunks(self: Task, session_id: str, request: int) -> str:
    """Encode the session's settled audio chunks while it records (stages.encode_audio_chunks).

    One pass at a time per session: a task finding the lock held retries with a countdown
    until a pass has covered its segment (the holder re-plans when segments arrived during
    its pass) or the concat_audio stage has taken over. Input errors are only logged: the
    stage encodes whatever is missing and reports them; transient ones are retried.
    """
    validate_session_id(session_id)
    settings = get_settings()
    try:
        return _chunk_passes(settings, session_id, request, owner=f"chunks:{self.request.id}")
    except _LockHeld as exc:
        raise self.retry(
            exc=exc, countdown=AUDIO_CHUNK_RETRY_S, max_retries=AUDIO_CHUNK_MAX_RETRIES
        ) from exc
    except Exception as exc:
        if is_permanent(exc):
            log.warning("audio chunks for %s: %s (left to concat_audio)", session_id, exc)
            return f"skipped: {_describe(exc)}"
        raise self.retry(
            exc=exc,
            countdown=backoff_seconds(self.request.retries),
            max_retries=settings.task_max_retries,
        ) from exc


def _chunk_passes(settings: Settings, session_id: str, request: int, *, owner: str) -> str:
    """Passes under the session's chunk lock until no segment arrived during the last one."""
    url = settings.database_url
    lease = timedelta(seconds=AUDIO_CHUNK_LEASE_S)
    encoded = 0
    for _ in range(AUDIO_CHUNK_MAX_PASSES):
        with session_scope(url) as db:
            session = db.get(models.Session, session_id)
            if session is None:
                return f"unknown session {session_id!r}"
            seen = acquire_audio_chunks(db, session_id, owner, lease=lease)
            if seen is None:
                state = audio_chunk_state(db, session_id)
                if state.closed:
                    return "stage took over"
                if state.covered >= request:
                    return "covered by another pass"
                raise _LockHeld(f"chunk lock of {session_id} is held by {state.owner}")
            snapshot = _snapshot(db, session)

        def keep_going() -> bool:
            with session_scope(url) as db:
                return renew_audio_chunks(db, session_id, owner, lease=lease)

        probed: dict[str, float] = {}
        try:
            result = stages.encode_audio_chunks(snapshot, _storage(), settings, keep_going, probed)
        except BaseException:
            with session_scope(url) as db:
                release_audio_chunks(db, session_id, owner, covered=None, encoded=0)
            raise
        encoded += result.encoded
        _remember_probes(url, session_id, probed)
        with session_scope(url) as db:
            again = release_audio_chunks(
                db, session_id, owner, covered=seen, encoded=result.encoded
            )
        if not again or result.stopped:
            break
    return f"encoded {encoded} chunk(s)"


def _take_over_audio_chunks(database_url: str, session_id: str) -> None:
    """Stop incremental chunk passes and wait for a running one to finish its chunk.

    After this no pass writes chunk files, so the stage can reuse and then remove them. A
    pass that died holding the lock is waited for until its lease runs out.
    """
    with session_scope(database_url) as db:
        close_audio_chunks(db, session_id)
    deadline = time.monotonic() + AUDIO_CHUNK_LEASE_S
    while time.monotonic() < deadline:
        with session_scope(database_url) as db:
            if not audio_chunks_busy(db, session_id):
                return
        time.sleep(TAKE_OVER_POLL_S)


@app.task(name=TASK_CONCAT_AUDIO, bind=True, acks_late=True)
def concat_audio(self: Task, session_id: str) -> str:
    def work(
        snap: stages.SessionSnapshot,
        _outs: dict[str, str | None],
        progress: Callable[[float], None],
    ) -> stages.StageOutput:
        settings = get_settings()
        _take_over_audio_chunks(settings.database_url, snap.id)
        probed: dict[str, float] = {}
        out = stages.concat_audio(snap, _storage(), settings, progress, probed)
        _remember_probes(settings.database_url, snap.id, probed)  # merge plans without probing
        return out

    return run_stage(self, session_id, Stage.CONCAT_AUDIO, work)


@app.task(name=TASK_MERGE, bind=True, acks_late=True)
def merge(self: Task, session_id: str) -> str:
    return run_stage(
        self,
        session_id,
        Stage.MERGE,
        lambda snap, outs, progress: stages.merge(
            snap, _storage(), get_settings(), progress, audio_key=outs.get(Stage.CONCAT_AUDIO.value)
        ),
    )


def _merged_key(snap: stages.SessionSnapshot, outs: dict[str, str | None], stage: Stage) -> str:
    merged = outs.get(Stage.MERGE.value)
    if merged is None:
        raise stages.MediaError(f"session {snap.id!r} has no merged output to {stage.value}")
    return merged


@app.task(name=TASK_COMPRESS, bind=True, acks_late=True)
def compress(self: Task, session_id: str) -> str:
    return run_stage(
        self,
        session_id,
        Stage.COMPRESS,
        lambda snap, outs, progress: stages.compress(
            snap, _storage(), get_settings(), progress, _merged_key(snap, outs, Stage.COMPRESS)
        ),
    )


@app.task(name=TASK_FINALIZE, bind=True, acks_late=True)
def finalize(self: Task, session_id: str) -> str:
    def work(
        snap: stages.SessionSnapshot,
        outs: dict[str, str | None],
        _progress: Callable[[float], None],
    ) -> stages.StageOutput:
        merged = _merged_key(snap, outs, Stage.FINALIZE)
        return stages.finalize(snap, _storage(), merged, outs.get(Stage.COMPRESS.value))

    return run_stage(self, session_id, Stage.FINALIZE, work)


@app.task(name=TASK_REAP_STALE_JOBS, ignore_result=True)
def reap_stale_jobs() -> list[list[str]]:
    """Periodic (celery beat): running jobs of a worker that died are sent again.

    With Redis, an unacknowledged message of a killed worker only comes back after the
    visibility timeout (hours, as long as the longest task); this brings it back within
    ``SESSIONPIPE_JOB_LEASE_S`` instead.
    """
    settings = get_settings()
    reset = requeue_stale_jobs(
        app, settings.database_url, lease=timedelta(seconds=settings.job_lease_s)
    )
    return [list(item) for item in reset]
