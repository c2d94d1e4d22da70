"""The session directory format: a folder with ``session.json`` and its segment files.

``{"id", "name", "started_at", "segments": [{"kind", "file", "started_at"?, "duration"?}]}``.
Parsing validates everything a hostile file could abuse (ids, paths escaping the folder,
absurd durations and offsets, non-numeric values, unknown kinds, a ``session.json`` that is
a symlink out of the folder, a FIFO or a device) before any other file is opened.
"""

from __future__ import annotations

import json
import os
import stat
from datetime import datetime, timedelta
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
    model_validator,
)

from shared.atomicfile import atomic_write_text
from shared.diagnostics import describe_invalid, quoted
from shared.events import (
    MAX_CLOCK_SKEW_S,
    MAX_SEGMENTS,
    MAX_SESSION_SECONDS,
    SegmentSeconds,
    SessionName,
)
from shared.ids import validate_relative_path, validate_session_id
from shared.options import SessionOptions
from shared.routing import Priority
from shared.segments import SegmentKind, SegmentSpec

MANIFEST_NAME = "session.json"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_REASON_CHARS = 200  # of a parser's message quoted in a ManifestError
__all__ = [
    "MANIFEST_NAME",
    "MAX_MANIFEST_BYTES",
    "MAX_SEGMENTS",
    "Manifest",
    "ManifestError",
    "ManifestSegment",
    "ZonedDatetime",
    "listed_files",
    "load_manifest",
    "segment_file",
    "write_manifest",
]


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
    duration: SegmentSeconds | None = None

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
    name: SessionName = ""
    started_at: ZonedDatetime
    priority: Priority = Priority.NORMAL
    # Enrichment stages, language, LLM: what this session asks of the workers.
    options: SessionOptions = SessionOptions()
    segments: Annotated[list[ManifestSegment], Field(max_length=MAX_SEGMENTS)]
    # End markers: a recorder sets them when the folder is final (``capture-agent watch``).
    ended_at: ZonedDatetime | None = None
    complete: StrictBool = False

    @field_validator("id")
    @classmethod
    def _safe_id(cls, value: str) -> str:
        return validate_session_id(value)

    @model_validator(mode="after")
    def _times_within_the_session(self) -> Manifest:
        """Every time lies from (almost) the session's start to MAX_SESSION_SECONDS after it:
        a negative offset or one years ahead would place media absurdly (or fill years)."""
        earliest = self.started_at - timedelta(seconds=MAX_CLOCK_SKEW_S)
        latest = self.started_at + timedelta(seconds=MAX_SESSION_SECONDS)
        window = (
            f"from {MAX_CLOCK_SKEW_S:.0f} s before the session's started_at to "
            f"{MAX_SESSION_SECONDS:.0f} s after it"
        )
        for segment in self.segments:
            if segment.started_at is not None and not earliest <= segment.started_at <= latest:
                raise ValueError(
                    f"segment {quoted(segment.file)}: started_at "
                    f"{segment.started_at.isoformat()} is not {window}"
                )
        if self.ended_at is not None and not earliest <= self.ended_at <= latest:
            raise ValueError(f"ended_at {self.ended_at.isoformat()} is not {window}")
        return self


def _read_manifest_bytes(session_dir: Path, path: Path) -> bytes:
    """The bytes of ``session.json``: a regular file inside the folder, at most
    MAX_MANIFEST_BYTES. Opened without blocking (a FIFO would wait for a writer for ever) and
    read no further than the limit (a link to ``/dev/zero`` never ends)."""
    resolved = path.resolve()
    if session_dir.resolve() not in resolved.parents:
        raise ManifestError(f"{path}: a symlink leading outside {session_dir}")
    fd = os.open(resolved, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ManifestError(f"{path}: not a regular file")
        if info.st_size > MAX_MANIFEST_BYTES:
            raise ManifestError(f"{path}: larger than {MAX_MANIFEST_BYTES} bytes")
        data = handle.read(MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{path}: larger than {MAX_MANIFEST_BYTES} bytes")
    return data


def load_manifest(session_dir: Path) -> Manifest:
    path = session_dir / MANIFEST_NAME
    try:
        raw = json.loads(_read_manifest_bytes(session_dir, path).decode("utf-8"))
    except ManifestError:
        raise
    except FileNotFoundError:
        raise ManifestError(f"{path}: not found (a session folder needs {MANIFEST_NAME})") from None
    except IsADirectoryError:
        raise ManifestError(f"{path}: not a regular file") from None
    except (OSError, ValueError) as exc:  # JSONDecodeError, UnicodeDecodeError, huge integers
        raise ManifestError(f"{path}: cannot be read: {str(exc)[:MAX_REASON_CHARS]}") from exc
    except RecursionError:
        raise ManifestError(f"{path}: cannot be read: nested too deeply") from None
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        raise ManifestError(f"{path}: invalid: {describe_invalid(exc)}") from exc
    seen: set[str] = set()
    for segment in manifest.segments:
        if segment.file in seen:
            raise ManifestError(f"{path}: segment file {quoted(segment.file)} is listed twice")
        seen.add(segment.file)
    return manifest


def segment_file(session_dir: Path, segment: ManifestSegment) -> Path:
    """Local path of a listed segment, refusing symlinks that lead outside the folder."""
    base = session_dir.resolve()
    candidate = (base / segment.file).resolve()
    if base not in candidate.parents:
        raise ManifestError(f"segment {quoted(segment.file)} resolves outside {session_dir}")
    return candidate


def listed_files(session_dir: Path, manifest: Manifest) -> list[Path]:
    """The local path of every listed segment, for a folder that is complete: each inside
    the folder (no symlink leading out), present, and a regular file (a FIFO would block
    whoever reads it). FileNotFoundError for a missing one, ManifestError otherwise."""
    files = [segment_file(session_dir, segment) for segment in manifest.segments]
    for segment, path in zip(manifest.segments, files, strict=True):
        if not path.exists():
            raise FileNotFoundError(
                f"segment {quoted(segment.file)} listed in {MANIFEST_NAME} is missing from "
                f"{session_dir}"
            )
        if not path.is_file():
            raise ManifestError(
                f"segment {quoted(segment.file)} listed in {MANIFEST_NAME} is not a regular "
                f"file in {session_dir}"
            )
    return files


def write_manifest(session_dir: Path, manifest: Manifest) -> Path:
    """Write ``session.json`` atomically (temporary name, then rename)."""
    return atomic_write_text(
        session_dir / MANIFEST_NAME, manifest.model_dump_json(indent=2, exclude_none=True)
    )
