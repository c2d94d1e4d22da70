"""Event schemas shared by the capture agent (producer) and the workers (consumer).

Events are JSON, schema-versioned, and numbered per session (``seq``) so a re-sent event is
recognised and ignored.

An event is the workers' only input from outside, so validation bounds everything in it
before any of it is stored: its encoded size (``MAX_EVENT_BYTES``), how many fields it has
and how deeply they nest, every id and number (they must fit the database's columns), and
each type's payload (a ``segment.stored`` must name its own session's storage key).
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from shared.clock import utcnow
from shared.diagnostics import describe_invalid, quoted
from shared.ids import validate_relative_path, validate_session_id
from shared.jsontree import containers
from shared.options import SessionOptions
from shared.routing import Priority
from shared.segments import SegmentKind, SegmentSpec
from shared.storage import SEGMENTS_DIR, SESSIONS_DIR, segment_key, validate_key

SCHEMA_VERSION: Literal[1] = 1
MAX_SEGMENT_SECONDS = 24 * 3600.0
#: Seconds after its start within which everything of a session lies (pauses included).
MAX_SESSION_SECONDS = 7 * 24 * 3600.0
#: Seconds a segment may start before its session does (recorder clocks differ a little).
MAX_CLOCK_SKEW_S = 60.0
#: Segments of one session.
MAX_SEGMENTS = 100_000
#: Bytes of one segment file (1 TiB: far beyond a day of screen recording).
MAX_SEGMENT_BYTES = 1 << 40
#: Largest ``seq`` (the database's 32-bit column).
MAX_SEQ = 2**31 - 1
#: Characters of a session's display name (the database's sessions.name column).
MAX_NAME_LENGTH = 512
#: Bytes of one event, JSON-encoded. The largest the agent sends (``segment.stored``, a
#: heartbeat) are under 1 KiB; anything near this limit is not an event of ours.
MAX_EVENT_BYTES = 64 * 1024
#: Fields of one event: keys and list items at every level, the envelope's included.
MAX_EVENT_FIELDS = 256
#: Nesting of objects and lists in one event (the envelope is level 0, its payload 1).
MAX_EVENT_DEPTH = 8
EVENT_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

EventType = Literal[
    "session.started",
    "segment.stored",
    "session.paused",
    "session.resumed",
    "session.ended",
    "heartbeat",
]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class EventTooLargeError(ValueError):
    """An event over one of the limits above; refused before it is looked at further."""


def _printable(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("contains a NUL byte or a control character")
    return value


def _iso_time(value: str) -> str:
    """A time the workers can read (``datetime.fromisoformat``), kept as the text it was."""
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{quoted(value)} is not an ISO 8601 time") from None
    return value


#: A session's display name: bounded, and no NUL byte or control character (a database
#: text column cannot hold NUL; a terminal showing the status must not be steered).
SessionName = Annotated[str, Field(max_length=MAX_NAME_LENGTH), AfterValidator(_printable)]
IsoTime = Annotated[str, Field(max_length=64), AfterValidator(_iso_time)]
#: Seconds: a JSON number (not a string or a boolean), finite, 0 to MAX_SEGMENT_SECONDS.
SegmentSeconds = Annotated[float, Field(strict=True, ge=0, le=MAX_SEGMENT_SECONDS)]


def check_event_size(data: dict[str, Any]) -> None:
    """Raise EventTooLargeError, naming the event, when ``data`` is over a limit.

    Fields and depth are counted without recursion and stop at the limit, so neither a
    payload of thousands of fields nor one nested thousands deep costs more than the limit.
    """
    name = f"event {quoted(data.get('event_id'))} of session {quoted(data.get('session_id'))}"
    fields = 0
    for depth, children in containers(data):
        if depth >= MAX_EVENT_DEPTH and children:
            raise EventTooLargeError(f"{name}: nested deeper than {MAX_EVENT_DEPTH} levels")
        fields += len(children)
        if fields > MAX_EVENT_FIELDS:
            raise EventTooLargeError(f"{name}: more than {MAX_EVENT_FIELDS} fields")
    size = len(json.dumps(data, default=str).encode())
    if size > MAX_EVENT_BYTES:
        raise EventTooLargeError(f"{name}: {size} bytes, more than {MAX_EVENT_BYTES}")


class SegmentStored(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: SegmentKind
    file: str  # relative to the session's segment folder
    key: str  # storage key where the file now lives: sessions/<id>/segments/<file>
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    size: Annotated[int, Field(strict=True, ge=0, le=MAX_SEGMENT_BYTES)]
    index: Annotated[int, Field(strict=True, ge=0, lt=MAX_SEGMENTS)]  # in the segment list
    started_at: datetime | None = None
    duration: SegmentSeconds | None = None

    @field_validator("file")
    @classmethod
    def _safe_file(cls, value: str) -> str:
        return validate_relative_path(value)

    @field_validator("key")
    @classmethod
    def _safe_key(cls, value: str) -> str:
        return validate_key(value)

    @model_validator(mode="after")
    def _key_is_the_files(self) -> SegmentStored:
        parts = self.key.split("/", 3)
        if len(parts) != 4 or (parts[0], parts[2], parts[3]) != (
            SESSIONS_DIR,
            SEGMENTS_DIR,
            self.file,
        ):
            raise ValueError(
                f"segment {quoted(self.file)}: storage key {quoted(self.key)} is not "
                f"{SESSIONS_DIR}/<session>/{SEGMENTS_DIR}/{self.file}"
            )
        return self

    def spec(self) -> SegmentSpec:
        return SegmentSpec(self.kind, self.file, self.started_at, self.duration)


class _Payload(BaseModel):
    # Fields a later agent adds are ignored (and bounded by the event's limits).
    model_config = ConfigDict(extra="ignore")


class SessionStartedPayload(_Payload):
    name: SessionName = ""
    started_at: IsoTime | None = None
    priority: Priority = Priority.NORMAL
    options: SessionOptions = SessionOptions()


class SessionEndedPayload(_Payload):
    segment_count: Annotated[int, Field(strict=True, ge=0, le=MAX_SEGMENTS)] | None = None
    ended_at: IsoTime | None = None


class PausePayload(_Payload):
    at: IsoTime | None = None


#: What each type's payload must hold (a heartbeat's is free-form, within the limits).
PAYLOADS: dict[str, type[BaseModel]] = {
    "session.started": SessionStartedPayload,
    "segment.stored": SegmentStored,
    "session.paused": PausePayload,
    "session.resumed": PausePayload,
    "session.ended": SessionEndedPayload,
}


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: Annotated[str, Field(pattern=EVENT_ID_PATTERN)] = Field(
        default_factory=lambda: uuid.uuid4().hex
    )
    type: EventType
    session_id: str
    seq: Annotated[int, Field(strict=True, ge=0, le=MAX_SEQ)]
    emitted_at: datetime = Field(default_factory=utcnow)
    payload: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _bounded(cls, data: Any) -> Any:
        if isinstance(data, dict):
            check_event_size(data)
        return data

    @field_validator("session_id")
    @classmethod
    def _safe_session(cls, value: str) -> str:
        return validate_session_id(value)

    @model_validator(mode="after")
    def _payload_fits_its_type(self) -> Event:
        model = PAYLOADS.get(self.type)
        if model is None:
            return self
        name = f"{self.type} event {quoted(self.event_id)} of session {quoted(self.session_id)}"
        try:
            parsed = model.model_validate(self.payload)
        except ValidationError as exc:
            raise ValueError(f"{name}: invalid payload: {describe_invalid(exc)}") from None
        if isinstance(parsed, SegmentStored):
            expected = segment_key(self.session_id, parsed.file)
            if parsed.key != expected:
                raise ValueError(
                    f"{name}: segment {quoted(parsed.file)} is stored under "
                    f"{quoted(parsed.key)}, not its session's key {quoted(expected)}"
                )
        return self

    def segment(self) -> SegmentStored:
        return SegmentStored.model_validate(self.payload)


def session_started(
    session_id: str,
    seq: int,
    *,
    name: str,
    started_at: datetime,
    priority: str = Priority.NORMAL,
    options: SessionOptions | None = None,
) -> Event:
    payload: dict[str, Any] = {
        "name": name,
        "started_at": started_at.isoformat(),
        "priority": priority,
    }
    if options is not None and options.to_json():
        payload["options"] = options.to_json()
    return Event(type="session.started", session_id=session_id, seq=seq, payload=payload)


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
