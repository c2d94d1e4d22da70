"""Enrichment stages after a session's end: from work done while it recorded, against the
whole-session path.

``--stage transcript`` (``workers.transcriptparts``): the transcript from pieces made while
recording, against one run over the whole audio track.

A session of ``--minutes`` of the DEMO_LECTURE narration (espeak-ng, its lines repeated every
60 s; 10 s audio segments, no video) is stored segment by segment in a SQLite database, and
after each audio segment the piece pass a worker would run transcribes what has settled
(timed: the work moved to the recording). Then, as after ``session.ended``: ``concat_audio``
writes the audio track, and the transcript stage runs with pieces (only what is missing is
transcribed, then the stitch) and without (the whole track in one run). Prints both stage
times, the pieces reused, and how many words of the whole run the stitched transcript hears
otherwise.

``--stage chapters`` (``workers.chapterparts``): the lecture's slides on screen
(``--width``x``--height``, 10 s segments, a keyframe every 2 s as our recorder writes),
each video segment sampled as it is stored; then ``merge`` writes the playable MP4 and the
chapters stage runs with the segments' samples and without (sampling the MP4). Prints both
stage times and whether the chapters agree.

No Celery: the functions the tasks call, in this process, on one machine.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import math
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SESSION = "bench-pieces"
STARTED = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
_WORD = re.compile(r"[a-z0-9']+")


#: Words are compared a lecture at a time (its text repeats every 60 s: aligned as one
#: sequence, a repetition could pair with the next one).
COMPARED_S = 60.0


def _words(document: dict[str, Any]) -> dict[int, list[str]]:
    """The words heard in each ``COMPARED_S`` of the session (by a word's middle)."""
    out: dict[int, list[str]] = {}
    for s in document["segments"]:
        for word in s["words"]:
            block = int((word["start"] + word["end"]) / 2 // COMPARED_S)
            out.setdefault(block, []).extend(
                _WORD.findall(word["word"].lower().replace("-", ""))
            )
    return out


def main() -> None:
    from bench.bench_transcribe import repeated_lecture
    from shared import models
    from shared.db import session_scope
    from shared.migrate import upgrade
    from shared.sessiondir import load_manifest
    from shared.settings import Settings
    from shared.storage import Storage
    from synthetic.lecture import DEMO_LECTURE
    from synthetic.plan import SyntheticSpec
    from synthetic.session import record_synthetic_session
    from workers import chapterparts, transcriptparts
    from workers.enrich.whispermodel import load_model
    from workers.snapshot import load_snapshot, remember_probes
    from workers.stages.audio import build_audio
    from workers.stages.context import StageContext, probe_duration
    from workers.stages.transcript import build_transcript

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stage", choices=("transcript", "chapters"), default="transcript")
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--show", action="store_true", help="print the words heard otherwise")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-pieces-"))
    url = f"sqlite:///{work / 'state.db'}"
    upgrade(url)
    settings = Settings(home=work / "home", database_url=url, enrich=args.stage)
    storage = Storage(settings.storage)
    lecture = repeated_lecture(args.minutes)
    chapters = args.stage == "chapters"
    if chapters:
        slides = tuple(
            replace(slide, start=k * DEMO_LECTURE.duration + slide.start)
            for k in range(math.ceil(lecture.duration / DEMO_LECTURE.duration))
            for slide in DEMO_LECTURE.slides
            if k * DEMO_LECTURE.duration + slide.start < lecture.duration
        )
        lecture = replace(lecture, slides=slides)
    spec = SyntheticSpec(duration=lecture.duration, segment_seconds=10.0, audio_holes=(),
                         video=chapters, audio=not chapters, width=args.width,
                         height=args.height, fps=15, lecture=lecture)  # fmt: skip
    folder = record_synthetic_session(work / "rec", session_id=SESSION, name="bench",
                                      spec=spec, started_at=STARTED)  # fmt: skip
    manifest = load_manifest(folder)
    if not chapters:
        load_model()  # a worker has it loaded
    with session_scope(url) as db:
        db.add(models.Session(id=SESSION, name="bench", status="recording",
                              started_at=manifest.started_at))  # fmt: skip
    recording_s = 0.0
    for index, segment in enumerate(manifest.segments):
        data = (folder / segment.file).read_bytes()
        key = f"sessions/{SESSION}/segments/{segment.file}"
        storage.path(key).parent.mkdir(parents=True, exist_ok=True)
        storage.path(key).write_bytes(data)
        with session_scope(url) as db:
            db.add(models.Segment(
                session_id=SESSION, index=index, kind=segment.kind, file=segment.file,
                storage_key=key, sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                started_at=segment.started_at, duration=segment.duration,
            ))  # fmt: skip
        remember_probes(url, SESSION, {key: probe_duration(storage.path(key))})  # as ingest
        began = time.perf_counter()
        if chapters:
            chapterparts.sample_while_recording(settings, SESSION, segment.file, owner="task")
        else:
            transcriptparts.transcribe_while_recording(settings, SESSION, owner=f"p{index}")
        recording_s += time.perf_counter() - began

    def context(
        audio_key: str | None, merged: str | None = None, changes: dict[str, Any] | None = None
    ) -> StageContext:
        with session_scope(url) as db:
            session = db.get(models.Session, SESSION)
            assert session is not None
            snapshot = load_snapshot(db, session)
        return StageContext(
            snapshot=snapshot, storage=storage,
            settings=settings.model_copy(update=changes or {}), progress=lambda _: None,
            outputs={"concat_audio": audio_key, "merge": merged},
        )  # fmt: skip

    if chapters:
        _chapters(args, context(None), context, recording_s)
        shutil.rmtree(work, ignore_errors=True)
        return
    audio = build_audio(context(None))
    timed: dict[str, tuple[float, Any]] = {}
    variants: tuple[tuple[str, dict[str, Any]], ...] = (
        ("pieces", {}), ("whole", {"transcript_pieces": False}),
    )  # fmt: skip
    for name, changes in variants:
        began = time.perf_counter()
        out = build_transcript(context(audio.output_key, changes=changes))
        timed[name] = (time.perf_counter() - began, out)
    want = _words(timed["whole"][1].documents["transcript"])
    got = _words(timed["pieces"][1].documents["transcript"])
    differing = 0
    for block in sorted(set(want) | set(got)):
        a, b = want.get(block, []), got.get(block, [])
        for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
            if op != "equal":
                differing += max(i2 - i1, j2 - j1)
                if args.show:
                    print(f"{block * COMPARED_S:g} s: {op} {a[i1:i2]} -> {b[j1:j2]}")
    shutil.rmtree(work, ignore_errors=True)
    print(f"session: {args.minutes:g} min of narration, 10 s segments")
    print(f"piece passes while recording: {recording_s:.1f} s in all")
    print(f"transcript stage after the end, from pieces: {timed['pieces'][0]:.2f} s "
          f"{timed['pieces'][1].result['pieces']}")  # fmt: skip
    print(f"transcript stage after the end, whole track: {timed['whole'][0]:.2f} s")
    total = (sum(map(len, want.values())), sum(map(len, got.values())))
    print(f"words: {total[0]} in the whole run, {total[1]} stitched, {differing} heard otherwise")
    said = Counter(w for line in lecture.narration for w in _WORD.findall(
        line.text.lower().replace("-", "")))  # fmt: skip
    for name, heard in (("whole", want), ("pieces", got)):
        found = Counter(w for words in heard.values() for w in words)
        recall = sum((said & found).values()) / sum(said.values())
        print(f"recall of the narration's words, {name}: {recall:.3f}")


