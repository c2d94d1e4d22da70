"""Transcription: our ``transcribe()`` against the plain faster-whisper call, and its settings.

The audio is real speech: the DEMO_LECTURE narration spoken by espeak-ng, its lines repeated
every 60 s to fill ``--minutes``, written as the pipeline writes a session's audio track
(48 kHz stereo AAC, an onset marker every 10 s). Each side runs in its own Python process,
so their peak memory (``ru_maxrss``: native memory included) is separate, interleaved with
the other side ``--repeat`` times; the best time of each counts:

- **plain**: what a person writes with faster-whisper for the same result: ``WhisperModel``
  on the same folder (CPU, int8, same threads) and ``model.transcribe(path, ...)`` with the
  same settings (language, beam size, VAD filter, word timestamps, no conditioning on the
  previous text), consuming every segment.
- **ours**: :func:`workers.enrich.whispermodel.load_model` (which first checks the model
  file's sha256, once per process) and :func:`workers.enrich.transcribe.transcribe`.

Both times include loading the model and exclude importing Python modules. Target (issue
10): ours within 1.2x plain. ``--settings`` instead measures the candidates for the defaults
(beam size, conditioning on the previous text) on the one-minute lecture: word recall and
time, over a few noise seeds, from espeak-ng and from the committed Opus fixture.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGET_RATIO = 1.2
DEFAULT_MINUTES = 5.0
#: Seconds per audio segment (a marker at each start), like the synthetic sessions.
SEGMENT_SECONDS = 10.0
RATE_HZ = 48_000  # the pipeline's audio track
CHILD_TIMEOUT_S = 3600.0
#: Noise seeds of the --settings comparison.
SETTINGS_SEEDS = (0, 1, 2, 3)


@dataclass(frozen=True)
class Run:
    side: str
    load_s: float  # model load (ours: checksum + load)
    transcribe_s: float  # decode + transcribe + consuming the segments
    maxrss_mb: float
    words: int

    @property
    def total_s(self) -> float:
        return self.load_s + self.transcribe_s


def repeated_lecture(minutes: float) -> Any:
    """DEMO_LECTURE's narration repeated every lecture length to fill ``minutes``."""
    from synthetic.lecture import DEMO_LECTURE, Line

    duration = minutes * 60.0
    lines = [
        Line(k * DEMO_LECTURE.duration + line.start, line.text)
        for k in range(math.ceil(duration / DEMO_LECTURE.duration))
        for line in DEMO_LECTURE.narration
        if k * DEMO_LECTURE.duration + line.start + 5.0 < duration  # room to say it
    ]
    return replace(DEMO_LECTURE, duration=duration, narration=tuple(lines))


def ensure_audio(minutes: float, cache: Path) -> Path:
    """The ``minutes``-long narration track as AAC in ``cache`` (made once)."""
    from synthetic.plan import SyntheticSpec
    from synthetic.speech import (
        DEFAULT_VOICE,
        DEFAULT_WORD_GAP_MS,
        DEFAULT_WORDS_PER_MINUTE,
        Narration,
        session_track,
        write_track,
    )

    key = f"{DEFAULT_VOICE}-{DEFAULT_WORDS_PER_MINUTE}wpm-{DEFAULT_WORD_GAP_MS}ms"
    path = cache / f"narration-{minutes:g}min-{key}.m4a"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        lecture = repeated_lecture(minutes)
        spec = SyntheticSpec(
            duration=lecture.duration,
            segment_seconds=SEGMENT_SECONDS,
            audio_holes=(),
            video=False,
            sample_rate=RATE_HZ,
        )
        track = session_track(Narration(lecture, RATE_HZ), spec)
        tmp = path.with_name(f".{path.name}.partial.m4a")
        write_track(tmp, track, RATE_HZ)
        tmp.replace(path)
    return path


def child(side: str, audio: Path) -> dict[str, Any]:
    """One measured run in this process (called in a fresh interpreter)."""
    from faster_whisper import WhisperModel

    from workers.enrich.transcribe import (
        DEFAULT_BEAM_SIZE,
        DEFAULT_CONDITION_ON_PREVIOUS_TEXT,
        DEFAULT_LANGUAGE,
        transcribe,
    )
    from workers.enrich.whispermodel import (
        COMPUTE_TYPE,
        DEFAULT_CPU_THREADS,
        DEVICE,
        default_model_dir,
        load_model,
        resolve_cpu_threads,
    )

    threads = resolve_cpu_threads(DEFAULT_CPU_THREADS)
    if side == "plain":
        started = time.perf_counter()
        model = WhisperModel(
            str(default_model_dir()),
            device=DEVICE,
            compute_type=COMPUTE_TYPE,
            cpu_threads=threads,
            local_files_only=True,
        )
        loaded = time.perf_counter()
        segments, _ = model.transcribe(
            str(audio),
            language=DEFAULT_LANGUAGE,
            beam_size=DEFAULT_BEAM_SIZE,
            vad_filter=True,
            word_timestamps=True,
            condition_on_previous_text=DEFAULT_CONDITION_ON_PREVIOUS_TEXT,
        )
        words = sum(len(s.words or ()) for s in segments)
    else:
        started = time.perf_counter()
        speech_model = load_model(cpu_threads=threads)
        loaded = time.perf_counter()
        transcript = transcribe(audio, model=speech_model)
        words = sum(len(s.words) for s in transcript.segments)
    done = time.perf_counter()
    return {
        "side": side,
        "load_s": loaded - started,
        "transcribe_s": done - loaded,
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
        "words": words,
    }


