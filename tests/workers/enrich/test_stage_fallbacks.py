"""Each enrichment stage without its engine: skipped with the reason (never failed), or, for
the chapters without tesseract, found all the same and titled from the speech."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from shared.settings import Settings
from shared.storage import Storage
from synthetic.lecture import DEMO_LECTURE
from synthetic.slides import write_lecture_video
from tests.workers.enrich.lecture_docs import lecture_chapters, lecture_transcript
from workers.enrich import keywords
from workers.stages.chapters import build_chapters
from workers.stages.context import SessionSnapshot, StageContext
from workers.stages.summary import build_summary
from workers.stages.transcript import build_transcript

SESSION = "fallback-1"


def context(tmp_path: Path, files: dict[str, Any]) -> StageContext:
    """A stage's context whose earlier stages wrote ``files`` (stage -> JSON or a Path)."""
    settings = Settings(home=tmp_path, enrich="all")
    storage = Storage(settings.storage)
    outputs: dict[str, str | None] = {}
    for stage, content in files.items():
        name = content.name if isinstance(content, Path) else f"{stage}.json"
        key = storage.derived_key(SESSION, name)
        path = storage.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            content.rename(path)
        else:
            path.write_text(json.dumps(content))
        outputs[stage] = key
    return StageContext(
        snapshot=SessionSnapshot(id=SESSION, started_at=None, segments=()),
        storage=storage,
        settings=settings,
        progress=lambda fraction: None,
        outputs=outputs,
    )


def test_without_faster_whisper_the_transcript_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "faster_whisper", None)  # import fails
    out = build_transcript(context(tmp_path, {"concat_audio": {}}))
    assert out.output_key is None and not out.documents
    assert "faster-whisper is not installed" in out.result["skipped"]


def test_without_yake_the_summary_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "yake", None)
    keywords._extractor.cache_clear()  # extractors made before, with yake, are forgotten
    files = {
        "transcript": lecture_transcript().to_json(),
        "chapters": {"chapters": [c.to_json() for c in lecture_chapters()]},
    }
    out = build_summary(context(tmp_path, files))
    assert out.output_key is None and "yake" in out.result["skipped"].lower()


def test_without_tesseract_chapters_are_titled_from_the_speech(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    video = write_lecture_video(
        tmp_path / f"{SESSION}.mp4", DEMO_LECTURE, width=320, height=180, fps=5
    )
    files = {"merge": video, "transcript": lecture_transcript().to_json()}
    ctx = context(tmp_path / "home", files)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no tesseract on it
    out = build_chapters(ctx)
    assert "tesseract" in out.result["ocr"]
    chapters = out.documents["chapters"]["chapters"]
    assert [round(c["start"]) for c in chapters] == [0, *map(round, DEMO_LECTURE.changes)]
    assert {c["title_source"] for c in chapters} == {"transcript"}
    spoken = lecture_transcript()
    for chapter in chapters:
        first = spoken.between(chapter["start"], chapter["end"])[0].text
        assert chapter["title"].split()[0] in first, (chapter["title"], first)
