"""``sessionpipe demo``, the README's first command, on the embedded default (SQLite, local
storage, the in-process worker): it records the demo talk, processes and enriches it, and
prints the chapters, a transcript excerpt, the keywords and the summary; with ``--serve``
it then serves the web page for it at the URL it prints (with a token made for the run),
until Ctrl-C."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import select

from shared import models
from shared.db import session_scope
from synthetic.lecture import DEMO_LECTURE
from tests.support import ROOT
from tests.support.cli import clean_env
from tests.support.servers import free_port
from tests.support.waiting import wait_for
from tests.workers.enrich.lecture_checks import check_chapters, check_summary, check_transcript

pytestmark = pytest.mark.integration

DEMO_TIMEOUT_S = 600
STOP_TIMEOUT_S = 20
URL = re.compile(r"(http://127\.0\.0\.1:\d+)(/ui/sessions/[\w.-]+)\?token=([\w-]+)")


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
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sessionpipe.cli", "demo", "--serve", "--port", str(port),
         "--home", str(home)],
        cwd=ROOT, env=clean_env(SESSIONPIPE_ENRICH="all"),  # what a user gets: the default
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")))  # type: ignore[union-attr]
    reader.start()
    try:
        found = wait_for(
            lambda: _printed_url(proc, lines), DEMO_TIMEOUT_S, "the demo to print its page's URL"
        )
        _check_page(*found.groups())
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
        reader.join()
    stderr = proc.stderr.read() if proc.stderr else ""
    out = "".join(lines)
    assert proc.returncode == 0, out + stderr
    assert "finished MP4" in out
    for slide in DEMO_LECTURE.slides:
        assert slide.title in out, f"chapter {slide.title!r} not printed:\n{out}"
    assert "transcript" in out and "keywords:" in out and "summary:" in out
    assert "warning" not in out + stderr

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


def _printed_url(proc: subprocess.Popen[str], lines: list[str]) -> re.Match[str] | None:
    assert proc.poll() is None, "".join(lines)
    return URL.search("".join(lines))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _check_page(base: str, page: str, token: str) -> None:
    """The printed URL logs in (303 to the page without the token, setting the cookie) and
    the page and its session's document then load with the cookie; without it, 401."""
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        opener.open(f"{base}{page}?token={token}", timeout=10)
        raise AssertionError("the token URL did not redirect")
    except urllib.error.HTTPError as answer:
        assert answer.code == 303 and answer.headers["Location"] == page
        cookie = answer.headers["Set-Cookie"].split(";")[0]
    session_id = page.rsplit("/", 1)[1]
    for path in (page, f"/sessions/{session_id}/enrichment"):
        with opener.open(urllib.request.Request(base + path, headers={"Cookie": cookie})) as ok:
            assert ok.status == 200
    try:
        opener.open(base + page, timeout=10)
        raise AssertionError("the page answered without the token")
    except urllib.error.HTTPError as refused:
        assert refused.code == 401
