"""The live view in a real browser (Debian's chromium, headless) while a session records.

Only the ingest worker and the audio queue's worker run (the queue of the live fragments),
and the session is shipped segment by segment without ending: the session page must play
the live stream through Media Source Extensions, every fragment appended in order, the
buffer covering the recording so far without a hole, the picture decoded at its size and
the player moving near the live edge.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from capture_agent.emit import EventEmitter
from shared import models
from shared.db import session_scope
from shared.sessiondir import load_manifest, segment_file
from shared.storage import Storage
from synthetic.plan import SyntheticSpec
from synthetic.session import record_synthetic_session
from tests.support.api import running_api
from tests.support.browser import chromium, wait_js
from tests.support.services import WorkerProcess, service_env, settings_for
from tests.support.shipping import SessionShipper
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

TOKEN = "browser-live-" + uuid.uuid4().hex
SESSION = "browser-live"
SPEC = SyntheticSpec(duration=16.0, segment_seconds=4.0, audio_holes=(), width=640, height=360,
                     fps=10)  # fmt: skip
LIVE_TIMEOUT_S = 90.0
FRAME_S = 0.1


def _known(database_url: str) -> bool:
    with session_scope(database_url) as db:
        return db.get(models.Session, SESSION) is not None


def test_the_page_plays_a_recording_session_live(
    tmp_path: Path, pg_url: str, redis_url: str
) -> None:
    home = tmp_path / "home"
    env = service_env(home=home, database_url=pg_url, broker_url=redis_url)
    env.update(SESSIONPIPE_API_TOKEN=TOKEN)
    settings = settings_for(home=home, database_url=pg_url, broker_url=redis_url)
    folder = record_synthetic_session(
        tmp_path / "recording", session_id=SESSION, name="Live", spec=SPEC,
        started_at=datetime(2026, 12, 2, 9, 0, tzinfo=UTC),
    )  # fmt: skip
    manifest = load_manifest(folder)
    worker = WorkerProcess(env, tmp_path / "worker.log", queues="default,audio", concurrency=1)
    try:
        with running_api(env, tmp_path / "api.log") as api, chromium() as driver:
            shipper = SessionShipper(Storage(settings.storage), EventEmitter(settings), SESSION)
            shipper.start(name="Live", started_at=manifest.started_at)
            for segment in manifest.segments:
                shipper.ship_segment(segment_file(folder, segment), kind=segment.kind,
                                     file=segment.file, started_at=segment.started_at,
                                     duration=segment.duration)  # fmt: skip
            videos = sum(1 for s in manifest.segments if s.kind == "video")
            wait_for(lambda: _known(pg_url), LIVE_TIMEOUT_S, "the session recorded", poll=0.1)
            driver.get(f"{api.base}/ui/sessions/{SESSION}?token={TOKEN}")
            wait_js(
                driver,
                f"const v = window.sessionpipe.liveView;"
                f"return v && (v.state.error || v.state.appended === {videos});",
                LIVE_TIMEOUT_S, "every live fragment appended",
            )  # fmt: skip
            state = driver.execute_script("return window.sessionpipe.liveView.state")
            assert state["error"] is None and not state["ended"], state  # still recording
            ranges = driver.execute_script(
                "const b = document.getElementById('player').buffered; const r = [];"
                "for (let i = 0; i < b.length; i++) r.push([b.start(i), b.end(i)]); return r;"
            )
            assert len(ranges) == 1, ranges  # one stretch: no hole between fragments
            (start, end), = ranges
            assert start <= FRAME_S and end >= SPEC.duration - 2 * FRAME_S, ranges
            wait_js(
                driver,
                "const p = document.getElementById('player');"
                "return p.videoWidth === 640 && p.currentTime > "
                f"{SPEC.duration} - 3 && !p.paused;",
                LIVE_TIMEOUT_S, "the live stream playing near its live edge",
            )  # fmt: skip
            assert driver.execute_script("return document.getElementById('player').muted")
            assert TOKEN not in api.log.read_text()
    finally:
        worker.discard()
