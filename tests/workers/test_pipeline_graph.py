"""The stage graph: hand-on rules, including a stage with several predecessors."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session as DbSession

from shared import models
from shared.db import session_scope
from shared.migrate import upgrade
from shared.models import JobStatus
from workers import jobs, pipeline
from workers.pipeline import GRAPH, ROOTS, STAGES, Stage

SESSION = "graph-1"
LEASE = timedelta(seconds=60)


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    database = f"sqlite:///{tmp_path / 'state.db'}"
    upgrade(database)
    with session_scope(database) as db:
        db.add(models.Session(id=SESSION, name="", status="processing", priority="normal"))
    yield database


def _succeed(db: DbSession, stage: Stage) -> list[Stage]:
    """What a stage's runner does on success: claim, succeed, hand on (session locked)."""
    claim = jobs.claim(db, SESSION, stage.value, f"task-{stage.value}", lease=LEASE)
    assert claim is not None
    pipeline.lock_session(db, SESSION)
    assert jobs.succeed(db, claim.job_id, claim.owner, output_key=None, result={})
    return pipeline.hand_on(db, SESSION, stage)


def test_the_graph_is_topological_and_finalize_waits_for_both_outputs() -> None:
    seen: set[Stage] = set()
    for spec in GRAPH:
        assert set(spec.after) <= seen
        seen.add(spec.stage)
    assert ROOTS == (Stage.CONCAT_AUDIO,)
    assert pipeline.SPECS[Stage.FINALIZE].after == (Stage.MERGE, Stage.COMPRESS)
    assert pipeline.successors(Stage.MERGE) == (Stage.CHAPTERS, Stage.COMPRESS, Stage.FINALIZE)
    # enrichment never waits for the compressed copy, and finalize never waits for it
    assert pipeline.successors(Stage.CONCAT_AUDIO) == (Stage.MERGE, Stage.TRANSCRIPT)
    assert pipeline.SPECS[Stage.SUMMARY].after == (Stage.TRANSCRIPT, Stage.CHAPTERS)
    assert {"transcript", "chapters", "summary", "index"} == pipeline.OPTIONAL
    # search indexes what every enrichment stage found: it runs after the summary
    assert pipeline.successors(Stage.SUMMARY) == (Stage.INDEX,)
    assert pipeline.SPECS[Stage.INDEX].refresh_after == (
        Stage.TRANSCRIPT, Stage.CHAPTERS, Stage.SUMMARY
    )  # fmt: skip


def test_a_stage_with_two_predecessors_is_sent_once_both_succeeded(url: str) -> None:
    with session_scope(url) as db:
        assert pipeline.start(db, SESSION) == [Stage.CONCAT_AUDIO]
        assert _succeed(db, Stage.CONCAT_AUDIO) == [Stage.MERGE, Stage.TRANSCRIPT]
        # merge hands on to chapters and compress; finalize also needs compress, so it waits
        assert _succeed(db, Stage.MERGE) == [Stage.CHAPTERS, Stage.COMPRESS]
        assert jobs.get_job(db, SESSION, Stage.FINALIZE.value) is None
        assert _succeed(db, Stage.TRANSCRIPT) == []  # the summary waits for the chapters too
        assert _succeed(db, Stage.CHAPTERS) == [Stage.SUMMARY]
        assert _succeed(db, Stage.COMPRESS) == [Stage.FINALIZE]
        assert _succeed(db, Stage.FINALIZE) == []
        session = db.get(models.Session, SESSION)
        assert session is not None and session.status == "processing"  # summary still runs
        assert _succeed(db, Stage.SUMMARY) == [Stage.INDEX]
        assert session is not None and session.status == "processing"  # the index still runs
        assert _succeed(db, Stage.INDEX) == []
        assert session is not None and session.status == "completed"
        rows = list(db.query(models.Job).filter_by(session_id=SESSION))
    assert sorted(job.stage for job in rows) == sorted(s.value for s in STAGES)
    assert pipeline.session_outcome(rows) == "completed"


def test_a_repeated_hand_on_sends_only_what_is_still_pending(url: str) -> None:
    """A redelivered task of a succeeded stage re-sends its successors while they wait."""
    with session_scope(url) as db:
        pipeline.start(db, SESSION)
        _succeed(db, Stage.CONCAT_AUDIO)
        # a lost send
        assert pipeline.hand_on(db, SESSION, Stage.CONCAT_AUDIO) == [Stage.MERGE, Stage.TRANSCRIPT]
        jobs.claim(db, SESSION, Stage.MERGE.value, "merge-task", lease=LEASE)
        # merge is running
        assert pipeline.hand_on(db, SESSION, Stage.CONCAT_AUDIO) == [Stage.TRANSCRIPT]


def test_a_failed_or_cancelled_stage_fails_the_session(url: str) -> None:
    with session_scope(url) as db:
        pipeline.start(db, SESSION)
        claim = jobs.claim(db, SESSION, "concat_audio", "t", lease=LEASE)
        assert claim is not None
        jobs.fail(db, claim.job_id, claim.owner, "MediaError: broken")
        rows = list(db.query(models.Job).filter_by(session_id=SESSION))
    assert pipeline.session_outcome(rows) == "failed"
    assert rows[0].status == JobStatus.FAILED.value


