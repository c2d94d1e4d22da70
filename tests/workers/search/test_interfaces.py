"""Where people search: ``sessionpipe search`` (its ``--json`` shape is a contract scripts
rely on) and ``GET /search`` (same auth as every route; bad input 400/422, never a 500), on
the embedded default's SQLite."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient
from typer.testing import CliRunner

from shared import models
from shared.db import session_scope
from shared.settings import Settings, reset_settings
from tests.workers.search import lecture_text
from tests.workers.search.lecture_text import DURATION_S, SESSION
from workers import search
from workers.api.app import create_app
from workers.cli import cli
from workers.search import build_moments
from workers.search.highlight import HIGHLIGHT_END, HIGHLIGHT_START

TOKEN = "search-token-for-tests"
HIT_FIELDS = ["session_id", "start", "end", "kind", "text", "score"]


@pytest.fixture
def indexed(sqlite_url: str) -> str:
    with session_scope(sqlite_url) as db:
        db.add(models.Session(id=SESSION, name="", status="completed", priority="normal"))
        db.flush()
        documents = lecture_text.documents()
        search.replace(db, SESSION, build_moments(
            transcript=documents["transcript"], chapters=documents["chapters"],
            summary=documents["summary"], duration=DURATION_S,
        ))  # fmt: skip
    return sqlite_url


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    reset_settings()
    yield
    reset_settings()


def _cli(url: str, home: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        cli, ["search", *args], env={"SESSIONPIPE_DATABASE_URL": url, "SESSIONPIPE_HOME": str(home)}
    )
    return result.exit_code, result.stdout, result.stderr


def test_cli_json_shape(indexed: str, tmp_path: Path, fresh_settings: None) -> None:
    code, out, _ = _cli(indexed, tmp_path, "kubernetes", "--json")
    assert code == 0
    document = json.loads(out)
    assert list(document) == ["query", "hits"] and document["query"] == "kubernetes"
    [hit] = document["hits"]
    assert list(hit) == HIT_FIELDS
    assert (hit["session_id"], hit["start"], hit["end"], hit["kind"]) == (SESSION, 12.0, 24.0,
                                                                          "screen")  # fmt: skip
    assert f"{HIGHLIGHT_START}Kubernetes{HIGHLIGHT_END}" in hit["text"]
    assert isinstance(hit["score"], float) and hit["score"] > 0
    code, out, _ = _cli(indexed, tmp_path, "migrations", "--session", SESSION, "--limit", "2",
                        "--since", "2020-01-01T00:00:00+00:00", "--json")  # fmt: skip
    assert code == 0 and len(json.loads(out)["hits"]) == 2
    code, out, _ = _cli(indexed, tmp_path, "nothing-like-it", "--json")
    assert code == 0 and json.loads(out) == {"query": "nothing-like-it", "hits": []}
    code, out, _ = _cli(indexed, tmp_path, "kubernetes")  # for people: a table
    assert code == 0 and SESSION in out and "0:12" in out and "screen" in out


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["?!"], "nothing to search for"),
        (["x" * 600], "at most 500"),
        (["kubernetes", "--session", "../etc"], "session id"),
        (["kubernetes", "--since", "yesterday"], "not an ISO 8601 time"),
        (["kubernetes", "--limit", "0"], "--limit"),
    ],
)
def test_cli_bad_input_exits_2_naming_it(
    indexed: str, tmp_path: Path, fresh_settings: None, args: list[str], named: str
) -> None:
    code, out, err = _cli(indexed, tmp_path, *args)
    assert code == 2 and named in err + out, err + out
    assert "Traceback" not in err + out


@pytest.fixture
def client(indexed: str, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(home=tmp_path / "home", database_url=indexed,
                        api_token=SecretStr(TOKEN))  # fmt: skip
    with TestClient(create_app(settings)) as client:
        yield client


def test_api_search_needs_the_token_and_answers_the_cli_shape(client: TestClient) -> None:
    assert client.get("/search?q=kubernetes").status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    response = client.get("/search", params={"q": "kubernetes"}, headers=auth)
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["query", "hits"] and body["query"] == "kubernetes"
    assert [list(hit) for hit in body["hits"]] == [HIT_FIELDS]
    assert body["hits"][0]["start"] == 12.0
    limited = client.get("/search", headers=auth,
                         params={"q": "migrations", "session": SESSION, "limit": "1",
                                 "since": "2020-01-01T00:00:00+00:00"})  # fmt: skip
    assert limited.status_code == 200 and len(limited.json()["hits"]) == 1


@pytest.mark.parametrize(
    ("params", "status", "named"),
    [
        ({}, 400, "q is required"),
        ({"q": ""}, 422, "nothing to search for"),
        ({"q": "\x00"}, 422, "nothing to search for"),
        ({"q": "x" * 5000}, 422, "at most 500"),
        ({"q": "a' | b:* & !c NEAR("}, 200, None),
        ({"q": "kubernetes", "limit": "x"}, 400, "limit must be an integer"),
        ({"q": "kubernetes", "limit": "201"}, 400, "limit must be 1-200"),
        ({"q": "kubernetes", "since": "soon"}, 400, "since must be an ISO 8601 time"),
        ({"q": "kubernetes", "session": "../x"}, 400, "session id"),
    ],
)
def test_api_bad_queries_are_400_or_422_never_500(
    client: TestClient, params: dict[str, str], status: int, named: str | None
) -> None:
    response = client.get("/search", params=params, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == status, response.text
    if named is not None:
        assert named in response.json()["error"]
