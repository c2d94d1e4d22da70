"""``sessionpipe demo``, the README's first command, on the embedded default (SQLite, local
storage, the in-process worker): it records the demo talk, processes and enriches it, and
prints the chapters, a transcript excerpt, the keywords and the summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from shared import models
from shared.db import session_scope
from synthetic.lecture import DEMO_LECTURE
from tests.support import ROOT
from tests.support.cli import clean_env
from tests.workers.enrich.lecture_checks import check_chapters, check_summary, check_transcript

pytestmark = pytest.mark.integration

DEMO_TIMEOUT_S = 600


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sessionpipe.cli", *args, "--home", str(home)],
        cwd=ROOT,
        env=clean_env(SESSIONPIPE_ENRICH="all"),  # what a user gets: the setting's default
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
    )


def test_the_demo_shows_the_whole_product(tmp_path: Path) -> None:
    home = tmp_path / "home"
    demo = run(home, "demo")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    out = demo.stdout
    assert "finished MP4" in out
    for slide in DEMO_LECTURE.slides:
        assert slide.title in out, f"chapter {slide.title!r} not printed:\n{out}"
    assert "transcript" in out and "keywords:" in out and "summary:" in out
    assert "warning" not in out + demo.stderr

    with session_scope(f"sqlite:///{home / 'sessionpipe.db'}") as db:
        session_id = db.execute(select(models.Session.id)).scalar_one()
    shown = run(home, "show", session_id, "--json")
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    check_chapters(document, DEMO_LECTURE)
    check_transcript(document, DEMO_LECTURE)
    check_summary(document)
    assert all(s["status"] == "succeeded" for s in document["stages"].values())
    excerpt = document["transcript"]["segments"][0]["text"].strip()
    assert excerpt in " ".join(out.split()), "the transcript excerpt is printed"
