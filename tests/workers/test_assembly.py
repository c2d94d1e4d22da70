"""The playable MP4's assembly (workers.assembly) when things go wrong between two appends.

The Celery tasks run in this process (``Task.apply``) on SQLite, as in
``test_pipeline_audio``: chunk passes append pieces while the session records. Then a
writer dies mid-append (bytes past what the description records) and a recorded piece
stops matching the session (as when a late segment is placed before it): the merge stage
must cut the file back to what still holds, append the rest, and give the one-run merge's
very packets at its very timestamps. Without anything assembled it merges in one run and
says why.
"""

from __future__ import annotations

import json
from pathlib import Path

import av

from shared.db import session_scope
from shared.models import Job, Session
from shared.routing import TASK_AUDIO_CHUNKS
from shared.storage import Storage
from tests.workers.test_pipeline_audio import SESSION, Harness, record, ship_events
from tests.workers.test_pipeline_audio import harness as harness  # noqa: F401 (fixture)
from workers.assembly import DESCRIPTION_NAME, FILE_NAME, folder
from workers.media.merge import mux_copied
from workers.snapshot import load_snapshot
from workers.stages.context import build_timeline


def _timed(path: Path, kind: str) -> list[tuple[int | None, int | None, bytes]]:
    with av.open(str(path)) as container:
        stream = next(s for s in container.streams if s.type == kind)
        return [(p.pts, p.dts, bytes(p)) for p in container.demux(stream) if p.size]


def _finish(harness: Harness, ended: object) -> dict[str, object]:
    """End the session, run its audio and merge stages; the merge job's result."""
    from workers import tasks

    harness.ingest(ended)  # type: ignore[arg-type]
    (concat_args,) = harness.take("sessionpipe.concat_audio")
    assert tasks.concat_audio.apply(args=concat_args).get() == "concat_audio succeeded"
    (merge_args,) = harness.take("sessionpipe.merge")
    assert tasks.merge.apply(args=merge_args).get() == "merge succeeded"
    with session_scope(harness.settings.database_url) as db:
        job = db.query(Job).filter_by(session_id=SESSION, stage="merge").one()
        return dict(job.result or {})


def _one_run_matches(harness: Harness, tmp_path: Path) -> None:
    storage = Storage(harness.settings.storage)
    with session_scope(harness.settings.database_url) as db:
        jobs = {j.stage: j for j in db.query(Job).filter_by(session_id=SESSION)}
        session = db.get(Session, SESSION)
        assert session is not None
        snapshot = load_snapshot(db, session)
        playable = storage.path(jobs["merge"].output_key or "")
        audio = storage.path(jobs["concat_audio"].output_key or "")
    timeline = build_timeline(snapshot, storage, cut_pauses=True)
    one_run = mux_copied(timeline, audio, tmp_path / "one-run.mp4", None).path
    for kind in ("video", "audio"):
        assert _timed(playable, kind) == _timed(one_run, kind), kind


def test_a_torn_append_and_a_stale_piece_are_cut_back_and_made_again(
    harness: Harness, tmp_path: Path
) -> None:
    from workers import tasks

    ship_events(harness, record(tmp_path))
    *recording, ended = harness.emitted
    for event in recording:  # a chunk pass after each segment appends what is final
        harness.ingest(event)
        for args in harness.take(TASK_AUDIO_CHUNKS):
            tasks.audio_chunks.apply(args=args).get()
    where = folder(Storage(harness.settings.storage), SESSION)
    description = json.loads((where / DESCRIPTION_NAME).read_text())
    assert len(description["pieces"]) >= 2, description["pieces"]
    # a writer died mid-append: bytes past the recorded end
    with open(where / FILE_NAME, "ab") as handle:
        handle.write(b"\x00\x00\x01\x00moof" + bytes(200))
    # the second piece no longer matches the session (its content changed)
    description["pieces"][1]["sha256"] = "0" * 64
    (where / DESCRIPTION_NAME).write_text(json.dumps(description))

    result = _finish(harness, ended)
    assert result["assembly_fallback"] is None, result
    assert result["assembled"] == {"pieces": 4, "appended_while_recording": 1, "indexed": True}
    assert not where.exists()
    _one_run_matches(harness, tmp_path)


def test_without_an_assembly_the_playable_mp4_is_muxed_in_one_run(
    harness: Harness, tmp_path: Path
) -> None:
    ship_events(harness, record(tmp_path))
    *recording, ended = harness.emitted
    for event in recording:  # no chunk pass ran (their messages were lost)
        harness.ingest(event)
    harness.take(TASK_AUDIO_CHUNKS)
    result = _finish(harness, ended)
    assert result["assembly_fallback"] == (
        "no piece of the playable MP4 was assembled while recording"
    )
    assert "assembled" not in result
    _one_run_matches(harness, tmp_path)
