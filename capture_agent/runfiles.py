"""What a recording leaves on disk: each ffmpeg run's segment files and segment lists, and
the ``session.json`` of the finished recording.

A segment of a run is finished when the file after it exists (the ``segment`` muxer lists a
segment, closes it and only then opens the next) or when ffmpeg has exited; its times come
from the run's CSV segment list and the file itself: ``started_at = run start (wall clock) +
list start + the file's presentation start``, ``duration = end - that start``. The
presentation start (the first stream's start time, after its edit list) is 0 for every
segment but a run's first, whose timestamps the muxer does not reset: it is where that
track's first presented sample or frame lies on the run's clock (an avfoundation microphone
that starts after the screen; the AAC priming before 0, which the edit list hides, leaves
it at 0). So ``started_at`` is always the wall-clock time of the first sample or frame a
decoder presents, which is where the workers place it. Reading them needs no process: the
recorder reads them while ffmpeg writes, and a recording whose recorder died is finished
from them alone (capture_agent.recover).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import av

from capture_agent.ffmpeg_cmd import (
    parse_segment_list,
    segment_list_name,
    segment_name,
    segment_number,
)
from shared.options import SessionOptions
from shared.routing import Priority
from shared.segments import LocalSegment, SegmentKind, SegmentSpec
from shared.sessiondir import Manifest, ManifestSegment, write_manifest

log = logging.getLogger(__name__)

#: Decimal places kept of a segment's duration in seconds (microseconds).
DURATION_DECIMALS = 6


class RecorderError(RuntimeError):
    """ffmpeg could not record (bad device, missing permission, unsupported option)."""


def write_recording_manifest(
    folder: Path,
    *,
    session_id: str,
    name: str,
    started_at: datetime,
    priority: Priority,
    segments: Iterable[SegmentSpec],
    ended_at: datetime,
    options: SessionOptions | None = None,
) -> Path:
    """``session.json`` of a finished recording: every timed segment in time order, complete."""
    timed = [s for s in segments if s.started_at is not None]
    manifest = Manifest(
        id=session_id,
        name=name,
        started_at=started_at,
        priority=priority,
        options=options or SessionOptions(),
        segments=[
            ManifestSegment.of(s)
            for s in sorted(timed, key=lambda s: (s.started_at, s.kind, s.file))
        ],
        ended_at=ended_at,
        complete=True,
    )
    return write_manifest(folder, manifest)


def presentation_start(path: Path) -> float:
    """Where the first stream of a segment file starts being presented, in seconds of its
    timestamps (after its edit list); 0.0 when the file does not say."""
    try:
        with av.open(str(path)) as container:
            if not container.streams:
                return 0.0
            stream = container.streams[0]
            if stream.start_time is None or stream.time_base is None:
                return 0.0
            return float(stream.start_time * stream.time_base)
    except (av.FFmpegError, OSError):
        return 0.0


def probe_duration(path: Path) -> float | None:
    """Seconds of media in a (possibly truncated) file, by reading its packets.

    Counted from the presentation start, so packets an edit list hides (the AAC priming of a
    run's first audio segment) do not count.
    """
    try:
        with av.open(str(path)) as container:
            if not container.streams:
                return None
            stream = container.streams[0]
            base = stream.time_base
            if base is None:
                return None
            first: int | None = None
            last = 0
            for packet in container.demux(stream):
                if packet.pts is None:
                    continue
                first = packet.pts if first is None else min(first, packet.pts)
                last = max(last, packet.pts + (packet.duration or 0))
            if first is None:
                return None
            if stream.start_time is not None:
                first = max(first, stream.start_time)
            return float(max(0, last - first) * base)
    except (av.FFmpegError, OSError):
        return None


class RunFiles:
    """The segment files of one ffmpeg run, and how many of each kind were handed over."""

    def __init__(
        self,
        folder: Path,
        *,
        number: int,
        kinds: Sequence[SegmentKind],
        start_numbers: dict[SegmentKind, int],
        anchor: datetime,
    ) -> None:
        self.folder = folder
        self.number = number
        self.anchor = anchor
        self.start_numbers = dict(start_numbers)
        self.kinds: list[SegmentKind] = list(kinds)
        self.reported: dict[SegmentKind, int] = {kind: 0 for kind in self.kinds}
        self.last_end: dict[SegmentKind, float] = {kind: 0.0 for kind in self.kinds}

    def collect(self, *, final: bool) -> list[LocalSegment]:
        """Segments finished since the last call, in recording order.

        With ``final`` (ffmpeg has exited) every listed segment is finished, and files the
        muxer never got to list (ffmpeg killed) are probed and included if decodable.
        """
        found: list[LocalSegment] = []
        for kind in self.kinds:
            list_path = self.folder / segment_list_name(kind, self.number)
            try:
                entries = parse_segment_list(list_path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                entries = []
            for entry in entries[self.reported[kind] :]:
                number = segment_number(kind, entry.file)
                if number is None:
                    raise RecorderError(f"unexpected entry {entry.file!r} in {list_path.name}")
                if not final and not (self.folder / segment_name(kind, number + 1)).exists():
                    break
                offset = presentation_start(self.folder / entry.file)
                found.append(self._segment(kind, entry.file, entry.start, entry.end, offset))
                self.reported[kind] += 1
                self.last_end[kind] = max(self.last_end[kind], entry.end)
            if final:
                found.extend(self._unlisted(kind))
        found.sort(key=lambda s: (s.spec.started_at, s.spec.kind != SegmentKind.VIDEO, s.spec.file))
        return found

    def _unlisted(self, kind: SegmentKind) -> list[LocalSegment]:
        """Files a killed ffmpeg left without listing them (fragmented MP4 stays readable)."""
        extra = []
        number = self.start_numbers[kind] + self.reported[kind]
        while (self.folder / segment_name(kind, number)).exists():
            name = segment_name(kind, number)
            duration = probe_duration(self.folder / name)
            if duration is None or duration <= 0:
                log.warning("%s: unfinished and unreadable, left out of the session", name)
                break
            offset = presentation_start(self.folder / name)
            start = self.last_end[kind]
            end = start + offset + duration
            extra.append(self._segment(kind, name, start, end, offset))
            self.last_end[kind] = end
            self.reported[kind] += 1
            number += 1
        return extra

    def _segment(
        self, kind: SegmentKind, name: str, start: float, end: float, offset: float
    ) -> LocalSegment:
        """A segment from its list times (run clock, seconds) and its presentation start."""
        spec = SegmentSpec(
            kind=kind,
            file=name,
            started_at=self.anchor + timedelta(seconds=start + offset),
            duration=round(max(end - start - offset, 0.0), DURATION_DECIMALS),
        )
        return LocalSegment(self.folder / name, spec)

    def media_seconds(self) -> float:
        return max(self.last_end.values(), default=0.0)

    def next_numbers(self) -> dict[SegmentKind, int]:
        return {kind: self.start_numbers[kind] + self.reported.get(kind, 0) for kind in SegmentKind}
