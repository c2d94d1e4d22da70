"""What each stage does: I/O around the media engine, one module per stage.

No Celery and no database here: ``workers.runner`` claims the job, builds the
:class:`StageContext` and records the :class:`StageOutput`. ``WORK`` is the one table from a
stage of the graph (``workers.pipeline``) to its function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from workers.pipeline import Stage
from workers.stages.audio import build_audio
from workers.stages.chapters import build_chapters
from workers.stages.compressed import build_compressed
from workers.stages.context import (
    SegmentRef,
    SessionSnapshot,
    StageContext,
    StageOutput,
    build_timeline,
)
from workers.stages.finalize import write_manifest
from workers.stages.index import build_index
from workers.stages.playable import build_playable
from workers.stages.summary import build_summary
from workers.stages.transcript import build_transcript

StageWork = Callable[[StageContext], StageOutput]

WORK: Final[dict[Stage, StageWork]] = {
    Stage.CONCAT_AUDIO: build_audio,
    Stage.MERGE: build_playable,
    Stage.COMPRESS: build_compressed,
    Stage.FINALIZE: write_manifest,
    Stage.TRANSCRIPT: build_transcript,
    Stage.CHAPTERS: build_chapters,
    Stage.SUMMARY: build_summary,
    Stage.INDEX: build_index,
}
assert set(WORK) == set(Stage), "every stage of the graph has its work"

__all__ = [
    "WORK",
    "SegmentRef",
    "SessionSnapshot",
    "StageContext",
    "StageOutput",
    "StageWork",
    "build_timeline",
]
