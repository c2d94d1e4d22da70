"""Three sessions in known states, with a real small MP4, for the status API's tests.

- ``s-done`` (oldest): every stage succeeded; its playable and compressed files exist, its
  merge took :data:`MERGE_SECONDS`; it has a transcript and chapters.
- ``s-failed``: merge failed (``"boom"``), so its compress never ran.
- ``s-running`` (newest): concat_audio running at 40 %, merge pending.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Final

import av
import numpy as np

from shared import models
from shared.db import session_scope
from shared.storage import Storage
from workers.enrichment import KIND_CHAPTERS, KIND_TRANSCRIPT, store
from workers.pipeline import STAGES, Stage

T0: Final = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
MERGE_SECONDS: Final = 2.5
FRAMES: Final = 12
FRAME_SIZE: Final = 64


@dataclass(frozen=True)
class Seeded:
    playable: Path  # the real MP4 behind s-done's playable link
    compressed: Path


def make_mp4(path: Path) -> None:
    """A real, small H.264 MP4 (a few kilobytes), encoded in-process with PyAV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width = stream.height = FRAME_SIZE
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, 10)
        rng = np.random.default_rng(7)
        for i in range(FRAMES):
            pixels = rng.integers(0, 255, (FRAME_SIZE, FRAME_SIZE, 3), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def seed(database_url: str, storage: Storage, prefix: str = "") -> Seeded:
    """The sessions above, their ids prefixed with ``prefix`` (a shared database)."""
    playable_key = storage.derived_key(prefix + "s-done", "s-done.mp4")
    compressed_key = storage.derived_key(prefix + "s-done", "s-done-compressed.mp4")
    make_mp4(storage.path(playable_key))
    make_mp4(storage.path(compressed_key))
    with session_scope(database_url) as db:
        db.add_all(
            [
                models.Session(
                    id=prefix + "s-done", name="done", status="completed", created_at=T0
                ),
                models.Session(
                    id=prefix + "s-failed",
                    name="failed",
                    status="failed",
                    created_at=T0 + timedelta(minutes=1),
                ),
                models.Session(
                    id=prefix + "s-running",
                    name="running",
                    status="processing",
                    created_at=T0 + timedelta(minutes=2),
                ),
            ]
        )
        db.flush()
        for stage in STAGES:
            output = {Stage.MERGE: playable_key, Stage.COMPRESS: compressed_key}.get(stage)
            took = MERGE_SECONDS if stage is Stage.MERGE else 1.0
            db.add(
                models.Job(
                    session_id=prefix + "s-done",
                    stage=stage.value,
                    status="succeeded",
                    attempts=1,
                    progress=1.0,
                    output_key=output,
                    result={"duration": 1.2} if stage is Stage.MERGE else {},
                    started_at=T0,
                    finished_at=T0 + timedelta(seconds=took),
                )
            )
        failed, running = prefix + "s-failed", prefix + "s-running"
        four_s = T0 + timedelta(seconds=4)
        db.add_all(
            [
                models.Job(
                    session_id=failed, stage="concat_audio", status="succeeded", attempts=1,
                    progress=1.0, started_at=T0, finished_at=T0 + timedelta(seconds=1),
                ),
                models.Job(
                    session_id=failed, stage="merge", status="failed", attempts=3,
                    error="boom", started_at=T0, finished_at=four_s,
                ),
                models.Job(
                    session_id=running, stage="concat_audio", status="running", attempts=1,
                    progress=0.4, started_at=T0,
                ),
                models.Job(session_id=running, stage="merge", status="pending"),
            ]
        )
        store(
            db,
            prefix + "s-done",
            {
                KIND_TRANSCRIPT: {
                    "language": "en",
                    "segments": [{"start": 0.0, "end": 1.0, "text": "hello", "words": []}],
                },
                KIND_CHAPTERS: {"chapters": [{"start": 0.0, "end": 1.2, "title": "Intro"}]},
            },
        )
    return Seeded(playable=storage.path(playable_key), compressed=storage.path(compressed_key))
