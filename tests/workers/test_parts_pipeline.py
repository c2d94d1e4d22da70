"""The compressed copy from parts through a real Celery worker on Redis and PostgreSQL.

A session whose segments are shipped while it records has every video segment's part made
before it ends, so the compress stage makes none and only joins; a session shipped all at
once has its parts made by part tasks and the stage together, each exactly once. Either way
the copy shows the same pictures at the same times as the playable MP4 compressed in one
run, and finalize leaves no part behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from capture_agent.emit import EventEmitter
from shared import models
from shared.db import session_scope
from shared.sessiondir import load_manifest, segment_file
from shared.settings import Settings
from shared.storage import Storage
from synthetic.plan import SyntheticSpec
from synthetic.session import record_synthetic_session
from tests.support.media import differing_times
from tests.support.services import WorkerProcess, wait_for_session
from tests.support.shipping import SessionShipper, ship_session_dir
from tests.support.waiting import wait_for
from workers.media.compress import compress_video
from workers.parts import PARTS_DIR, SUCCEEDED

pytestmark = pytest.mark.integration

FPS = 15
SPEC = SyntheticSpec(duration=24.0, segment_seconds=4.0, audio_holes=((9.0, 13.0),),
                     width=640, height=360, fps=FPS)  # fmt: skip
STARTED = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
PARTS_TIMEOUT_S = 120.0


def _parts(database_url: str, session_id: str) -> list[models.Part]:
    with session_scope(database_url) as db:
        rows = list(db.execute(
            select(models.Part).where(models.Part.session_id == session_id)
        ).scalars())  # fmt: skip
        db.expunge_all()
        return rows


@dataclass
class System:
    settings: Settings
    storage: Storage
    worker: WorkerProcess


def _check_copy(system: System, session_id: str, tmp_path: Path) -> dict[str, Any]:
    """The compress job's result, after checking the copy against the one-run path."""
    database_url, storage = system.settings.database_url, system.storage
    jobs = {j.stage: j for j in wait_for_session(database_url, session_id, system.worker)}
    assert {j.status for j in jobs.values()} == {"succeeded"}, {
        s: (j.status, j.error) for s, j in jobs.items()
    }
    result = dict(jobs["compress"].result or {})
    merged = storage.path(jobs["merge"].output_key or "")
    copy = storage.path(jobs["compress"].output_key or "")
    whole = compress_video(merged, tmp_path / f"{session_id}-whole.mp4").path
    duration = float((jobs["merge"].result or {})["duration"])
    assert not differing_times(whole, copy, duration=duration, fps=FPS)
    assert not storage.path(storage.derived_key(session_id, PARTS_DIR)).exists()
    parts = _parts(database_url, session_id)
    assert parts and all(p.status == SUCCEEDED and p.attempts == 1 for p in parts)  # once each
    return result


@pytest.fixture
def system(worker_system: tuple[Settings, WorkerProcess]) -> System:
    """conftest's worker_system, with the storage the test reads."""
    settings, worker = worker_system
    return System(settings, Storage(settings.storage), worker)


def test_parts_made_while_recording_leave_only_a_join(system: System, tmp_path: Path) -> None:
    settings, storage = system.settings, system.storage
    session_id = "parts-live"
    folder = record_synthetic_session(tmp_path / session_id, session_id=session_id,
                                      name=session_id, spec=SPEC, started_at=STARTED)  # fmt: skip
    manifest = load_manifest(folder)
    shipper = SessionShipper(storage, EventEmitter(settings), session_id)
    shipper.start(name=session_id, started_at=manifest.started_at)
    for segment in manifest.segments:
        shipper.ship_segment(segment_file(folder, segment), kind=segment.kind, file=segment.file,
                             started_at=segment.started_at, duration=segment.duration)  # fmt: skip
    videos = sum(1 for s in manifest.segments if s.kind == "video")
    wait_for(
        lambda: sum(p.status == SUCCEEDED for p in _parts(settings.database_url, session_id))
        == videos,
        PARTS_TIMEOUT_S, "every part made while the session records",
    )  # fmt: skip
    shipper.end()
    result = _check_copy(system, session_id, tmp_path)
    assert (result["parts"], result["parts_made_by_stage"], result["parts_fallback"]) == (
        videos, 0, None,
    )


def test_a_session_shipped_at_once_shares_its_parts_out(system: System, tmp_path: Path) -> None:
    settings, storage = system.settings, system.storage
    session_id = "parts-at-once"
    folder = record_synthetic_session(tmp_path / session_id, session_id=session_id,
                                      name=session_id, spec=SPEC, started_at=STARTED)  # fmt: skip
    ship_session_dir(folder, storage, EventEmitter(settings))
    result = _check_copy(system, session_id, tmp_path)
    videos = sum(1 for s in load_manifest(folder).segments if s.kind == "video")
    assert result["parts"] == videos and result["parts_fallback"] is None
