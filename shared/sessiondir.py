"""The session directory format: a folder with ``session.json`` and its segment files.

``{"id", "name", "started_at", "segments": [{"kind", "file", "started_at"?, "duration"?}]}``.
Parsing validates everything a hostile file could abuse (ids, paths escaping the folder,
absurd durations, unknown kinds) before any file is opened.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
)

from shared.atomicfile import atomic_write_text
from shared.diagnostics import describe_invalid
from shared.events import MAX_SEGMENT_SECONDS
from shared.ids import validate_relative_path, validate_session_id
from shared.routing import Priority
from shared.segments import SegmentKind, SegmentSpec

MANIFEST_NAME = "session.json"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_SEGMENTS = 100_000


def _zoned(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("needs a time zone (ISO 8601 with offset or Z)")
    return value


#: A time a hostile or sloppy file cannot leave ambiguous: naive times are refused, not
#: guessed (contrast shared.clock.as_utc, for the database's own naive UTC values).
ZonedDatetime = Annotated[datetime, AfterValidator(_zoned)]


class ManifestError(ValueError):
    """``session.json`` is missing, unreadable or invalid; the message says which and why."""


class ManifestSegment(BaseModel):
    model_config = ConfigDict(extra="ignore")

    kind: SegmentKind
    file: str
    started_at: ZonedDatetime | None = None
    duration: Annotated[float, Field(ge=0, le=MAX_SEGMENT_SECONDS)] | None = None

    @field_validator("file")
    @classmethod
    def _safe_file(cls, value: str) -> str:
        return validate_relative_path(value)

    @classmethod
    def of(cls, spec: SegmentSpec) -> ManifestSegment:
        return cls(
            kind=spec.kind, file=spec.file, started_at=spec.started_at, duration=spec.duration
        )

    def spec(self) -> SegmentSpec:
        return SegmentSpec(self.kind, self.file, self.started_at, self.duration)


class Manifest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    name: str = ""
    started_at: ZonedDatetime
    priority: Priority = Priority.NORMAL
    segments: Annotated[list[ManifestSegment], Field(max_length=MAX_SEGMENTS)]
    # End markers: a recorder sets them when the folder is final (``capture-agent watch``).
    ended_at: ZonedDatetime | None = None
    complete: StrictBool = False

    @field_validator("id")
    @classmethod
    def _safe_id(cls, value: str) -> str:
        return validate_session_id(value)


def load_manifest(session_dir: Path) -> Manifest:
    path = session_dir / MANIFEST_NAME
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ManifestError(f"{path}: larger than {MAX_MANIFEST_BYTES} bytes")
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"{path}: not found (a session folder needs {MANIFEST_NAME})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: cannot be read: {exc}") from exc
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        raise ManifestError(f"{path}: invalid: {describe_invalid(exc)}") from exc
    seen: set[str] = set()
    for segment in manifest.segments:
        if segment.file in seen:
            raise ManifestError(f"{path}: segment file {segment.file!r} is listed twice")
        seen.add(segment.file)
    return manifest


def segment_file(session_dir: Path, segment: ManifestSegment) -> Path:
    """Local path of a listed segment, refusing symlinks that lead outside the folder."""
    base = session_dir.resolve()
    candidate = (base / segment.file).resolve()
    if base not in candidate.parents:
        raise ManifestError(f"segment {segment.file!r} resolves outside {session_dir}")
    return candidate


def write_manifest(session_dir: Path, manifest: Manifest) -> Path:
    """Write ``session.json`` atomically (temporary name, then rename)."""
    return atomic_write_text(
        session_dir / MANIFEST_NAME, manifest.model_dump_json(indent=2, exclude_none=True)
    )
