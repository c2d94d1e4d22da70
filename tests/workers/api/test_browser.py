"""The web page in a real browser (Debian's chromium, headless, through selenium) over the
real API process, PostgreSQL, Redis and Celery workers.

A short lecture is shipped while only the ingest worker runs, so the page opens on a
session whose stages wait; then the media, audio and enrichment worker starts and the same
page (never reloaded) must follow every stage to the end through its event stream, show
the video, and then the chapters and transcript: a click on a chapter moves the player to
the chapter's time, the transcript's search finds a spoken word and a click on that line
seeks there. The list page shows the session complete, and its search box finds the
moment "migrations" was said: the hit opens the session page with the player there.
Without the token, 401.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from capture_agent.emit import EventEmitter
from shared import models
from shared.db import session_scope
from shared.storage import Storage
from synthetic.lecture import Lecture, Line, Slide
from synthetic.plan import SyntheticSpec
from synthetic.session import record_synthetic_session
from tests.support.api import ApiServer, running_api
from tests.support.browser import chromium, wait_js
from tests.support.services import (
    SESSION_WAIT_S,
    WorkerProcess,
    service_env,
    settings_for,
)
from tests.support.shipping import ship_session_dir
from tests.support.waiting import wait_for
from workers.api.auth import COOKIE_NAME

pytestmark = pytest.mark.integration

TOKEN = "browser-token-" + uuid.uuid4().hex
SESSION = "browser-lecture"
SLIDE_CHANGE_S = 12.0
LECTURE = Lecture(
    duration=24.0,
    slides=(
        Slide(0.0, "Database Migrations", ("Alembic revisions", "Review every migration")),
        Slide(SLIDE_CHANGE_S, "Celery Workers", ("Queues for media", "Retries with backoff")),
    ),
    narration=(
        Line(1.0, "Today we review the database migrations."),
        Line(6.0, "Every revision is reviewed by hand."),
        Line(13.0, "Next, the workers and their queues."),
        Line(18.0, "Failed tasks are tried again later."),
    ),
)
SPEC = SyntheticSpec(
    duration=LECTURE.duration, segment_seconds=6.0, audio_holes=(), width=640, height=360, fps=10,
    lecture=LECTURE,
)  # fmt: skip
PAGE_TIMEOUT_S = 20.0
SEEK_TOLERANCE_S = 3.0  # the player plays on after a seek: its time is a little past it
CHAPTER_TOLERANCE_S = 1.5  # a chapter starts within this of the slide change
#: Records, in the page, every (stage, status) its stage bars showed, and marks the page so
#: a reload (which would lose the mark) is seen.
RECORD_STAGES = """
window.__mark = 'not reloaded';
window.__seen = [];
const note = () => {
  for (const li of document.querySelectorAll('#stages li')) {
    window.__seen.push(li.dataset.stage + ':' + li.dataset.status);
  }
};
note();
new MutationObserver(note).observe(document.getElementById('stages'), {childList: true});
"""


def _jobs(database_url: str) -> list[str] | None:
    with session_scope(database_url) as db:
        session = db.get(models.Session, SESSION)
        return [job.stage for job in session.jobs] if session is not None and session.jobs else None


def _player_time(driver: WebDriver) -> float:
    return float(driver.execute_script("return document.getElementById('player').currentTime"))


def _seeks_to(driver: WebDriver, target: float) -> None:
    wait_js(
        driver,
        f"const t = document.getElementById('player').currentTime;"
        f"return t >= {target} - 0.25 && t < {target} + {SEEK_TOLERANCE_S};",
        PAGE_TIMEOUT_S,
        f"the player to move to {target:.2f} s (it is at {_player_time(driver):.2f} s)",
    )


def test_the_page_follows_a_session_live_and_seeks_the_player(
    tmp_path: Path, pg_url: str, redis_url: str
) -> None:
    home = tmp_path / "home"
    env = service_env(home=home, database_url=pg_url, broker_url=redis_url)
    env.update(SESSIONPIPE_ENRICH="all", SESSIONPIPE_API_TOKEN=TOKEN)
    settings = settings_for(home=home, database_url=pg_url, broker_url=redis_url)
    folder = record_synthetic_session(
        tmp_path / "recording", session_id=SESSION, name="Browser lecture", spec=SPEC,
        started_at=datetime(2026, 12, 1, 9, 0, tzinfo=UTC),
    )  # fmt: skip
    ingest = WorkerProcess(env, tmp_path / "ingest.log", queues="default", concurrency=1)
    try:
        with running_api(env, tmp_path / "api.log") as api, chromium() as driver:
            ship_session_dir(folder, Storage(settings.storage), EventEmitter(settings))
            wait_for(lambda: _jobs(pg_url), 60, "the session's first job", poll=0.1)
            _login(api, driver)
            _follow_live(driver, env, tmp_path)
            _chapters_and_transcript_seek(driver)
            _list_page(api, driver)
            _search_opens_the_moment(api, driver)
            _refused_without_token(api, driver)
            assert TOKEN not in api.log.read_text()
    finally:
        ingest.discard()


def _login(api: ApiServer, driver: WebDriver) -> None:
    page = f"{api.base}/ui/sessions/{SESSION}"
    driver.get(f"{page}?token={TOKEN}")
    assert driver.current_url == page  # the token left the address bar
    cookie = driver.get_cookie(COOKIE_NAME)
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert driver.execute_script("return document.cookie") == ""  # scripts cannot read it


def _follow_live(driver: WebDriver, env: dict[str, str], tmp_path: Path) -> None:
    wait_js(
        driver,
        "return window.sessionpipe.events >= 1 && "
        "document.querySelector('#stages li[data-stage=concat_audio]').dataset.status "
        "=== 'pending'",
        PAGE_TIMEOUT_S,
        "the page to show the waiting session",
    )
    assert driver.find_element(By.ID, "player").get_attribute("src") in (None, "")
    driver.execute_script(RECORD_STAGES)
    media = WorkerProcess(env, tmp_path / "media.log", queues="media,audio,enrich")
    try:
        wait_js(
            driver, "return document.body.dataset.outcome === 'completed'", SESSION_WAIT_S,
            "the page to show the session completed",
        )  # fmt: skip
    finally:
        media.discard()
    assert driver.execute_script("return window.__mark") == "not reloaded"
    seen: list[str] = driver.execute_script("return window.__seen")
    bars = driver.find_elements(By.CSS_SELECTOR, "#stages li")
    final = {bar.get_attribute("data-stage"): bar.get_attribute("data-status") for bar in bars}
    assert final == dict.fromkeys(
        ["concat_audio", "merge", "transcript", "chapters", "compress", "summary", "index",
         "finalize"],
        "succeeded",
    )
    assert "concat_audio:pending" in seen and "concat_audio:succeeded" in seen
    assert any(entry.endswith(":running") for entry in seen), seen  # progress shown live
    assert driver.execute_script("return window.sessionpipe.events") >= 3
    src = driver.find_element(By.ID, "player").get_attribute("src") or ""
    assert src.endswith(f"/sessions/{SESSION}/media/playable")


def _chapters_and_transcript_seek(driver: WebDriver) -> None:
    wait_js(
        driver,
        "return document.querySelectorAll('#chapters li').length === 2 && "
        "document.querySelectorAll('#transcript li').length >= 3 && "
        "document.getElementById('player').readyState >= 1",
        PAGE_TIMEOUT_S,
        "chapters, transcript and the video's metadata",
    )
    second = driver.find_elements(By.CSS_SELECTOR, "#chapters li")[1]
    start = float(second.get_attribute("data-start") or "nan")
    assert abs(start - SLIDE_CHANGE_S) <= CHAPTER_TOLERANCE_S
    second.find_element(By.TAG_NAME, "button").click()
    _seeks_to(driver, start)

    search = driver.find_element(By.ID, "transcript-search")
    search.send_keys("Database")
    lines = wait_js(
        driver,
        "const li = [...document.querySelectorAll('#transcript li')];"
        "return li.length >= 1 && li.every(l => l.querySelector('mark')) && li;",
        PAGE_TIMEOUT_S,
        "the transcript search to show the lines with 'database'",
    )
    total = len(driver.execute_script("return window.sessionpipe.enrichment.transcript.segments"))
    assert len(lines) < total  # the lines without the word are hidden
    for line in lines:
        assert line.find_element(By.TAG_NAME, "mark").text.lower() == "database"
    said_at = float(lines[0].get_attribute("data-start") or "nan")
    assert said_at < SLIDE_CHANGE_S  # "database" is said on the first slide
    lines[0].click()
    _seeks_to(driver, said_at)


def _list_page(api: ApiServer, driver: WebDriver) -> None:
    driver.get(f"{api.base}/ui/")
    row = wait_js(
        driver,
        f"return document.querySelector('#sessions tr[data-session=\"{SESSION}\"]"
        "[data-outcome=completed]');",
        PAGE_TIMEOUT_S,
        "the session's row, completed",
    )
    bars = row.find_elements(By.CSS_SELECTOR, "li.stage")
    assert len(bars) == 8
    assert {bar.get_attribute("data-status") for bar in bars} == {"succeeded"}
    assert "complete" in driver.find_element(By.ID, "indicator").text
    row.find_element(By.TAG_NAME, "a").click()
    wait_js(driver, f"return location.pathname === '/ui/sessions/{SESSION}'", PAGE_TIMEOUT_S,
            "the row's link to open the session page")  # fmt: skip


def _search_opens_the_moment(api: ApiServer, driver: WebDriver) -> None:
    driver.get(f"{api.base}/ui/")
    driver.find_element(By.ID, "search-input").send_keys("migrations")
    hits = wait_js(
        driver,
        "const hits = [...document.querySelectorAll('#hits li.hit')];"
        "return hits.some(h => h.dataset.kind === 'spoken') && hits;",
        PAGE_TIMEOUT_S,
        "the search box to show where 'migrations' was said",
    )
    kinds = {hit.get_attribute("data-kind") for hit in hits}
    assert {"spoken", "chapter"} <= kinds, kinds  # said, and the first slide's title
    spoken = next(hit for hit in hits if hit.get_attribute("data-kind") == "spoken")
    said_at = float(spoken.get_attribute("data-start") or "nan")
    assert 0 < said_at < SLIDE_CHANGE_S  # "...the database migrations." on the first slide
    assert spoken.find_element(By.TAG_NAME, "mark").text.lower() == "migrations"
    spoken.find_element(By.TAG_NAME, "a").click()
    wait_js(driver, f"return location.pathname === '/ui/sessions/{SESSION}' && "
            "new URLSearchParams(location.search).has('t')", PAGE_TIMEOUT_S,
            "the hit to open the session page at its moment")  # fmt: skip
    _seeks_to(driver, said_at)


def _refused_without_token(api: ApiServer, driver: WebDriver) -> None:
    for path in ("/ui/", f"/ui/sessions/{SESSION}", f"/sessions/{SESSION}/events",
                 f"/sessions/{SESSION}/media/playable"):  # fmt: skip
        assert api.request(path, token=None)[0] == 401, path
    assert api.request(f"/ui/?token={TOKEN}x", token=None)[0] == 401
    driver.delete_all_cookies()
    driver.get(f"{api.base}/ui/")
    assert "401" in driver.find_element(By.TAG_NAME, "h1").text
