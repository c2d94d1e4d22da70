"""The web page's server side in-process (Starlette's TestClient, SQLite): the ``?token=``
login and its cookie, what the cookie may and may not do, the pages and their files, the
event stream's documents, and the token kept out of the access log."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from shared.db import session_scope
from shared.settings import Settings
from shared.storage import Storage
from tests.workers.api.seed import seed
from workers.api import events
from workers.api.app import create_app
from workers.api.auth import COOKIE_NAME, cookie_value
from workers.api.pages import ASSETS
from workers.api.server import RedactToken, redact
from workers.jobs import get_job
from workers.status import UnknownSessionError

TOKEN = "page-token-for-tests"


@pytest.fixture
def settings(tmp_path: Path, sqlite_url: str) -> Settings:
    settings = Settings(
        home=tmp_path / "home",
        database_url=sqlite_url,
        storage_root=tmp_path / "home" / "storage",
        api_token=SecretStr(TOKEN),
    )
    seed(sqlite_url, Storage(settings.storage))
    return settings


@pytest.fixture
def browser(settings: Settings) -> Iterator[TestClient]:
    """A client without the bearer header, keeping cookies, as a browser does."""
    with TestClient(create_app(settings), follow_redirects=False) as client:
        yield client


def test_a_page_without_the_token_is_a_401_page_saying_how_to_log_in(
    browser: TestClient,
) -> None:
    for path in ("/ui/", "/ui/sessions/s-done", "/ui/static/session.js", "/ui/?token=wrong"):
        response = browser.get(path)
        assert response.status_code == 401, path
        assert response.headers["content-type"].startswith("text/html")
        assert "?token=" in response.text and TOKEN not in response.text
    assert browser.get("/sessions").json() == {"error": "a valid bearer token is required"}
    assert COOKIE_NAME not in browser.cookies


def test_the_token_logs_in_once_and_leaves_the_address(browser: TestClient) -> None:
    response = browser.get(f"/ui/sessions/s-done?a=1&token={TOKEN}&b=2")
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/sessions/s-done?a=1&b=2"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}={cookie_value(TOKEN)};")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain http on 127.0.0.1; https sets it
    assert TOKEN not in cookie  # the cookie is an HMAC of the token, not the token
    assert response.headers["cache-control"] == "no-store"

    # The cookie reads everything the page needs...
    page = browser.get("/ui/sessions/s-done")
    assert page.status_code == 200 and '<video id="player"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert browser.get("/sessions/s-done").json()["complete"] is True
    assert browser.get("/sessions/s-done/enrichment").status_code == 200
    assert browser.get("/sessions/s-done/media/playable").status_code == 200
    # ...but changes nothing: retry and cancel need the bearer header (no CSRF).
    assert browser.post("/sessions/s-failed/stages/merge/retry").status_code == 401
    # A forged or stale cookie is no login.
    browser.cookies.clear()
    browser.cookies.set(COOKIE_NAME, cookie_value("another-token"))
    assert browser.get("/sessions").status_code == 401


def test_pages_files_and_bad_paths(settings: Settings) -> None:
    with TestClient(
        create_app(settings), headers={"Authorization": f"Bearer {TOKEN}"}, follow_redirects=False
    ) as client:
        assert client.get("/ui").headers["location"] == "/ui/"
        assert client.get("/").headers["location"] == "/ui/"
        listing = client.get("/ui/")
        assert listing.status_code == 200 and 'id="sessions"' in listing.text
        for name, media_type in ASSETS.items():
            asset = client.get(f"/ui/static/{name}")
            assert asset.status_code == 200 and asset.headers["content-type"] == media_type
            assert asset.headers["x-content-type-options"] == "nosniff"
        assert client.get("/ui/static/index.html").status_code == 404  # only the listed files
        assert client.get("/ui/static/..%2F..%2Fapp.py").status_code == 404
        assert client.get("/ui/sessions/nope-nope").status_code == 404
        assert client.get("/ui/sessions/a..b").status_code == 400
        # The list carries each session's stage bars, in pipeline order.
        listed = {s["session_id"]: s for s in client.get("/sessions").json()}
        running = listed["s-running"]["stages"]
        assert running[0] == {"stage": "concat_audio", "status": "running", "progress": 0.4}
        # An unknown session has no event stream; a hostile id is refused before any query.
        assert client.get("/sessions/nope-nope/events").status_code == 404
        assert client.get("/sessions/a..b/events").status_code == 400


def test_the_event_documents(settings: Settings) -> None:
    first = events.snapshot(settings.database_url, "s-running")
    assert (first["outcome"], first["playable"], first["complete"]) == (None, False, False)
    assert [s["stage"] for s in first["stages"]][:2] == ["concat_audio", "merge"]
    assert first["stages"][0]["progress"] == pytest.approx(0.4)
    with session_scope(settings.database_url) as db:
        job = get_job(db, "s-running", "concat_audio")
        assert job is not None
        job.progress = 0.75
    assert events.snapshot(settings.database_url, "s-running")["stages"][0]["progress"] == 0.75
    assert events.snapshot(settings.database_url, "s-done")["complete"] is True
    with pytest.raises(UnknownSessionError, match="nope-nope"):
        events.snapshot(settings.database_url, "nope-nope")
    text = events.format_event({"a": "x\ny"}, event="status", event_id=3)
    assert text == 'id: 3\nevent: status\ndata: {"a":"x\\ny"}\n\n'  # one data line


def test_the_token_never_reaches_the_access_log() -> None:
    assert redact("GET /ui/?token=abc&x=1 HTTP/1.1") == "GET /ui/?token=[redacted]&x=1 HTTP/1.1"
    assert redact("/ui/sessions/s?x=1&token=abc") == "/ui/sessions/s?x=1&token=[redacted]"
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", f"/ui/?token={TOKEN}", "1.1", 303), None,
    )  # fmt: skip
    assert RedactToken().filter(record)
    assert TOKEN not in record.getMessage() and "token=[redacted]" in record.getMessage()


def test_the_servers_connections_send_without_waiting_for_acks() -> None:
    """Nagle off on every accepted connection: with it on, each response waited ~40 ms."""
    import asyncio
    import socket

    from workers.api.server import PortUnavailableError, listening_socket

    async def accepted_nodelay() -> int:
        sock = listening_socket("127.0.0.1", 0)
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conn = writer.get_extra_info("socket")
            seen.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(connected, sock=sock)
        _, writer = await asyncio.open_connection(*sock.getsockname())
        try:
            return await asyncio.wait_for(seen, 10)
        finally:
            writer.close()
            server.close()

    assert asyncio.run(accepted_nodelay()) == 1
    with listening_socket("127.0.0.1", 0) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(PortUnavailableError, match=f"127.0.0.1:{port}"):
            listening_socket("127.0.0.1", port)