def run_child(side: str, audio: Path) -> Run:
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", side, "--audio", str(audio)]
    proc = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=CHILD_TIMEOUT_S)
    return Run(**json.loads(proc.stdout.strip().splitlines()[-1]))


def compare_settings() -> list[dict[str, Any]]:
    """Word recall and time of beam 1/5 x conditioning off/on, on the one-minute lecture."""
    import re
    from collections import Counter

    from synthetic.lecture import DEMO_LECTURE
    from synthetic.plan import SyntheticSpec
    from synthetic.speech import Narration, demo_narration, session_track, write_track
    from workers.enrich.transcribe import transcribe
    from workers.enrich.whispermodel import load_model

    def words_of(text: str) -> list[str]:
        return re.findall(r"[a-z0-9']+", text.lower().replace("-", ""))

    said = Counter(w for line in DEMO_LECTURE.narration for w in words_of(line.text))
    model = load_model()
    spec = SyntheticSpec(video=False, sample_rate=RATE_HZ)
    rows: dict[tuple[str, int, bool], list[tuple[float, float]]] = {}
    out_dir = ROOT / "bench" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    for source in ("espeak-ng", "fixture"):
        for seed in SETTINGS_SEEDS:
            narration = (
                Narration(DEMO_LECTURE, RATE_HZ, seed=seed)
                if source == "espeak-ng"
                else demo_narration(RATE_HZ, seed=seed)
            )
            path = write_track(out_dir / "settings.m4a", session_track(narration, spec), RATE_HZ)
            for beam in (1, 5):
                for condition in (False, True):
                    started = time.perf_counter()
                    transcript = transcribe(
                        path, model=model, beam_size=beam, condition_on_previous_text=condition
                    )
                    took = time.perf_counter() - started
                    heard = Counter(w for s in transcript.segments for w in words_of(s.text))
                    got = sum((said & heard).values()) / sum(said.values())
                    rows.setdefault((source, beam, condition), []).append((got, took))
    return [
        {
            "source": source,
            "beam_size": beam,
            "condition_on_previous_text": condition,
            "recall_min": min(r for r, _ in runs),
            "recall_mean": sum(r for r, _ in runs) / len(runs),
            "seconds_mean": sum(t for _, t in runs) / len(runs),
        }
        for (source, beam, condition), runs in rows.items()
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=DEFAULT_MINUTES)
    p.add_argument("--repeat", type=int, default=2, help="runs of each side; the best counts")
    p.add_argument("--cache", type=Path, default=ROOT / "bench" / "cache")
    p.add_argument("--json", type=Path, metavar="PATH", help="write the figures as JSON")
    p.add_argument("--settings", action="store_true", help="compare the default candidates")
    p.add_argument("--child", choices=("plain", "ours"), help=argparse.SUPPRESS)
    p.add_argument("--audio", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child:
        print(json.dumps(child(args.child, args.audio)))
        return 0
    if args.settings:
        rows = compare_settings()
        print(f"{'source':<10} {'beam':>4} {'cond':>5} {'recall min':>10} {'mean':>6} {'s/run':>6}")
        for row in rows:
            print(
                f"{row['source']:<10} {row['beam_size']:>4} "
                f"{row['condition_on_previous_text']!s:>5} {row['recall_min']:>10.3f} "
                f"{row['recall_mean']:>6.3f} {row['seconds_mean']:>6.2f}"
            )
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(rows, indent=2), encoding="utf-8")
        return 0

    audio = ensure_audio(args.minutes, args.cache)
    runs: dict[str, list[Run]] = {"plain": [], "ours": []}
    for _ in range(max(1, args.repeat)):  # interleaved: a slow spell hits both sides
        for side in ("plain", "ours"):
            runs[side].append(run_child(side, audio))
    best = {side: min(rs, key=lambda r: r.total_s) for side, rs in runs.items()}
    minutes = args.minutes
    print(f"audio: {minutes:g} min of narration ({audio}), best of {args.repeat} run(s) each")
    print(
        f"  {'':<6} {'load s':>7} {'transcribe s':>12} {'total s':>8} {'s/min':>6} {'peak MB':>8}"
    )
    for side, r in best.items():
        print(
            f"  {side:<6} {r.load_s:>7.2f} {r.transcribe_s:>12.2f} {r.total_s:>8.2f} "
            f"{r.total_s / minutes:>6.2f} {r.maxrss_mb:>8.0f}   ({r.words} words)"
        )
    ratio = best["ours"].total_s / best["plain"].total_s
    medians = {side: statistics.median(r.total_s for r in rs) for side, rs in runs.items()}
    verdict = "ok" if ratio <= TARGET_RATIO else "MISS"
    print(f"ours / plain: {ratio:.2f}x (target <= {TARGET_RATIO}x: {verdict})")
    print(
        f"medians: plain {medians['plain']:.2f} s, ours {medians['ours']:.2f} s "
        f"({medians['ours'] / medians['plain']:.2f}x)"
    )
    print(f"realtime factor (ours): {minutes * 60 / best['ours'].total_s:.1f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        figures = {
            "minutes": minutes,
            "runs": {side: [r.__dict__ for r in rs] for side, rs in runs.items()},
            "ratio": ratio,
        }
        args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
