"""Workers that die or stop mid-task (scenarios 1, 2, 7, mid-transcript 10, mid-part 11), a poison
segment (3), and the same session shipped twice at once (6): nothing lost, nothing done
twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from sqlalchemy import select

from shared import models
from shared.db import session_scope
from shared.sessiondir import load_manifest
from synthetic.plan import SyntheticSpec
from synthetic.slides import talk
from tests.faults.harness import MEDIA_QUEUES, SCALE, SLOW_COMPRESS, FaultSystem, Worker
from tests.support import ROOT
from workers.enrichment import enrichment_document

pytestmark = pytest.mark.integration

COMPANIONS = 2 * SCALE  # quick sessions in flight beside the one the fault hits


def _start(system: FaultSystem, name: str) -> tuple[Worker, list[subprocess.Popen[str]]]:
    """Workers, the slow session shipped, its companions shipping by agents of their own
    meanwhile; returns the media worker and those agents once the slow session's compress is
    under way."""
    media, _ = system.start_workers()
    slow = system.record(name, SLOW_COMPRESS)
    quick = [system.record(f"{name}-q{i}") for i in range(COMPANIONS)]  # before: it takes time
    system.ship(slow)
    agents = [system.ship_async(folder, agent=f"q{i}") for i, folder in enumerate(quick)]
    system.wait_mid(name)
    return media, agents


def _agents_done(agents: list[subprocess.Popen[str]]) -> None:
    """Every companion's agent shipped it (checked before counting what came out)."""
    for agent in agents:
        out, _ = agent.communicate(timeout=300)
        assert agent.returncode == 0, out


def _still_running_first_attempt(system: FaultSystem, session_id: str) -> None:
    job = system.job(session_id, "compress")
    assert job is not None and (job.status, job.attempts) == ("running", 1), (
        "the fault must hit compress mid-way"
    )


def test_media_worker_killed_mid_compress_then_restarted(system: FaultSystem) -> None:
    media, agents = _start(system, "killed-media")
    media.kill()
    _still_running_first_attempt(system, "killed-media")
    system.start_worker("media-restarted", queues=MEDIA_QUEUES)
    _agents_done(agents)
    system.assert_nothing_lost()
    job = system.job("killed-media", "compress")
    assert job is not None and job.attempts == 2  # the killed run, and the one that finished


def test_pool_child_killed_mid_compress(system: FaultSystem) -> None:
    """As the kernel's OOM killer does: only the process running the task dies."""
    media, agents = _start(system, "killed-child")
    children = media.pool_children()
    assert len(children) == 1
    os.kill(children[0], signal.SIGKILL)
    _still_running_first_attempt(system, "killed-child")
    _agents_done(agents)
    system.assert_nothing_lost()
    assert media.alive, "the worker must survive the loss of a pool process"
    job = system.job("killed-child", "compress")
    assert job is not None and job.attempts == 2
    assert "WorkerLostError" in media.log() or "exited with" in media.log()


def test_worker_terminated_mid_compress_finishes_its_task(system: FaultSystem) -> None:
    """SIGTERM is Celery's warm shutdown: the running task finishes, then the worker exits
    (a supervisor's SIGKILL after its grace period is the first scenario)."""
    media, agents = _start(system, "terminated")
    assert media.terminate(timeout=300) == 0
    job = system.job("terminated", "compress")
    assert job is not None and (job.status, job.attempts) == ("succeeded", 1)
    system.start_worker("media-restarted", queues=MEDIA_QUEUES)
    _agents_done(agents)
    system.assert_nothing_lost()


def test_poison_segment_fails_its_session_only(system: FaultSystem) -> None:
    system.start_workers()
    poison = system.record("poison")
    manifest = load_manifest(poison)
    bad = next(seg for seg in manifest.segments if seg.kind == "video")
    path = poison / bad.file
    path.write_bytes(os.urandom(path.stat().st_size))  # not media at all, every time
    others = [system.record(f"poison-ok{i}") for i in range(COMPANIONS)]
    for folder in [poison, *others]:
        system.ship(folder)
    system.assert_nothing_lost(failed={"poison": bad.file})
    failed = [j for j in system.jobs("poison") if j.status == "failed"]
    assert len(failed) == 1 and failed[0].attempts == 1  # permanent: never retried


