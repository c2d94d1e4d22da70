"""What a recording is handed to: the part of the agent recorders call.

:class:`capture_agent.agent.Agent` implements it (durably, through the outbox); the
recorder (capture_agent.record), the folder watcher (capture_agent.watch) and recovery
(capture_agent.recover) only depend on this, and tests replace it with fakes.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Protocol

from shared.options import SessionOptions
from shared.routing import Priority
from shared.segments import SegmentSpec


class SessionSink(Protocol):
    def begin_session(
        self,
        session_id: str,
        *,
        name: str,
        started_at: datetime,
        priority: str = Priority.NORMAL,
        options: SessionOptions | None = None,
    ) -> None: ...

    def add_segment(self, session_id: str, path: Path, segment: SegmentSpec) -> None: ...

    def pause(self, session_id: str, *, at: datetime) -> None: ...

    def resume(self, session_id: str, *, at: datetime) -> None: ...

    def end_session(self, session_id: str, *, ended_at: datetime | None = None) -> None: ...
