"""The status API in-process (Starlette's TestClient) on SQLite and the embedded broker:
auth, every route, bad input, Range requests, retry/cancel, metrics, start refusal."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from shared.db import session_scope
from shared.models import Job
from shared.settings import Settings
from shared.storage import Storage
from tests.workers.api.seed import MERGE_SECONDS, Seeded, seed
from workers.api.app import create_app
from workers.api.auth import StartRefusedError, authorized, check_start
from workers.jobs import get_job

TOKEN = "s3cret-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: A port nothing listens on: a Redis broker there is down.
CLOSED_REDIS_URL = "redis://127.0.0.1:1/0"


@dataclass
class Api:
    client: TestClient
    settings: Settings
    seeded: Seeded


def _settings(tmp_path: Path, database_url: str, **values: object) -> Settings:
    return Settings(
        home=tmp_path / "home",
        database_url=database_url,
        storage_root=tmp_path / "home" / "storage",
        **values,  # type: ignore[arg-type]
    )


@pytest.fixture
def api(tmp_path: Path, sqlite_url: str) -> Iterator[Api]:
    settings = _settings(tmp_path, sqlite_url, api_token=SecretStr(TOKEN))
    seeded = seed(sqlite_url, Storage(settings.storage))
    with TestClient(create_app(settings), headers=AUTH) as client:
        yield Api(client, settings, seeded)


def job_row(settings: Settings, session_id: str, stage: str) -> Job:
    with session_scope(settings.database_url) as db:
        job = get_job(db, session_id, stage)
        assert job is not None
        return job


# -- auth ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": "Bearer"},
    ],
)
def test_every_route_but_healthz_needs_the_token(api: Api, headers: dict[str, str]) -> None:
    client = TestClient(api.client.app)
    for path in ("/sessions", "/sessions/s-done", "/metrics", "/sessions/s-done/media/playable"):
        response = client.get(path, headers=headers)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert TOKEN not in response.text
    assert client.post("/sessions/s-failed/stages/merge/retry", headers=headers).status_code == 401
    assert job_row(api.settings, "s-failed", "merge").status == "failed"
    assert client.get("/healthz").status_code == 200


def test_bearer_scheme_is_case_insensitive() -> None:
    assert authorized(f"bearer {TOKEN}", TOKEN)
    assert not authorized(None, TOKEN)
    assert not authorized(f"Bearer {TOKEN[:-1]}é", TOKEN)


def test_no_token_starts_only_on_loopback_with_the_embedded_broker(
    tmp_path: Path, sqlite_url: str
) -> None:
    embedded = _settings(tmp_path, sqlite_url)
    check_start(embedded, "127.0.0.1")
    with pytest.raises(StartRefusedError, match="0.0.0.0"):
        check_start(embedded, "0.0.0.0")
    redis = _settings(tmp_path, sqlite_url, broker_url="redis://127.0.0.1:6379/11")
    with pytest.raises(StartRefusedError, match="embedded"):
        check_start(redis, "127.0.0.1")
    with_token = _settings(tmp_path, sqlite_url, broker_url="redis://h/0", api_token=TOKEN)
    check_start(with_token, "0.0.0.0")
    assert _settings(tmp_path, sqlite_url, api_token="").api_token is None


def test_without_a_token_no_auth_is_asked(tmp_path: Path, sqlite_url: str) -> None:
    settings = _settings(tmp_path, sqlite_url)
    seed(sqlite_url, Storage(settings.storage))
    with TestClient(create_app(settings)) as client:
        assert client.get("/sessions").status_code == 200


# -- health -------------------------------------------------------------------------------------
def test_healthz_names_what_failed(tmp_path: Path, sqlite_url: str) -> None:
    with TestClient(create_app(_settings(tmp_path, sqlite_url))) as client:
        ok = client.get("/healthz")
        assert (ok.status_code, ok.json()) == (200, {"database": "ok", "broker": "ok"})
    no_db = f"sqlite:///{tmp_path / 'missing' / 'dir' / 'x.db'}"
    down = _settings(tmp_path, no_db, broker_url=CLOSED_REDIS_URL, api_token=TOKEN)
    with TestClient(create_app(down)) as client:
        failed = client.get("/healthz")
    assert failed.status_code == 503
    assert failed.json() == {"database": "unavailable", "broker": "unavailable"}


# -- sessions -----------------------------------------------------------------------------------
def test_session_list_newest_first_with_flags(api: Api) -> None:
    body = api.client.get("/sessions").json()
    assert [s["session_id"] for s in body] == ["s-running", "s-failed", "s-done"]
    done = body[2]
    assert (done["playable"], done["complete"], done["outcome"]) == (True, True, "completed")
    assert (body[1]["playable"], body[1]["complete"], body[1]["outcome"]) == (
        False, False, "failed",
    )
    assert done["url"] == "/sessions/s-done"


def test_session_list_filters_and_pages(api: Api) -> None:
    get = api.client.get
    assert [s["session_id"] for s in get("/sessions?status=failed").json()] == ["s-failed"]
    since = get("/sessions", params={"since": "2026-01-05T09:01:00+00:00"}).json()
    assert [s["session_id"] for s in since] == ["s-running", "s-failed"]
    first = get("/sessions?limit=2")
    assert [s["session_id"] for s in first.json()] == ["s-running", "s-failed"]
    link = re.fullmatch(r'<([^>]+)>; rel="next"', first.headers["link"])
    assert link is not None
    second = get(link.group(1))
    assert [s["session_id"] for s in second.json()] == ["s-done"]
    assert "link" not in second.headers
    assert get("/sessions?offset=3").json() == []


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=201", "limit=x", "offset=-1", "status=bogus", "since=yesterday",
     "since=2026-13-01"],
)
def test_bad_list_parameters_are_400(api: Api, query: str) -> None:
    response = api.client.get(f"/sessions?{query}")
    assert response.status_code == 400
    assert response.json()["error"]


def test_one_session_links_its_media_and_hides_paths(api: Api) -> None:
    report = api.client.get("/sessions/s-done").json()
    assert report["media"] == {
        "playable": "/sessions/s-done/media/playable",
        "compressed": "/sessions/s-done/media/compressed",
    }
    stages = {s["stage"]: s for s in report["stages"]}
    assert stages["merge"]["output_url"] == "/sessions/s-done/media/playable"
    assert stages["merge"]["duration_s"] == MERGE_SECONDS
    assert all("output_path" not in s for s in report["stages"])
    assert str(api.settings.storage) not in api.client.get("/sessions/s-done").text
    failed = api.client.get("/sessions/s-failed").json()
    assert failed["media"] == {"playable": None, "compressed": None}
    merge = [s for s in failed["stages"] if s["stage"] == "merge"][0]
    assert (merge["status"], merge["error"], merge["attempts"]) == ("failed", "boom", 3)


def test_enrichment_document(api: Api) -> None:
    document = api.client.get("/sessions/s-done/enrichment").json()
    assert document["transcript"]["segments"][0]["text"] == "hello"
    assert document["chapters"][0]["title"] == "Intro"
    assert document["chapters"][0]["segments"] == [0, 1]
    assert (document["playable"], document["complete"]) == (True, True)


@pytest.mark.parametrize(
    "path",
    [
        "/sessions/nope",
        "/sessions/nope/enrichment",
        "/sessions/nope/media/playable",
    ],
)
def test_unknown_session_is_404_naming_it(api: Api, path: str) -> None:
    response = api.client.get(path)
    assert response.status_code == 404
    assert "nope" in response.json()["error"]


@pytest.mark.parametrize(
    "session_id", ["a..b", "%00x", ".hidden", "x" * 300, "%E2%80%AEevil", "a%20b", "-x"]
)
def test_hostile_session_id_is_400(api: Api, session_id: str) -> None:
    for suffix in ("", "/enrichment", "/media/playable"):
        response = api.client.get(f"/sessions/{session_id}{suffix}")
        assert response.status_code == 400, (session_id, suffix)
        assert "invalid session id" in response.json()["error"]
    retry = api.client.post(f"/sessions/{session_id}/stages/merge/retry")
    assert retry.status_code == 400


def test_unknown_route_and_media_are_404_json(api: Api) -> None:
    assert api.client.get("/nothing").json() == {"error": "Not Found"}
    assert api.client.get("/sessions/s-done/media/original").status_code == 404
    not_yet = api.client.get("/sessions/s-running/media/playable")
    assert not_yet.status_code == 404
    assert "no playable file" in not_yet.json()["error"]


# -- media --------------------------------------------------------------------------------------
def test_media_is_served_with_ranges(api: Api) -> None:
    data = api.seeded.playable.read_bytes()
    size = len(data)
    full = api.client.get("/sessions/s-done/media/playable")
    assert full.status_code == 200
    assert full.content == data
    assert full.headers["accept-ranges"] == "bytes"
    assert full.headers["content-type"] == "video/mp4"

    head = api.client.get("/sessions/s-done/media/playable", headers={"Range": "bytes=0-99"})
    assert head.status_code == 206
    assert head.content == data[:100]
    assert head.headers["content-range"] == f"bytes 0-99/{size}"

    tail = api.client.get("/sessions/s-done/media/playable", headers={"Range": "bytes=-50"})
    assert tail.status_code == 206
    assert tail.content == data[-50:]
    assert tail.headers["content-range"] == f"bytes {size - 50}-{size - 1}/{size}"

    middle = api.client.get(
        "/sessions/s-done/media/compressed", headers={"Range": "bytes=10-"}
    )
    assert middle.content == api.seeded.compressed.read_bytes()[10:]

    past = api.client.get(
        "/sessions/s-done/media/playable", headers={"Range": f"bytes={size}-{size + 10}"}
    )
    assert past.status_code == 416
    assert past.headers["content-range"] == f"bytes */{size}"
    malformed = api.client.get("/sessions/s-done/media/playable", headers={"Range": "bytes=x"})
    assert malformed.status_code in (400, 416)


def test_media_deleted_from_storage_is_404(api: Api) -> None:
    api.seeded.compressed.unlink()
    response = api.client.get("/sessions/s-done/media/compressed")
    assert response.status_code == 404
    assert "gone" in response.json()["error"]


# -- retry and cancel ---------------------------------------------------------------------------
def test_retry_makes_the_failed_job_pending_and_sends_it(api: Api) -> None:
    queue = api.settings.broker_folder / "queue"
    before = len(list(queue.iterdir())) if queue.is_dir() else 0
    response = api.client.post("/sessions/s-failed/stages/merge/retry")
    assert response.status_code == 202, response.text
    job = job_row(api.settings, "s-failed", "merge")
    assert (job.status, job.error, job.dispatched_at is not None) == ("pending", None, True)
    assert len(list(queue.iterdir())) == before + 1  # the message waits in the embedded broker
    with session_scope(api.settings.database_url) as db:
        from shared.models import Session

        session = db.get(Session, "s-failed")
        assert session is not None and session.status == "processing"
    again = api.client.post("/sessions/s-failed/stages/merge/retry")
    assert again.status_code == 409


def test_cancel_cancels_a_running_job(api: Api) -> None:
    response = api.client.post("/sessions/s-running/stages/concat_audio/cancel")
    assert response.status_code == 200
    job = job_row(api.settings, "s-running", "concat_audio")
    assert (job.status, job.error) == ("cancelled", "cancelled by operator")
    assert api.client.post("/sessions/s-running/stages/concat_audio/cancel").status_code == 409
    assert api.client.post("/sessions/s-running/stages/nope/cancel").status_code == 400
    assert api.client.post("/sessions/nope/stages/merge/cancel").status_code == 404
    assert api.client.get("/sessions/s-running/stages/merge/cancel").status_code == 405


# -- metrics ------------------------------------------------------------------------------------
def test_metrics(api: Api) -> None:
    text = api.client.get("/metrics").text
    assert 'sessionpipe_jobs{stage="merge",status="failed"} 1.0' in text
    assert 'sessionpipe_jobs{stage="merge",status="succeeded"} 1.0' in text
    assert "sessionpipe_sessions_playable 1.0" in text
    assert "sessionpipe_sessions_complete 1.0" in text
    assert 'sessionpipe_queue_messages{queue="all"} 0.0' in text
    assert "sessionpipe_broker_readable 1.0" in text
    age = re.search(r"^sessionpipe_oldest_pending_job_age_seconds (\S+)$", text, re.M)
    assert age is not None and float(age.group(1)) >= 0
    # s-done's merge took 2.5 s: in the 5 s bucket, not the 1 s one.
    bucket = 'sessionpipe_stage_duration_seconds_bucket{le="%s",stage="merge",status="succeeded"}'
    assert f"{bucket % '1.0'} 0.0" in text
    assert f"{bucket % '5.0'} 1.0" in text
    # A second scrape observes nothing new: the histogram counts each finish once.
    again = api.client.get("/metrics").text
    count = 'sessionpipe_stage_duration_seconds_count{stage="merge",status="succeeded"} 1.0'
    assert count in again
