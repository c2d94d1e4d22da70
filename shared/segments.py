"""What a recorded segment is, in one vocabulary for the agent, the recorder and the workers.

A session is recorded as segment files of two kinds (:class:`SegmentKind`). Whoever hands
one over (the recorder, the folder watcher, recovery, ``capture-agent ship``) describes it
with a :class:`SegmentSpec`: its kind, its file name inside the session folder and, when
known, where it starts on the wall clock (the time of the first sample or frame the file
presents, after its edit list: declared AAC priming is not presented) and how long it
lasts. The validated forms that cross a trust boundary (``session.json`` entries,
``segment.stored`` events) convert to and from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path


class SegmentKind(StrEnum):
    """The two media of a session; the value is what files, events and the database say."""

    AUDIO = "audio"
    VIDEO = "video"


@dataclass(frozen=True)
class SegmentSpec:
    """One segment file as handed over: ``file`` is relative to the session's folder."""

    kind: SegmentKind
    file: str
    started_at: datetime | None = None
    duration: float | None = None  # seconds of media

    @property
    def ended_at(self) -> datetime | None:
        """Where the media ends on the wall clock, when start and duration are known."""
        if self.started_at is None or self.duration is None:
            return None
        return self.started_at + timedelta(seconds=self.duration)


@dataclass(frozen=True)
class LocalSegment:
    """A segment and where its file is on this machine."""

    path: Path
    spec: SegmentSpec
