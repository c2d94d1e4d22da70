"""Live sessions: the time from the end of a recording to its playable MP4 and compressed copy.

Each session is replayed by :mod:`bench.replay` into a folder watched by the real
``capture-agent watch``, as a recorder writes it (segments appearing at their recorded
times, sped up ``--speed`` times), on a system of its own: a fresh PostgreSQL database, a
Redis database (``--redis-url``, emptied), real celery workers for every queue
(``--media-workers`` for ``media``), enrichment off unless ``--enrich``.

The sessions look like the issue's reference recording: 1080p30 H.264 at a constant
8 Mbit/s (a Mac's hardware encoder), 10 s video segments and 10 s AAC microphone segments,
as the recorder writes them. Encoding two hours of 1080p here takes longer than replaying
it, so a session is made of one generated minute (:mod:`synthetic.ffmpeg_session`: every
period of the synthetic desktop's activity, six 10 s segments per track) repeated: the
files are hard links under ``--cache`` (``var/bench-cache``), the session folder is built
once per length and kept.

The rule of the figures (the issue's targets): after the end marker, the playable MP4
within ``PLAYABLE_TARGET_S`` and the compressed copy within ``COMPRESSED_TARGET_S``, the
same for every length. Also printed: when the workers saw ``session.ended``, when the
session was complete, and the compressed copy's throughput (recorded minutes per wall
minute of its job) with ``--media-workers`` and ``--compare-workers`` media workers.

    .venv/bin/python bench/bench_live.py                  # = make bench-live: 5, 30, 120 min
    .venv/bin/python bench/bench_live.py --minutes 5 30 --json bench/out/live.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.cpuaccount import CpuAccount  # noqa: E402
from bench.replay import (  # noqa: E402
    DEFAULT_SPEED,
    LiveResult,
    LiveSystem,
    ReplayRecord,
    describe,
    fresh_database,
    replay_live,
)
from shared.sessiondir import MANIFEST_NAME, Manifest, ManifestSegment, write_manifest  # noqa: E402
from shared.storage import Storage  # noqa: E402
from synthetic.ffmpeg_session import (  # noqa: E402
    SESSION_START,
    SessionSpec,
    SynthSession,
    ensure_session,
)
from workers import live  # noqa: E402

DEFAULT_MINUTES = (5, 30, 120)
DEFAULT_CACHE = ROOT / "var" / "bench-cache"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/4"
#: Segment length of the recorder, both tracks, in seconds.
SEGMENT_S = 10
LIVE_POLL_S = 0.1  # how often the live view's fragments are looked at while replaying
#: The generated minute every session repeats: six 10 s segments per track.
POOL_MINUTES = 1
POOL = SessionSpec(
    minutes=POOL_MINUTES,
    audio_segments=POOL_MINUTES * 60 // SEGMENT_S,
    video_segments=POOL_MINUTES * 60 // SEGMENT_S,
)
#: The issue's targets, in seconds after the end marker.
PLAYABLE_TARGET_S = 2.0
COMPRESSED_TARGET_S = 10.0
#: Wait for the pipeline at most this long per recorded minute after the end (plus a minute).
SETTLE_S_PER_MINUTE = 60.0
SETTLE_BASE_S = 60.0


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system
        shutil.copy2(source, target)


def live_session(minutes: int, cache: Path) -> Path:
    """The session folder of ``minutes`` minutes under ``cache`` (built once, then reused):
    the generated minute's segments repeated, renumbered, at their recorded times."""
    pool: SynthSession = ensure_session(POOL, cache)
    folder = cache / f"live-{minutes}m-{pool.spec.key}"
    if (folder / MANIFEST_NAME).is_file():
        return folder
    building = folder.with_name(folder.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    video, audio = pool.of_kind("video"), pool.of_kind("audio")
    segments: list[ManifestSegment] = []
    for index in range(minutes * 60 // SEGMENT_S):
        started_at = SESSION_START + timedelta(seconds=index * SEGMENT_S)
        for kind, files, name in (
            ("video", video, f"screen-{index:05d}.mp4"),
            ("audio", audio, f"mic-{index:05d}.m4a"),
        ):
            piece = files[index % len(files)]
            _link(piece.path, building / name)
            segments.append(
                ManifestSegment.model_validate(
                    {
                        "kind": kind,
                        "file": name,
                        "started_at": started_at,
                        "duration": piece.duration_s,
                    }
                )
            )
    write_manifest(
        building,
        Manifest(
            id=f"live-{minutes}m",
            name=f"Live replay, {minutes} min",
            started_at=SESSION_START,
            segments=segments,
        ),
    )
    building.rename(folder)
    return folder


def run_one(
    source: Path,
    minutes: int,
    *,
    media_workers: int,
    speed: float,
    redis_url: str,
    enrich: bool,
    keep: bool,
) -> LiveResult:
    """Replay one session on a fresh system; its result."""
    work = Path(tempfile.mkdtemp(prefix=f"sessionpipe-live-{minutes}m-"))
    session_id = f"live-{minutes}m-w{media_workers}-{datetime.now(UTC):%H%M%S}"
    print(
        f"replaying {minutes} min at {speed:g}x ({minutes * 60 / speed:.0f} s) with "
        f"{media_workers} media worker(s); work folder {work}",
        flush=True,
    )
    try:
        with fresh_database() as database_url:
            system = LiveSystem(
                work,
                database_url=database_url,
                broker_url=redis_url,
                media_workers=media_workers,
                enrich=enrich,
            )
            agent = system.agent(work / "watched")
            watcher = LiveWatcher(Storage(work / "home" / "storage"), session_id)
            account, started = CpuAccount().start(), time.monotonic()
            try:
                record, _, result = replay_live(
                    source,
                    agent=agent,
                    watched=work / "watched",
                    database_url=database_url,
                    speed=speed,
                    session_id=session_id,
                    media_workers=media_workers,
                    timeout=SETTLE_BASE_S + SETTLE_S_PER_MINUTE * minutes,
                    alive=system.assert_alive,
                )
            finally:
                cpu = account.stop()
                wall = time.monotonic() - started
                watcher.stop()
                agent.stop()
                system.stop()
            result = replace(watcher.measure(record, result), cpu_s=cpu, cpu_wall_s=wall)
        print(f"  {describe(result)}", flush=True)
        print(f"  live view: worst {_s(result.live_lag_s, 2)} s behind the recorder "
              f"({_s(result.live_lag_segments, 2)} segment), whole recording listed "
              f"{_s(result.end_to_live_s, 2)} s after the end", flush=True)
        print(f"  {describe_cpu(result)}", flush=True)
        # other work on the machine moves these figures: say how busy it was
        print(f"  load average at the finish: {[round(x, 2) for x in os.getloadavg()]}")
        return result
    finally:
        if keep:
            print(f"  kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


class LiveWatcher:
    """Polls the session's live fragments while it replays: when each one was first listed."""

    def __init__(self, storage: Storage, session_id: str) -> None:
        self.storage, self.session_id = storage, session_id
        self.seen: dict[str, datetime] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(LIVE_POLL_S):
            listed = live.contiguous(live.fragments(self.storage, self.session_id))
            for info in listed:
                self.seen.setdefault(info.segment, datetime.now(UTC))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def measure(self, record: ReplayRecord, result: LiveResult) -> LiveResult:
        segment_s = SEGMENT_S / record.speed
        lags = [
            (self.seen[w.file] - w.closed).total_seconds()
            for w in record.segments
            if w.kind == "video" and w.closed is not None and w.file in self.seen
        ]
        last = max(self.seen.values(), default=None)
        videos = sum(1 for w in record.segments if w.kind == "video")
        return replace(
            result,
            live_lag_s=max(lags) if lags and len(lags) == videos else None,
            live_lag_segments=max(lags) / segment_s if lags and len(lags) == videos else None,
            end_to_live_s=(
                (last - record.ended).total_seconds()
                if last is not None and record.ended is not None and len(lags) == videos
                else None
            ),
        )


def describe_cpu(result: LiveResult) -> str:
    """The CPU the run used, by role: core-seconds per recorded minute, and the share of
    the machine's cores over the run's wall time."""
    if not result.cpu_s or not result.cpu_wall_s:
        return "CPU: not measured"
    cores = os.cpu_count() or 1
    minutes = result.recorded_s / 60
    total = sum(result.cpu_s.values())
    available = cores * result.cpu_wall_s
    parts = ", ".join(
        f"{role} {seconds / minutes:.1f}" for role, seconds in result.cpu_s.items() if seconds >= 1
    )
    return (
        f"CPU over {result.cpu_wall_s:.0f} s: {total:.0f} core-s of {available:.0f} "
        f"({total / available:.0%} of {cores} cores); core-s per recorded "
        f"minute: {parts}"
    )


def _verdict(value: float | None, target: float) -> str:
    if value is None:
        return "n/a"
    return "met" if value <= target else "missed"


def _s(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_table(results: list[LiveResult]) -> None:
    print(
        f"| recorded min | media workers | end->seen s | end->playable s "
        f"(target {PLAYABLE_TARGET_S:g}) | end->compressed s (target {COMPRESSED_TARGET_S:g}) "
        "| end->complete s | merge job s | compress job s "
        "| compressed copy, recorded min / wall min "
        "| live view behind the recorder, worst s (segments) | end->live complete s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    results = sorted(results, key=lambda r: (r.media_workers, r.recorded_s))
    for r in results:
        rate = r.compress_minutes_per_minute
        print(
            f"| {r.recorded_s / 60:g} | {r.media_workers} | {_s(r.end_to_seen_s, 2)} "
            f"| {_s(r.end_to_playable_s, 2)} "
            f"({_verdict(r.end_to_playable_s, PLAYABLE_TARGET_S)}) "
            f"| {_s(r.end_to_compressed_s)} "
            f"({_verdict(r.end_to_compressed_s, COMPRESSED_TARGET_S)}) "
            f"| {_s(r.end_to_complete_s)} | {_s(r.merge_run_s, 2)} | {_s(r.compress_run_s)} "
            f"| {'-' if rate is None else f'{rate:.2f}'} "
            f"| {_s(r.live_lag_s, 2)} ({_s(r.live_lag_segments, 2)}) | {_s(r.end_to_live_s, 2)} |"
        )
    same = [r for r in results if r.media_workers == results[0].media_workers]
    if len(same) > 1:
        short, long = same[0], same[-1]
        for label, a, b in (
            ("playable", short.end_to_playable_s, long.end_to_playable_s),
            ("compressed", short.end_to_compressed_s, long.end_to_compressed_s),
        ):
            if a is not None and b is not None:
                extra_min = (long.recorded_s - short.recorded_s) / 60
                print(
                    f"end->{label}: {b - a:+.1f} s from {short.recorded_s / 60:g} to "
                    f"{long.recorded_s / 60:g} min ({(b - a) / extra_min:+.2f} s per recorded "
                    "minute; the target: independent of length)"
                )


def _machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
    }


def write_json(
    path: Path,
    speed: float,
    enrich: bool,
    before: dict[str, Any],
    after: dict[str, Any],
    results: list[LiveResult],
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "speed": speed,
        "enrich": enrich,
        "machine": {"before": before, "after": after},
        "targets_s": {"playable": PLAYABLE_TARGET_S, "compressed": COMPRESSED_TARGET_S},
        "results": [
            {**asdict(r), "compress_minutes_per_minute": r.compress_minutes_per_minute}
            for r in results
        ],
    }
    path.write_text(json.dumps(doc, indent=2), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=int, nargs="+", default=list(DEFAULT_MINUTES))
    p.add_argument("--speed", type=float, default=DEFAULT_SPEED, help="times real time")
    p.add_argument("--media-workers", type=int, default=1, choices=(1, 2))
    p.add_argument(
        "--compare-workers",
        type=int,
        default=2,
        help="replay the first length again with this many media workers (0: not)",
    )
    p.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--enrich", action="store_true", help="run the enrichment stages too")
    p.add_argument("--keep", action="store_true", help="keep each run's work folder")
    p.add_argument("--json", type=Path, metavar="PATH", help="write the figures as JSON")
    args = p.parse_args(argv)
    # Stop cleanly (the system's workers and agent stopped by the finally blocks) on Ctrl-C
    # and on SIGTERM, also when started in the background, where the shell ignores SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if any(m < 1 for m in args.minutes) or not args.speed > 0:
        p.error("--minutes and --speed must be positive")

    prepared = time.monotonic()
    sources = {m: live_session(m, args.cache) for m in args.minutes}
    print(f"sessions ready in {time.monotonic() - prepared:.1f} s: {sorted(sources)} min")
    before = _machine()
    runs: list[tuple[int, int]] = [(m, args.media_workers) for m in args.minutes]
    if args.compare_workers and args.compare_workers != args.media_workers:
        runs.append((min(args.minutes), args.compare_workers))
    results: list[LiveResult] = []
    for minutes, workers in runs:  # in the order given
        results.append(
            run_one(
                sources[minutes],
                minutes,
                media_workers=workers,
                speed=args.speed,
                redis_url=args.redis_url,
                enrich=args.enrich,
                keep=args.keep,
            )
        )
        if args.json:  # after every run: a long run cut short keeps what it measured
            write_json(args.json, args.speed, args.enrich, before, _machine(), results)
    after = _machine()
    print(
        f"\n1080p30 H.264 8 Mbit/s, {SEGMENT_S} s segments per track, replayed at "
        f"{args.speed:g}x through capture-agent watch; enrichment "
        f"{'on' if args.enrich else 'off'}; {before['cpus']} CPUs, load {before['loadavg']} "
        f"before / {after['loadavg']} after"
    )
    print_table(results)
    return 0 if all(r.status == "completed" for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
