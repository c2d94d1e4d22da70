"""Parts (``workers.parts``) on a real database: the transitions (only the owner renews or
finishes, a dead maker's lease is taken over, a gone file or changed segment makes the part
again), and the stage's ``gather`` (uses what is done, makes what nobody holds, waits for a
live claim of another worker meanwhile, reports a failed part)."""

from __future__ import annotations

import hashlib
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from shared import models
from shared.db import session_scope
from shared.settings import Settings
from shared.storage import Storage
from synthetic.plan import SyntheticSpec
from synthetic.session import record_synthetic_session
from workers import compressparts, parts
from workers.jobs import now
from workers.media import Cancelled

SESSION = "parts-unit"
SPEC = SyntheticSpec(duration=6.0, segment_seconds=2.0, audio_holes=(), width=320, height=180,
                     fps=10, audio=False)  # fmt: skip


@pytest.fixture
def setup(tmp_path: Path, sqlite_url: str) -> tuple[Settings, Storage, list[parts.SegmentSource]]:
    settings = Settings(home=tmp_path / "home", database_url=sqlite_url,
                        storage_root=tmp_path / "home" / "storage")  # fmt: skip
    storage = Storage(settings.storage)
    folder = record_synthetic_session(tmp_path / "rec", session_id=SESSION, name="p", spec=SPEC)
    sources = []
    with session_scope(sqlite_url) as db:
        db.add(models.Session(id=SESSION, name="p", status="recording"))
        db.flush()
        for i, file in enumerate(sorted(p.name for p in folder.glob("screen-*.mp4"))):
            key = f"sessions/{SESSION}/segments/{file}"
            storage.path(key).parent.mkdir(parents=True, exist_ok=True)
            data = (folder / file).read_bytes()
            storage.path(key).write_bytes(data)
            sha = hashlib.sha256(data).hexdigest()
            db.add(models.Segment(session_id=SESSION, index=i, kind="video", file=file,
                                  storage_key=key, sha256=sha, size=len(data)))  # fmt: skip
            sources.append(parts.SegmentSource(SESSION, file, key, sha))
    return settings, storage, sources


def _request_all(settings: Settings, sources: list[parts.SegmentSource]) -> list[int]:
    with session_scope(settings.database_url) as db:
        for s in sources:
            assert parts.request(db, SESSION, s.file, s.sha256)
            assert not parts.request(db, SESSION, s.file, s.sha256)  # once per segment
    ids = []
    for s in sources:
        state = parts.state(settings.database_url, SESSION, s.file)
        assert state is not None and state.status == parts.PENDING
        ids.append(state.id)
    return ids


def test_only_the_owner_renews_and_finishes_and_a_dead_makers_lease_is_taken_over(
    setup: tuple[Settings, Storage, list[parts.SegmentSource]],
) -> None:
    settings, storage, sources = setup
    url = settings.database_url
    part_id = _request_all(settings, sources)[0]
    sha = sources[0].sha256
    assert parts.claim(url, part_id, "a", sha)
    assert not parts.claim(url, part_id, "b", sha)  # held, lease live
    assert not parts.renew(url, part_id, "b") and parts.renew(url, part_id, "a")
    assert not parts.finish(url, part_id, "b", "k", {})
    with session_scope(url) as db:  # a dies: its lease runs out
        db.execute(update(models.Part).where(models.Part.id == part_id)
                   .values(lease_until=now() - timedelta(seconds=1)))  # fmt: skip
    assert parts.claim(url, part_id, "b", sha)
    assert not parts.renew(url, part_id, "a")  # a's next report stops it
    key = compressparts.make(settings, storage, sources[0], part_id, "b", preset="medium")
    state = parts.state(url, SESSION, sources[0].file)
    assert state is not None and (state.status, state.output_key) == (parts.SUCCEEDED, key)
    assert state.result is not None and state.result["frames_in"] > 0
    assert compressparts.usable(state, sources[0], storage) == key
    changed = parts.SegmentSource(SESSION, sources[0].file, sources[0].storage_key, "0" * 64)
    assert compressparts.usable(state, changed, storage) is None  # made from other content


def test_a_maker_that_lost_its_part_stops(
    setup: tuple[Settings, Storage, list[parts.SegmentSource]],
) -> None:
    settings, storage, sources = setup
    part_id = _request_all(settings, sources)[0]
    assert parts.claim(settings.database_url, part_id, "a", sources[0].sha256)
    with session_scope(settings.database_url) as db:  # taken over meanwhile
        db.execute(update(models.Part).where(models.Part.id == part_id).values(owner="b"))
    with pytest.raises(Cancelled):
        compressparts.make(settings, storage, sources[0], part_id, "a", preset="medium")
    assert not list(storage.path(compressparts.part_key(storage, SESSION, sources[0].file)).parent
                    .glob("*.mp4"))  # nothing half-written  # fmt: skip


def test_gather_uses_done_parts_makes_free_ones_and_waits_for_live_claims(
    setup: tuple[Settings, Storage, list[parts.SegmentSource]],
) -> None:
    settings, storage, sources = setup
    url = settings.database_url
    first, second, third = _request_all(settings, sources)
    # The first is done by a part task; the second is held by a live worker that finishes
    # it while the stage gathers; the third nobody holds: the stage makes it.
    assert parts.claim(url, first, "task-1", sources[0].sha256)
    compressparts.make(settings, storage, sources[0], first, "task-1", preset="medium")
    assert parts.claim(url, second, "task-2", sources[1].sha256)
    waited = threading.Event()

    def worker_finishes() -> None:
        waited.wait(30)
        compressparts.make(settings, storage, sources[1], second, "task-2", preset="medium")

    other = threading.Thread(target=worker_finishes)
    other.start()
    beats: list[float] = []

    def heartbeat(done: float) -> None:
        beats.append(done)
        waited.set()

    keys, made_here = compressparts.gather(
        settings, storage, sources, owner="stage", preset="medium", heartbeat=heartbeat
    )
    other.join()
    assert made_here == 1  # only the third
    assert set(keys) == {s.file for s in sources}
    assert all(storage.path(k).is_file() for k in keys.values())
    assert beats  # it reported while it waited
    state = parts.state(url, SESSION, sources[1].file)
    assert state is not None and state.attempts == 1  # made once, by its task

    # A part whose file is gone (or whose segment changed) is made again.
    storage.path(keys[sources[0].file]).unlink()
    keys, made_here = compressparts.gather(
        settings, storage, sources, owner="stage-2", preset="medium"
    )
    assert made_here == 1 and storage.path(keys[sources[0].file]).is_file()


def test_a_part_of_a_bad_segment_fails_with_its_name(
    setup: tuple[Settings, Storage, list[parts.SegmentSource]],
) -> None:
    settings, storage, sources = setup
    storage.path(sources[2].storage_key).write_bytes(b"not a video at all")
    with pytest.raises(parts.PartFailed, match=sources[2].file):
        compressparts.gather(settings, storage, sources, owner="stage", preset="medium")
    state = parts.state(settings.database_url, SESSION, sources[2].file)
    assert state is not None and state.status == parts.FAILED and sources[2].file in (
        state.error or ""
    )
    outcome = compressparts.make_in_background(settings, SESSION, "screen-99999.mp4", owner="t")
    assert outcome.startswith("skipped: no segment")
