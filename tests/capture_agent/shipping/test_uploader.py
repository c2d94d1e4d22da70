"""The agent shipping to a local storage directory and a real redis-server broker.

Storage "unreachable" for root (tests run as root, so permissions cannot be used): the
storage root directory is moved away and a regular file put at its path. Every write below
it then fails with ENOTDIR whatever the privileges, exactly like a share that is not mounted.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from capture_agent.agent import Agent
from shared.receipts import write_receipt
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
SEGMENT_BYTES = 200_000


def make_agent(tmp_path: Path, redis_server: RedisServer, **overrides: Any) -> Agent:
    storage = tmp_path / "storage"
    storage.mkdir(exist_ok=True)
    settings = agent_settings(tmp_path / "state", str(storage), **overrides)
    return Agent(settings, shared=Settings(home=tmp_path / "home", broker_url=redis_server.url))


def add(agent: Agent, tmp_path: Path, session: str, index: int, size: int = SEGMENT_BYTES) -> Path:
    path = write_segment(tmp_path / "rec" / session / f"mic-{index:04d}.m4a", size, index)
    agent.add_segment(
        session,
        path,
        SegmentSpec(SegmentKind.AUDIO, path.name, T0 + timedelta(seconds=10 * index), 10.0),
    )
    return path


def session_events(redis_server: RedisServer, session: str) -> list[dict[str, Any]]:
    return [e for e in redis_server.messages() if e["session_id"] == session]


def assert_delivered_once(events: list[dict[str, Any]], count: int) -> None:
    """One segment.stored per index, unique seqs, session.ended last with the right count."""
    stored = by_type(events, "segment.stored")
    assert sorted(e["payload"]["index"] for e in stored) == list(range(count))
    seqs = [e["seq"] for e in events]
    assert len(seqs) == len(set(seqs)), Counter(seqs)
    assert len({e["event_id"] for e in events}) == len(events)
    ended = by_type(events, "session.ended")
    assert len(ended) == 1 and ended[0]["payload"]["segment_count"] == count
    assert ended[0]["seq"] > max(e["seq"] for e in stored)


def test_storage_unreachable_while_recording_then_everything_arrives(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    agent = make_agent(tmp_path, redis_server)
    storage = Storage(tmp_path / "storage")
    agent.start()
    try:
        agent.begin_session("down", name="storage down", started_at=T0)
        sources = [add(agent, tmp_path, "down", i) for i in range(2)]
        assert agent.wait_idle(30)

        # The share goes away: a regular file where the storage root directory was.
        away = tmp_path / "storage.away"
        os.rename(storage.root, away)
        storage.root.write_bytes(b"not a directory")
        with pytest.raises(OSError):
            (storage.root / "sessions").mkdir()  # really fails, even for root

        pending = []
        for i in range(2, 6):
            sources.append(add(agent, tmp_path, "down", i))
            pending.append(agent.status()["pending"]["segments"])
        assert pending == [1, 2, 3, 4], pending  # the outbox grows, nothing is lost
        agent.end_session("down", ended_at=T0 + timedelta(minutes=1))
        status = wait_for(
            lambda: (s := agent.status())["last_error"] and s["retrying"] and s,
            30,
            "the storage error to be reported",
        )
        assert status["last_error"]["where"] == "storage"
        assert "not a reachable directory" in status["last_error"]["message"]
        assert status["pending"] == {
            "segments": 4,
            "bytes": 4 * SEGMENT_BYTES,
            "events": 5,
        }
        assert [r["session_id"] for r in status["recording"]] == []  # ended, still shipping
        before = {
            e["payload"]["index"]
            for e in by_type(session_events(redis_server, "down"), "segment.stored")
        }
        assert before == {0, 1}

        # The share is back.
        storage.root.unlink()
        os.rename(away, storage.root)
        assert agent.wait_idle(30), agent.status()
    finally:
        agent.stop(drain=False)

    for i, source in enumerate(sources):
        stored = storage.path(f"sessions/down/segments/{source.name}")
        assert sha256_of(stored) == sha256_of(source), i
    assert not list(storage.root.rglob(f".*{TEMP_MARK}*"))
    events = session_events(redis_server, "down")
    assert_delivered_once(events, 6)
    for event in by_type(events, "segment.stored"):
        source = sources[event["payload"]["index"]]
        assert event["payload"]["sha256"] == sha256_of(source)
        assert event["payload"]["size"] == SEGMENT_BYTES
    assert agent.status()["last_storage_contact"] is not None


def test_broker_down_segments_still_reach_storage_events_follow_in_order(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    agent = make_agent(tmp_path, redis_server)
    storage = Storage(tmp_path / "storage")
    agent.start()
    try:
        agent.begin_session("nobroker", name="n", started_at=T0)
        assert agent.wait_idle(30)
        redis_server.kill()
        sources = [add(agent, tmp_path, "nobroker", i) for i in range(3)]
        agent.pause("nobroker", at=T0 + timedelta(seconds=5))
        agent.resume("nobroker", at=T0 + timedelta(seconds=8))
        agent.end_session("nobroker")
        # Segments leave the Mac even though nobody can be told yet.
        keys = [f"sessions/nobroker/segments/{source.name}" for source in sources]
        wait_for(lambda: all(storage.exists(k) for k in keys), 30, "the segments in storage")
        status = wait_for(lambda: (s := agent.status())["last_error"] and s, 30, "the broker error")
        assert status["last_error"]["where"] == "broker"
        assert status["pending"]["segments"] == 0 and status["pending"]["events"] == 6
        redis_server.start()
        assert agent.wait_idle(30), agent.status()
    finally:
        agent.stop(drain=False)
    events = session_events(redis_server, "nobroker")
    assert [e["type"] for e in sorted(events, key=lambda e: e["seq"])] == [
        "segment.stored",
        "segment.stored",
        "segment.stored",
        "session.paused",
        "session.resumed",
        "session.ended",
    ]
    assert [e["seq"] for e in sorted(events, key=lambda e: e["seq"])] == [1, 2, 3, 4, 5, 6]


def test_a_file_already_in_storage_is_not_copied_again(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    agent = make_agent(tmp_path, redis_server)
    storage = Storage(tmp_path / "storage")
    source = write_segment(tmp_path / "rec" / "screen-0000.mp4", SEGMENT_BYTES, 7)
    already = storage.put_file(source, "sessions/again/segments/screen-0000.mp4")
    inode = storage.path(already.key).stat().st_ino
    leftover = storage.path(already.key).with_name(".screen-0000.mp4.k1ll3d.part")
    leftover.write_bytes(b"an interrupted copy")
    agent.add_segment("again", source, SegmentSpec(SegmentKind.VIDEO, "screen-0000.mp4", T0, 10.0))
    agent.start()
    try:
        assert agent.wait_idle(30)
    finally:
        agent.stop(drain=False)
    assert storage.path(already.key).stat().st_ino == inode
    assert not leftover.exists()
    (event,) = session_events(redis_server, "again")
    assert event["payload"]["sha256"] == already.sha256 and event["seq"] == 0


def test_a_segment_changed_after_it_was_recorded_is_reported_never_shipped(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    agent = make_agent(tmp_path, redis_server)
    agent.begin_session("edit", name="n", started_at=T0)
    good = add(agent, tmp_path, "edit", 0)
    edited = add(agent, tmp_path, "edit", 1)
    edited.write_bytes(b"overwritten after recording")
    agent.end_session("edit")
    agent.start()
    try:
        assert agent.wait_idle(30)
        status = agent.status()
    finally:
        agent.stop(drain=False)
    assert [(f["file"], f["index"]) for f in status["failed"]] == [(edited.name, 1)]
    assert "changed" in status["failed"][0]["error"]
    assert status["last_error"]["where"] == "source"
    storage = Storage(tmp_path / "storage")
    assert storage.exists(f"sessions/edit/segments/{good.name}")
    assert not storage.exists(f"sessions/edit/segments/{edited.name}")
    events = session_events(redis_server, "edit")
    assert [e["payload"]["index"] for e in by_type(events, "segment.stored")] == [0]
    (ended,) = by_type(events, "session.ended")
    assert ended["payload"]["segment_count"] == 1  # the workers will not wait for it


def test_local_segments_are_deleted_only_after_a_matching_receipt(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    agent = make_agent(tmp_path, redis_server, delete_after_confirm=True)
    storage = Storage(tmp_path / "storage")
    sources = [add(agent, tmp_path, "rcpt", i) for i in range(3)]
    agent.end_session("rcpt")
    agent.start()
    try:
        assert agent.wait_idle(30)
        assert agent.status()["not_yet_confirmed"] == 3
        events = by_type(session_events(redis_server, "rcpt"), "segment.stored")
        payloads = {e["payload"]["index"]: e["payload"] for e in events}
        # What workers/ingest.py does once it applied a segment.stored:
        write_receipt(storage, "rcpt", 0, payloads[0]["sha256"])
        write_receipt(storage, "rcpt", 1, "0" * 64)  # not what was shipped: keep the file
        wait_for(lambda: not sources[0].exists(), 30, "the confirmed segment to be deleted")
        assert sources[1].exists() and sources[2].exists()
        assert agent.status()["not_yet_confirmed"] == 2
        write_receipt(storage, "rcpt", 2, payloads[2]["sha256"])
        wait_for(lambda: not sources[2].exists(), 30, "the second confirmed segment")
        assert sources[1].exists()
    finally:
        agent.stop(drain=False)
    assert storage.verify(payloads[0]["key"], payloads[0]["sha256"])


def test_status_cli_reads_the_outbox_while_the_agent_runs_and_heartbeats_do_not_collide(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    agent = make_agent(tmp_path, redis_server, heartbeat_s=0.1, bandwidth_limit=200_000)
    agent.begin_session("live", name="Live one", started_at=T0)
    add(agent, tmp_path, "live", 0, size=600_000)
    agent.start()
    env = agent_env(
        tmp_path / "home",
        broker_url=redis_server.url,
        state_dir=str(tmp_path / "state"),
        storage=str(tmp_path / "storage"),
    )
    try:
        result = subprocess.run(
            capture_agent("status", "--json"),
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["uploader"]["running"] is True
        assert report["uploader"]["pid"] == os.getpid()
        assert [(r["session_id"], r["name"]) for r in report["recording"]] == [("live", "Live one")]
        text = subprocess.run(
            capture_agent("status"),
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert text.returncode == 0 and "live" in text.stdout and "pending upload" in text.stdout
        wait_for(
            lambda: len(by_type(session_events(redis_server, "live"), "heartbeat")) >= 2,
            30,
            "heartbeats",
        )
        add(agent, tmp_path, "live", 1)
        agent.end_session("live")
        assert agent.wait_idle(30)
    finally:
        agent.stop(drain=False)
    events = session_events(redis_server, "live")
    seqs = [e["seq"] for e in events]
    assert len(seqs) == len(set(seqs))  # heartbeats never take a seq an event needs
    beat = by_type(events, "heartbeat")[0]["payload"]
    assert {
        "segments_pending",
        "bytes_pending",
        "segments_uploaded",
        "last_error",
        "uptime_s",
    } <= set(beat)
    assert_delivered_once([e for e in events if e["type"] != "heartbeat"], 2)
    heartbeats_after_end = [
        e
        for e in by_type(events, "heartbeat")
        if e["seq"] > by_type(events, "session.ended")[0]["seq"]
    ]
    assert heartbeats_after_end == []
