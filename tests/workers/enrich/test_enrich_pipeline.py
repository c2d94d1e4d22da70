"""The whole enrichment chain through a real celery worker on Redis and PostgreSQL.

A lecture (slides with known titles, narration at known times, typing, a clock and
scrolling inside the slides) is recorded, shipped as a recorder would and processed with
every enrichment stage; ``sessionpipe show --json`` must then give chapters at the slide
changes titled with the slides, a transcript of the narration with word times on the MP4's
clock, keywords naming the topics and a summary (``lecture_checks``); search finds a word
at the second it was said, a word only shown on the slide from the slide's start, and a line
that came into view only when the slide scrolled from then on. The first is shipped
while it records: its transcript pieces (20 s here) and chapter samples are made by background
tasks before it ends, so after the end the transcript stage transcribes only the last piece
and the chapters stage samples nothing. A second session, shipped at once, asks
for its transcript only, in its session.json: the other enrichment stages are skipped and
say so, and the session still completes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from capture_agent.emit import EventEmitter
from shared import models
from shared.db import session_scope
from shared.options import SessionOptions
from shared.sessiondir import load_manifest, segment_file, write_manifest
from shared.settings import Settings
from shared.storage import Storage
from synthetic.lecture import DEMO_LECTURE
from synthetic.plan import SyntheticSpec
from synthetic.session import record_synthetic_session
from synthetic.slides import SCROLL_DELAY_S
from tests.support import ROOT
from tests.support.services import WorkerProcess, service_env, settings_for, wait_for_session
from tests.support.shipping import SessionShipper, ship_session_dir
from tests.support.waiting import wait_for
from tests.workers.enrich.lecture_checks import check_chapters, check_summary, check_transcript
from workers.enrichment import enrichment_document
from workers.search import parse_query, search
from workers.status import session_status

pytestmark = pytest.mark.integration

STARTED = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
#: The demo's lecture at a small size: the microphone records nothing from 25 s to 35 s.
SPEC = SyntheticSpec(
    duration=DEMO_LECTURE.duration,
    segment_seconds=10.0,
    audio_holes=((25.0, 35.0),),
    width=640,
    height=360,
    fps=10,
    lecture=DEMO_LECTURE,
)
#: The same talk on a small, slow screen, for the session that asks for its transcript only:
#: nothing reads its pictures (no chapters), so they need not be worth reading.
SMALL_SPEC = replace(SPEC, width=320, height=180, fps=5)
ENRICHMENT = ("transcript", "chapters", "summary")
#: How close to the known time a search hit must start (seconds).
HIT_TOLERANCE_S = 1.0
#: Transcript pieces of the minute: [0, 26] and [14, 46] s are made while recording.
PIECE_S, OVERLAP_S = 20.0, 6.0
MADE_WHILE_RECORDING_TIMEOUT_S = 120.0


@pytest.fixture
def enriching_worker(
    tmp_path: Path, pg_url: str, redis_url: str
) -> Iterator[tuple[Settings, WorkerProcess, dict[str, str]]]:
    home = tmp_path / "home"
    env = service_env(home=home, database_url=pg_url, broker_url=redis_url)
    env["SESSIONPIPE_ENRICH"] = "all"
    env["SESSIONPIPE_TRANSCRIPT_PIECE_S"] = str(PIECE_S)
    env["SESSIONPIPE_TRANSCRIPT_OVERLAP_S"] = str(OVERLAP_S)
    worker = WorkerProcess(env, tmp_path / "worker.log")
    yield settings_for(home=home, database_url=pg_url, broker_url=redis_url), worker, env
    worker.discard()


def _made(database_url: str, session_id: str) -> dict[str, int]:
    """Parts succeeded so far, by kind."""
    with session_scope(database_url) as db:
        rows = db.execute(
            select(models.Part.kind, func.count()).where(
                models.Part.session_id == session_id, models.Part.status == "succeeded"
            ).group_by(models.Part.kind)
        ).all()
    return {kind: count for kind, count in rows if kind != "compressed"}


def record(tmp_path: Path, session_id: str, spec: SyntheticSpec = SPEC) -> Path:
    return record_synthetic_session(
        tmp_path / session_id, session_id=session_id, name=session_id, spec=spec,
        started_at=STARTED,
    )  # fmt: skip


def show_json(env: dict[str, str], session_id: str) -> dict[str, object]:
    shown = subprocess.run(
        [sys.executable, "-m", "sessionpipe.cli", "show", session_id, "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    document: dict[str, object] = json.loads(shown.stdout)
    return document


def test_a_lecture_is_enriched_by_a_real_worker(
    tmp_path: Path, enriching_worker: tuple[Settings, WorkerProcess, dict[str, str]]
) -> None:
    settings, worker, env = enriching_worker
    folder = record(tmp_path, "lecture-1")
    manifest = load_manifest(folder)
    shipper = SessionShipper(Storage(settings.storage), EventEmitter(settings), "lecture-1")
    shipper.start(name="lecture-1", started_at=manifest.started_at)
    for segment in manifest.segments:
        shipper.ship_segment(segment_file(folder, segment), kind=segment.kind, file=segment.file,
                             started_at=segment.started_at, duration=segment.duration)  # fmt: skip
    videos = sum(1 for s in manifest.segments if s.kind == "video")
    wait_for(
        lambda: _made(settings.database_url, "lecture-1") == {"transcript": 2, "scenes": videos},
        MADE_WHILE_RECORDING_TIMEOUT_S, "pieces and samples made while the session records",
    )  # fmt: skip
    shipper.end()
    jobs = wait_for_session(settings.database_url, "lecture-1", worker)
    statuses = {j.stage: (j.status, (j.result or {}).get("skipped")) for j in jobs}
    assert all(s == ("succeeded", None) for s in statuses.values()), statuses
    results = {j.stage: j.result or {} for j in jobs}
    pieces = results["transcript"]["pieces"]
    assert (pieces["total"], pieces["reused"], pieces["transcribed"]) == (3, 2, 1)
    samples = results["chapters"]["samples"]
    assert (samples["segments"], samples["made_by_stage"]) == (videos, 0)

    document = show_json(env, "lecture-1")
    assert document == enrichment_document(settings.database_url, "lecture-1")
    check_chapters(document, DEMO_LECTURE)
    check_transcript(document, DEMO_LECTURE)
    check_summary(document)
    assert document["playable"] and document["complete"]
    duration = document["duration"]
    assert isinstance(duration, float) and abs(duration - SPEC.duration) < 0.2

    storage = Storage(settings.storage)
    report = session_status(settings.database_url, storage, "lecture-1")
    assert report["playable"] and report["complete"]
    stages = {s["stage"]: s for s in report["stages"]}
    mp4 = Path(stages["merge"]["output_path"])
    vtt = mp4.with_name("lecture-1.vtt")
    assert vtt.read_text().startswith("WEBVTT")
    saved = json.loads(Path(stages["transcript"]["output_path"]).read_text())
    assert saved["segments"] == document["transcript"]["segments"]  # type: ignore[index]
    assert mp4.parent == vtt.parent == Path(stages["transcript"]["output_path"]).parent
    _search_finds_the_moments(settings.database_url, document)


def _search_finds_the_moments(url: str, document: dict[str, Any]) -> None:
    def hits(query: str, kind: str) -> list[float]:
        found = search(url, parse_query(query), session_id="lecture-1", limit=50)
        return [h.start for h in found if h.kind == kind]

    words = [w for segment in document["transcript"]["segments"] for w in segment["words"]]
    said = [float(w["start"]) for w in words if "migrations" in str(w["word"]).lower()]
    assert said and any(abs(t - said[0]) <= HIT_TOLERANCE_S for t in hits("migrations", "spoken"))
    slides = DEMO_LECTURE.slides
    # never said: on the second slide, found on screen from the slide's start
    assert any(abs(t - slides[1].start) <= HIT_TOLERANCE_S for t in hits("acknowledgement",
                                                                          "screen"))  # fmt: skip
    # in view only once the third slide's body scrolled: from then on, not from its start
    scrolled = hits('"write the test first"', "screen")
    assert scrolled and all(t >= slides[2].start + SCROLL_DELAY_S for t in scrolled), scrolled


def test_a_session_asking_for_its_transcript_only(
    tmp_path: Path, enriching_worker: tuple[Settings, WorkerProcess, dict[str, str]]
) -> None:
    settings, worker, env = enriching_worker
    folder = record(tmp_path, "lecture-2", SMALL_SPEC)
    manifest = load_manifest(folder)
    asked = SessionOptions(enrich=("transcript",))
    write_manifest(folder, manifest.model_copy(update={"options": asked}))
    ship_session_dir(folder, Storage(settings.storage), EventEmitter(settings))
    jobs = wait_for_session(settings.database_url, "lecture-2", worker)
    skipped = {j.stage: (j.result or {}).get("skipped") for j in jobs if j.stage in ENRICHMENT}
    assert skipped == {
        "transcript": None,
        "chapters": "not asked for by this session",
        "summary": "not asked for by this session",
    }
    document = show_json(env, "lecture-2")
    assert document["complete"] and not document["chapters"] and not document["summary"]
    check_transcript(document, DEMO_LECTURE)
