"""Replay a recorded session into a watched folder the way a recorder writes it, through the
real ``capture-agent watch``, and time the pipeline from the end of the session.

**The rule** (what a recorder does, and what ``capture_agent/watch.py`` expects of it):

* ``session.json`` appears first, listing no segment: the watcher begins the session.
* Each segment file is opened at its recorded start divided by the speed factor N and
  written progressively, one open file as a recorder's encoder writes it (its bytes in
  proportion to the elapsed share of its span, every ``WRITE_TICK_S``), and closed at its
  recorded end divided by N. The watcher ships a file once it is closed (inotify
  ``IN_CLOSE_WRITE``) and settled, never while it grows.
* ``session.json`` is rewritten (temporary name, then rename) to list a segment once it is
  closed, as ffmpeg's segment list names a segment once it is finished.
* At the end (the last segment's recorded end divided by N) ``session.json`` gets its
  ``ended_at``: the end marker. The watcher then emits ``session.ended``.

:func:`replay_schedule` is that rule as a pure function of the manifest and N;
:func:`replay_into` carries it out on the wall clock and records when each step happened;
:func:`pipeline_times` reads from the database when the workers saw ``session.ended`` and
when ``merge`` (the playable MP4), ``compress`` (the compressed copy) and ``finalize``
finished; :class:`LiveSystem` is a running system of our own (a fresh PostgreSQL database,
a Redis database, real celery workers for every queue, the real agent).

Every time is on one wall clock: this process's ``time.time()`` and the workers' ``utcnow()``
on the same machine.

    # against a running system (make up): its settings come from the environment
    python bench/replay.py SESSION_DIR --speed 5
    # or a system of its own
    python bench/replay.py SESSION_DIR --speed 5 --fresh-system --redis-url redis://127.0.0.1:6379/4
"""

from __future__ import annotations

import argparse
import enum
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402

from shared import models  # noqa: E402
from shared.clock import as_utc  # noqa: E402
from shared.db import session_scope  # noqa: E402
from shared.migrate import upgrade  # noqa: E402
from shared.sessiondir import Manifest, ManifestSegment, load_manifest, write_manifest  # noqa: E402

#: How often an open segment file gets its next bytes, in wall seconds (a hardware encoder
#: writing fragmented MP4 writes about once a second of media; at 5x that is 0.2 s).
WRITE_TICK_S = 0.2
#: Bytes read from the source per write call.
COPY_CHUNK_BYTES = 1024 * 1024
#: How often the database is polled while waiting for the pipeline, in seconds.
POLL_S = 0.2
#: Default wait for the pipeline after the end marker, in seconds.
DEFAULT_SETTLE_TIMEOUT_S = 3600.0
#: Give up when the watching agent has not ended the session this long after the marker.
DEFAULT_SPEED = 5.0
#: The stages whose finish is measured: the playable MP4, the compressed copy, the check.
PLAYABLE_STAGE, COMPRESSED_STAGE, FINALIZE_STAGE = "merge", "compress", "finalize"
#: The stage before ``merge``: the session's audio track.
AUDIO_STAGE = "concat_audio"
AGENT_STOP_TIMEOUT_S = 60.0
WORKER_QUEUES_OTHER = "default,enrich"


class StepKind(enum.IntEnum):
    """What happens at a step; the value orders steps due at the same instant."""

    START = 0  # session.json written, listing nothing
    CLOSE = 1  # a segment file's last bytes written, closed; listed in session.json
    OPEN = 2  # a segment file created (its bytes follow until CLOSE)
    END = 3  # session.json gets ended_at: the end marker


@dataclass(frozen=True, order=True)
class Step:
    """One file-system action of the replay, ``at_s`` wall seconds after the start."""

    at_s: float
    kind: StepKind
    file: str = ""


@dataclass(frozen=True)
class Span:
    """A segment's place on the recording clock, in seconds from the session's start."""

    file: str
    kind: str
    start_s: float
    end_s: float


