"""Enrichment made while recording, on a real database and the demo lecture (60 s) stored
segment by segment as a recorder ships it.

The transcript from pieces (``workers.transcriptparts``): while the session records, each
pass transcribes the pieces whose audio has settled (and only those: none twice); after the
end the stage transcribes only the last piece and stitches. Its transcript has the words of
the whole-session path (the stage with pieces turned off: ``audio.m4a`` transcribed in one
run) but for the few Whisper hears differently in another context (measured: 3 of 60), each
once, in time order, with times on the same clock.

Chapters from the segments' samples (``workers.chapterparts``): each video segment sampled
and scored as it is stored but the last, which the stage samples; the stage compares no
picture itself, gives the same chapters (within a second, same titles) as the stage sampling
the playable MP4 itself, and leaves no sample behind.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from shared import models
from shared.db import session_scope
from shared.sessiondir import load_manifest
from shared.settings import Settings
from shared.storage import Storage
from synthetic.lecture import DEMO_LECTURE
from synthetic.plan import SyntheticSpec
from synthetic.session import record_synthetic_session
from workers import chapterparts, parts, transcriptparts
from workers.snapshot import load_snapshot
from workers.stages.audio import build_audio
from workers.stages.chapters import build_chapters
from workers.stages.context import StageContext, StageOutput
from workers.stages.playable import build_playable
from workers.stages.transcript import build_transcript

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="needs espeak-ng (apt-get install espeak-ng)"
)

SESSION = "pieces-1"
STARTED = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
SPEC = SyntheticSpec(duration=DEMO_LECTURE.duration, segment_seconds=10.0, audio_holes=(),
                     video=False, lecture=DEMO_LECTURE)  # fmt: skip
#: The lecture's slides on screen (small: OCR reads titles at 640x360), no microphone.
VIDEO_SPEC = SyntheticSpec(duration=DEMO_LECTURE.duration, segment_seconds=10.0,
                           audio_holes=(), audio=False, width=640, height=360, fps=10,
                           lecture=DEMO_LECTURE)  # fmt: skip
#: How far a chapter may start from where the whole-MP4 path starts it (issue 12).
CHAPTER_TOLERANCE_S = 1.0
PIECE_S, OVERLAP_S = 20.0, 6.0  # three pieces of the minute: two while recording
#: Share of the whole-session transcript's words that the stitched one may hear otherwise
#: (Whisper decodes a word differently in another 30 s context: measured 3 of 60 on this
#: audio, 6 of 60 after a Debian update of espeak-ng changed the voice slightly).
MAX_SHARE_HEARD_OTHERWISE = 0.15
#: How many fewer of the narration's words the stitched transcript may recall than the
#: whole-session one (a word lost or cut at a piece boundary would show here).
MAX_RECALL_LOSS = 0.05
#: How far 9 in 10 words' start and end may move between the two runs (measured: at most
#: 0.21 s for 54 of 57 matched words).
WORD_TIME_TOLERANCE_S = 0.3
#: How far any word's may: Whisper lets a line's first or last word absorb the silence next
#: to it, differently in another context (measured 1.21 s; tests/workers/enrich/
#: test_transcribe.py allows a line's edges 1.25 s too).
EDGE_TOLERANCE_S = 1.5

_WORD = re.compile(r"[a-z0-9']+")


def _words(transcript: dict[str, Any]) -> list[tuple[str, float, float]]:
    return [
        (w, word["start"], word["end"])
        for s in transcript["segments"]
        for word in s["words"]
        for w in _WORD.findall(word["word"].lower().replace("-", ""))
    ]


def _store(settings: Settings, storage: Storage, folder: Path, files: list[str]) -> None:
    """Record the segments ``files`` as ingest does (the session row made on first use)."""
    manifest = load_manifest(folder)
    listed = {s.file: s for s in manifest.segments}
    with session_scope(settings.database_url) as db:
        if db.get(models.Session, SESSION) is None:
            db.add(models.Session(id=SESSION, name="p", status="recording",
                                  started_at=manifest.started_at))  # fmt: skip
            db.flush()
        count = len(db.execute(select(models.Segment.id)).all())
        for i, file in enumerate(files, start=count):
            data = (folder / file).read_bytes()
            key = f"sessions/{SESSION}/segments/{file}"
            storage.path(key).parent.mkdir(parents=True, exist_ok=True)
            storage.path(key).write_bytes(data)
            db.add(models.Segment(
                session_id=SESSION, index=i, kind=listed[file].kind, file=file, storage_key=key,
                sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                started_at=listed[file].started_at, duration=listed[file].duration,
            ))  # fmt: skip


def _pieces(settings: Settings) -> list[models.Part]:
    with session_scope(settings.database_url) as db:
        rows = list(db.execute(select(models.Part).where(
            models.Part.kind == transcriptparts.KIND_TRANSCRIPT
        ).order_by(models.Part.segment_file)).scalars())  # fmt: skip
        db.expunge_all()
        return rows


def _stage(
    settings: Settings, storage: Storage, audio_key: str | None, **outputs: str | None
) -> StageContext:
    with session_scope(settings.database_url) as db:
        session = db.get(models.Session, SESSION)
        assert session is not None
        snapshot = load_snapshot(db, session)
    return StageContext(snapshot=snapshot, storage=storage, settings=settings,
                        progress=lambda _: None,
                        outputs={"concat_audio": audio_key, **outputs})  # fmt: skip


def test_pieces_made_while_recording_leave_the_last_piece_and_a_stitch(
    tmp_path: Path, sqlite_url: str
) -> None:
    settings = Settings(home=tmp_path / "home", database_url=sqlite_url, enrich="transcript",
                        transcript_piece_s=PIECE_S, transcript_overlap_s=OVERLAP_S)  # fmt: skip
    storage = Storage(settings.storage)
    folder = record_synthetic_session(tmp_path / "rec", session_id=SESSION, name="p",
                                      spec=SPEC, started_at=STARTED)  # fmt: skip
    files = [s.file for s in load_manifest(folder).segments]
    assert len(files) == 6

    # recording: 30 s stored settle the first piece (its window ends at 26 s), 60 s the second
    _store(settings, storage, folder, files[:3])
    outcome = transcriptparts.transcribe_while_recording(settings, SESSION, owner="pass-1")
    assert outcome == "made 1 piece(s)"
    _store(settings, storage, folder, files[3:])
    assert transcriptparts.transcribe_while_recording(
        settings, SESSION, owner="pass-2"
    ) == "made 1 piece(s)"  # fmt: skip
    assert transcriptparts.transcribe_while_recording(
        settings, SESSION, owner="pass-3"
    ) == "made 0 piece(s)"  # fmt: skip
    made = _pieces(settings)
    assert [(p.segment_file, p.status, p.attempts) for p in made] == [
        ("transcript-000000", parts.SUCCEEDED, 1),
        ("transcript-000001", parts.SUCCEEDED, 1),
    ]

    # the end: the session's audio track, then the transcript from pieces and in one run
    audio = build_audio(_stage(settings, storage, None))
    assert audio.output_key is not None
    stitched = build_transcript(_stage(settings, storage, audio.output_key))
    whole = build_transcript(
        _stage(settings.model_copy(update={"transcript_pieces": False}), storage,
               audio.output_key)
    )  # fmt: skip
    _check(stitched, whole)


def _check(stitched: StageOutput, whole: StageOutput) -> None:
    pieces = stitched.result["pieces"]
    assert (pieces["total"], pieces["reused"], pieces["transcribed"]) == (3, 2, 1)
    assert pieces["cuts_in_speech"] == 0 and stitched.result["pieces_fallback"] is None
    assert whole.result["pieces_fallback"] == "transcript pieces are turned off"
    got = _words(stitched.documents["transcript"])
    want = _words(whole.documents["transcript"])
    # each word once, in time order: a word taken from both pieces would overlap itself
    assert all(b[1] >= a[1] for a, b in zip(got, got[1:], strict=False))
    matcher = difflib.SequenceMatcher(a=[w for w, _, _ in want], b=[w for w, _, _ in got],
                                      autojunk=False)  # fmt: skip
    differing = sum(
        max(i2 - i1, j2 - j1) for op, i1, i2, j1, j2 in matcher.get_opcodes() if op != "equal"
    )
    assert differing <= MAX_SHARE_HEARD_OTHERWISE * len(want), matcher.get_opcodes()
    # against what was said: the pieces recall the narration about as well as one run
    said = [w for line in DEMO_LECTURE.narration for w in _WORD.findall(line.text.lower())]
    recall = {
        name: sum(block.size for block in difflib.SequenceMatcher(
            a=said, b=[w for w, _, _ in words], autojunk=False).get_matching_blocks()) / len(said)
        for name, words in (("stitched", got), ("whole", want))
    }  # fmt: skip
    assert recall["stitched"] >= recall["whole"] - MAX_RECALL_LOSS, recall
    moved = [
        max(abs(want[block.a + k][1] - got[block.b + k][1]),
            abs(want[block.a + k][2] - got[block.b + k][2]))
        for block in matcher.get_matching_blocks() for k in range(block.size)
    ]  # fmt: skip
    assert max(moved) <= EDGE_TOLERANCE_S
    assert sorted(moved)[int(len(moved) * 0.9)] <= WORD_TIME_TOLERANCE_S




def test_chapters_from_samples_made_while_recording_are_the_whole_paths(
    tmp_path: Path, sqlite_url: str
) -> None:
    settings = Settings(home=tmp_path / "home", database_url=sqlite_url, enrich="chapters")
    storage = Storage(settings.storage)
    folder = record_synthetic_session(tmp_path / "rec", session_id=SESSION, name="p",
                                      spec=VIDEO_SPEC, started_at=STARTED)  # fmt: skip
    files = [s.file for s in load_manifest(folder).segments]
    _store(settings, storage, folder, files)
    for file in files[:-1]:  # the last one arrives as the session ends: the stage samples it
        outcome = chapterparts.sample_while_recording(settings, SESSION, file, owner="task")
        assert outcome == "made"
    assert chapterparts.sample_while_recording(
        settings, SESSION, files[0], owner="task-2"
    ) == "done already"  # fmt: skip

    merged = build_playable(_stage(settings, storage, None))
    assert merged.output_key is not None
    from_samples = build_chapters(_stage(settings, storage, None, merge=merged.output_key))
    assert from_samples.result["samples_fallback"] is None
    made = from_samples.result["samples"]
    assert (made["segments"], made["made_by_stage"], made["scores_computed"]) == (
        len(files), 1, 0,
    )  # fmt: skip
    assert made["scores_reused"] > 0
    assert not storage.path(storage.derived_key(SESSION, parts.SAMPLES_DIR)).exists()
    whole = build_chapters(_stage(settings.model_copy(update={"chapter_samples": False}),
                                  storage, None, merge=merged.output_key))  # fmt: skip
    assert whole.result["samples_fallback"] == "chapter samples are turned off"
    got = from_samples.documents["chapters"]["chapters"]
    want = whole.documents["chapters"]["chapters"]
    assert len(got) == len(want) == len(DEMO_LECTURE.slides)
    for a, b in zip(got, want, strict=True):
        assert abs(a["start"] - b["start"]) <= CHAPTER_TOLERANCE_S, (got, want)
        assert a["title"] == b["title"]
