"""Event schemas shared by the capture agent (producer) and the workers (consumer).

Events are JSON, schema-versioned, and numbered per session (``seq``) so a re-sent event is
recognised and ignored.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.clock import utcnow
from shared.ids import validate_relative_path, validate_session_id
from shared.routing import Priority
from shared.segments import SegmentKind, SegmentSpec

SCHEMA_VERSION: Literal[1] = 1
MAX_SEGMENT_SECONDS = 24 * 3600.0

EventType = Literal[
    "session.started",
    "segment.stored",
    "session.paused",
    "session.resumed",
    "session.ended",
    "heartbeat",
]


class SegmentStored(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: SegmentKind
    file: str  # relative to the session's segment folder
    key: str  # storage key where the file now lives
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    size: Annotated[int, Field(ge=0)]
    index: Annotated[int, Field(ge=0)]  # position in the session's segment list
    started_at: datetime | None = None
    duration: Annotated[float, Field(ge=0, le=MAX_SEGMENT_SECONDS)] | None = None

    @field_validator("file")
    @classmethod
    def _safe_file(cls, value: str) -> str:
        return validate_relative_path(value)

    def spec(self) -> SegmentSpec:
        return SegmentSpec(self.kind, self.file, self.started_at, self.duration)


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    type: EventType
    session_id: str
    seq: Annotated[int, Field(ge=0)]
    emitted_at: datetime = Field(default_factory=utcnow)
    payload: dict[str, Any] = Field(default_factory=dict)

    @field_validator("session_id")
    @classmethod
    def _safe_session(cls, value: str) -> str:
        return validate_session_id(value)

    def segment(self) -> SegmentStored:
        return SegmentStored.model_validate(self.payload)


def session_started(
    session_id: str, seq: int, *, name: str, started_at: datetime, priority: str = Priority.NORMAL
) -> Event:
    return Event(
        type="session.started",
        session_id=session_id,
        seq=seq,
        payload={"name": name, "started_at": started_at.isoformat(), "priority": priority},
    )


def segment_stored(session_id: str, seq: int, segment: SegmentStored) -> Event:
    return Event(
        type="segment.stored",
        session_id=session_id,
        seq=seq,
        payload=segment.model_dump(mode="json"),
    )


def session_ended(
    session_id: str, seq: int, *, segment_count: int, ended_at: datetime | None = None
) -> Event:
    return Event(
        type="session.ended",
        session_id=session_id,
        seq=seq,
        payload={"segment_count": segment_count, "ended_at": (ended_at or utcnow()).isoformat()},
    )