def segment_spans(manifest: Manifest) -> list[Span]:
    """Each listed segment's recorded span. A segment without ``started_at`` follows the
    previous one of its kind (the README's rule); every segment needs its ``duration``."""
    spans: list[Span] = []
    next_start: dict[str, float] = {}
    for segment in manifest.segments:
        if segment.duration is None:
            raise ValueError(f"segment {segment.file!r} has no duration: replay needs them all")
        kind = str(segment.kind)
        if segment.started_at is not None:
            start = (segment.started_at - manifest.started_at).total_seconds()
        else:
            start = next_start.get(kind, 0.0)
        end = start + segment.duration
        next_start[kind] = end
        spans.append(Span(segment.file, kind, max(start, 0.0), end))
    return spans


def replay_schedule(manifest: Manifest, speed: float) -> list[Step]:
    """The replay of ``manifest`` at ``speed`` times real time, in the order to carry it out.

    START at 0; every segment OPEN at its recorded start / speed and CLOSE at its recorded
    end / speed (a CLOSE before an OPEN at the same instant: one segment ends as the next
    begins); END at the last recorded end / speed, after everything else.
    """
    if not speed > 0:
        raise ValueError(f"speed must be positive, not {speed}")
    spans = segment_spans(manifest)
    steps = [Step(0.0, StepKind.START)]
    for span in spans:
        steps.append(Step(span.start_s / speed, StepKind.OPEN, span.file))
        steps.append(Step(span.end_s / speed, StepKind.CLOSE, span.file))
    end_s = max((span.end_s for span in spans), default=0.0)
    steps.append(Step(end_s / speed, StepKind.END))
    return sorted(steps)


def recorded_seconds(manifest: Manifest) -> float:
    """Length of the recording: from the session's start to its last segment's end."""
    return max((span.end_s for span in segment_spans(manifest)), default=0.0)


def bytes_due(size: int, open_s: float, close_s: float, now_s: float) -> int:
    """How many of a file's ``size`` bytes are written by ``now_s``: in proportion to the
    elapsed share of its ``[open_s, close_s]`` span, all of them from ``close_s`` on."""
    if now_s >= close_s or close_s <= open_s:
        return size if now_s >= open_s else 0
    if now_s <= open_s:
        return 0
    return min(size, int(size * (now_s - open_s) / (close_s - open_s)))


# -- carrying it out ---------------------------------------------------------------------


@dataclass
class SegmentWrite:
    """When one segment file was created and closed (wall clock, UTC)."""

    file: str
    kind: str
    size: int
    scheduled_close_s: float
    opened: datetime | None = None
    closed: datetime | None = None


@dataclass
class ReplayRecord:
    """What the replay did and when (wall clock, UTC)."""

    session_id: str
    speed: float
    recorded_s: float
    folder: Path
    started: datetime | None = None  # session.json first written
    ended: datetime | None = None  # the end marker written
    max_lag_s: float = 0.0  # how late the latest step ran against its schedule
    segments: list[SegmentWrite] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(s.size for s in self.segments)


@dataclass
class _OpenFile:
    source: IO[bytes]
    target: IO[bytes]
    size: int
    open_s: float
    close_s: float
    written: int = 0


def _wall() -> datetime:
    return datetime.fromtimestamp(time.time(), UTC)


def _copy_up_to(handle: _OpenFile, due: int) -> None:
    while handle.written < due:
        chunk = handle.source.read(min(COPY_CHUNK_BYTES, due - handle.written))
        if not chunk:
            raise OSError(f"source ended after {handle.written} of {handle.size} bytes")
        handle.target.write(chunk)
        handle.written += len(chunk)
    handle.target.flush()