def _fail(db: DbSession, stage: Stage) -> list[Stage]:
    """What the runner does when a stage fails for good: fail it; an optional one hands on."""
    claim = jobs.claim(db, SESSION, stage.value, f"task-{stage.value}", lease=LEASE)
    assert claim is not None
    pipeline.lock_session(db, SESSION)
    assert jobs.fail(db, claim.job_id, claim.owner, "EnrichError: no")
    return pipeline.hand_on(db, SESSION, stage) if pipeline.SPECS[stage].optional else []


def test_a_failed_enrichment_stage_hands_on_and_never_fails_the_session(url: str) -> None:
    with session_scope(url) as db:
        pipeline.start(db, SESSION)
        _succeed(db, Stage.CONCAT_AUDIO)
        _succeed(db, Stage.MERGE)
        rows = list(db.query(models.Job).filter_by(session_id=SESSION))
        assert pipeline.is_playable(rows) and pipeline.session_outcome(rows) is None
        assert _fail(db, Stage.TRANSCRIPT) == []
        assert _succeed(db, Stage.CHAPTERS) == [Stage.SUMMARY]  # runs on the chapters alone
        _succeed(db, Stage.COMPRESS)
        _succeed(db, Stage.FINALIZE)
        assert _fail(db, Stage.SUMMARY) == [Stage.INDEX]  # indexes what there is
        assert _fail(db, Stage.INDEX) == []
        session = db.get(models.Session, SESSION)
        assert session is not None and session.status == "completed"
        db.expire_all()  # the job rows were changed by UPDATE statements
        rows = list(db.query(models.Job).filter_by(session_id=SESSION))
    assert pipeline.session_outcome(rows) == "completed"


def _run_all(db: DbSession) -> None:
    pipeline.start(db, SESSION)
    for stage in STAGES:
        _succeed(db, stage)


def _rerun(db: DbSession, stage: Stage) -> list[Stage]:
    """An operator's re-run of a stage (``jobs requeue``), then its fresh success."""
    assert jobs.reopen(db, SESSION, stage.value, from_statuses=(JobStatus.SUCCEEDED,))
    claim = jobs.claim(db, SESSION, stage.value, f"again-{stage.value}", lease=LEASE)
    assert claim is not None
    pipeline.lock_session(db, SESSION)
    assert jobs.succeed(db, claim.job_id, claim.owner, output_key=None, result={})
    return pipeline.hand_on(db, SESSION, stage, fresh=True)


def test_re_running_enrichment_re_runs_the_index(url: str) -> None:
    with session_scope(url) as db:
        _run_all(db)
        assert _rerun(db, Stage.TRANSCRIPT) == [Stage.INDEX]  # the summary is not re-run
        index = jobs.get_job(db, SESSION, Stage.INDEX.value)
        assert index is not None and index.status == JobStatus.PENDING.value
        session = db.get(models.Session, SESSION)
        assert session is not None and session.status == "processing"
        # a re-sent hand-on (a repeated task) of the transcript sends what is pending, and
        # a repeated one after the index ran again re-runs nothing
        assert pipeline.hand_on(db, SESSION, Stage.TRANSCRIPT) == [Stage.INDEX]
        assert _succeed(db, Stage.INDEX) == []
        assert pipeline.hand_on(db, SESSION, Stage.TRANSCRIPT) == []
        assert session.status == "completed"
        assert _rerun(db, Stage.CHAPTERS) == [Stage.INDEX]  # the summary is ready, not re-run
        _succeed(db, Stage.INDEX)
        assert _rerun(db, Stage.SUMMARY) == [Stage.INDEX]


def test_the_index_waits_for_a_summary_re_run_along_with_the_transcript(url: str) -> None:
    with session_scope(url) as db:
        _run_all(db)
        assert jobs.reopen(db, SESSION, Stage.SUMMARY.value, from_statuses=(JobStatus.SUCCEEDED,))
        # the summary is pending (and sent again): the index waits for it
        assert _rerun(db, Stage.TRANSCRIPT) == [Stage.SUMMARY]
        index = jobs.get_job(db, SESSION, Stage.INDEX.value)
        assert index is not None and index.status == JobStatus.SUCCEEDED.value
        claim = jobs.claim(db, SESSION, Stage.SUMMARY.value, "summary-again", lease=LEASE)
        assert claim is not None
        assert jobs.succeed(db, claim.job_id, claim.owner, output_key=None, result={})
        assert pipeline.hand_on(db, SESSION, Stage.SUMMARY, fresh=True) == [Stage.INDEX]


def test_a_failed_media_stage_fails_the_session_while_enrichment_runs(url: str) -> None:
    statuses = {"concat_audio": "succeeded", "merge": "succeeded", "transcript": "running"}
    assert pipeline.outcome(statuses) is None
    assert pipeline.outcome({**statuses, "compress": "failed"}) == "failed"
    assert pipeline.outcome({**statuses, "transcript": "cancelled"}) is None  # still going
