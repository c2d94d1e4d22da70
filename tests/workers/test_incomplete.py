"""Sessions whose segments arrive out of order, twice, late or never, through a real Celery
worker on Redis and PostgreSQL (``workers.incomplete``).

- Out of order and repeated: the outputs are those of the session shipped in order, every
  part made once.
- A segment announced but never stored: after ``missing_segments_wait_s`` the session is
  processed with a gap where it belongs (the rest keeps its place) and carries a warning
  naming it; a segment arriving after that is kept but noted. With ``missing_segments=fail``
  the session fails naming what is missing instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from capture_agent.emit import EventEmitter
from shared import models
from shared.db import session_scope
from shared.sessiondir import Manifest, load_manifest, segment_file
from shared.settings import Settings
from shared.storage import Storage
from synthetic.plan import SyntheticSpec
from synthetic.session import record_synthetic_session
from tests.support.services import WorkerProcess, service_env, settings_for, wait_for_session
from tests.support.shipping import SessionShipper
from tests.support.waiting import wait_for
from workers.incomplete import missing_description
from workers.status import session_status

pytestmark = pytest.mark.integration

SPEC = SyntheticSpec(duration=16.0, segment_seconds=4.0, audio_holes=(), width=320, height=180,
                     fps=10)  # fmt: skip
STARTED = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
WAIT_S = "2"  # missing_segments_wait_s of these workers
DURATION_TOLERANCE_S = 0.15


@dataclass
class System:
    settings: Settings
    storage: Storage
    worker: WorkerProcess


def _system(tmp_path: Path, pg_url: str, redis_url: str, policy: str) -> System:
    home = tmp_path / "home"
    env = service_env(home=home, database_url=pg_url, broker_url=redis_url)
    env.update(SESSIONPIPE_MISSING_SEGMENTS_WAIT_S=WAIT_S, SESSIONPIPE_MISSING_SEGMENTS=policy)
    worker = WorkerProcess(env, tmp_path / f"worker-{policy}.log")
    settings = settings_for(home=home, database_url=pg_url, broker_url=redis_url)
    return System(settings, Storage(settings.storage), worker)


@pytest.fixture
def gap(tmp_path: Path, pg_url: str, redis_url: str) -> Iterator[System]:
    system = _system(tmp_path, pg_url, redis_url, "gap")
    yield system
    system.worker.discard()


@pytest.fixture
def fail(tmp_path: Path, pg_url: str, redis_url: str) -> Iterator[System]:
    system = _system(tmp_path, pg_url, redis_url, "fail")
    yield system
    system.worker.discard()


def _recorded(tmp_path: Path, session_id: str) -> tuple[Path, Manifest]:
    folder = record_synthetic_session(tmp_path / session_id, session_id=session_id,
                                      name=session_id, spec=SPEC, started_at=STARTED)  # fmt: skip
    return folder, load_manifest(folder)


def _ship(system: System, session_id: str, folder: Path, manifest: Manifest, *,
          order: list[int], times: int = 1) -> SessionShipper:  # fmt: skip
    shipper = SessionShipper(system.storage, EventEmitter(system.settings), session_id)
    shipper.start(name=session_id, started_at=manifest.started_at)
    for i in order:
        segment = manifest.segments[i]
        shipper.ship_segment(segment_file(folder, segment), kind=segment.kind, file=segment.file,
                             started_at=segment.started_at, duration=segment.duration, index=i,
                             times=times)  # fmt: skip
    shipper.end(segment_count=len(manifest.segments))
    return shipper


def _merged_duration(database_url: str, session_id: str) -> float:
    with session_scope(database_url) as db:
        job = db.execute(select(models.Job).where(
            models.Job.session_id == session_id, models.Job.stage == "merge"
        )).scalar_one()  # fmt: skip
        return float((job.result or {})["duration"])


def test_out_of_order_and_repeated_segments_make_the_same_session(
    gap: System, tmp_path: Path
) -> None:
    folder, manifest = _recorded(tmp_path, "shuffled")
    order = list(reversed(range(len(manifest.segments))))
    _ship(gap, "shuffled", folder, manifest, order=order, times=2)
    jobs = wait_for_session(gap.settings.database_url, "shuffled", gap.worker)
    assert {j.status for j in jobs} == {"succeeded"}
    duration = _merged_duration(gap.settings.database_url, "shuffled")
    assert abs(duration - SPEC.duration) < DURATION_TOLERANCE_S
    report = session_status(gap.settings.database_url, gap.storage, "shuffled")
    assert report["warnings"] == [] and report["segments"] == len(manifest.segments)
    with session_scope(gap.settings.database_url) as db:
        attempts = list(db.execute(select(models.Part.attempts).where(
            models.Part.session_id == "shuffled")).scalars())  # fmt: skip
    assert attempts and set(attempts) == {1}  # every part made once


def test_a_segment_that_never_arrives_leaves_a_gap_and_a_warning(
    gap: System, tmp_path: Path
) -> None:
    folder, manifest = _recorded(tmp_path, "holey")
    lost = next(i for i, s in enumerate(manifest.segments)
                if s.kind == "video" and 0 < i < len(manifest.segments) - 1)  # fmt: skip
    order = [i for i in range(len(manifest.segments)) if i != lost]
    shipper = _ship(gap, "holey", folder, manifest, order=order)
    jobs = wait_for_session(gap.settings.database_url, "holey", gap.worker)
    assert {j.status for j in jobs} == {"succeeded"}
    # The video after the gap keeps its place: the MP4 is as long as the recording.
    duration = _merged_duration(gap.settings.database_url, "holey")
    assert abs(duration - SPEC.duration) < DURATION_TOLERANCE_S
    report = session_status(gap.settings.database_url, gap.storage, "holey")
    assert report["warnings"] == [
        f"1 of {len(manifest.segments)} announced segments never arrived "
        f"(segment numbers {lost}): processed with a gap where they belong"
    ]
    # It arrives after all: kept, and noted.
    segment = manifest.segments[lost]
    shipper.ship_segment(segment_file(folder, segment), kind=segment.kind, file=segment.file,
                         started_at=segment.started_at, duration=segment.duration,
                         index=lost)  # fmt: skip
    wait_for(
        lambda: len(session_status(gap.settings.database_url, gap.storage, "holey")["warnings"])
        == 2, 30, "the late segment's note",
    )  # fmt: skip
    late = session_status(gap.settings.database_url, gap.storage, "holey")["warnings"][1]
    assert segment.file in late and "not in the outputs" in late


def test_with_fail_the_session_fails_naming_what_is_missing(
    fail: System, tmp_path: Path
) -> None:
    folder, manifest = _recorded(tmp_path, "unfinished")
    order = list(range(len(manifest.segments) - 1))
    _ship(fail, "unfinished", folder, manifest, order=order)
    jobs = wait_for_session(fail.settings.database_url, "unfinished", fail.worker)
    failed = [j for j in jobs if j.status == "failed"]
    assert failed and all("never arrived" in (j.error or "") for j in failed)
    report = session_status(fail.settings.database_url, fail.storage, "unfinished")
    assert report["status"] == "failed" and report["outcome"] == "failed"
    assert f"segment numbers {len(manifest.segments) - 1}" in report["warnings"][0]


def test_missing_description() -> None:
    assert missing_description(5, [0, 1, 3]) == (
        "2 of 5 announced segments never arrived (segment numbers 2, 4)"
    )
    assert missing_description(3, [7, 8]) == "1 of 3 announced segments never arrived"
    many = missing_description(30, [0])
    assert "1, 2, 3" in many and "and 9 more" in many
