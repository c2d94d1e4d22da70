"""The replay tool end to end: a tiny session written into a watched folder as a recorder
writes it, shipped by the real ``capture-agent watch`` to real workers, timed from its end."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.replay import LiveSystem, replay_live
from synthetic.plan import SyntheticSpec
from synthetic.session import record_synthetic_session

pytestmark = pytest.mark.integration

#: 30 s in three 10-second segments per track, small, replayed in 3 s.
TINY = SyntheticSpec(
    duration=30.0, segment_seconds=10.0, audio_holes=(), width=160, height=90, fps=10
)
SPEED = 10.0
#: The whole replay and processing of TINY must finish within this many seconds.
SETTLE_TIMEOUT_S = 60.0


def test_a_replayed_session_completes_and_its_times_are_in_order(
    tmp_path: Path, pg_url: str, redis_url: str
) -> None:
    source = record_synthetic_session(
        tmp_path / "source",
        session_id="tiny",
        name="tiny",
        spec=TINY,
        started_at=datetime(2026, 12, 1, 9, 0, tzinfo=UTC),
    )
    system = LiveSystem(tmp_path / "system", database_url=pg_url, broker_url=redis_url)
    agent = system.agent(tmp_path / "watched")
    try:
        record, times, result = replay_live(
            source,
            agent=agent,
            watched=tmp_path / "watched",
            database_url=pg_url,
            speed=SPEED,
            session_id=f"replay-{tmp_path.name[-20:]}",
            media_workers=1,
            timeout=SETTLE_TIMEOUT_S,
            alive=system.assert_alive,
        )
    finally:
        agent.stop()
        system.stop()

    assert result.status == "completed", (result, agent.log()[-2000:])
    assert result.recorded_s == pytest.approx(30.0)
    # the recorder's side: every file written, at its recorded end / SPEED, before the end
    assert record.started is not None and record.ended is not None
    assert len(record.segments) == 6
    for write in record.segments:
        assert write.opened is not None and write.closed is not None
        assert record.started <= write.opened <= write.closed <= record.ended
        late = (write.closed - record.started).total_seconds() - write.scheduled_close_s
        assert -0.05 < late < 1.0, write
    assert (record.ended - record.started).total_seconds() == pytest.approx(3.0, abs=1.0)
    # the pipeline's side: ended < seen < playable <= finalized <= complete
    assert times.ended_received is not None and times.playable is not None
    assert record.ended < times.ended_received < times.playable
    assert times.compressed is not None and times.finalized is not None
    assert times.playable <= times.finalized and times.compressed <= times.finalized
    assert times.complete is not None and times.finalized <= times.complete
    assert result.end_to_playable_s is not None and result.end_to_complete_s is not None
    assert 0 < result.end_to_playable_s <= result.end_to_complete_s < SETTLE_TIMEOUT_S
    assert result.compress_minutes_per_minute is not None
    assert result.compress_minutes_per_minute > 0
    assert result.max_lag_s < 1.0
