"""The outbox on its own: sequence numbers, per-session order, persistence, backoff, pacing."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from capture_agent.outbox import (
    ANNOUNCE,
    Outbox,
    SegmentConflictError,
    SessionClosedError,
)
from capture_agent.stores import Cancelled, TokenBucket
from shared.backoff import backoff_seconds
from shared.segments import SegmentKind, SegmentSpec
from shared.storage import segment_key
from tests.support import ROOT

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


def add(outbox: Outbox, session: str, file: str, content: bytes = b"x") -> int:
    sha = hashlib.sha256(content).hexdigest()
    item = outbox.add_segment(
        session,
        Path("/nowhere") / file,
        SegmentSpec(SegmentKind.AUDIO, file),
        key=segment_key(session, file),
        sha256=sha,
        size=len(content),
        mtime_ns=1,
    )
    assert item is not None
    return item.id


def seqs(outbox: Outbox, session: str) -> list[tuple[str, int]]:
    rows = outbox._query(
        "SELECT event_type, seq FROM items WHERE session_id = ? ORDER BY id", (session,)
    )
    return [(r[0], r[1]) for r in rows]


def test_sequence_numbers_continue_after_reopen_and_events_stay_identical(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(path)
    assert outbox.begin_session("s1", name="n", started_at=T0) == 0
    add(outbox, "s1", "a.m4a")
    add(outbox, "s1", "b.m4a")
    outbox.add_event("s1", "session.paused", {"at": T0.isoformat()})
    first = {item.seq: item.event_json for item in outbox.ready_announcements()}
    outbox.close()

    outbox = Outbox(path)
    assert outbox.begin_session("s1", name="again", started_at=T0) is None  # already begun
    outbox.add_event("s1", "session.resumed", {"at": T0.isoformat()})
    add(outbox, "s1", "c.m4a")
    assert outbox.allocate_seq("s1") == 6  # e.g. a heartbeat: never reused afterwards
    assert outbox.end_session("s1", ended_at=T0) == 7
    assert outbox.end_session("s1", ended_at=T0) is None
    assert outbox.allocate_seq("s1") is None  # nothing is numbered after the end
    assert seqs(outbox, "s1") == [
        ("session.started", 0),
        ("segment.stored", 1),
        ("segment.stored", 2),
        ("session.paused", 3),
        ("session.resumed", 4),
        ("segment.stored", 5),
        ("session.ended", 7),
    ]
    # The stored event (event_id, emitted_at, payload) is what will be sent, every time.
    again = {item.seq: item.event_json for item in outbox.ready_announcements()}
    assert again == first
    indexes = [
        r[0]
        for r in outbox._query("SELECT seg_index FROM items WHERE file IS NOT NULL ORDER BY id")
    ]
    assert indexes == [0, 1, 2]
    outbox.close()


def test_each_session_is_delivered_in_order_others_are_not_held_up(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite3")
    outbox.begin_session("a", name="a", started_at=T0)
    seg_a = add(outbox, "a", "a0.m4a")
    outbox.end_session("a", ended_at=T0)
    outbox.begin_session("b", name="b", started_at=T0)

    ready = outbox.ready_announcements()
    assert [(i.session_id, i.event_type) for i in ready] == [
        ("a", "session.started"),
        ("b", "session.started"),
    ]
    for item in ready:
        outbox.mark_done(item.id)
    # a's session.ended waits behind its segment, which is not stored yet.
    assert outbox.ready_announcements() == []
    assert outbox.next_upload() is not None and outbox.next_upload().id == seg_a  # type: ignore[union-attr]
    outbox.mark_stored(seg_a)
    ready = outbox.ready_announcements()
    assert [(i.event_type, i.state) for i in ready] == [("segment.stored", ANNOUNCE)]
    outbox.mark_done(seg_a)
    ready = outbox.ready_announcements()
    assert [i.event_type for i in ready] == ["session.ended"]
    assert outbox.freeze_ended(ready[0]).event().payload["segment_count"] == 1
    assert outbox.pending_count() == 1


def test_a_segment_given_up_on_is_not_counted_in_session_ended(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite3")
    outbox.begin_session("s", name="s", started_at=T0)
    good, bad = add(outbox, "s", "good.m4a"), add(outbox, "s", "bad.m4a", b"other")
    outbox.end_session("s", ended_at=T0)
    assert outbox.ready_announcements()[0].event_type == "session.started"
    outbox.mark_done(outbox.ready_announcements()[0].id)
    outbox.mark_stored(good)
    outbox.mark_done(good)
    outbox.mark_failed(bad, "SourceChanged: edited after recording")
    ended = outbox.ready_announcements()
    assert [i.event_type for i in ended] == ["session.ended"]
    assert ended[0].event().payload["segment_count"] == 2  # as recorded at end_session
    frozen = outbox.freeze_ended(ended[0])
    assert frozen.event().payload["segment_count"] == 1
    assert frozen.event().event_id == ended[0].event().event_id
    snapshot = outbox.snapshot()
    assert snapshot["failed"][0]["file"] == "bad.m4a"
    assert "edited" in snapshot["failed"][0]["error"]


def test_same_segment_twice_is_a_no_op_different_content_or_after_end_is_refused(
    tmp_path: Path,
) -> None:
    outbox = Outbox(tmp_path / "o.sqlite3")
    add(outbox, "s", "a.m4a", b"one")  # before begin_session: allowed, session row created
    same = outbox.add_segment(
        "s",
        Path("/nowhere/a.m4a"),
        SegmentSpec(SegmentKind.AUDIO, "a.m4a"),
        key=segment_key("s", "a.m4a"),
        sha256=hashlib.sha256(b"one").hexdigest(),
        size=3,
        mtime_ns=1,
    )
    assert same is None
    with pytest.raises(SegmentConflictError):
        add(outbox, "s", "a.m4a", b"two")
    outbox.end_session("s", ended_at=T0)
    with pytest.raises(SessionClosedError):
        add(outbox, "s", "late.m4a")
    with pytest.raises(SessionClosedError):
        outbox.add_event("s", "session.paused", {"at": T0.isoformat()})
    with pytest.raises(ValueError):
        add(outbox, "../escape", "a.m4a")


def test_upload_backoff_is_per_item_and_reset_when_storage_returns(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite3")
    first, second = add(outbox, "s", "a.m4a"), add(outbox, "s", "b.m4a")
    assert outbox.note_failure(first, "down", retry_at=1e12) == 1
    nxt = outbox.next_upload()
    assert nxt is not None and nxt.id == second
    outbox.note_failure(second, "down", retry_at=1e12)
    assert outbox.next_upload() is None
    assert outbox.next_upload_due() == 1e12
    outbox.reset_upload_backoff()
    nxt = outbox.next_upload()
    assert nxt is not None and nxt.id == first and nxt.attempts == 1


_KILLED_WRITER = """
import hashlib, sys
from pathlib import Path
from capture_agent.outbox import Outbox
from shared.segments import SegmentKind, SegmentSpec
from shared.storage import segment_key
outbox = Outbox(Path(sys.argv[1]))
for i in range(100000):
    name = f"seg-{i}.m4a"
    outbox.add_segment("s", Path("/x") / name, SegmentSpec(SegmentKind.AUDIO, name),
                       key=segment_key("s", name), sha256=hashlib.sha256(name.encode()).hexdigest(),
                       size=1, mtime_ns=1)
    print(i, flush=True)
