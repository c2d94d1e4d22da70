"""End to end on the embedded default: ``sessionpipe process`` against the plain ffmpeg commands.

The same synthesised session (screen-like 1080p30 H.264 at 8 Mbit/s, speech-like AAC with an
onset marker per audio segment), in the same run:

- **plain**: the correct ffmpeg commands a person would run for the same outputs, one after
  the other: the exact audio (decode, pad/trim each segment to its slot, encode once), the
  playable MP4 (stream-copy mux of the video with that audio, ``+faststart``), and the
  compressed copy (``mpdecimate`` + x264 for screen content).
- **pipeline**: ``sessionpipe process DIR --home H`` as a user runs it, in its own process:
  the capture agent copies and verifies every segment into storage, announces it through
  the embedded broker, and the in-process Celery worker runs every stage. *To playable* is
  from launch to the moment the ``merge`` job's row says it succeeded; *whole* is launch to
  exit (the command waits for ``finalize``).

Targets (issue 8): to playable within 1.1x the plain commands for the playable MP4 (exact
audio + mux), the whole ``process`` within 1.1x all of the plain commands.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import baselines  # noqa: E402
from synthetic.ffmpeg_session import SessionSpec, ensure_session  # noqa: E402

TARGET_RATIO = 1.1
DEFAULT_MINUTES = 10.0
DEFAULT_AUDIO_SEGMENTS = 40  # 15 s each
DEFAULT_VIDEO_SEGMENTS = 20  # 30 s each: 60 segments in all, like the held-out session
PROCESS_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class Timed:
    label: str
    wall_s: float


def run_plain(command: baselines.PlainCommand) -> float:
    started = time.perf_counter()
    subprocess.run(command.argv, check=True, capture_output=True)
    return time.perf_counter() - started


def _job_finished(database: Path, stage: str) -> float | None:
    """The UNIX time a stage's job succeeded, from the embedded SQLite database."""
    with sqlite3.connect(database) as db:
        row = db.execute(
            "SELECT finished_at FROM jobs WHERE stage = ? AND status = 'succeeded'", (stage,)
        ).fetchone()
    if row is None or row[0] is None:
        return None
    finished = datetime.fromisoformat(str(row[0]))
    if finished.tzinfo is None:  # SQLite keeps naive UTC
        finished = finished.replace(tzinfo=UTC)
    return finished.timestamp()


def run_pipeline(session_dir: Path, home: Path) -> tuple[float, float]:
    """(seconds to playable, seconds to exit) of ``sessionpipe process``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONPIPE_")}
    env["SESSIONPIPE_HOME"] = str(home)
    exe = Path(sys.executable).with_name("sessionpipe")
    launched = time.time()
    started = time.perf_counter()
    done = subprocess.run(
        [str(exe), "process", str(session_dir), "--home", str(home)],
        env=env,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
    )
    whole = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"sessionpipe process failed:\n{done.stdout}\n{done.stderr}")
    merged = _job_finished(home / "sessionpipe.db", "merge")
    if merged is None:
        raise RuntimeError("the merge job has no finish time")
    return merged - launched, whole


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=DEFAULT_MINUTES)
    p.add_argument("--audio-segments", type=int, default=DEFAULT_AUDIO_SEGMENTS)
    p.add_argument("--video-segments", type=int, default=DEFAULT_VIDEO_SEGMENTS)
    p.add_argument(
        "--repeat", type=int, default=1, help="run each side N times, keep the best of each"
    )
    p.add_argument("--cache", type=Path, default=ROOT / "bench" / "cache")
    p.add_argument("--json", type=Path, metavar="PATH", help="write the figures as JSON")
    args = p.parse_args(argv)

    spec = SessionSpec(
        minutes=args.minutes,
        audio_segments=args.audio_segments,
        video_segments=args.video_segments,
    )
    session = ensure_session(spec, args.cache)
    runs = max(1, args.repeat)
    plain_runs: list[list[Timed]] = []
    pipeline_runs: list[tuple[float, float]] = []
    for _ in range(runs):  # interleaved, so a slow spell of the machine hits both sides
        work = Path(tempfile.mkdtemp(prefix="sessionpipe-bench-"))
        try:
            plain_dir = work / "plain"
            plain_dir.mkdir()
            audio = baselines.audio_exact(session.of_kind("audio"), plain_dir)
            playable = baselines.playable_mp4(session.of_kind("video"), audio.output, plain_dir)
            compressed = baselines.compressed(playable.output, plain_dir)
            plain_runs.append(
                [
                    Timed("plain: exact audio", run_plain(audio)),
                    Timed("plain: playable MP4 (copy mux)", run_plain(playable)),
                    Timed("plain: compressed copy", run_plain(compressed)),
                ]
            )
            pipeline_runs.append(run_pipeline(session.directory, work / "home"))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    plain = [
        Timed(label, min(run[i].wall_s for run in plain_runs))
        for i, label in enumerate(t.label for t in plain_runs[0])
    ]
    plain_playable = min(run[0].wall_s + run[1].wall_s for run in plain_runs)
    plain_all = min(sum(t.wall_s for t in run) for run in plain_runs)
    to_playable = min(p for p, _ in pipeline_runs)
    whole = min(w for _, w in pipeline_runs)

    ratio_playable = to_playable / plain_playable
    ratio_all = whole / plain_all
    segments = len(session.segments)
    print(f"session: {spec.minutes:g} min, {segments} segments ({session.directory})")
    print(f"best of {runs} run(s) of each side")
    for t in plain:
        print(f"  {t.label:<40} {t.wall_s:8.2f} s")
    print(f"  {'plain: to playable (audio + mux)':<40} {plain_playable:8.2f} s")
    print(f"  {'plain: all outputs':<40} {plain_all:8.2f} s")
    print(f"  {'sessionpipe process: to playable':<40} {to_playable:8.2f} s")
    print(f"  {'sessionpipe process: whole':<40} {whole:8.2f} s")
    verdict = {True: "ok", False: "MISS"}
    print(
        f"to playable: {ratio_playable:.2f}x plain (target <= {TARGET_RATIO}x: "
        f"{verdict[ratio_playable <= TARGET_RATIO]})"
    )
    print(
        f"whole process: {ratio_all:.2f}x plain (target <= {TARGET_RATIO}x: "
        f"{verdict[ratio_all <= TARGET_RATIO]})"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        figures = {
            "minutes": spec.minutes,
            "runs": runs,
            "segments": segments,
            "plain": {t.label: t.wall_s for t in plain},
            "pipeline": {"to_playable_s": to_playable, "whole_s": whole},
            "ratios": {"to_playable": ratio_playable, "whole": ratio_all},
        }
        args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
