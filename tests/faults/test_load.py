"""Load (scenario 8): many short sessions from four agent processes at once all complete,
each stage run once, nothing left behind. The full size is ``bench/bench_load.py``
(``make bench-load``: 1,000 sessions, with throughput and latency); here a short version.

``SESSIONPIPE_FAULTS_SCALE`` (a whole number, default 1) multiplies the session count.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.harness import SCALE, FaultSystem
from tests.faults.loadgen import LoadRun, ensure_template, session_ids, timings

pytestmark = pytest.mark.integration

AGENTS = 4
SESSIONS = 12 * SCALE
#: Seconds for every session to settle: about 2 s of work each on two cores, and slack.
SETTLE_TIMEOUT_S = 120.0 + 5.0 * SESSIONS


def test_many_short_sessions_from_four_agents(system: FaultSystem, tmp_path: Path) -> None:
    system.start_workers()
    load = LoadRun(
        system, ensure_template(tmp_path / "cache"), session_ids(SESSIONS), agents=AGENTS
    )
    load.prepare()
    load.start_agents()
    try:
        statuses = system.settle(timeout=SETTLE_TIMEOUT_S)
        load.assert_agents_alive()
    finally:
        codes = load.stop_agents()
    assert codes == {f"w{i}": 0 for i in range(AGENTS)}, codes
    assert statuses == dict.fromkeys(load.ids, "completed")
    system.assert_nothing_lost()
    # Every session's end arrived and every one of its jobs finished after it.
    measured = timings(system.database_url, load.ids)
    assert sorted(t.session_id for t in measured) == sorted(load.ids)
    assert all(t.latency_s >= 0 for t in measured)