"""


@pytest.mark.integration
def test_everything_acknowledged_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(path)],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert proc.stdout is not None
    acknowledged = -1
    for line in proc.stdout:
        acknowledged = int(line)
        if acknowledged >= 30:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    outbox = Outbox(path)
    rows = outbox._query("SELECT seq, seg_index FROM items ORDER BY id")
    assert len(rows) >= acknowledged + 1
    assert [(r[0], r[1]) for r in rows] == [(i, i) for i in range(len(rows))]
    # Numbering goes on where the killed process stopped.
    assert add(outbox, "s", "after.m4a") and seqs(outbox, "s")[-1] == ("segment.stored", len(rows))


@pytest.mark.parametrize("base,cap", [(1.0, 300.0), (0.05, 0.5), (2.0, 2.0)])
def test_backoff_doubles_up_to_the_cap_with_bounded_jitter(base: float, cap: float) -> None:
    previous_ceiling = 0.0
    for attempt in range(80):
        ceiling = min(cap, base * 2**attempt)
        low = backoff_seconds(attempt, base=base, cap=cap, rand=lambda: 0.0)
        high = backoff_seconds(attempt, base=base, cap=cap, rand=lambda: 1.0)
        assert low == pytest.approx(ceiling / 2) and high == pytest.approx(ceiling)
        assert ceiling >= previous_ceiling
        previous_ceiling = ceiling
        for _ in range(5):
            assert ceiling / 2 <= backoff_seconds(attempt, base=base, cap=cap) <= ceiling <= cap
        assert backoff_seconds(attempt, base=base, cap=cap, jitter=False) == ceiling
    assert backoff_seconds(10**9, base=base, cap=cap, rand=lambda: 1.0) == pytest.approx(cap)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_token_bucket_limits_the_average_rate_after_one_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1_000_000, burst=250_000, clock=clock, sleep=clock.sleep)
    for _ in range(100):
        bucket.consume(64 * 1024)  # what the copy loop does
    sent = 100 * 64 * 1024
    assert clock.now - 100.0 == pytest.approx((sent - 250_000) / 1_000_000, rel=1e-6)
    assert max(clock.slept) <= 250_000 / 1_000_000 + 1e-9

    # A single request larger than the burst is paced, not refused.
    clock2 = FakeClock()
    big = TokenBucket(1000, clock=clock2, sleep=clock2.sleep)
    big.consume(10_500)
    assert clock2.now - 100.0 == pytest.approx(9.5)

    # Idle time refills at most one burst.
    clock2.now += 3600
    before = clock2.now
    big.consume(1000)
    assert clock2.now == before
    big.consume(500)
    assert clock2.now - before == pytest.approx(0.5)


def test_token_bucket_wait_is_cancelled_by_stop() -> None:
    bucket = TokenBucket(10, burst=10)
    bucket.consume(10)
    cancel = threading.Event()
    threading.Timer(0.05, cancel.set).start()
    with pytest.raises(Cancelled):
        bucket.consume(1000, cancel)  # would take 100 s


def ship(outbox: Outbox, session: str) -> None:
    """Every item of the session through upload and announcement, as the uploader does."""
    for row in outbox._query("SELECT id, file FROM items WHERE session_id = ?", (session,)):
        if row["file"] is not None:
            outbox.mark_stored(row["id"])
        outbox.mark_done(row["id"])


def item_count(outbox: Outbox, session: str) -> int:
    return int(outbox._query("SELECT count(*) FROM items WHERE session_id = ?", (session,))[0][0])


def test_prune_forgets_only_sessions_shipped_long_enough_ago(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    for session in ("old", "open", "unshipped", "gave-up", "receipts"):
        outbox.begin_session(session, name=session, started_at=T0)
        add(outbox, session, "a.m4a")
        if session != "open":
            outbox.end_session(session, ended_at=T0)
    for session in ("old", "open", "gave-up", "receipts"):
        ship(outbox, session)
    gave_up = outbox._query(
        "SELECT id FROM items WHERE session_id = 'gave-up' AND file IS NOT NULL"
    )
    outbox.mark_failed(gave_up[0]["id"], "changed after shipping")
    later = datetime.now(UTC) + timedelta(days=1)

    # nothing is old enough yet
    assert (
        outbox.prune_shipped(
            before=datetime.now(UTC) - timedelta(days=1), keep_awaiting_receipts=False
        )
        == 0
    )
    # with receipts awaited, a shipped session whose local file is not deleted yet stays
    removed = outbox.prune_shipped(before=later, keep_awaiting_receipts=True)
    assert removed == 0
    for row in outbox._query("SELECT id FROM items WHERE session_id = 'old' AND file IS NOT NULL"):
        outbox.mark_local_deleted(row["id"])
    assert outbox.prune_shipped(before=later, keep_awaiting_receipts=True) == 3  # old: 3 events
    assert item_count(outbox, "old") == 0
    assert outbox.prune_shipped(before=later, keep_awaiting_receipts=False) == 3  # receipts
    # started + segment (+ ended): still open, not shipped, or given up on - all kept
    assert [item_count(outbox, s) for s in ("open", "unshipped", "gave-up")] == [2, 3, 3]

    # the pruned session is a tombstone: ended, sequence numbers never restart
    assert outbox.session_info("old") is not None
    with pytest.raises(SessionClosedError):
        add(outbox, "old", "a.m4a")
    outbox.close()
