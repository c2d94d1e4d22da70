"""A raw shipper for tests: copy a session's segments and send its events directly.

The product ships through the capture agent's outbox (``capture_agent.agent``), which never
sends an event twice. Tests of the workers need to send events on demand, duplicates
included; sequence numbers are deterministic (session.started = 0, segments 1..n,
session.ended = n + 1), so shipping a folder again re-sends identical events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from shared import events
from shared.events import SegmentStored
from shared.ids import validate_relative_path, validate_session_id
from shared.options import SessionOptions
from shared.routing import Priority
from shared.segments import SegmentKind
from shared.sessiondir import Manifest, load_manifest, segment_file
from shared.storage import Storage


class Emitter(Protocol):
    def emit(self, event: events.Event, *, priority: str = "normal") -> None: ...


@dataclass
class SessionShipper:
    """Ships one session's segments as they finish, in the order they are handed over."""

    storage: Storage
    emitter: Emitter
    session_id: str
    priority: Priority = Priority.NORMAL
    shipped: list[SegmentStored] = field(default_factory=list)

    def __post_init__(self) -> None:
        validate_session_id(self.session_id)

    def start(
        self, *, name: str, started_at: datetime, options: SessionOptions | None = None
    ) -> None:
        self.emitter.emit(
            events.session_started(
                self.session_id,
                0,
                name=name,
                started_at=started_at,
                priority=self.priority,
                options=options,
            ),
            priority=self.priority,
        )

    def ship_segment(
        self,
        path: Path,
        *,
        kind: SegmentKind,
        file: str,
        started_at: datetime | None,
        duration: float | None,
        index: int | None = None,
        times: int = 1,
    ) -> SegmentStored:
        """Store the file and announce it ``times`` times (a repeat is what an agent that
        lost the receipt sends); ``index`` defaults to the next number."""
        rel = validate_relative_path(file)
        index = len(self.shipped) if index is None else index
        stored = self.storage.put_file(path, self.storage.segment_key(self.session_id, rel))
        segment = SegmentStored(
            kind=kind,
            file=rel,
            key=stored.key,
            sha256=stored.sha256,
            size=stored.size,
            index=index,
            started_at=started_at,
            duration=duration,
        )
        for _ in range(times):
            self.emitter.emit(
                events.segment_stored(self.session_id, index + 1, segment),
                priority=self.priority,
            )
        self.shipped.append(segment)
        return segment

    def end(self, *, ended_at: datetime | None = None, segment_count: int | None = None) -> None:
        count = len(self.shipped) if segment_count is None else segment_count
        self.emitter.emit(
            events.session_ended(
                self.session_id, count + 1, segment_count=count, ended_at=ended_at
            ),
            priority=self.priority,
        )


def ship_session_dir(session_dir: Path, storage: Storage, emitter: Emitter) -> Manifest:
    """Ship an existing session folder (validated in full before any file is copied)."""
    manifest = load_manifest(session_dir)
    files = [segment_file(session_dir, segment) for segment in manifest.segments]
    for segment, path in zip(manifest.segments, files, strict=True):
        if not path.is_file():
            raise FileNotFoundError(
                f"segment {segment.file!r} listed in session.json is missing from {session_dir}"
            )
    shipper = SessionShipper(storage, emitter, manifest.id, priority=manifest.priority)
    shipper.start(name=manifest.name, started_at=manifest.started_at, options=manifest.options)
    for segment, path in zip(manifest.segments, files, strict=True):
        shipper.ship_segment(
            path,
            kind=segment.kind,
            file=segment.file,
            started_at=segment.started_at,
            duration=segment.duration,
        )
    shipper.end()
    return manifest