def _chapters(args: Any, first: Any, context: Any, recording_s: float) -> None:
    from workers.stages.chapters import build_chapters
    from workers.stages.playable import build_playable

    merged = build_playable(first)
    timed: dict[str, tuple[float, Any]] = {}
    variants: tuple[tuple[str, dict[str, Any]], ...] = (
        ("samples", {}), ("whole", {"chapter_samples": False}),
    )  # fmt: skip
    for name, changes in variants:
        began = time.perf_counter()
        out = build_chapters(context(None, merged.output_key, changes))
        timed[name] = (time.perf_counter() - began, out)
    got, want = (
        [(c["start"], c["title"]) for c in timed[k][1].documents["chapters"]["chapters"]]
        for k in ("samples", "whole")
    )
    worst = max((abs(a[0] - b[0]) for a, b in zip(got, want, strict=False)), default=0.0)
    print(f"session: {args.minutes:g} min of slides at {args.width}x{args.height}, 10 s segments")
    print(f"segments sampled while recording: {recording_s:.1f} s in all")
    print(f"chapters stage after the end, from the segments' samples: {timed['samples'][0]:.2f} s "
          f"{timed['samples'][1].result['samples']}")  # fmt: skip
    print(f"chapters stage after the end, sampling the MP4: {timed['whole'][0]:.2f} s")
    same = len(got) == len(want) and all(a[1] == b[1] for a, b in zip(got, want, strict=False))
    print(f"chapters: {len(got)} and {len(want)}, same titles: {same}, starts differ by "
          f"{worst:.3f} s at most")  # fmt: skip


if __name__ == "__main__":
    main()