def replay_into(
    source: Path,
    folder: Path,
    *,
    speed: float = DEFAULT_SPEED,
    session_id: str | None = None,
) -> ReplayRecord:
    """Replay the session folder ``source`` into ``folder`` (created; a session folder the
    agent watches, or one inside the watched folder) at ``speed`` times real time.

    The session takes ``session_id`` (default: the source's id). Returns once the end marker
    is written, with the wall time of every step.
    """
    original = load_manifest(source)
    manifest = original.model_copy(update={"id": session_id or original.id})
    steps = replay_schedule(manifest, speed)
    spans = {span.file: span for span in segment_spans(manifest)}
    listed_in_order = {s.file: s for s in manifest.segments}
    record = ReplayRecord(
        session_id=manifest.id, speed=speed, recorded_s=recorded_seconds(manifest), folder=folder
    )
    writes = {
        s.file: SegmentWrite(
            s.file,
            str(s.kind),
            (source / s.file).stat().st_size,
            spans[s.file].end_s / speed,
        )
        for s in manifest.segments
    }
    record.segments = list(writes.values())
    folder.mkdir(parents=True, exist_ok=True)
    listed: list[ManifestSegment] = []
    open_files: dict[str, _OpenFile] = {}
    began = time.monotonic()
    pending = list(steps)
    try:
        while pending or open_files:
            now = time.monotonic() - began
            listing_changed = False
            while pending and pending[0].at_s <= now:
                step = pending.pop(0)
                record.max_lag_s = max(record.max_lag_s, now - step.at_s)
                if step.kind is StepKind.START:
                    write_manifest(folder, manifest.model_copy(update={"segments": []}))
                    record.started = _wall()
                elif step.kind is StepKind.OPEN:
                    span = spans[step.file]
                    open_files[step.file] = _OpenFile(
                        source=(source / step.file).open("rb"),
                        target=(folder / step.file).open("wb"),
                        size=writes[step.file].size,
                        open_s=span.start_s / speed,
                        close_s=span.end_s / speed,
                    )
                    writes[step.file].opened = _wall()
                elif step.kind is StepKind.CLOSE:
                    handle = open_files.pop(step.file)
                    _copy_up_to(handle, handle.size)
                    handle.target.close()
                    handle.source.close()
                    writes[step.file].closed = _wall()
                    listed.append(listed_in_order[step.file])
                    listing_changed = True
                else:  # END
                    ended_at = manifest.started_at + timedelta(seconds=record.recorded_s)
                    write_manifest(
                        folder,
                        manifest.model_copy(update={"segments": listed, "ended_at": ended_at}),
                    )
                    record.ended = _wall()
                    listing_changed = False
            if listing_changed:
                write_manifest(folder, manifest.model_copy(update={"segments": list(listed)}))
            for handle in open_files.values():
                _copy_up_to(handle, bytes_due(handle.size, handle.open_s, handle.close_s, now))
            if not pending and not open_files:
                break
            next_at = pending[0].at_s if pending else now + WRITE_TICK_S
            wait = min(next_at, now + WRITE_TICK_S) - (time.monotonic() - began)
            if wait > 0:
                time.sleep(wait)
    finally:
        for handle in open_files.values():
            handle.target.close()
            handle.source.close()
    return record


# -- reading the pipeline's times --------------------------------------------------------


@dataclass(frozen=True)
class PipelineTimes:
    """When the workers saw the end and finished each measured stage (UTC; None: not yet)."""

    status: str | None
    ended_emitted: datetime | None  # the agent created session.ended
    ended_received: datetime | None  # session.ended arrived at the workers (events)
    audio: datetime | None  # concat_audio succeeded
    merge_started: datetime | None
    playable: datetime | None  # merge succeeded
    compress_started: datetime | None
    compressed: datetime | None  # compress succeeded
    finalized: datetime | None  # finalize succeeded
    complete: datetime | None  # the last job finished, once every job has
    failed: tuple[str, ...] = ()  # "stage: error" of every failed job

    @property
    def settled(self) -> bool:
        return self.status in ("completed", "failed") or bool(self.failed)


