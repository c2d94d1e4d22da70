"""Pause rules as the stages apply them: events and recorded times into one timeline."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.segments import SegmentKind
from shared.storage import Storage
from workers.stages.context import SegmentRef, SessionSnapshot, build_timeline

START = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


@pytest.fixture
def stored(
    media: Callable[..., Path], tmp_path: Path
) -> Callable[[str, str, float, float], SegmentRef]:
    storage_root = tmp_path / "storage"
    storage = Storage(storage_root)

    def put(kind: str, name: str, start: float, seconds: float) -> SegmentRef:
        source = (
            media("tone", f"{name}.m4a", seconds=seconds)
            if kind == "audio"
            else media("video", f"{name}.mp4", seconds=seconds, fps=5, size=(64, 48))
        )
        key = storage.segment_key("s", source.name)
        stored = storage.put_file(source, key)
        return SegmentRef(kind, source.name, key, stored.sha256, at(start), seconds)

    return put


def snapshot(refs: list[SegmentRef], pauses: Sequence[tuple[float, float]] = ()) -> SessionSnapshot:
    return SessionSnapshot(
        id="s",
        started_at=START,
        segments=tuple(refs),
        pauses=tuple((at(a), at(b)) for a, b in pauses),
    )


def test_explicit_pause_is_cut_from_both_tracks_unless_kept(
    stored: Callable[[str, str, float, float], SegmentRef], tmp_path: Path
) -> None:
    refs = [
        stored("audio", "pa1", 0.0, 2.0),
        stored("video", "pv1", 0.0, 2.0),
        stored("audio", "pa2", 12.0, 2.0),
        stored("video", "pv2", 12.0, 2.0),
    ]
    storage = Storage(tmp_path / "storage")
    cut = build_timeline(snapshot(refs, [(2.0, 12.0)]), storage, cut_pauses=True)
    assert cut.cuts == ((2.0, 12.0),) and cut.duration == pytest.approx(4.0)
    assert [s.out_start for s in cut.of_kind(SegmentKind.AUDIO)] == pytest.approx([0.0, 2.0])
    assert [s.out_start for s in cut.of_kind(SegmentKind.VIDEO)] == pytest.approx([0.0, 2.0])
    kept = build_timeline(snapshot(refs, [(2.0, 12.0)]), storage, cut_pauses=False)
    assert kept.cuts == () and kept.duration == pytest.approx(14.0)
    # without pause events the same gap (no track has media) is a pause too
    implicit = build_timeline(snapshot(refs), storage, cut_pauses=True)
    assert implicit.cuts == ((2.0, 12.0),)


def test_gap_in_one_track_is_filled_not_cut(
    stored: Callable[[str, str, float, float], SegmentRef], tmp_path: Path
) -> None:
    refs = [
        stored("audio", "ga1", 0.0, 2.0),
        stored("audio", "ga2", 6.0, 2.0),
        stored("video", "gv", 0.0, 8.0),
    ]
    timeline = build_timeline(snapshot(refs), Storage(tmp_path / "storage"), cut_pauses=True)
    assert timeline.cuts == () and timeline.duration == pytest.approx(8.0)
    assert timeline.of_kind(SegmentKind.AUDIO)[1].out_start == pytest.approx(6.0)


def test_skewed_pause_events_do_not_fail_the_session(
    stored: Callable[[str, str, float, float], SegmentRef], tmp_path: Path
) -> None:
    refs = [stored("audio", "sa1", 0.0, 2.0), stored("audio", "sa2", 5.0, 2.0)]
    timeline = build_timeline(
        # paused "before" the session started (clock skew); a resume before its pause
        snapshot(refs, [(-3.0, 1.0), (4.0, 3.0)]),
        Storage(tmp_path / "storage"),
        cut_pauses=True,
    )
    assert timeline.cuts == ((0.0, 1.0), (2.0, 5.0))
    assert timeline.duration == pytest.approx(3.0)


def test_probed_durations_are_remembered_and_reused(
    stored: Callable[[str, str, float, float], SegmentRef], tmp_path: Path
) -> None:
    refs = [stored("audio", "ra1", 0.0, 2.0), stored("video", "rv1", 0.0, 2.0)]
    storage = Storage(tmp_path / "storage")
    probed: dict[str, float] = {}
    first = build_timeline(snapshot(refs), storage, cut_pauses=True, probed=probed)
    assert set(probed) == {r.storage_key for r in refs}
    # with the durations remembered, the files are not opened again: delete them to prove it
    remembered = [
        SegmentRef(
            r.kind, r.file, r.storage_key, r.sha256, r.started_at, r.duration, probed[r.storage_key]
        )
        for r in refs
    ]
    again: dict[str, float] = {}
    for r in refs:
        storage.path(r.storage_key).write_bytes(b"")  # would fail a probe
    second = build_timeline(snapshot(remembered), storage, cut_pauses=True, probed=again)
    assert again == {} and second == first
