"""The recorder: ffmpeg writes segments, each finished one is handed to the agent at once.

The recorder runs ffmpeg (:mod:`capture_agent.ffmpeg_run`), reads what each run finished
(:mod:`capture_agent.runfiles`), hands it over (:class:`~capture_agent.sink.SessionSink`)
and carries out pause, resume and stop:

* pause = stop the run gracefully, hand over its last segments, ``agent.pause`` at the end
  of the recorded media; resume = ``agent.resume`` and a new run whose segment numbers
  continue, anchored at the resume time. No segment can span a pause.
* stop (a request, ``SIGINT``/``SIGTERM``/``SIGHUP``, or the synthetic ``--duration``
  running out) = ffmpeg gets ``SIGINT`` (then ``SIGTERM``, ``SIGKILL`` only last), the
  final segment is handed over, ``session.json`` is written and only then ``end_session``:
  the outbox ships and announces every segment before ``session.ended``.

The session is begun lazily, when the first segment (or pause) is handed over, so a
recorder that cannot start (say macOS refused screen recording) leaves no empty session in
the pipeline. While it runs, the recorder publishes its state and current run in its
control file (capture_agent.control), so that ``capture-agent pause|resume|stop`` can reach
it and recovery can finish its recording if it dies.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, Literal

from capture_agent import control
from capture_agent.ffmpeg_cmd import Source
from capture_agent.ffmpeg_run import FfmpegRun, default_ffmpeg, detect_encoder
from capture_agent.runfiles import RecorderError, write_recording_manifest
from capture_agent.sink import SessionSink
from shared.clock import utcnow
from shared.options import SessionOptions
from shared.routing import Priority
from shared.segments import LocalSegment, SegmentKind
from shared.sessiondir import MANIFEST_NAME
from synthetic.lavfi import SyntheticSource

log = logging.getLogger(__name__)

__all__ = [
    "SIGNAL_REQUESTS",
    "RecorderError",
    "Recorder",
    "RecordingResult",
    "RecordOptions",
    "SessionSink",
    "default_ffmpeg",
    "signals_to",
]

Request = Literal["pause", "resume", "stop"]

#: How often the recorder looks for finished segments and requests, in seconds.
POLL_INTERVAL_S = 0.2
#: A synthetic run shorter than this is not started (the duration is used up), seconds.
MIN_RUN_S = 0.1


@dataclass(frozen=True)
class RecordOptions:
    session_id: str
    name: str
    folder: Path
    source: Source = field(default_factory=SyntheticSource)
    segment_seconds: float = 10.0
    ffmpeg: str = ""  # "" = imageio-ffmpeg's binary
    encoder: str | None = None  # None = h264_videotoolbox on a Mac when available, else libx264
    duration: float | None = None  # seconds of media, then stop by itself (synthetic tests)
    priority: Priority = Priority.NORMAL
    state_dir: Path | None = None  # where the control file goes (None: not controllable)
    # Enrichment stages, language, LLM: what the workers are asked to do with the session.
    enrichment: SessionOptions = field(default_factory=SessionOptions)


@dataclass
class RecordingResult:
    session_id: str
    folder: Path
    segments: list[LocalSegment]
    manifest_path: Path | None
    pauses: int
    error: str | None


class Recorder:
    """Records one session; :meth:`run` blocks until stopped and returns what was recorded."""

    def __init__(
        self,
        options: RecordOptions,
        agent: SessionSink,
        *,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        if options.segment_seconds <= 0:
            raise ValueError("segment_seconds must be positive")
        if options.duration is not None and options.duration <= 0:
            raise ValueError("duration must be positive")
        self.options = options
        self.agent = agent
        self.notify = notify or (lambda message: log.info("%s", message))
        self._requests: queue.SimpleQueue[Request] = queue.SimpleQueue()
        self._segments: list[LocalSegment] = []
        self._begun = False
        self._started_at: datetime | None = None
        self._pauses = 0
        self._state: control.State = "recording"
        self._run: FfmpegRun | None = None

    # -- control ---------------------------------------------------------------

    def request(self, action: Request) -> None:
        """Ask the recorder to pause, resume or stop (thread- and signal-handler-safe)."""
        self._requests.put(action)

    @property
    def segments(self) -> list[LocalSegment]:
        return list(self._segments)

    @property
    def ffmpeg_pid(self) -> int | None:
        """pid of the ffmpeg currently recording (None while paused or stopped)."""
        run = self._run
        return run.proc.pid if run is not None and not run.exited() else None

    # -- main loop ---------------------------------------------------------------

    def run(self) -> RecordingResult:
        opts = self.options
        folder = opts.folder
        folder.mkdir(parents=True, exist_ok=True)
        if (
            (folder / MANIFEST_NAME).exists()
            or any(folder.glob("screen-*"))
            or any(folder.glob("mic-*"))
        ):
            raise FileExistsError(f"{folder} already holds a recording")
        ffmpeg = opts.ffmpeg or default_ffmpeg()
        encoder = opts.encoder or detect_encoder(ffmpeg)
        self._started_at = utcnow()
        self._publish_state("recording")
        run: FfmpegRun | None = None
        run_count = 0
        next_numbers = {kind: 0 for kind in SegmentKind}
        recorded = 0.0
        error: str | None = None
        resumed_at: datetime | None = self._started_at
        try:
            while True:
                if self._state == "recording" and run is None:
                    remaining = None if opts.duration is None else opts.duration - recorded
                    if remaining is not None and remaining < MIN_RUN_S:
                        break
                    run_count += 1
                    try:
                        run = FfmpegRun(
                            opts.folder,
                            opts.source,
                            segment_seconds=opts.segment_seconds,
                            ffmpeg=ffmpeg,
                            encoder=encoder,
                            number=run_count,
                            next_numbers=next_numbers,
                            anchor=resumed_at or utcnow(),
                            max_seconds=remaining,
                        )
                    except OSError as exc:
                        error = f"cannot start ffmpeg ({ffmpeg}): {exc}"
                        break
                    self._run = run
                    resumed_at = None
                    self._publish_state(self._state)  # with the new run, for recovery
                    self.notify(f"recording run {run_count} (ffmpeg pid {run.proc.pid})")
                try:
                    action: Request | None = self._requests.get(timeout=POLL_INTERVAL_S)
                except queue.Empty:
                    action = None
                if run is not None:
                    self._hand_over(run.collect(final=False))
                    if action is None and run.exited():
                        ended, run = run, None
                        code = ended.close()
                        self._hand_over(ended.collect(final=True))
                        media = ended.media_seconds()
                        recorded += media
                        next_numbers = ended.next_numbers()
                        if opts.duration is not None and code == 0 and media > 0:
                            continue  # the loop's top stops once the duration is used up
                        error = f"ffmpeg exited with status {code}:\n{ended.log_tail()}"
                        break
                if action == "pause" and self._state == "recording":
                    paused_at = utcnow()
                    if run is not None:
                        media = self._finish(run)
                        recorded += media
                        next_numbers = run.next_numbers()
                        if media > 0:  # the pause starts where the recorded media ends
                            paused_at = run.anchor + timedelta(seconds=media)
                        run = None
                    self._ensure_begun()
                    self.agent.pause(opts.session_id, at=paused_at)
                    self._pauses += 1
                    self._publish_state("paused")
                    self.notify("paused")
                elif action == "resume" and self._state == "paused":
                    resumed_at = utcnow()
                    self._ensure_begun()
                    self.agent.resume(opts.session_id, at=resumed_at)
                    self._publish_state("recording")
                    self.notify("resumed")
                elif action == "stop":
                    self._publish_state("stopping")
                    break
        finally:
            try:
                if run is not None:
                    recorded += self._finish(run)
            finally:
                manifest_path = self._conclude()
        if error:
            log.error("%s", error)
        return RecordingResult(
            session_id=opts.session_id,
            folder=folder,
            segments=list(self._segments),
            manifest_path=manifest_path,
            pauses=self._pauses,
            error=error,
        )

    # -- internals -----------------------------------------------------------------

    def _finish(self, run: FfmpegRun) -> float:
        """Stop a run and hand over everything it recorded; returns its media seconds."""
        code = run.stop()
        self._hand_over(run.collect(final=True))
        log.debug("run %d ended with status %d", run.number, code)
        return run.media_seconds()

    def _ensure_begun(self) -> None:
        if self._begun:
            return
        assert self._started_at is not None
        self.agent.begin_session(
            self.options.session_id,
            name=self.options.name,
            started_at=self._started_at,
            priority=self.options.priority,
            options=self.options.enrichment,
        )
        self._begun = True

    def _hand_over(self, segments: list[LocalSegment]) -> None:
        for segment in segments:
            self._ensure_begun()
            self.agent.add_segment(self.options.session_id, segment.path, segment.spec)
            self._segments.append(segment)
            spec = segment.spec
            self.notify(f"segment {spec.file} ({spec.duration or 0:.2f} s) queued for upload")

    def _conclude(self) -> Path | None:
        """session.json, then end_session, then the control file goes (stop's ack)."""
        opts = self.options
        manifest_path = None
        try:
            if self._segments or self._begun:
                ended_at = utcnow()
                assert self._started_at is not None
                manifest_path = write_recording_manifest(
                    opts.folder,
                    session_id=opts.session_id,
                    name=opts.name,
                    started_at=self._started_at,
                    priority=opts.priority,
                    segments=[s.spec for s in self._segments],
                    ended_at=ended_at,
                    options=opts.enrichment,
                )
                self._ensure_begun()
                self.agent.end_session(opts.session_id, ended_at=ended_at)
                self.notify(f"session {opts.session_id} ended: {len(self._segments)} segments")
        finally:
            if opts.state_dir is not None:
                control.remove_info(opts.state_dir, opts.session_id, pid=_pid())
        return manifest_path

    def _publish_state(self, state: control.State) -> None:
        self._state = state
        opts = self.options
        if opts.state_dir is None:
            return
        assert self._started_at is not None
        run = self._run
        control.write_info(
            opts.state_dir,
            control.RecorderInfo(
                pid=_pid(),
                session_id=opts.session_id,
                name=opts.name,
                folder=str(opts.folder),
                state=state,
                started_at=self._started_at.isoformat(),
                priority=opts.priority,
                run=run.number if run is not None else 0,
                run_anchor=run.anchor.isoformat() if run is not None else "",
                run_start_numbers={str(k): n for k, n in run.start_numbers.items()} if run else {},
                run_kinds=tuple(run.kinds) if run is not None else (),
                ffmpeg_pid=run.proc.pid if run is not None else None,
            ),
        )


def _pid() -> int:
    return os.getpid()


#: Signals a recorder process reacts to, and what they ask for.
SIGNAL_REQUESTS: dict[signal.Signals, Request] = {
    signal.SIGUSR1: "pause",
    signal.SIGUSR2: "resume",
    signal.SIGINT: "stop",
    signal.SIGTERM: "stop",
    signal.SIGHUP: "stop",
}


@contextmanager
def signals_to(recorder: Recorder) -> Iterator[None]:
    """Route the control signals to ``recorder`` (main thread only); restore on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        recorder.request(SIGNAL_REQUESTS[signal.Signals(signum)])

    previous: dict[signal.Signals, Any] = {}
    for sig in SIGNAL_REQUESTS:
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
