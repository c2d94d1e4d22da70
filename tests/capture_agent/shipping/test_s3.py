"""The agent shipping to a real S3-compatible server (moto's server mode on 127.0.0.1).

The server runs in this process (``ThreadedMotoServer``) so it can be stopped, which closes
its port exactly like an unreachable endpoint, and started again on the same port with its
buckets intact.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from capture_agent.agent import Agent
from capture_agent.stores import (
    DestinationConflict,
    S3Store,
    SourceChanged,
    StorageUnavailable,
)
from shared.receipts import receipt_bytes, receipt_key
from shared.segments import SegmentKind, SegmentSpec
from shared.settings import Settings
from shared.storage import segment_key
from tests.capture_agent.shipping.helpers import (
    agent_settings,
    by_type,
    sha256_of,
    write_segment,
)
from tests.support.servers import RedisServer, free_port
from tests.support.waiting import wait_for

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
SEGMENT_BYTES = 150_000


class MotoS3:
    def __init__(self) -> None:
        self.port = free_port()
        self.server: ThreadedMotoServer | None = None
        self.bucket = f"sessionpipe-{uuid.uuid4().hex[:12]}"  # moto state is per process

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def client(self) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")

    def object_keys(self) -> list[str]:
        listing = self.client().list_objects_v2(Bucket=self.bucket)
        return sorted(obj["Key"] for obj in listing.get("Contents", []))

    def sha256(self, key: str) -> str:
        body = self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return hashlib.sha256(body).hexdigest()


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoS3]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    server = MotoS3()
    server.start()
    server.client().create_bucket(Bucket=server.bucket)
    try:
        yield server
    finally:
        server.stop()


def make_agent(tmp_path: Path, s3: MotoS3, redis_server: RedisServer, **overrides: Any) -> Agent:
    settings = agent_settings(
        tmp_path / "state",
        f"s3://{s3.bucket}/team-a",
        s3_endpoint_url=s3.endpoint,
        **overrides,
    )
    return Agent(settings, shared=Settings(home=tmp_path / "home", broker_url=redis_server.url))


def add(agent: Agent, tmp_path: Path, session: str, index: int, size: int = SEGMENT_BYTES) -> Path:
    path = write_segment(tmp_path / "rec" / session / f"screen-{index:04d}.mp4", size, index)
    agent.add_segment(
        session,
        path,
        SegmentSpec(SegmentKind.VIDEO, path.name, T0 + timedelta(seconds=10 * index), 10.0),
    )
    return path


@pytest.mark.integration
def test_s3_down_while_recording_then_everything_arrives_once(
    tmp_path: Path, s3: MotoS3, redis_server: RedisServer
) -> None:
    agent = make_agent(tmp_path, s3, redis_server)
    agent.start()
    try:
        agent.begin_session("s3down", name="n", started_at=T0)
        sources = [add(agent, tmp_path, "s3down", i) for i in range(2)]
        assert agent.wait_idle(30)
        s3.stop()
        grown = []
        for i in range(2, 5):
            sources.append(add(agent, tmp_path, "s3down", i))
            grown.append(agent.status()["pending"]["segments"])
        assert grown == [1, 2, 3]
        agent.end_session("s3down")
        status = wait_for(
            lambda: (s := agent.status())["last_error"] and s, 30, "the S3 error to be reported"
        )
        assert status["last_error"]["where"] == "storage"
        assert status["pending"]["segments"] == 3
        s3.start()
        assert agent.wait_idle(45), agent.status()
    finally:
        agent.stop(drain=False)

    keys = s3.object_keys()
    assert keys == [f"team-a/{segment_key('s3down', p.name)}" for p in sources]  # no temp keys
    for source in sources:
        assert s3.sha256(f"team-a/{segment_key('s3down', source.name)}") == sha256_of(source)
    events = [e for e in redis_server.messages() if e["session_id"] == "s3down"]
    stored = by_type(events, "segment.stored")
    assert sorted(e["payload"]["index"] for e in stored) == [0, 1, 2, 3, 4]
    assert all(e["payload"]["key"] == segment_key("s3down", e["payload"]["file"]) for e in stored)
    assert len({e["seq"] for e in events}) == len(events)
    assert by_type(events, "session.ended")[0]["payload"]["segment_count"] == 5


def test_s3_store_verifies_cleans_temps_and_refuses_conflicts(tmp_path: Path, s3: MotoS3) -> None:
    store = S3Store(f"s3://{s3.bucket}/p", endpoint_url=s3.endpoint)
    source = write_segment(tmp_path / "a.m4a", 100_000, 1)
    sha = sha256_of(source)
    key = segment_key("unit", "a.m4a")
    stale = f"p/sessions/unit/segments/.a.m4a.{uuid.uuid4().hex}.part"
    s3.client().put_object(Bucket=s3.bucket, Key=stale, Body=b"half of it")  # a crash leftover

    assert not store.exists(key, sha)
    store.put(source, key, sha, 100_000)
    assert store.exists(key, sha) and not store.exists(key, "0" * 64)
    assert s3.object_keys() == [f"p/{key}"]
    assert store.read_bytes(key) == source.read_bytes()
    store.put(source, key, sha, 100_000)  # already there: nothing to do
    leftover = f"p/sessions/unit/segments/.a.m4a.{uuid.uuid4().hex}.part"
    s3.client().put_object(Bucket=s3.bucket, Key=leftover, Body=b"killed before delete")
    store.cleanup(key)
    assert s3.object_keys() == [f"p/{key}"]

    other = write_segment(tmp_path / "b.m4a", 100_000, 2)
    with pytest.raises(DestinationConflict):
        store.put(other, key, sha256_of(other), 100_000)
    changed_key = segment_key("unit", "b.m4a")
    with pytest.raises(SourceChanged):
        store.put(other, changed_key, sha, 100_000)  # not the content that was recorded
    assert s3.object_keys() == [f"p/{key}"]

    s3.stop()
    with pytest.raises(StorageUnavailable):
        store.exists(key, sha)
    s3.start()
    assert store.exists(key, sha)


@pytest.mark.integration
def test_s3_receipt_lets_the_agent_delete_its_copy(
    tmp_path: Path, s3: MotoS3, redis_server: RedisServer
) -> None:
    agent = make_agent(tmp_path, s3, redis_server, delete_after_confirm=True)
    sources = [add(agent, tmp_path, "s3rcpt", i) for i in range(2)]
    agent.end_session("s3rcpt")
    agent.start()
    try:
        assert agent.wait_idle(30)
        sha = sha256_of(sources[1])
        s3.client().put_object(
            Bucket=s3.bucket,
            Key=f"team-a/{receipt_key('s3rcpt', 1)}",
            Body=receipt_bytes("s3rcpt", 1, sha),
        )
        wait_for(lambda: not sources[1].exists(), 30, "the confirmed segment to be deleted")
        assert sources[0].exists()
    finally:
        agent.stop(drain=False)


@pytest.mark.integration
def test_stopping_mid_upload_leaves_no_partial_object_and_resumes(
    tmp_path: Path, s3: MotoS3, redis_server: RedisServer
) -> None:
    agent = make_agent(tmp_path, s3, redis_server, bandwidth_limit=100_000)
    source = add(agent, tmp_path, "s3stop", 0, size=1_000_000)  # about 10 s at this rate
    agent.start()
    wait_for(lambda: agent.status()["uploader"]["running"], 30, "the uploader")
    wait_for(
        lambda: (s3.server is not None) and agent.outbox.next_upload() is not None,
        5,
        "the upload to begin",
    )
    assert not agent.stop(drain=False)  # cancelled mid-upload: still pending
    final = f"team-a/{segment_key('s3stop', source.name)}"
    assert final not in s3.object_keys()
    agent.outbox.close()

    again = make_agent(tmp_path, s3, redis_server)
    again.start()
    try:
        assert again.wait_idle(30)
    finally:
        again.stop(drain=False)
    assert s3.object_keys() == [final]
    assert s3.sha256(final) == sha256_of(source)
    events = [e for e in redis_server.messages() if e["session_id"] == "s3stop"]
    assert [e["payload"]["index"] for e in by_type(events, "segment.stored")] == [0]
