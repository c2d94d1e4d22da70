"""Finish recordings whose recorder died: a crash, a kill, a power cut, a reboot.

The recorder hands each segment to the outbox as ffmpeg finishes it and ends the session
when it stops. If it dies instead, its control file stays behind (``recorders/<id>.json``)
with what is needed to finish the job from the files alone: the last ffmpeg run's number,
its place on the session clock and its first segment numbers. Recovery then

1. stops that run's ffmpeg if it outlived the recorder (it runs in its own process group,
   so nothing else would ever stop it) - only after checking that the process really is
   that ffmpeg: same command line and working folder, never just a reused pid;
2. hands over the segments the outbox does not have yet, the unfinished last one included
   (fragmented MP4 is readable up to its last complete fragment; an unreadable tail is
   left out and logged);
3. ends the session where its media ends (not "now": after a reboot that may be hours
   later) and writes ``session.json``, as a clean stop would have.

``capture-agent run`` and ``capture-agent record`` do this when they start, so a recording
cut short is processed as soon as the Mac is back, with nothing of it lost.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal, Protocol

from capture_agent import control
from capture_agent.ffmpeg_cmd import segment_list_name, segment_name
from capture_agent.runfiles import RunFiles, write_recording_manifest
from capture_agent.sink import SessionSink
from shared.events import SegmentStored
from shared.routing import parse_priority
from shared.segments import LocalSegment, SegmentKind

__all__ = ["Recovered", "recover_dead_recordings"]

log = logging.getLogger(__name__)

#: How long an orphaned ffmpeg gets to finish its files after SIGINT, then after SIGTERM.
STOP_GRACE_S = 5.0
PROBE_TIMEOUT_S = 10.0  # for ps/lsof, which identify a process where /proc does not exist
_POLL_S = 0.05


class RecoverySink(SessionSink, Protocol):
    """What recovery needs of the agent: the recorder's interface plus the outbox's memory."""

    def recorded_segments(self, session_id: str) -> list[SegmentStored]: ...

    def session_state(self, session_id: str) -> Literal["unknown", "open", "ended"]: ...


@dataclass(frozen=True)
class Recovered:
    session_id: str
    added: list[LocalSegment]  # segments the dead recorder had not handed over
    ended_at: datetime


def recover_dead_recordings(state_dir: Path, sink: RecoverySink) -> list[Recovered]:
    """Finish every recording in ``state_dir`` whose recorder is no longer running."""
    done = []
    for info in control.dead_recorders(state_dir):
        try:
            recovered = _recover(info, sink)
        except Exception:
            log.exception("recording %s: recovery failed; will try again", info.session_id)
            continue
        if recovered is not None:
            done.append(recovered)
        control.remove_info(state_dir, info.session_id, pid=info.pid)
    return done


def _recover(info: control.RecorderInfo, sink: RecoverySink) -> Recovered | None:
    session_id = info.session_id
    folder = Path(info.folder)
    if info.ffmpeg_pid is not None and control.pid_alive(info.ffmpeg_pid):
        if not _is_run_ffmpeg(info.ffmpeg_pid, info, folder):
            log.info("recording %s: pid %d is not its ffmpeg", session_id, info.ffmpeg_pid)
        else:
            log.warning("recording %s: stopping its orphaned ffmpeg", session_id)
            _stop(info.ffmpeg_pid)
    state = sink.session_state(session_id)
    if state == "ended":
        return None  # the recorder died after ending it: nothing left to do
    started_at = datetime.fromisoformat(info.started_at)
    known = sink.recorded_segments(session_id)
    added = _unhanded_segments(info, folder, known)
    if state == "unknown" and not added:
        log.info("recording %s: died before recording anything", session_id)
        return None
    priority = parse_priority(info.priority)
    if state == "unknown":
        sink.begin_session(session_id, name=info.name, started_at=started_at, priority=priority)
    for segment in added:
        sink.add_segment(session_id, segment.path, segment.spec)
    specs = [s.spec() for s in known] + [s.spec for s in added]
    ended_at = max(
        (s.started_at + timedelta(seconds=s.duration or 0) for s in specs if s.started_at),
        default=started_at,
    )
    write_recording_manifest(
        folder,
        session_id=session_id,
        name=info.name,
        started_at=started_at,
        priority=priority,
        segments=specs,
        ended_at=ended_at,
    )
    sink.end_session(session_id, ended_at=ended_at)
    log.warning(
        "recording %s: its recorder died; ended at %s with %d more segments",
        session_id,
        ended_at.isoformat(),
        len(added),
    )
    return Recovered(session_id, added, ended_at)


def _run_kinds(info: control.RecorderInfo) -> list[SegmentKind]:
    """The kinds the control file names (unknown ones, from a newer version, ignored)."""
    known = {kind.value for kind in SegmentKind}
    return [SegmentKind(k) for k in info.run_kinds if k in known]


def _unhanded_segments(
    info: control.RecorderInfo, folder: Path, known: list[SegmentStored]
) -> list[LocalSegment]:
    """Segments of the last run that the outbox does not have (earlier runs ended cleanly)."""
    if info.run < 1 or not info.run_anchor:
        return []
    kinds = _run_kinds(info)
    starts = {kind: info.run_start_numbers.get(kind, 0) for kind in SegmentKind}
    files = RunFiles(
        folder,
        number=info.run,
        kinds=kinds,
        start_numbers=starts,
        anchor=datetime.fromisoformat(info.run_anchor),
    )
    # what the recorder handed over already counts as reported, in order from the run start
    recorded = {s.file: s for s in known}
    for kind in kinds:
        while True:
            segment = recorded.get(segment_name(kind, starts[kind] + files.reported[kind]))
            if segment is None:
                break
            files.reported[kind] += 1
            if segment.started_at is not None:
                end = (segment.started_at - files.anchor).total_seconds() + (segment.duration or 0)
                files.last_end[kind] = max(files.last_end[kind], end)
    return [s for s in files.collect(final=True) if s.spec.file not in recorded]


def _is_run_ffmpeg(pid: int, info: control.RecorderInfo, folder: Path) -> bool:
    """Whether ``pid`` is the recorder's ffmpeg: its segment lists on the command line and
    the session folder as its working directory (pids are reused after a reboot)."""
    command = _process_command(pid)
    kinds = _run_kinds(info)
    if not kinds or not all(segment_list_name(k, info.run) in command for k in kinds):
        return False
    cwd = _process_cwd(pid)
    return cwd is not None and cwd.resolve() == folder.resolve()


def _process_command(pid: int) -> str:
    try:  # Linux
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        return raw.replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        pass
    # macOS and other BSDs; -ww: never cut to the terminal's width
    return _output(["ps", "-ww", "-o", "command=", "-p", str(pid)])


def _process_cwd(pid: int) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd"))  # Linux
    except OSError:
        pass
    out = _output(["lsof", "-a", "-p", str(pid), "-d", "cwd", "-Fn"])  # macOS and other BSDs
    names = [line[1:] for line in out.splitlines() if line.startswith("n")]
    return Path(names[0]) if names else None


def _output(argv: list[str]) -> str:
    """A helper command's stdout; empty when it is missing or fails."""
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _stop(pid: int) -> None:
    """SIGINT (ffmpeg finishes its files), then SIGTERM, then SIGKILL."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline:
            if not control.pid_alive(pid):
                return
            time.sleep(_POLL_S)
