"""``capture-agent run --forever`` killed with SIGKILL mid-upload, then started again.

Uploads are slowed by the bandwidth limit so the kill lands inside a copy. Afterwards every
segment must be in storage exactly once with the recorded checksum, nothing partial may ever
be visible under a final name (only under a temporary ``.<name>.tmp-<pid>``), and the broker must
have received exactly one ``segment.stored`` per index.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from capture_agent.agent import Agent
from shared.segments import SegmentKind, SegmentSpec
from shared.settings import Settings
from shared.storage import TEMP_MARK, Storage
from tests.capture_agent.shipping.helpers import (
    agent_settings,
    by_type,
    sha256_of,
    write_segment,
)
from tests.support import ROOT
from tests.support.cli import agent_env, capture_agent
from tests.support.servers import RedisServer
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
SEGMENTS = 4
SEGMENT_BYTES = 1_500_000
RATE = 1_000_000  # bytes/s: about 1.5 s per segment


def test_sigkill_mid_upload_then_restart_ships_every_segment_exactly_once(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    storage = Storage(tmp_path / "storage")
    storage.root.mkdir()
    state = tmp_path / "state"
    # Record the session with the facade only (no uploader in this process): the outbox is
    # all that the agent process below gets.
    recorder = Agent(
        agent_settings(state, str(storage.root)),
        shared=Settings(home=tmp_path / "home", broker_url=redis_server.url),
    )
    recorder.begin_session("crash", name="crash", started_at=T0)
    sources = []
    for i in range(SEGMENTS):
        path = write_segment(tmp_path / "rec" / f"screen-{i:04d}.mp4", SEGMENT_BYTES, i)
        recorder.add_segment(
            "crash",
            path,
            SegmentSpec(SegmentKind.VIDEO, path.name, T0 + timedelta(seconds=10 * i), 10.0),
        )
        sources.append(path)
    recorder.end_session("crash")
    recorder.close()

    env = agent_env(
        tmp_path / "home",
        broker_url=redis_server.url,
        state_dir=str(state),
        storage=str(storage.root),
        bandwidth_limit=str(RATE),
        retry_base_s="0.1",
        retry_cap_s="1",
        idle_poll_s="0.1",
        heartbeat_s="3600",
    )
    folder = storage.root / "sessions/crash/segments"
    log = (tmp_path / "agent-1.log").open("wb")
    proc = subprocess.Popen(
        capture_agent("run", "--forever", "-v"), cwd=ROOT, env=env, stdout=log, stderr=log
    )
    try:

        def mid_upload() -> list[Path]:
            """Temporary files of an upload under way, once at least one segment is done."""
            if not folder.is_dir() or not (folder / sources[0].name).exists():
                return []
            return list(folder.glob(f".*{TEMP_MARK}*"))

        temps = wait_for(mid_upload, 45, "an upload in progress after the first one", poll=0.01)
        # While it runs, status (another process) sees it through the outbox. The agent is
        # held mid-copy meanwhile (SIGSTOP: it keeps its lock and its open outbox): status
        # starts slowly on a loaded machine, and the agent could otherwise ship everything
        # before status looks (then nothing is pending and no upload is left to kill).
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            report = subprocess.run(
                capture_agent("status", "--json"),
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        assert report.returncode == 0, report.stderr
        status = json.loads(report.stdout)
        assert status["uploader"]["running"] and status["uploader"]["pid"] == proc.pid
        assert status["pending"]["segments"] >= 1
        temps = wait_for(mid_upload, 45, "an upload in progress", poll=0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()

    # Killed inside a copy: the partial data exists only under its temporary name.
    assert any(t.exists() for t in temps) or list(folder.glob(f".*{TEMP_MARK}*"))
    finished = [p for p in sources if (folder / p.name).exists()]
    assert 1 <= len(finished) < SEGMENTS
    for source in finished:
        assert sha256_of(folder / source.name) == sha256_of(source)
    first_inode = (folder / sources[0].name).stat().st_ino
    before = by_type(redis_server.messages(), "segment.stored")
    assert len(before) == len(finished)

    result = subprocess.run(
        capture_agent("run", "--timeout", "50"),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "outbox empty" in result.stdout

    for source in sources:
        assert sha256_of(folder / source.name) == sha256_of(source)
    assert (folder / sources[0].name).stat().st_ino == first_inode  # not copied again
    assert not list(folder.glob(f".*{TEMP_MARK}*"))
    events = [e for e in redis_server.messages() if e["session_id"] == "crash"]
    stored = by_type(events, "segment.stored")
    assert sorted(e["payload"]["index"] for e in stored) == list(range(SEGMENTS))
    assert len({e["seq"] for e in events}) == len(events) == SEGMENTS + 2
    (ended,) = by_type(events, "session.ended")
    assert ended["payload"]["segment_count"] == SEGMENTS
    assert ended["seq"] == SEGMENTS + 1
