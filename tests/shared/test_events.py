"""Event validation: what the workers accept from the broker, bounded before it is stored."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from shared import events
from shared.events import (
    MAX_EVENT_BYTES,
    MAX_EVENT_DEPTH,
    MAX_EVENT_FIELDS,
    MAX_SEGMENT_BYTES,
    MAX_SEGMENTS,
    MAX_SEQ,
    Event,
    SegmentStored,
)
from shared.segments import SegmentKind

STARTED = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
SEGMENT: dict[str, Any] = {
    "kind": "audio",
    "file": "mic-0001.m4a",
    "key": "sessions/s1/segments/mic-0001.m4a",
    "sha256": "0" * 64,
    "size": 1234,
    "index": 0,
    "started_at": "2026-11-21T10:00:00+00:00",
    "duration": 10.0,
}


def envelope(type_: str = "heartbeat", payload: Any = None, **fields: Any) -> dict[str, Any]:
    """An event as it arrives from the broker (JSON-decoded)."""
    return {
        "schema_version": 1,
        "event_id": "e" * 32,
        "type": type_,
        "session_id": "s1",
        "seq": 1,
        "emitted_at": "2026-11-21T10:00:00+00:00",
        "payload": {} if payload is None else payload,
        **fields,
    }


def refused(raw: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        Event.model_validate(raw)
    message = str(info.value)
    assert len(message) < 3000, message[:500]
    return message


def test_the_events_the_agent_sends_are_accepted() -> None:
    stored = SegmentStored.model_validate(SEGMENT)
    made = [
        events.session_started("s1", 0, name="Stand-up", started_at=STARTED, priority="high"),
        events.segment_stored("s1", 1, stored),
        Event(type="session.paused", session_id="s1", seq=2, payload={"at": STARTED.isoformat()}),
        Event(type="session.resumed", session_id="s1", seq=3, payload={"at": STARTED.isoformat()}),
        events.session_ended("s1", 4, segment_count=1, ended_at=STARTED),
        Event(
            type="heartbeat",
            session_id="s1",
            seq=5,
            payload={"host": "mac", "pid": 1, "bytes_pending": 10**12, "last_error": None},
        ),
    ]
    for event in made:
        wire = json.loads(json.dumps(event.model_dump(mode="json")))
        assert Event.model_validate(wire) == event
        assert Event.model_validate_json(event.model_dump_json()) == event
    assert made[1].segment() == stored


def test_a_10_mb_payload_is_refused_naming_the_event_and_the_limit() -> None:
    message = refused(envelope(payload={"blob": "x" * 10_000_000}))
    assert f"more than {MAX_EVENT_BYTES}" in message
    assert repr("e" * 32) in message and "'s1'" in message


def test_the_limit_holds_for_json_input_too() -> None:
    raw = json.dumps(envelope(payload={"blob": "x" * (MAX_EVENT_BYTES + 1)}))
    with pytest.raises(ValidationError, match=f"more than {MAX_EVENT_BYTES}"):
        Event.model_validate_json(raw)


@pytest.mark.parametrize(
    "payload",
    [
        {f"field{i}": i for i in range(5000)},
        {"list": list(range(5000))},
        {"a": [{"b": i} for i in range(MAX_EVENT_FIELDS)]},
    ],
    ids=["5000-keys", "5000-items", "nested-many"],
)
def test_thousands_of_fields_are_refused(payload: dict[str, Any]) -> None:
    assert f"more than {MAX_EVENT_FIELDS} fields" in refused(envelope(payload=payload))


def test_deep_nesting_is_refused_without_recursion() -> None:
    deep: dict[str, Any] = {}
    inner = deep
    for _ in range(100_000):
        inner["a"] = {}
        inner = inner["a"]
    assert f"deeper than {MAX_EVENT_DEPTH}" in refused(envelope(payload=deep))


def test_a_large_but_ordinary_heartbeat_passes() -> None:
    payload = {f"stat{i}": "v" * 100 for i in range(100)}
    Event.model_validate(envelope(payload=payload))


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"event_id": "e" * 10_000}, "event_id"),
        ({"event_id": "a\x00b"}, "event_id"),
        ({"event_id": "../../x"}, "event_id"),
        ({"event_id": ""}, "event_id"),
        ({"session_id": "../x"}, "invalid session id '../x'"),
        ({"session_id": "/etc/passwd"}, "invalid session id '/etc/passwd'"),
        ({"session_id": "a\x00b"}, "NUL"),
        ({"session_id": "a\x1b[2Jb"}, "control character"),
        ({"session_id": "s" * 10_000}, "10000 characters"),
        ({"session_id": 7}, "session_id"),
        ({"seq": -1}, "seq"),
        ({"seq": MAX_SEQ + 1}, "seq"),
        ({"seq": 10**30}, "seq"),
        ({"seq": "5"}, "seq"),
        ({"seq": True}, "seq"),
        ({"seq": 1.5}, "seq"),
        ({"type": "session.deleted"}, "type"),
        ({"schema_version": 2}, "schema_version"),
        ({"emitted_at": "yesterday"}, "emitted_at"),
        ({"extra": 1}, "extra"),
    ],
)
def test_hostile_envelopes_are_refused(fields: dict[str, Any], needle: str) -> None:
    assert needle in refused(envelope(**fields))


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"key": "sessions/other/segments/mic-0001.m4a"}, "not its session's key"),
        ({"key": "sessions/s1/segments/../../other/segments/mic-0001.m4a"}, "'..'"),
        ({"key": "/etc/passwd"}, "absolute"),
        ({"key": "sessions/s1/derived/mic-0001.m4a"}, "storage key"),
        ({"key": "sessions/s1/segments/other.m4a"}, "storage key"),
        ({"file": "../mic.m4a", "key": "sessions/s1/segments/../mic.m4a"}, "'..'"),
        ({"file": "/etc/passwd"}, "absolute"),
        ({"file": "mic\x00.m4a"}, "NUL"),
        ({"file": "mic\n.m4a"}, "control character"),
        ({"file": "m" * 10_000}, "10000 characters"),
        ({"size": -1}, "size"),
        ({"size": MAX_SEGMENT_BYTES + 1}, "size"),
        ({"size": 10**30}, "size"),
        ({"size": "12"}, "size"),
        ({"index": -1}, "index"),
        ({"index": 10**9}, "index"),
        ({"duration": -1.0}, "duration"),
        ({"duration": 1e12}, "duration"),
        ({"duration": float("nan")}, "duration"),
        ({"duration": float("inf")}, "duration"),
        ({"duration": "ten"}, "duration"),
        ({"duration": "10"}, "duration"),
        ({"sha256": "z" * 64}, "sha256"),
        ({"kind": "subtitles"}, "kind"),
        ({"extra": "x"}, "extra"),
    ],
)
def test_hostile_segment_payloads_are_refused(change: dict[str, Any], needle: str) -> None:
    message = refused(envelope("segment.stored", {**SEGMENT, **change}))
    assert needle in message
    assert "segment.stored event" in message and "'s1'" in message


@pytest.mark.parametrize(
    ("type_", "payload", "needle"),
    [
        ("session.started", {"name": "n" * 10_000}, "name"),
        ("session.started", {"name": "a\x00b"}, "NUL"),
        ("session.started", {"priority": "urgent"}, "priority"),
        ("session.started", {"priority": "x" * 100}, "priority"),
        ("session.started", {"started_at": "yesterday"}, "not an ISO 8601 time"),
        ("session.started", {"started_at": 12}, "started_at"),
        ("session.ended", {"segment_count": 10**9}, "segment_count"),
        ("session.ended", {"segment_count": MAX_SEGMENTS + 1}, "segment_count"),
        ("session.ended", {"segment_count": -1}, "segment_count"),
        ("session.ended", {"segment_count": "3"}, "segment_count"),
        ("session.ended", {"segment_count": True}, "segment_count"),
        ("session.ended", {"ended_at": "x" * 10_000}, "ended_at"),
        ("session.paused", {"at": "soon"}, "not an ISO 8601 time"),
        ("session.resumed", {"at": None, "extra": 1}, None),
    ],
)
def test_hostile_payloads_of_each_type_are_refused(
    type_: str, payload: dict[str, Any], needle: str | None
) -> None:
    raw = envelope(type_, payload)
    if needle is None:  # fields a later agent adds are ignored (within the size limit)
        Event.model_validate(raw)
        return
    message = refused(raw)
    assert needle in message and f"{type_} event" in message


def test_segment_stored_alone_checks_its_key_shape() -> None:
    with pytest.raises(ValidationError, match="is not sessions/<session>/segments/a.m4a"):
        SegmentStored(
            kind=SegmentKind.AUDIO,
            file="a.m4a",
            key="sessions/s1/receipts/a.m4a",
            sha256="0" * 64,
            size=1,
            index=0,
        )
