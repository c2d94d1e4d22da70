"""``capture-agent record --synthetic`` end to end: real Agent, Redis, PostgreSQL, worker."""

from __future__ import annotations

import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from capture_agent import control
from capture_agent.ffmpeg_cmd import segment_name
from shared import models
from shared.clock import as_utc
from shared.db import session_scope
from shared.segments import SegmentKind
from shared.sessiondir import load_manifest
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
#: Rounding of the recorder's times (microseconds in ISO 8601 and in durations) at most.
TIME_SLACK = timedelta(milliseconds=1)


@pytest.mark.parametrize("paused", [False, True], ids=["straight", "paused-once"])
def test_record_synthetic_becomes_a_finished_mp4(
    tmp_path: Path, pg_url: str, redis13: str, paused: bool
) -> None:
    home = tmp_path / "home"
    env = service_env(home=home, database_url=pg_url, broker_url=redis13)
    agent_env = {**recording_env(tmp_path), **env}
    session_id = f"e2e-{'paused' if paused else 'straight'}"
    folder = tmp_path / "recordings" / session_id
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
            wait_for(lambda: (folder / "screen-00001.mp4").exists(), 20, "the second video segment")
            assert run(capture_agent("pause"), agent_env).returncode == 0
            time.sleep(2.0)
            assert run(capture_agent("resume"), agent_env).returncode == 0
            # A whole segment recorded after the resume: its run's second file is begun.
            wait_for(
                lambda: _second_file_of_run(tmp_path / "state", session_id, folder, run=2),
                60,
                "a whole video segment after the resume",
            )
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
            events = [
                (e.type, dict(e.payload))
                for e in db.execute(
                    select(models.Event)
                    .where(models.Event.session_id == session_id, models.Event.type != "heartbeat")
                    .order_by(models.Event.seq)
                ).scalars()
            ]
        types = [t for t, _ in events]
        recorded = sum(s.duration or 0.0 for s in segments if s.kind == "video")
        assert abs(decoded.video_duration - recorded) < 0.3, (decoded, recorded)
        # What was shipped is what the recorder wrote down: every segment, with its times.
        manifest = load_manifest(folder)
        shipped = [
            (s.kind, s.file, s.started_at and as_utc(s.started_at), s.duration) for s in segments
        ]
        written = [(s.kind.value, s.file, s.started_at, s.duration) for s in manifest.segments]
        assert sorted(shipped, key=str) == sorted(written, key=str)
        if paused:
            assert types.count("session.paused") == 1 and types.count("session.resumed") == 1
            at = {t: datetime.fromisoformat(p["at"]) for t, p in events if "at" in p}
            paused_at, resumed_at = at["session.paused"], at["session.resumed"]
            assert paused_at < resumed_at
            # No segment spans the pause: each ends by the time it began, per the recorder's
            # own times, or begins once it was over; and both stretches were recorded.
            before, after, across = [], [], []
            for s in manifest.segments:
                assert s.started_at is not None and s.duration is not None
                end = s.started_at + timedelta(seconds=s.duration)
                if end <= paused_at + TIME_SLACK:
                    before.append(s)
                elif s.started_at >= resumed_at:
                    after.append(s)
                else:
                    across.append(s)
            assert not across, (paused_at, resumed_at, across)
            for kind in SegmentKind:
                assert any(s.kind == kind for s in before), (kind, manifest.segments)
                assert any(s.kind == kind for s in after), (kind, manifest.segments)
        else:
            assert abs(recorded - RECORD_SECONDS) < 0.1
        assert types[0] == "session.started" and types[-1] == "session.ended"
    finally:
        worker.discard()


def _second_file_of_run(state_dir: Path, session_id: str, folder: Path, *, run: int) -> bool:
    """Whether recording run ``run`` has begun its second video file (its first is whole)."""
    info = control.read_info(state_dir, session_id)
    if info is None or info.run != run:
        return False
    first = info.run_start_numbers[SegmentKind.VIDEO.value]
    return (folder / segment_name(SegmentKind.VIDEO, first + 1)).exists()
