"""The recorder: ffmpeg writes segments, each finished one is handed to the agent at once.

One *run* is one ffmpeg process (see :mod:`capture_agent.ffmpeg_cmd`). A segment of a run is
finished when the file after it exists (the ``segment`` muxer lists a segment, closes it and
only then opens the next) or when ffmpeg has exited; its times come from the run's CSV segment
list: ``started_at = run start (wall clock) + list start``, ``duration = end - start``.

* pause = stop the run gracefully, hand over its last segments, ``agent.pause`` at the end
  of the recorded media; resume = ``agent.resume`` and a new run whose segment numbers
  continue, anchored at the resume time. No segment can span a pause.
* stop (a request, ``SIGINT``/``SIGTERM``/``SIGHUP``, or the synthetic ``--duration``
  running out) = ffmpeg gets ``SIGINT`` (then ``SIGTERM``, ``SIGKILL`` only last), the
  final segment is handed over, ``session.json`` is written and only then ``end_session``:
  the outbox ships and announces every segment before ``session.ended``.

The session is begun lazily, when the first segment (or pause) is handed over, so a
recorder that cannot start (say macOS refused screen recording) leaves no empty session in
the pipeline.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import IO, Any, Literal, Protocol

import av

from capture_agent import control
from capture_agent.ffmpeg_cmd import (
    ENCODER_X264,
    Kind,
    Source,
    build_record_command,
    choose_video_encoder,
    parse_encoders,
    parse_segment_list,
    segment_list_name,
    segment_name,
    segment_number,
)
from shared.sessiondir import MANIFEST_NAME, Manifest, ManifestSegment, write_manifest
from synthetic.lavfi import SyntheticSource

log = logging.getLogger(__name__)

Request = Literal["pause", "resume", "stop"]
Priority = Literal["high", "normal", "low"]

#: How often the recorder looks for finished segments and requests, in seconds.
POLL_INTERVAL_S = 0.2
#: Wait after SIGINT for ffmpeg to finish its last segment, in seconds.
STOP_GRACE_S = 15.0
#: Wait after SIGTERM before SIGKILL (which may truncate the last fragment), in seconds.
TERM_GRACE_S = 5.0
#: A synthetic run shorter than this is not started (the duration is used up), seconds.
MIN_RUN_S = 0.1
#: Bytes of ffmpeg's log quoted when it fails.
LOG_TAIL_BYTES = 2000
ENCODER_PROBE_TIMEOUT_S = 15.0


class SessionSink(Protocol):
    """The part of :class:`capture_agent.agent.Agent` the recorder and watcher use."""

    def begin_session(
        self, session_id: str, *, name: str, started_at: datetime, priority: str = "normal"
    ) -> None: ...

    def add_segment(
        self,
        session_id: str,
        path: Path,
        *,
        kind: Literal["audio", "video"],
        file: str,
        started_at: datetime | None,
        duration: float | None,
    ) -> None: ...

    def pause(self, session_id: str, *, at: datetime) -> None: ...

    def resume(self, session_id: str, *, at: datetime) -> None: ...

    def end_session(self, session_id: str, *, ended_at: datetime | None = None) -> None: ...


class RecorderError(RuntimeError):
    """ffmpeg could not record (bad device, missing permission, unsupported option)."""


@dataclass(frozen=True)
class Segment:
    kind: Kind
    path: Path
    file: str
    started_at: datetime
    duration: float

    @property
    def ended_at(self) -> datetime:
        return self.started_at + timedelta(seconds=self.duration)

    def listed(self) -> ManifestSegment:
        return ManifestSegment(
            kind=self.kind, file=self.file, started_at=self.started_at, duration=self.duration
        )


def write_recording_manifest(
    folder: Path,
    *,
    session_id: str,
    name: str,
    started_at: datetime,
    priority: Literal["high", "normal", "low"],
    segments: Iterable[ManifestSegment],
    ended_at: datetime,
) -> Path:
    """``session.json`` of a finished recording: every segment in time order, complete."""
    manifest = Manifest(
        id=session_id,
        name=name,
        started_at=started_at,
        priority=priority,
        segments=sorted(segments, key=lambda s: (s.started_at, s.kind, s.file)),
        ended_at=ended_at,
        complete=True,
    )
    return write_manifest(folder, manifest)


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
    priority: Priority = "normal"
    state_dir: Path | None = None  # where the control file goes (None: not controllable)


@dataclass
class RecordingResult:
    session_id: str
    folder: Path
    segments: list[Segment]
    manifest_path: Path | None
    pauses: int
    error: str | None


def default_ffmpeg(platform: str = sys.platform) -> str:
    """On a Mac an ``ffmpeg`` on PATH (Homebrew's has avfoundation and VideoToolbox, which
    a static build may lack); else imageio-ffmpeg's binary (``IMAGEIO_FFMPEG_EXE`` overrides).
    """
    if platform == "darwin" and (found := shutil.which("ffmpeg")):
        return found
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def detect_encoder(ffmpeg: str, platform: str = sys.platform) -> str:
    """``h264_videotoolbox`` when on macOS and this ffmpeg has it, else ``libx264``."""
    if platform != "darwin":
        return ENCODER_X264
    try:
        out = subprocess.run(
            [ffmpeg, "-hide_banner", "-encoders"],
            capture_output=True,
            text=True,
            timeout=ENCODER_PROBE_TIMEOUT_S,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ENCODER_X264
    return choose_video_encoder(platform, parse_encoders(out))


def now() -> datetime:
    return datetime.now(UTC)


def probe_duration(path: Path) -> float | None:
    """Seconds of media in a (possibly truncated) file, by reading its packets."""
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
            return float((last - first) * base)
    except (av.FFmpegError, OSError):
        return None


class RunFiles:
    """The segment files of one ffmpeg run, and how many of each kind were handed over.

    Needs no process: the recorder reads them while ffmpeg writes, and a recording whose
    recorder died is finished from them alone (capture_agent.recover).
    """

    def __init__(
        self,
        folder: Path,
        *,
        number: int,
        kinds: Sequence[Kind],
        start_numbers: dict[Kind, int],
        anchor: datetime,
    ) -> None:
        self.folder = folder
        self.number = number
        self.anchor = anchor
        self.start_numbers = dict(start_numbers)
        self.kinds: list[Kind] = list(kinds)
        self.reported: dict[Kind, int] = {kind: 0 for kind in self.kinds}
        self.last_end: dict[Kind, float] = {kind: 0.0 for kind in self.kinds}

    def collect(self, *, final: bool) -> list[Segment]:
        """Segments finished since the last call, in recording order.

        With ``final`` (ffmpeg has exited) every listed segment is finished, and files the
        muxer never got to list (ffmpeg killed) are probed and included if decodable.
        """
        found: list[Segment] = []
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
                found.append(self._segment(kind, entry.file, entry.start, entry.end - entry.start))
                self.reported[kind] += 1
                self.last_end[kind] = max(self.last_end[kind], entry.end)
            if final:
                found.extend(self._unlisted(kind))
        found.sort(key=lambda s: (s.started_at, s.kind != "video", s.file))
        return found

    def _unlisted(self, kind: Kind) -> list[Segment]:
        """Files a killed ffmpeg left without listing them (fragmented MP4 stays readable)."""
        extra = []
        number = self.start_numbers[kind] + self.reported[kind]
        while (self.folder / segment_name(kind, number)).exists():
            name = segment_name(kind, number)
            duration = probe_duration(self.folder / name)
            if duration is None or duration <= 0:
                log.warning("%s: unfinished and unreadable, left out of the session", name)
                break
            extra.append(self._segment(kind, name, self.last_end[kind], duration))
            self.last_end[kind] += duration
            self.reported[kind] += 1
            number += 1
        return extra

    def _segment(self, kind: Kind, name: str, start: float, duration: float) -> Segment:
        return Segment(
            kind=kind,
            path=self.folder / name,
            file=name,
            started_at=self.anchor + timedelta(seconds=start),
            duration=round(max(duration, 0.0), 6),
        )

    def media_seconds(self) -> float:
        return max(self.last_end.values(), default=0.0)

    def next_numbers(self) -> dict[Kind, int]:
        return {
            kind: self.start_numbers[kind] + self.reported.get(kind, 0)
            for kind in ("video", "audio")
        }


class _Run(RunFiles):
    """One ffmpeg process and the segments it has finished so far."""

    def __init__(
        self,
        options: RecordOptions,
        *,
        ffmpeg: str,
        encoder: str,
        number: int,
        next_numbers: dict[Kind, int],
        anchor: datetime,
        max_seconds: float | None,
    ) -> None:
        kinds: list[Kind] = ["video"]
        source = options.source
        if (isinstance(source, SyntheticSource) and source.audio) or (
            not isinstance(source, SyntheticSource) and source.audio_device is not None
        ):
            kinds.append("audio")
        super().__init__(
            options.folder, number=number, kinds=kinds, start_numbers=next_numbers, anchor=anchor
        )
        self.argv = build_record_command(
            ffmpeg,
            options.source,
            segment_seconds=options.segment_seconds,
            video_start=next_numbers["video"],
            audio_start=next_numbers["audio"],
            run=number,
            encoder=encoder,
            max_seconds=max_seconds,
        )
        self.log_path = self.folder / f".ffmpeg-run{number:03d}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        log.debug("run %d: %s", number, " ".join(self.argv))
        try:
            # Own process group: a Ctrl-C in the terminal reaches only the recorder, which
            # then stops ffmpeg itself, once, in order.
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.folder,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._log,
                start_new_session=True,
            )
        except OSError:
            self._log.close()
            raise
        self.stop_requested = False

    def exited(self) -> bool:
        return self.proc.poll() is not None

    def stop(self) -> int:
        """End ffmpeg gracefully: SIGINT, then SIGTERM, SIGKILL only as the last resort."""
        self.stop_requested = True
        steps: list[tuple[Callable[[], None], float]] = [
            (lambda: self.proc.send_signal(signal.SIGINT), STOP_GRACE_S),
            (self.proc.terminate, TERM_GRACE_S),
            (self.proc.kill, TERM_GRACE_S),
        ]
        for action, grace in steps:
            if self.proc.poll() is not None:
                break
            action()
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log.warning("ffmpeg (pid %d) still running after %.0f s", self.proc.pid, grace)
        return self.close()

    def close(self) -> int:
        code = self.proc.wait()
        if not self._log.closed:
            self._log.close()
        return code

    def log_tail(self) -> str:
        try:
            data = self.log_path.read_bytes()[-LOG_TAIL_BYTES:]
        except OSError:
            return ""
        return data.decode("utf-8", "replace").strip()


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
        self._segments: list[Segment] = []
        self._begun = False
        self._started_at: datetime | None = None
        self._pauses = 0
        self._state: control.State = "recording"
        self._run: _Run | None = None

    # -- control ---------------------------------------------------------------

    def request(self, action: Request) -> None:
        """Ask the recorder to pause, resume or stop (thread- and signal-handler-safe)."""
        self._requests.put(action)

    @property
    def segments(self) -> list[Segment]:
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
        self._started_at = now()
        self._publish_state("recording")
        run: _Run | None = None
        run_count = 0
        next_numbers: dict[Kind, int] = {"video": 0, "audio": 0}
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
                        run = _Run(
                            opts,
                            ffmpeg=ffmpeg,
                            encoder=encoder,
                            number=run_count,
                            next_numbers=next_numbers,
                            anchor=resumed_at or now(),
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
                    paused_at = now()
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
                    resumed_at = now()
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

    def _finish(self, run: _Run) -> float:
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
        )
        self._begun = True

    def _hand_over(self, segments: list[Segment]) -> None:
        for segment in segments:
            self._ensure_begun()
            self.agent.add_segment(
                self.options.session_id,
                segment.path,
                kind=segment.kind,
                file=segment.file,
                started_at=segment.started_at,
                duration=segment.duration,
            )
            self._segments.append(segment)
            self.notify(f"segment {segment.file} ({segment.duration:.2f} s) queued for upload")

    def _conclude(self) -> Path | None:
        """session.json, then end_session, then the control file goes (stop's ack)."""
        opts = self.options
        manifest_path = None
        try:
            if self._segments or self._begun:
                ended_at = now()
                assert self._started_at is not None
                manifest_path = write_recording_manifest(
                    opts.folder,
                    session_id=opts.session_id,
                    name=opts.name,
                    started_at=self._started_at,
                    priority=opts.priority,
                    segments=[s.listed() for s in self._segments],
                    ended_at=ended_at,
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
