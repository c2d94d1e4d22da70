"""Incremental audio in the pipeline: chunks encoded while recording, reused at the end.

The Celery tasks run in this process (``Task.apply``), in the order the broker would deliver
them, with SQLite and local storage; every task the code sends is captured instead of
published, so the test decides when each one runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared import events
from shared.db import session_scope
from shared.migrate import upgrade
from shared.models import AudioChunkState, Job, Segment
from shared.routing import TASK_AUDIO_CHUNKS
from shared.settings import Settings, get_settings, reset_settings
from shared.storage import Storage
from synthetic.decode import decode_audio
from synthetic.plan import SyntheticSpec
from synthetic.session import record_synthetic_session
from tests.support.media import marker_onsets
from tests.support.shipping import SessionShipper

SESSION = "pipe-audio"
STARTED = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
SPEC = SyntheticSpec(
    duration=8.0, segment_seconds=2.0, audio_holes=(), width=160, height=96, fps=10
)
CHUNK_S = 1.0  # eight chunks in the session, so most of them settle before the end


@dataclass
class Harness:
    settings: Settings
    sent: list[tuple[str, list[Any]]] = field(default_factory=list)
    emitted: list[events.Event] = field(default_factory=list)

    def emit(self, event: events.Event, *, priority: str = "normal") -> None:
        self.emitted.append(event)

    def ingest(self, event: events.Event) -> None:
        from workers.tasks import ingest_event

        ingest_event.apply(args=[event.model_dump(mode="json")]).get()

    def take(self, name: str) -> list[list[Any]]:
        taken = [args for task, args in self.sent if task == name]
        self.sent = [(task, args) for task, args in self.sent if task != name]
        return taken


@pytest.fixture
def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    for key in [k for k in os.environ if k.startswith("SESSIONPIPE_")]:
        monkeypatch.delenv(key)
    url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("SESSIONPIPE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SESSIONPIPE_DATABASE_URL", url)
    monkeypatch.setenv("SESSIONPIPE_AUDIO_CHUNK_S", str(CHUNK_S))
    reset_settings()
    upgrade(url)
    from workers.app import app

    harness = Harness(get_settings())

    def capture(name: str, args: list[Any] | None = None, **_options: Any) -> None:
        harness.sent.append((name, list(args or [])))

    monkeypatch.setattr(app, "send_task", capture)
    try:
        yield harness
    finally:
        reset_settings()


def record(tmp_path: Path) -> Path:
    return record_synthetic_session(
        tmp_path / "rec", session_id=SESSION, name="audio", spec=SPEC, started_at=STARTED
    )


def ship_events(harness: Harness, folder: Path) -> None:
    """The events a recorder would send, in order (collected, not yet ingested)."""
    from shared.sessiondir import load_manifest, segment_file

    manifest = load_manifest(folder)
    shipper = SessionShipper(Storage(harness.settings.storage), harness, SESSION)
    shipper.start(name="audio", started_at=STARTED)
    for seg in manifest.segments:
        shipper.ship_segment(
            segment_file(folder, seg),
            kind=seg.kind,
            file=seg.file,
            started_at=seg.started_at,
            duration=seg.duration,
        )
    shipper.end()


def test_chunks_are_encoded_while_recording_and_reused_by_concat_audio(
    harness: Harness, tmp_path: Path
) -> None:
    from workers import tasks
    from workers.stages.audio import AUDIO_CHUNKS_DIR

    ship_events(harness, record(tmp_path))
    *recording, ended = harness.emitted
    assert ended.type == "session.ended"
    storage = Storage(harness.settings.storage)
    chunk_dir = storage.path(storage.derived_key(SESSION, AUDIO_CHUNKS_DIR))

    passes = 0
    for event in recording:  # a chunk pass runs after each segment, as on the queue
        harness.ingest(event)
        for args in harness.take(TASK_AUDIO_CHUNKS):
            assert tasks.audio_chunks.apply(args=args).get().startswith("encoded")
            passes += 1
    # audio segments settle audio; video ones may complete a piece of the playable MP4
    segments = sum(1 for e in recording if e.type == "segment.stored")
    assert passes == segments == 8
    stored = sorted(p.name for p in chunk_dir.iterdir())
    assert len(stored) >= 5, "most of the 8 s must settle before the session ends"
    with session_scope(harness.settings.database_url) as db:
        state = db.get(AudioChunkState, SESSION)
        assert state is not None
        assert (state.requested, state.covered, state.closed) == (8, 8, False)
        assert state.owner is None and state.chunks_encoded == len(stored)
        # the passes probed every file once; the stages after the end will not
        probed = db.query(Segment.probed_duration).filter_by(session_id=SESSION).all()
        assert len(probed) == 8 and all(d is not None for (d,) in probed)

    harness.ingest(ended)
    assert harness.take(TASK_AUDIO_CHUNKS) == []
    (concat_args,) = harness.take("sessionpipe.concat_audio")
    assert tasks.concat_audio.apply(args=concat_args).get() == "concat_audio succeeded"

    with session_scope(harness.settings.database_url) as db:
        job = db.query(Job).filter_by(session_id=SESSION, stage="concat_audio").one()
        assert job.status == "succeeded" and job.attempts == 1
        assert job.result is not None and job.output_key is not None
        chunks = job.result["chunks"]
        output = storage.path(job.output_key)
        state = db.get(AudioChunkState, SESSION)
        assert state is not None and state.closed
    assert chunks["reused"] == len(stored)
    assert chunks["encoded"] >= 1 and chunks["total"] == chunks["reused"] + chunks["encoded"]
    # the chunks removed; the playable MP4's assembly is the merge stage's
    assert sorted(p.name for p in output.parent.iterdir()) == ["assembly", "audio.m4a"]

    # same markers as the one-pass reference encode of the same timeline
    from workers.media.audio import render_audio as reference
    from workers.snapshot import load_snapshot
    from workers.stages import build_timeline

    with session_scope(harness.settings.database_url) as db:
        from shared.models import Session

        session = db.get(Session, SESSION)
        assert session is not None
        snapshot = load_snapshot(db, session)
    timeline = build_timeline(snapshot, storage, cut_pauses=True, needed=frozenset({"audio"}))
    ref = reference(timeline, tmp_path / "ref.m4a")
    got, rate = decode_audio(output)
    want, _ = decode_audio(ref.path)
    assert got.shape == want.shape
    found, expected = marker_onsets(got, rate), marker_onsets(want, rate)
    assert len(found) == 4 and len(expected) == 4
    assert max(abs(a - b) for a, b in zip(found, expected, strict=True)) <= 8
    assert all(abs(f - i * 2 * rate) <= 1024 for i, f in enumerate(found))


def test_concat_audio_waits_for_a_running_chunk_pass(harness: Harness, tmp_path: Path) -> None:
    from workers import tasks
    from workers.audiochunks import acquire, busy

    ship_events(harness, record(tmp_path))
    for event in harness.emitted:  # all events arrive before any chunk task runs
        harness.ingest(event)
    late = harness.take(TASK_AUDIO_CHUNKS)
    assert len(late) == 8  # one per segment
    # a pass (on another worker) holds the lock for another second
    with session_scope(harness.settings.database_url) as db:
        assert acquire(db, SESSION, "elsewhere", lease=timedelta(seconds=1)) == 8
        assert busy(db, SESSION)
    (concat_args,) = harness.take("sessionpipe.concat_audio")
    assert tasks.concat_audio.apply(args=concat_args).get() == "concat_audio succeeded"
    with session_scope(harness.settings.database_url) as db:
        job = db.query(Job).filter_by(session_id=SESSION, stage="concat_audio").one()
        assert job.result is not None and job.result["chunks"]["reused"] == 0
    # the chunk tasks queued behind the stage do nothing
    for args in late:
        assert tasks.audio_chunks.apply(args=args).get() == "stage took over"


def test_chunk_lock_protocol(harness: Harness, tmp_path: Path) -> None:
    from workers.audiochunks import acquire, busy, close, release, renew, request
    from workers.ingest import lock_session

    lease = timedelta(seconds=60)
    url = harness.settings.database_url
    with session_scope(url) as db:
        lock_session(db, SESSION)
        assert [request(db, SESSION) for _ in range(2)] == [1, 2]
    with session_scope(url) as db:
        assert acquire(db, SESSION, "a", lease=lease) == 2
        assert acquire(db, SESSION, "b", lease=lease) is None
        assert busy(db, SESSION)
        assert renew(db, SESSION, "a", lease=lease)
        assert not renew(db, SESSION, "b", lease=lease)
        request(db, SESSION)  # a segment arrives during a's pass
        assert release(db, SESSION, "a", covered=2, encoded=3) is True
        assert acquire(db, SESSION, "a", lease=lease) == 3
        assert release(db, SESSION, "a", covered=3, encoded=1) is False
        assert not busy(db, SESSION)
        # a pass that died: its expired lease lets the next one in
        assert acquire(db, SESSION, "dead", lease=timedelta(seconds=-1)) == 3
        assert not busy(db, SESSION)
        assert acquire(db, SESSION, "c", lease=lease) == 3
        # the stage takes over: the holder may not write any more, nobody may start
        close(db, SESSION)
        assert not renew(db, SESSION, "c", lease=lease)
        assert release(db, SESSION, "c", covered=3, encoded=0) is False
        assert acquire(db, SESSION, "d", lease=lease) is None
        state = db.get(AudioChunkState, SESSION)
        assert state is not None
        assert (state.requested, state.covered, state.chunks_encoded) == (3, 3, 4)


def test_a_segment_broken_after_chunking_fails_the_stage_and_leaves_nothing(
    harness: Harness, tmp_path: Path
) -> None:
    from synthetic.clips import truncate
    from workers import tasks
    from workers.media.errors import MediaError
    from workers.stages.audio import AUDIO_CHUNKS_DIR

    ship_events(harness, record(tmp_path))
    *recording, ended = harness.emitted
    for event in recording:
        harness.ingest(event)
        for args in harness.take(TASK_AUDIO_CHUNKS):
            tasks.audio_chunks.apply(args=args).get()
    storage = Storage(harness.settings.storage)
    derived = storage.path(storage.derived_key(SESSION, AUDIO_CHUNKS_DIR)).parent
    assert (derived / AUDIO_CHUNKS_DIR).is_dir()
    # the last microphone file is damaged after it was probed and partly encoded
    last = [e for e in recording if e.payload.get("kind") == "audio"][-1]
    truncate(storage.path(last.payload["key"]), 0.5)

    harness.ingest(ended)
    (concat_args,) = harness.take("sessionpipe.concat_audio")
    with pytest.raises(MediaError, match=last.payload["file"]):
        tasks.concat_audio.apply(args=concat_args).get()
    with session_scope(harness.settings.database_url) as db:
        job = db.query(Job).filter_by(session_id=SESSION, stage="concat_audio").one()
        assert job.status == "failed" and last.payload["file"] in (job.error or "")
    assert sorted(p.name for p in derived.iterdir()) == []


def test_ingest_measures_each_stored_segment_while_the_session_ships(
    harness: Harness, tmp_path: Path
) -> None:
    """Stages after the end plan without probing; a file that cannot be probed is left to the
    stage that reads it (ingest still applies the event)."""
    from synthetic.clips import write_random_bytes

    folder = record(tmp_path)
    ship_events(harness, folder)
    storage = Storage(harness.settings.storage)
    broken = next(e for e in harness.emitted if e.payload.get("kind") == "video")
    write_random_bytes(storage.path(broken.payload["key"]), 4096)
    for event in harness.emitted:
        harness.ingest(event)
    with session_scope(harness.settings.database_url) as db:
        rows = {s.file: s.probed_duration for s in db.query(Segment).filter_by(session_id=SESSION)}
    assert rows.pop(broken.payload["file"]) is None
    assert len(rows) == 7 and all(d is not None and d > 0 for d in rows.values())


def test_a_pass_whose_segment_a_finished_pass_covered_does_nothing(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker behind the recording has a chunk pass queued per stored segment, and each
    pass reads the whole session: 0.7 s each at 120 minutes, so the worker fell further
    behind. A pass whose request a finished pass has covered (it read the segment) now
    returns at once; a later request still gets its pass."""
    from workers import audiochunks
    from workers.audiochunks import acquire, release, request, run_passes
    from workers.ingest import lock_session

    url = harness.settings.database_url
    with session_scope(url) as db:
        lock_session(db, SESSION)
        wanted = [request(db, SESSION) for _ in range(3)]  # three segments stored while busy
    with session_scope(url) as db:  # the pass of the first finds all three, and finishes
        assert acquire(db, SESSION, "first", lease=timedelta(seconds=60)) == 3
        assert release(db, SESSION, "first", covered=3, encoded=0) is False
    passes: list[str] = []

    class Ran(Exception):
        pass

    def reading(db: Any, session: Any) -> None:
        passes.append("ran")
        raise Ran  # as far as this test needs to see

    monkeypatch.setattr(audiochunks, "load_snapshot", reading)
    for n in wanted:
        assert run_passes(harness.settings, SESSION, n, owner=f"queued-{n}") == (
            "covered by another pass"
        )
    assert passes == []  # not one read the session again
    with session_scope(url) as db:
        later = request(db, SESSION)
        state = db.get(AudioChunkState, SESSION)
        assert state is not None and state.owner is None  # nobody took the lock
    with pytest.raises(Ran):
        run_passes(harness.settings, SESSION, later, owner="later")
    assert passes == ["ran"]