def _opt_utc(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


def pipeline_times(database_url: str, session_id: str) -> PipelineTimes:
    """The session's measured times, read from the events and jobs tables."""
    with session_scope(database_url) as db:
        status = db.execute(
            select(models.Session.status).where(models.Session.id == session_id)
        ).scalar_one_or_none()
        emitted, received = db.execute(
            select(func.min(models.Event.emitted_at), func.min(models.Event.received_at)).where(
                models.Event.session_id == session_id, models.Event.type == "session.ended"
            )
        ).one()
        jobs = list(
            db.execute(select(models.Job).where(models.Job.session_id == session_id)).scalars()
        )
    done = {j.stage: j for j in jobs if j.status == "succeeded"}
    finished = [j.finished_at for j in jobs]
    all_finished = bool(jobs) and all(f is not None for f in finished)

    def finish(stage: str) -> datetime | None:
        job = done.get(stage)
        return None if job is None else _opt_utc(job.finished_at)

    compress, merge = done.get(COMPRESSED_STAGE), done.get(PLAYABLE_STAGE)
    return PipelineTimes(
        status=status,
        ended_emitted=_opt_utc(emitted),
        ended_received=_opt_utc(received),
        audio=finish(AUDIO_STAGE),
        merge_started=None if merge is None else _opt_utc(merge.started_at),
        playable=finish(PLAYABLE_STAGE),
        compress_started=None if compress is None else _opt_utc(compress.started_at),
        compressed=finish(COMPRESSED_STAGE),
        finalized=finish(FINALIZE_STAGE),
        complete=max((as_utc(f) for f in finished if f is not None), default=None)
        if all_finished and status == "completed"
        else None,
        failed=tuple(f"{j.stage}: {j.error}" for j in jobs if j.status == "failed"),
    )


def wait_settled(
    database_url: str,
    session_id: str,
    timeout: float = DEFAULT_SETTLE_TIMEOUT_S,
    *,
    alive: Any = None,
) -> PipelineTimes:
    """Poll until the session is completed or failed; ``alive()`` may raise to give up."""
    deadline = time.monotonic() + timeout
    while True:
        times = pipeline_times(database_url, session_id)
        if times.settled:
            return times
        if time.monotonic() > deadline:
            raise TimeoutError(f"session {session_id} not settled after {timeout:g} s: {times}")
        if alive is not None:
            alive()
        time.sleep(POLL_S)


@dataclass(frozen=True)
class LiveResult:
    """One replayed session: seconds from the end marker to each milestone."""

    session_id: str
    recorded_s: float
    speed: float
    media_workers: int
    status: str | None
    end_to_emitted_s: float | None  # the agent ended the session (its watcher's settle)
    end_to_seen_s: float | None  # session.ended arrived at the workers
    end_to_audio_s: float | None  # concat_audio finished
    end_to_playable_s: float | None
    end_to_compressed_s: float | None
    end_to_finalized_s: float | None
    end_to_complete_s: float | None
    compress_run_s: float | None  # the compress job's own run time
    merge_run_s: float | None  # the merge job's own run time
    max_lag_s: float
    failed: tuple[str, ...]
    # The live view (workers/live.py), watched by bench/bench_live.py: how long after a video
    # segment was closed its fragment was listed (worst), in seconds and in segments at this
    # speed, and when the whole recording was listed after the end marker.
    live_lag_s: float | None = None
    live_lag_segments: float | None = None
    end_to_live_s: float | None = None
    # CPU seconds each part of the system used during the replay and until it settled
    # (bench/cpuaccount.py), and the wall seconds they were measured over.
    cpu_s: dict[str, float] | None = None
    cpu_wall_s: float | None = None

    @property
    def compress_minutes_per_minute(self) -> float | None:
        """Compressed-copy throughput: recorded minutes per wall minute of the compress job."""
        if not self.compress_run_s:
            return None
        return self.recorded_s / self.compress_run_s


def _since(end: datetime, value: datetime | None) -> float | None:
    return None if value is None else (value - end).total_seconds()


def live_result(record: ReplayRecord, times: PipelineTimes, media_workers: int) -> LiveResult:
    assert record.ended is not None, "the replay did not write its end marker"
    end = record.ended
    run = (
        (times.compressed - times.compress_started).total_seconds()
        if times.compressed and times.compress_started
        else None
    )
    return LiveResult(
        session_id=record.session_id,
        recorded_s=record.recorded_s,
        speed=record.speed,
        media_workers=media_workers,
        status=times.status,
        end_to_emitted_s=_since(end, times.ended_emitted),
        end_to_seen_s=_since(end, times.ended_received),
        end_to_audio_s=_since(end, times.audio),
        end_to_playable_s=_since(end, times.playable),
        end_to_compressed_s=_since(end, times.compressed),
        end_to_finalized_s=_since(end, times.finalized),
        end_to_complete_s=_since(end, times.complete),
        compress_run_s=run,
        merge_run_s=(
            (times.playable - times.merge_started).total_seconds()
            if times.playable and times.merge_started
            else None
        ),
        max_lag_s=record.max_lag_s,
        failed=times.failed,
    )


# -- a running system --------------------------------------------------------------------


class WatchingAgent:
    """A real ``capture-agent watch FOLDER`` process with a state folder of its own."""

    def __init__(self, folder: Path, env: dict[str, str], state_dir: Path, log_path: Path) -> None:
        from tests.support.cli import capture_agent

        folder.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        env = {**env, "SESSIONPIPE_AGENT_STATE_DIR": str(state_dir)}
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                capture_agent("watch", str(folder)),
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def assert_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise RuntimeError(f"capture-agent watch exited ({code}):\n{self.log()[-3000:]}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(AGENT_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(AGENT_STOP_TIMEOUT_S)


class LiveSystem:
    """A system of our own in ``root``: the given PostgreSQL database (migrated) and Redis
    database (emptied), shared storage in ``root/home/storage``, and real celery workers:
    ``media_workers`` for ``media`` (concurrency 1 each), one for ``audio``, one for
    ``default,enrich`` (concurrency 2), as docker-compose runs them. The deployed timing
    defaults (leases, sweeps); enrichment off unless ``enrich``."""

    def __init__(
        self,
        root: Path,
        *,
        database_url: str,
        broker_url: str,
        media_workers: int = 1,
        enrich: bool = False,
    ) -> None:
        import redis

        from tests.faults.harness import Worker
        from tests.support.services import FAST_RECOVERY_ENV, service_env

        self.root = root
        self.database_url = database_url
        self.broker_url = broker_url
        self.media_workers = media_workers
        root.mkdir(parents=True, exist_ok=True)
        redis.Redis.from_url(broker_url).flushdb()
        upgrade(database_url)
        env = service_env(home=root / "home", database_url=database_url, broker_url=broker_url)
        for key in FAST_RECOVERY_ENV:  # the deployed defaults, not the fault suite's
            env.pop(key, None)
        env["SESSIONPIPE_ENRICH"] = "all" if enrich else "none"
        self.env = env
        self.workers: list[Worker] = []
        try:  # started together, so that they get ready together
            for index in range(media_workers):
                self.workers.append(
                    Worker(env, root / f"worker-media{index}.log", queues="media", wait=False)
                )
            self.workers.append(Worker(env, root / "worker-audio.log", queues="audio", wait=False))
            self.workers.append(
                Worker(
                    env,
                    root / "worker-other.log",
                    queues=WORKER_QUEUES_OTHER,
                    concurrency=2,
                    wait=False,
                )
            )
            for worker in self.workers:
                worker.wait_ready()
        except BaseException:
            self.stop()
            raise

    def agent(self, folder: Path, name: str = "agent") -> WatchingAgent:
        return WatchingAgent(
            folder, self.env, self.root / f"{name}-state", self.root / f"{name}.log"
        )

    def assert_alive(self) -> None:
        for worker in self.workers:
            if not worker.alive:
                raise RuntimeError(f"worker {worker.name} exited:\n{worker.log()[-3000:]}")

    def stop(self) -> None:
        """Kill every worker whole (main process and pool children, their process group):
        the run is over or was interrupted, nothing is left to finish, and a warm shutdown
        would wait for a transcode in flight or leave pool children behind."""
        for worker in self.workers:
            worker.discard()


def environment_system_env() -> dict[str, str]:
    """The environment of a running system's agent: this process's ``SESSIONPIPE_*``."""
    from tests.support.cli import clean_env

    return {**clean_env(), **{k: v for k, v in os.environ.items() if k.startswith("SESSIONPIPE_")}}


def replay_live(
    source: Path,
    *,
    agent: WatchingAgent,
    watched: Path,
    database_url: str,
    speed: float,
    session_id: str,
    media_workers: int,
    timeout: float = DEFAULT_SETTLE_TIMEOUT_S,
    alive: Any = None,
) -> tuple[ReplayRecord, PipelineTimes, LiveResult]:
    """Replay ``source`` into ``watched/<session_id>`` while ``agent`` watches ``watched``,
    then wait for the pipeline; the record, the pipeline's times and the result."""

    def check() -> None:
        agent.assert_alive()
        if alive is not None:
            alive()

    record = replay_into(source, watched / session_id, speed=speed, session_id=session_id)
    times = wait_settled(database_url, session_id, timeout, alive=check)
    return record, times, live_result(record, times, media_workers)


def describe(result: LiveResult) -> str:
    def s(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} s"

    rate = result.compress_minutes_per_minute
    return (
        f"{result.session_id}: {result.recorded_s / 60:g} min at {result.speed:g}x, "
        f"{result.status}; end -> agent ended it {s(result.end_to_emitted_s)}, seen "
        f"{s(result.end_to_seen_s)}, audio {s(result.end_to_audio_s)}, playable "
        f"{s(result.end_to_playable_s)}, compressed {s(result.end_to_compressed_s)}, "
        f"complete {s(result.end_to_complete_s)}; merge ran {s(result.merge_run_s)}, "
        f"compress ran {s(result.compress_run_s)}"
        + (f" ({rate:.2f} recorded min/min)" if rate else "")
        + f"; replay lag at most {result.max_lag_s:.2f} s"
        + (f"; failed: {result.failed}" if result.failed else "")
    )


@contextmanager
def fresh_database() -> Iterator[str]:
    """A fresh PostgreSQL database on the tests' server, dropped afterwards."""
    from tests.support.services import create_database, drop_database

    url = create_database()
    try:
        yield url
    finally:
        drop_database(url)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", type=Path, help="a session folder (session.json and its segments)")
    p.add_argument("--speed", type=float, default=DEFAULT_SPEED, help="times real time")
    p.add_argument("--session-id", help="the replayed session's id (default: replay-<time>)")
    p.add_argument("--watch-dir", type=Path, help="the folder the agent watches (default: new)")
    p.add_argument("--fresh-system", action="store_true", help="start a system of our own")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/4", help="with --fresh-system")
    p.add_argument("--media-workers", type=int, default=1, help="with --fresh-system")
    p.add_argument("--enrich", action="store_true", help="with --fresh-system: run enrichment")
    p.add_argument("--timeout", type=float, default=DEFAULT_SETTLE_TIMEOUT_S)
    p.add_argument("--json", type=Path, help="write the result as JSON")
    args = p.parse_args(argv)
    session_id = args.session_id or f"replay-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    work = Path(tempfile.mkdtemp(prefix="sessionpipe-replay-"))
    watched = args.watch_dir or work / "watched"
    system: LiveSystem | None = None
    agent: WatchingAgent | None = None
    try:
        with fresh_database() if args.fresh_system else _environment_database() as database_url:
            if args.fresh_system:
                system = LiveSystem(
                    work,
                    database_url=database_url,
                    broker_url=args.redis_url,
                    media_workers=args.media_workers,
                    enrich=args.enrich,
                )
                agent = system.agent(watched)
            else:
                agent = WatchingAgent(
                    watched, environment_system_env(), work / "agent-state", work / "agent.log"
                )
            _, _, result = replay_live(
                args.source,
                agent=agent,
                watched=watched,
                database_url=database_url,
                speed=args.speed,
                session_id=session_id,
                media_workers=args.media_workers if system else 0,
                timeout=args.timeout,
                alive=system.assert_alive if system else None,
            )
            print(describe(result))
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(asdict(result), indent=2), encoding="utf-8")
            return 0 if result.status == "completed" else 1
    finally:
        if agent is not None:
            agent.stop()
        if system is not None:
            system.stop()
        shutil.rmtree(work, ignore_errors=True)


@contextmanager
def _environment_database() -> Iterator[str]:
    from shared.settings import Settings

    yield Settings().database_url


if __name__ == "__main__":
    raise SystemExit(main())
