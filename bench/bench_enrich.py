"""Enrichment end to end: ``sessionpipe process`` of a talk, each enrichment stage's time per
recorded minute, and the plain faster-whisper call on the same audio in the same run.

The session is a synthetic talk: slides with titles and text (typing, a clock, scrolling),
and dense narration spoken by espeak-ng (a line every few seconds, as a person talks), so
the speech recogniser, the chapter finder and the summariser have real work. It runs as a
user runs it: ``sessionpipe process DIR --home H`` on the embedded default, every stage in
the in-process worker. Reported per enrichment stage, from its job row: the seconds it ran,
seconds per recorded minute, and how long after its inputs existed it finished (the issue's
target: within 3 minutes for a 30-minute session). Reference: the plain faster-whisper
call (same model, int8, beam, VAD, word timestamps, threads) on the session's finished
audio track, in its own process: the transcript stage must stay within 1.2x of it. Peak
memory: the ``process`` command's and the plain call's maximum resident set.
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from shared.settings import Settings  # noqa: E402
from synthetic.plan import SyntheticSpec  # noqa: E402
from synthetic.session import record_synthetic_session  # noqa: E402
from synthetic.slides import talk  # noqa: E402

DEFAULT_MINUTES = 5.0
TARGET_AFTER_INPUTS_S = 180.0  # every enrichment stage of a 30-minute session (issue 10)
TARGET_TRANSCRIBE_RATIO = 1.2  # the transcript stage against plain faster-whisper
PROCESS_TIMEOUT_S = 7200.0
ENRICHMENT = ("transcript", "chapters", "summary")
INPUTS = {"transcript": ("concat_audio",), "chapters": ("merge",), "summary": ENRICHMENT[:2]}

PLAIN_WHISPER = """
import json, sys, time, resource
from faster_whisper import WhisperModel
audio, model_dir, threads, beam = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
t0 = time.perf_counter()
model = WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=threads,
                     local_files_only=True)
segments, info = model.transcribe(audio, language="en", beam_size=beam, vad_filter=True,
                                  word_timestamps=True, condition_on_previous_text=False)
words = sum(len(s.words or ()) for s in segments)
print(json.dumps({"seconds": time.perf_counter() - t0, "words": words,
                  "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _parse(value: str) -> float:
    return datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp()


def job_times(database: Path) -> dict[str, tuple[float, float]]:
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT stage, started_at, finished_at FROM jobs").fetchall()
    return {stage: (_parse(a), _parse(b)) for stage, a, b in rows if a and b}


def audio_track(database: Path, storage: Path) -> Path:
    with sqlite3.connect(database) as db:
        (key,) = db.execute("SELECT output_key FROM jobs WHERE stage = 'concat_audio'").fetchone()
    return storage / key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=DEFAULT_MINUTES)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-enrich-") as tmp:
        root = Path(tmp)
        lecture = talk(args.minutes * 60.0, seed=7)
        spec = SyntheticSpec(
            duration=lecture.duration, segment_seconds=30.0, audio_holes=(),
            width=args.width, height=args.height, fps=15, lecture=lecture,
        )  # fmt: skip
        t0 = time.perf_counter()
        folder = record_synthetic_session(root / "talk", session_id="talk", name="talk", spec=spec)
        print(f"recorded {args.minutes:g} min talk in {time.perf_counter() - t0:.0f} s", flush=True)

        home = root / "home"
        env = {"SESSIONPIPE_ENRICH": "all", "PATH": "/usr/bin:/bin"}
        t0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "sessionpipe.cli", "process", str(folder), "--home", str(home)],
            cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
            timeout=PROCESS_TIMEOUT_S,
        )  # fmt: skip
        wall = time.perf_counter() - t0
        process_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if done.returncode != 0:
            print(done.stdout[-3000:], done.stderr[-3000:])
            return 1
        database = home / "sessionpipe.db"
        times = job_times(database)

        settings = Settings(home=home)
        from workers.enrich.whispermodel import default_model_dir

        model_dir = settings.whisper_model_dir or default_model_dir()
        plain = json.loads(
            subprocess.run(
                [sys.executable, "-c", PLAIN_WHISPER, str(audio_track(database, home / "storage")),
                 str(model_dir), str(settings.whisper_threads), str(settings.whisper_beam_size)],
                capture_output=True, text=True, check=True, timeout=PROCESS_TIMEOUT_S,
            ).stdout
        )  # fmt: skip

    minutes = args.minutes
    figures: dict[str, object] = {"minutes": minutes, "process_s": wall}
    print(f"\nsessionpipe process, whole: {wall:.1f} s ({wall / minutes:.1f} s per minute)")
    print(f"{'stage':<12}{'ran s':>8}{'s/min':>8}{'after inputs s':>16}")
    ok = True
    for stage in ENRICHMENT:
        start, end = times[stage]
        ready = max(times[p][1] for p in INPUTS[stage])
        after = end - ready
        figures[stage] = {"ran_s": end - start, "per_minute_s": (end - start) / minutes,
                          "after_inputs_s": after}  # fmt: skip
        budget = TARGET_AFTER_INPUTS_S * minutes / 30.0
        ok &= after <= budget
        print(f"{stage:<12}{end - start:>8.1f}{(end - start) / minutes:>8.2f}{after:>16.1f}")
    ran = times["transcript"][1] - times["transcript"][0]
    ratio = ran / plain["seconds"]
    ok &= ratio <= TARGET_TRANSCRIBE_RATIO
    figures.update(
        plain_whisper_s=plain["seconds"],
        transcribe_ratio=ratio,
        process_maxrss_mib=process_rss,
        plain_maxrss_mib=plain["maxrss_mib"],
    )
    print(
        f"plain faster-whisper on the same audio: {plain['seconds']:.1f} s "
        f"({plain['words']} words); transcript stage / plain = {ratio:.2f}x "
        f"(target {TARGET_TRANSCRIBE_RATIO}x)"
    )
    print(
        f"peak memory: sessionpipe process {process_rss:.0f} MiB, "
        f"plain faster-whisper {plain['maxrss_mib']:.0f} MiB"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
