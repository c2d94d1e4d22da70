"""The Celery tasks: one thin definition each, with the retry policy declared in one place.

What a task does lives elsewhere: ``workers.ingest`` (events into rows), ``workers.runner``
(claiming and running a stage), ``workers.audiochunks`` (audio encoded while recording),
``workers.pipeline`` (the stage graph), ``workers.dispatch`` (sending, and the sweeper
that every worker runs). Every task is a
:class:`PipelineTask`: acknowledged late (a killed worker's task is redelivered; job rows
make the rerun harmless), and retried with backoff when it raises a transient error
(``workers.retry``); any other error fails it at once.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task

from shared.diagnostics import describe
from shared.ids import validate_session_id
from shared.routing import (
    TASK_AUDIO_CHUNKS,
    TASK_CHAPTER_SAMPLES,
    TASK_CHAPTERS,
    TASK_COMPRESS,
    TASK_COMPRESS_PART,
    TASK_CONCAT_AUDIO,
    TASK_FINALIZE,
    TASK_INDEX,
    TASK_INGEST_EVENT,
    TASK_LIVE_FRAGMENT,
    TASK_MERGE,
    TASK_SUMMARY,
    TASK_TRANSCRIPT,
    TASK_TRANSCRIPT_PIECES,
    TASK_WEBHOOK,
)
from shared.settings import get_settings
from workers import audiochunks, chapterparts, compressparts, livemaker, transcriptparts
from workers.app import app
from workers.ingest import ingest
from workers.pipeline import Stage
from workers.retry import is_transient, retry_delay_seconds, will_retry
from workers.runner import run_stage
from workers.webhook import deliver

log = logging.getLogger(__name__)

INGEST_MAX_RETRIES = 50  # events must not be lost: with the 600 s cap this is about 8 hours
AUDIO_CHUNK_RETRY_S = 2.0  # countdown when another pass holds the session's chunk lock
# Retries on a held lock: together with the countdown, well past a dead holder's lease.
AUDIO_CHUNK_MAX_RETRIES = 60


class PipelineTask(Task):
    """Base of every task: late acks, and transient failures retried with backoff.

    ``max_retries`` None means the ``SESSIONPIPE_TASK_MAX_RETRIES`` setting.
    """

    acks_late = True
    max_retries: int | None = None

    def retry_limit(self) -> int:
        return self.max_retries if self.max_retries is not None else get_settings().task_max_retries

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Celery calls a custom __call__ instead of run() with the request already pushed.
        try:
            return self.run(*args, **kwargs)
        except Exception as exc:
            retries, limit = self.request.retries, self.retry_limit()
            if not will_retry(exc, retries, limit):
                raise
            raise self.retry(
                exc=exc, countdown=retry_delay_seconds(exc, retries), max_retries=limit
            ) from exc


def _task(name: str, **options: Any) -> Any:
    # shared=False: registered on this app only, never copied onto another (default) app.
    return app.task(name=name, bind=True, base=PipelineTask, shared=False, **options)


@_task(TASK_INGEST_EVENT, max_retries=INGEST_MAX_RETRIES)
def ingest_event(self: PipelineTask, event: dict[str, Any]) -> str:
    """Apply one capture-agent event (see workers.ingest.ingest)."""
    return ingest(app, get_settings(), event)


@_task(TASK_CONCAT_AUDIO)
def concat_audio(self: PipelineTask, session_id: str) -> str:
    return run_stage(self, session_id, Stage.CONCAT_AUDIO, take_over=audiochunks.take_over)


@_task(TASK_MERGE)
def merge(self: PipelineTask, session_id: str) -> str:
    return run_stage(self, session_id, Stage.MERGE)


@_task(TASK_COMPRESS)
def compress(self: PipelineTask, session_id: str) -> str:
    return run_stage(self, session_id, Stage.COMPRESS)


@_task(TASK_FINALIZE)
def finalize(self: PipelineTask, session_id: str) -> str:
    return run_stage(self, session_id, Stage.FINALIZE)


@_task(TASK_TRANSCRIPT)
def transcript(self: PipelineTask, session_id: str) -> str:
    return run_stage(self, session_id, Stage.TRANSCRIPT)


@_task(TASK_CHAPTERS)
def chapters(self: PipelineTask, session_id: str) -> str:
    return run_stage(self, session_id, Stage.CHAPTERS)


@_task(TASK_SUMMARY)
def summary(self: PipelineTask, session_id: str) -> str:
    return run_stage(self, session_id, Stage.SUMMARY)


@_task(TASK_INDEX)
def index(self: PipelineTask, session_id: str) -> str:
    return run_stage(self, session_id, Stage.INDEX)


@_task(TASK_COMPRESS_PART)
def compress_part(self: PipelineTask, session_id: str, segment_file: str) -> str:
    """Make one video segment's compressed part while its session records (workers.compressparts).

    Background work the compress stage would otherwise do: a bad segment is only logged
    (the stage reports it), a transient failure is retried like any task.
    """
    validate_session_id(session_id)
    outcome = compressparts.make_in_background(
        get_settings(), session_id, segment_file, owner=f"part:{self.request.id}"[:64]
    )
    if outcome.startswith("failed"):
        log.warning("part %s of %s %s", segment_file, session_id, outcome)
    return outcome


@_task(TASK_LIVE_FRAGMENT)
def live_fragment(self: PipelineTask, session_id: str, segment_file: str | None = None) -> str:
    """Write the session's live fragments that are due (workers.livemaker); asked for by
    ``segment_file``'s arrival, or by the end of the recording (None).

    A view only: a segment that cannot be read is logged (the stages report it), a
    transient failure is retried like any task.
    """
    validate_session_id(session_id)
    return livemaker.make(get_settings(), session_id)


@_task(TASK_TRANSCRIPT_PIECES)
def transcript_pieces(self: PipelineTask, session_id: str) -> str:
    """Transcribe the session's settled transcript pieces while it records
    (workers.transcriptparts). Background work the transcript stage would otherwise do: a
    bad input is only logged (the stage reports it), a transient failure is retried."""
    validate_session_id(session_id)
    outcome = transcriptparts.transcribe_while_recording(
        get_settings(), session_id, owner=f"pieces:{self.request.id}"[:64]
    )
    log.info("transcript pieces of %s: %s", session_id, outcome)
    return outcome


@_task(TASK_CHAPTER_SAMPLES)
def chapter_samples(self: PipelineTask, session_id: str, segment_file: str) -> str:
    """Sample one video segment for chapters while its session records
    (workers.chapterparts); a bad segment is only logged (the stage reports it)."""
    validate_session_id(session_id)
    outcome = chapterparts.sample_while_recording(
        get_settings(), session_id, segment_file, owner=f"samples:{self.request.id}"[:64]
    )
    if outcome.startswith("failed"):
        log.warning("chapter samples %s of %s %s", segment_file, session_id, outcome)
    return outcome


class WebhookTask(PipelineTask):
    """A receiver may be down a while: retried up to ``webhook_max_attempts`` posts."""

    def retry_limit(self) -> int:
        return get_settings().webhook_max_attempts - 1


@app.task(name=TASK_WEBHOOK, bind=True, base=WebhookTask, shared=False)
def webhook(self: WebhookTask, delivery_id: int) -> str:
    """Post one completion webhook (workers.webhook.deliver)."""
    return deliver(get_settings(), delivery_id)


@_task(TASK_AUDIO_CHUNKS)
def audio_chunks(self: PipelineTask, session_id: str, request: int) -> str:
    """Encode the session's settled audio chunks while it records (workers.audiochunks).

    One pass at a time per session: a task finding the lock held tries again after a short
    countdown until a pass has covered its segment or the stage has taken over. Input
    errors are only logged: the stage encodes whatever is missing and reports them.
    """
    validate_session_id(session_id)
    owner = f"chunks:{self.request.id}"
    try:
        return audiochunks.run_passes(get_settings(), session_id, request, owner=owner)
    except audiochunks.LockHeld as exc:
        raise self.retry(
            exc=exc, countdown=AUDIO_CHUNK_RETRY_S, max_retries=AUDIO_CHUNK_MAX_RETRIES
        ) from exc
    except Exception as exc:
        if is_transient(exc):
            raise
        log.warning("audio chunks for %s: %s (left to concat_audio)", session_id, exc)
        return f"skipped: {describe(exc)}"
