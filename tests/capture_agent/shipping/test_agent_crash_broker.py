"""The broker dies just as a recording ends: ``session.ended`` waits in the outbox and, once
the broker is back, a real celery worker (PostgreSQL) ingests it and processes the session.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from capture_agent.agent import Agent
from shared import models
from shared.db import session_scope
from shared.segments import SegmentKind, SegmentSpec
from shared.settings import Settings
from synthetic.plan import SyntheticSpec
from synthetic.session import RecordedSegment, record_synthetic_session
from tests.capture_agent.shipping.helpers import agent_settings
from tests.support.servers import RedisServer
from tests.support.services import WorkerProcess, service_env
from tests.support.waiting import wait_for
from workers.pipeline import STAGES as PIPELINE_STAGES

pytestmark = pytest.mark.integration

STAGES = {stage.value for stage in PIPELINE_STAGES}
SPEC = SyntheticSpec(
    duration=4.0, segment_seconds=2.0, audio_holes=(), width=160, height=96, fps=10
)


def event_types(database_url: str, session_id: str) -> list[str]:
    with session_scope(database_url) as db:
        return list(
            db.execute(
                select(models.Event.type)
                .where(models.Event.session_id == session_id)
                .order_by(models.Event.seq)
            ).scalars()
        )


def job_states(database_url: str, session_id: str) -> dict[str, str]:
    with session_scope(database_url) as db:
        jobs = db.execute(select(models.Job).where(models.Job.session_id == session_id)).scalars()
        return {job.stage: job.status for job in jobs}


def worker_outcome(worker: WorkerProcess) -> str | None:
    """After a broker outage: "died", "reconnected", or None while still undecided."""
    log = worker.log()
    if "Unrecoverable error" in log:
        return "died"
    if log.count("Connected to redis://") >= 2:
        return "reconnected"
    return None


def test_session_ended_while_broker_is_down_is_delivered_and_processed(
    tmp_path: Path, pg_url: str, redis_server: RedisServer
) -> None:
    home = tmp_path / "home"
    (home / "storage").mkdir(parents=True)
    env = service_env(home=home, database_url=pg_url, broker_url=redis_server.url)
    worker = WorkerProcess(env, tmp_path / "worker.log")
    agent = Agent(
        agent_settings(tmp_path / "state", str(home / "storage"), retry_cap_s=1.0),
        shared=Settings(home=home, database_url=pg_url, broker_url=redis_server.url),
    )
    session_id = "broker-down"
    started = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
    recorded: list[RecordedSegment] = []
    try:
        agent.start()
        agent.begin_session(session_id, name="broker down", started_at=started)

        def on_segment(segment: RecordedSegment) -> None:
            recorded.append(segment)
            spec = SegmentSpec(
                SegmentKind(segment.kind), segment.file, segment.started_at, segment.duration
            )
            agent.add_segment(session_id, segment.path, spec)

        record_synthetic_session(
            tmp_path / "rec",
            session_id=session_id,
            name="broker down",
            spec=SPEC,
            started_at=started,
            on_segment=on_segment,
        )
        assert agent.wait_idle(30)
        expected = ["session.started"] + ["segment.stored"] * len(recorded)
        wait_for(
            lambda: event_types(pg_url, session_id) == expected,
            60,
            f"the workers to ingest the segments; worker log:\n{worker.log()[-3000:]}",
            poll=0.2,
        )

        redis_server.kill()
        agent.end_session(session_id)
        status = wait_for(lambda: (s := agent.status())["last_error"] and s, 30, "the broker error")
        assert status["last_error"]["where"] == "broker"
        assert status["pending"] == {"segments": 0, "bytes": 0, "events": 1}
        time.sleep(0.5)  # the agent keeps retrying meanwhile
        assert "session.ended" not in event_types(pg_url, session_id)

        redis_server.start()  # same port, empty
        # The worker reconnects (celery 5.7.0 workers could die here instead: "Unrecoverable
        # error: AttributeError ... 'hostname'"; pyproject.toml pins 5.6.3).
        outcome = wait_for(
            lambda: worker_outcome(worker), 60, "the worker to reconnect or exit", poll=0.2
        )
        assert outcome == "reconnected", worker.log()[-3000:]
        assert agent.wait_idle(30), agent.status()
        wait_for(
            lambda: "session.ended" in event_types(pg_url, session_id),
            60,
            f"session.ended to reach PostgreSQL; worker log:\n{worker.log()[-3000:]}",
            poll=0.2,
        )
        states = wait_for(
            lambda: (
                (j := job_states(pg_url, session_id))
                and (set(j.values()) <= {"succeeded", "failed"})
                and len(j) == len(STAGES)
                and j
            ),
            90,
            f"the session to be processed; worker log:\n{worker.log()[-3000:]}",
            poll=0.3,
        )
        assert states == dict.fromkeys(STAGES, "succeeded"), worker.log()[-3000:]
        with session_scope(pg_url) as db:
            session = db.get(models.Session, session_id)
            assert session is not None and session.expected_segments == len(recorded)
    finally:
        agent.stop(drain=False)
        worker.discard()