def test_same_session_shipped_by_two_agents_and_events_twice(system: FaultSystem) -> None:
    """Two agents ship one folder at once while a third party publishes its events twice
    more, concurrently: one job per (session, stage), each run once."""
    system.start_workers()
    folder = system.record("twice")
    agents = [system.ship_async(folder, agent=name) for name in ("a", "b")]
    republishers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.faults.republish", str(folder)],
            cwd=ROOT,
            env=system.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    for proc in [*agents, *republishers]:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
    system.assert_nothing_lost()
    assert all(job.attempts == 1 for job in system.jobs("twice"))


#: A talk whose transcription takes a few seconds here (dense narration, small slides):
#: long enough to be killed mid-way (its progress is reported line by line); the
#: full-size run's is twice as long.
TALK_S = 90.0 if SCALE == 1 else 180.0
TALK = SyntheticSpec(
    duration=TALK_S, segment_seconds=30.0, audio_holes=(), width=320, height=180, fps=5,
    lecture=talk(TALK_S, seed=3),
)  # fmt: skip


def test_enrich_worker_killed_mid_transcript_then_restarted(system: FaultSystem) -> None:
    """Scenario 10: the enrichment worker dies while it transcribes. Its job is taken over
    after the lease, the transcript is made once more and stored once, the rest of the
    session never waited for it, and every enrichment document is there at the end."""
    system.env["SESSIONPIPE_ENRICH"] = "all"
    media = system.start_worker("media", queues=MEDIA_QUEUES, wait=False)
    other = system.start_worker("other", queues="audio,default", concurrency=2, wait=False)
    enrich = system.start_worker("enrich", queues="enrich", wait=False)
    for worker in (media, other, enrich):  # started together: ready together
        worker.wait_ready()
    system.ship(system.record("talk", TALK))
    system.wait_mid("talk", "transcript")
    enrich.kill()
    job = system.job("talk", "transcript")
    assert job is not None and (job.status, job.attempts) == ("running", 1)
    system.start_worker("enrich-restarted", queues="enrich")
    system.assert_nothing_lost()
    job = system.job("talk", "transcript")
    assert job is not None and job.attempts == 2  # the killed run, and the one that finished
    document = enrichment_document(system.database_url, "talk")
    assert document["complete"] and document["transcript"]["segments"]
    assert document["chapters"] and document["summary"] and not document["warnings"]
    assert {s["status"] for s in document["stages"].values()} == {"succeeded"}


def _parts(system: FaultSystem, session_id: str) -> list[models.Part]:
    with session_scope(system.database_url) as db:
        rows = list(db.execute(
            select(models.Part).where(models.Part.session_id == session_id)
        ).scalars())  # fmt: skip
        db.expunge_all()
        return rows


def test_media_worker_killed_mid_part_then_restarted(system: FaultSystem) -> None:
    """Scenario 11: the media worker dies while it makes a compressed part (workers.parts).
    The part is taken over once its lease ran out (by its task, redelivered, or by the
    compress stage) and made once more; every other part is made once; the compressed copy
    is joined from parts and the session completes with nothing left behind."""
    system.env["SESSIONPIPE_COMPRESS_PARTS"] = "true"  # off for the other scenarios
    media, _ = system.start_workers()
    folder = system.record("killed-part", SLOW_COMPRESS)
    system.ship(folder)

    def making() -> models.Part | None:
        return next((p for p in _parts(system, "killed-part") if p.status == "running"), None)

    hit = system._wait(making, 180, "a part of killed-part to be under way")
    media.kill()
    # Where the kill landed: the part may have been finished between the look and the kill.
    at_kill = {p.segment_file: p for p in _parts(system, "killed-part")}[hit.segment_file]
    killed_mid_way = at_kill.status == "running"
    system.start_worker("media-restarted", queues=MEDIA_QUEUES)
    system.assert_nothing_lost()
    parts = {p.segment_file: p for p in _parts(system, "killed-part")}
    assert all(p.status == "succeeded" for p in parts.values())
    # the killed making and the one that counted, or (kill after its finish) only the one
    assert parts[hit.segment_file].attempts == (2 if killed_mid_way else 1)
    assert all(p.attempts == 1 for f, p in parts.items() if f != hit.segment_file)
    compress = system.job("killed-part", "compress")
    assert compress is not None and (compress.result or {}).get("parts_fallback") is None
