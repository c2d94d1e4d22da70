"""``capture-agent record --synthetic`` end to end: real Agent, Redis, PostgreSQL, worker."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from shared import models
from shared.db import session_scope
from shared.storage import Storage
from tests.capture_agent.recording.helpers import recording_env
from tests.support import ROOT
from tests.support.cli import capture_agent, run
from tests.support.media import decode
from tests.support.services import WorkerProcess, service_env, wait_for_session
from tests.support.waiting import wait_for
from workers.pipeline import STAGES as PIPELINE_STAGES

pytestmark = pytest.mark.integration

STAGES = {stage.value for stage in PIPELINE_STAGES}
RECORD_SECONDS = 5.0


@pytest.mark.parametrize("paused", [False, True], ids=["straight", "paused-once"])
def test_record_synthetic_becomes_a_finished_mp4(
    tmp_path: Path, pg_url: str, redis13: str, paused: bool
) -> None:
    home = tmp_path / "home"
    env = service_env(home=home, database_url=pg_url, broker_url=redis13)
    agent_env = {**recording_env(tmp_path), **env}
    session_id = f"e2e-{'paused' if paused else 'straight'}"
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        argv = capture_agent(
            "record",
            "--synthetic",
            "--session-name",
            "end to end",
            "--session-id",
            session_id,
            "--segment-seconds",
            "2",
            "--out",
            str(tmp_path / "recordings"),
            "--drain-timeout",
            "60",
        )
        if paused:
            proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=agent_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            folder = tmp_path / "recordings" / session_id
            wait_for(lambda: (folder / "screen-00001.mp4").exists(), 20, "the second video segment")
            assert run(capture_agent("pause"), agent_env).returncode == 0
            time.sleep(2.0)
            assert run(capture_agent("resume"), agent_env).returncode == 0
            time.sleep(2.5)
            assert run(capture_agent("stop"), agent_env).returncode == 0
            out, err = proc.communicate(timeout=120)
            code = proc.returncode
        else:
            result = subprocess.run(
                [*argv, "--duration", str(RECORD_SECONDS)],
                cwd=ROOT,
                env=agent_env,
                capture_output=True,
                text=True,
                timeout=180,
            )
            out, err, code = result.stdout, result.stderr, result.returncode
        assert code == 0, out + err
        assert "everything shipped" in out, out + err

        jobs = {j.stage: j for j in wait_for_session(pg_url, session_id, worker)}
        assert {s: j.status for s, j in jobs.items()} == dict.fromkeys(STAGES, "succeeded"), (
            worker.log()[-4000:]
        )
        merged = jobs["merge"]
        assert merged.output_key is not None
        decoded = decode(Storage(home / "storage").path(merged.output_key))
        assert decoded.video_codecs == ["h264"] and decoded.audio_codecs == ["aac"]
        assert decoded.video_duration is not None and decoded.audio_duration is not None
        assert abs(decoded.video_duration - decoded.audio_duration) < 0.1
        with session_scope(pg_url) as db:
            segments = list(
                db.execute(
                    select(models.Segment).where(models.Segment.session_id == session_id)
                ).scalars()
            )
            types = [
                e.type
                for e in db.execute(
                    select(models.Event)
                    .where(models.Event.session_id == session_id, models.Event.type != "heartbeat")
                    .order_by(models.Event.seq)
                ).scalars()
            ]
        recorded = sum(s.duration or 0.0 for s in segments if s.kind == "video")
        assert abs(decoded.video_duration - recorded) < 0.3, (decoded, recorded)
        if paused:
            assert "session.paused" in types and "session.resumed" in types
            assert 4.0 < recorded < 12.0  # CLI start-up time adds to each span
        else:
            assert abs(recorded - RECORD_SECONDS) < 0.1
        assert types[0] == "session.started" and types[-1] == "session.ended"
    finally:
        worker.stop()
