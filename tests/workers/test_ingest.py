"""Ingest of hostile events: refused with a bounded line naming them, never stored.

``workers.ingest.ingest`` runs in this process on SQLite and local storage; tasks it would
send are captured.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from celery import Celery
from sqlalchemy import func, select

from shared import events, models
from shared.db import session_scope
from shared.events import MAX_EVENT_BYTES, MAX_EVENT_FIELDS, SegmentStored
from shared.receipts import read_receipt
from shared.segments import SegmentKind
from shared.settings import Settings
from shared.storage import Storage
from workers.ingest import MAX_REJECTION_CHARS, ingest

STARTED = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


class CapturingApp:
    """Stands in for the Celery app: the tasks ingest sends are recorded, not published."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[Any]]] = []

    def send_task(self, name: str, args: list[Any] | None = None, **_options: Any) -> None:
        self.sent.append((name, list(args or [])))


@pytest.fixture
def settings(tmp_path: Path, sqlite_url: str) -> Settings:
    return Settings(home=tmp_path / "home", database_url=sqlite_url)


def apply(settings: Settings, event: Any) -> str:
    return ingest(cast(Celery, CapturingApp()), settings, event)


def segment_payload(session_id: str, file: str = "mic-0000.m4a") -> dict[str, Any]:
    return {
        "kind": "audio",
        "file": file,
        "key": f"sessions/{session_id}/segments/{file}",
        "sha256": "0" * 64,
        "size": 3,
        "index": 0,
    }


def raw(type_: str = "heartbeat", payload: Any = None, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": "hostile0",
        "type": type_,
        "session_id": "target",
        "seq": 1,
        "payload": {} if payload is None else payload,
        **fields,
    }


def counts(settings: Settings) -> tuple[int, int, int]:
    with session_scope(settings.database_url) as db:
        return (
            db.execute(select(func.count()).select_from(models.Event)).scalar_one(),
            db.execute(select(func.count()).select_from(models.Session)).scalar_one(),
            db.execute(select(func.count()).select_from(models.Segment)).scalar_one(),
        )


def deep(levels: int) -> dict[str, Any]:
    top: dict[str, Any] = {}
    inner = top
    for _ in range(levels):
        inner["a"] = {}
        inner = inner["a"]
    return top


HOSTILE_EVENTS: dict[str, tuple[Any, str]] = {
    "10-mb-payload": (raw(payload={"blob": "x" * 10_000_000}), f"more than {MAX_EVENT_BYTES}"),
    "5000-fields": (
        raw(payload={f"f{i}": i for i in range(5000)}),
        f"more than {MAX_EVENT_FIELDS} fields",
    ),
    "10000-deep": (raw(payload=deep(10_000)), "nested deeper"),
    "dotdot-session": (raw(session_id="../etc"), "invalid session id '../etc'"),
    "nul-session": (raw(session_id="a\x00b"), "NUL"),
    "long-session": (raw(session_id="s" * 10_000), "10000 characters"),
    "control-session": (raw(session_id="a\x1b[2Jb"), "control character"),
    "long-event-id": (raw(event_id="e" * 10_000), "event_id"),
    "huge-seq": (raw(seq=2**40), "seq"),
    "other-sessions-key": (
        raw("segment.stored", segment_payload("victim")),
        "not its session's key",
    ),
    "dotdot-file": (
        raw(
            "segment.stored",
            {**segment_payload("target"), "file": "../x.m4a", "key": "sessions/target/x.m4a"},
        ),
        "'..'",
    ),
    "absolute-key": (
        raw("segment.stored", {**segment_payload("target"), "key": "/etc/passwd"}),
        "absolute",
    ),
    "absurd-size": (raw("segment.stored", {**segment_payload("target"), "size": 10**30}), "size"),
    "billion-segments": (raw("session.ended", {"segment_count": 10**9}), "segment_count"),
    "bad-time": (raw("session.started", {"started_at": "yesterday"}), "ISO 8601"),
    "nul-name": (raw("session.started", {"name": "a\x00b"}), "name"),
    "long-priority": (raw("session.started", {"priority": "p" * 1000}), "priority"),
    "a-list": ([1, 2, 3], "[1, 2, 3]"),
    "a-string": ("x" * 10_000, "10000 characters"),
    "nothing": (None, "None"),
}


@pytest.mark.parametrize("name", list(HOSTILE_EVENTS))
def test_hostile_events_are_rejected_naming_them_and_nothing_is_stored(
    settings: Settings, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    event, needle = HOSTILE_EVENTS[name]
    with caplog.at_level(logging.ERROR, logger="workers.ingest"):
        result = apply(settings, event)
    assert result.startswith("rejected "), result
    assert needle in result, result
    assert len(result) <= MAX_REJECTION_CHARS
    if isinstance(event, dict) and len(str(event.get("session_id"))) < 100:
        assert repr(event["session_id"]) in result
    logged = [r.getMessage() for r in caplog.records]
    assert logged == [result]
    assert counts(settings) == (0, 0, 0)


def test_a_session_is_unaffected_by_hostile_events_about_it(
    settings: Settings, tmp_path: Path
) -> None:
    storage = Storage(settings.storage)
    source = tmp_path / "mic-0000.m4a"
    source.write_bytes(b"abc")
    stored = storage.put_file(source, storage.segment_key("victim", "mic-0000.m4a"))
    segment = SegmentStored(
        kind=SegmentKind.AUDIO,
        file="mic-0000.m4a",
        key=stored.key,
        sha256=stored.sha256,
        size=stored.size,
        index=0,
    )
    good = [
        events.session_started("victim", 0, name="victim", started_at=STARTED),
        events.segment_stored("victim", 1, segment),
    ]
    for event in good:
        assert apply(settings, event.model_dump(mode="json")) == "applied"
    before = counts(settings)
    for event, _ in HOSTILE_EVENTS.values():
        apply(settings, event)
    # The same seq as a stored event, or a segment claiming the victim's file, changes nothing.
    for hostile in (
        raw("session.ended", {"segment_count": 10**9}, session_id="victim", seq=1),
        raw("segment.stored", segment_payload("victim"), session_id="evil", seq=1),
    ):
        assert apply(settings, hostile).startswith("rejected ")
    assert counts(settings) == before
    with session_scope(settings.database_url) as db:
        session = db.get(models.Session, "victim")
        assert session is not None and session.expected_segments is None
        assert session.name == "victim" and session.status == "recording"
    assert read_receipt(storage, "victim", 0) is not None
    assert storage.path(stored.key).read_bytes() == b"abc"


def test_a_symlink_put_in_a_segments_place_gets_no_receipt_and_ingest_goes_on(
    settings: Settings, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.m4a"
    secret.write_bytes(b"secret")
    storage = Storage(settings.storage)
    key = storage.segment_key("linked", "mic-0000.m4a")
    (storage.root / key).parent.mkdir(parents=True)
    (storage.root / key).symlink_to(secret)
    payload = {
        **segment_payload("linked"),
        "sha256": hashlib.sha256(b"secret").hexdigest(),
        "size": 6,
    }
    event = raw("segment.stored", payload, session_id="linked")
    assert apply(settings, event) == "applied"
    assert read_receipt(storage, "linked", 0) is None
    ended = raw("session.ended", {"segment_count": 1}, session_id="linked", seq=2, event_id="e2")
    assert apply(settings, ended) == "applied"
