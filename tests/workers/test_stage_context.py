"""Planning a stage's timeline from stored segments: hostile ones fail naming themselves."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.events import MAX_SESSION_SECONDS
from shared.storage import Storage, StorageError
from synthetic.clips import write_tone_segment
from workers.media import MediaError
from workers.stages.context import SegmentRef, SessionSnapshot, build_timeline

STARTED = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def tone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tone_segment(tmp_path_factory.mktemp("tone") / "tone.m4a", seconds=1.0)


def stored(storage: Storage, session_id: str, file: str, source: Path | None = None) -> SegmentRef:
    key = storage.segment_key(session_id, file)
    path = storage.root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    if source is not None:
        shutil.copy(source, path)
    return SegmentRef(
        kind="audio", file=file, storage_key=key, sha256="0" * 64, started_at=None, duration=None
    )


def plan(storage: Storage, *refs: SegmentRef) -> None:
    snapshot = SessionSnapshot(id="hostile", started_at=STARTED, segments=refs)
    build_timeline(snapshot, storage, cut_pauses=True)


def test_a_playlist_segment_fails_naming_segment_and_session(tmp_path: Path, tone: Path) -> None:
    storage = Storage(tmp_path / "storage")
    good = stored(storage, "hostile", "mic-0000.m4a", tone)
    bad = stored(storage, "hostile", "mic-0001.m4a")
    (storage.root / bad.storage_key).write_text("ffconcat version 1.0\nfile mic-0000.m4a\n")
    with pytest.raises(MediaError) as info:
        plan(storage, good, bad)
    message = str(info.value)
    assert message.startswith("segment 'mic-0001.m4a' of session 'hostile': ")
    assert "ffconcat playlist" in message


def test_a_segment_replaced_by_a_symlink_leading_outside_fails_naming_it(
    tmp_path: Path, tone: Path
) -> None:
    storage = Storage(tmp_path / "storage")
    ref = stored(storage, "hostile", "mic-0000.m4a")
    (storage.root / ref.storage_key).symlink_to(tone)  # a real file, outside the root
    with pytest.raises(StorageError) as info:
        plan(storage, ref)
    assert str(info.value).startswith("segment 'mic-0000.m4a' of session 'hostile': ")
    assert "outside the storage root" in str(info.value)


def test_a_segment_placed_absurdly_far_after_the_start_fails_naming_it(
    tmp_path: Path, tone: Path
) -> None:
    """Without the bound, a segment 'recorded' in 9999 would fill eight millennia."""
    storage = Storage(tmp_path / "storage")
    first = stored(storage, "hostile", "mic-0000.m4a", tone)
    far = stored(storage, "hostile", "mic-0001.m4a", tone)
    late = STARTED + timedelta(seconds=MAX_SESSION_SECONDS + 1)
    far = SegmentRef(**{**far.__dict__, "started_at": late})
    with pytest.raises(MediaError, match=r"^segment 'mic-0001.m4a' of session 'hostile' starts"):
        plan(storage, first, far)
    within = SegmentRef(**{**far.__dict__, "started_at": STARTED + timedelta(seconds=5)})
    plan(storage, first, within)
