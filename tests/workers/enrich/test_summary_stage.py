"""The summary stage (workers.stages.summary) as the runner calls it: offline by default,
the LLM provider when configured (a real local fake server speaking its API), a rate limit
raised to delay the job except on the last try, where the offline result is kept."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.options import SessionOptions
from shared.settings import Settings
from shared.storage import Storage
from tests.workers.enrich.fake_llm import FakeLlm, Reply, error_reply, fake_llm, text_reply
from tests.workers.enrich.lecture_docs import lecture_chapters, lecture_transcript
from workers.enrich.llm import ProviderRateLimited
from workers.enrichment import KIND_CHAPTERS, KIND_SUMMARY
from workers.stages.context import SessionSnapshot, StageContext
from workers.stages.summary import build_summary

SESSION = "summary-1"
TITLES = ["Migrations reviewed", "Workers and queues", "Finding the moment"]
ANSWER = {
    "summary": "A short talk on migrations, workers and search.",
    "keywords": ["migrations", "celery", "search"],
    "chapter_titles": TITLES,
}


@pytest.fixture
def server() -> Iterator[FakeLlm]:
    with fake_llm() as fake:
        yield fake


def context(
    tmp_path: Path,
    *,
    last_try: bool = True,
    options: SessionOptions | None = None,
    transcript: bool = True,
    **settings: Any,
) -> StageContext:
    base = Settings(home=tmp_path, enrich="all", **settings)
    storage = Storage(base.storage)
    outputs: dict[str, str | None] = {}
    docs: dict[str, Any] = {"chapters": {"chapters": [c.to_json() for c in lecture_chapters()]}}
    if transcript:
        docs["transcript"] = lecture_transcript().to_json()
    for stage, document in docs.items():
        key = storage.derived_key(SESSION, f"{stage}.json")
        storage.path(key).parent.mkdir(parents=True, exist_ok=True)
        storage.path(key).write_text(json.dumps(document))
        outputs[stage] = key
    return StageContext(
        snapshot=SessionSnapshot(
            id=SESSION, started_at=None, segments=(), options=options or SessionOptions()
        ),
        storage=storage,
        settings=base,
        progress=lambda fraction: None,
        outputs=outputs,
        last_try=last_try,
    )


def with_provider(server: FakeLlm, provider: str = "openai") -> dict[str, Any]:
    return {
        "llm_provider": provider,
        "llm_base_url": server.base_url(provider),
        "llm_api_key": "sk-test-key",
        "llm_timeout_s": 2.0,
        "llm_max_attempts": 2,
        "llm_max_backoff_s": 1.0,
    }


def test_offline_summary_and_chapter_keywords(tmp_path: Path) -> None:
    out = build_summary(context(tmp_path))
    summary = out.documents[KIND_SUMMARY]
    assert summary["provider"] == "offline" and summary["provider_error"] is None
    assert summary["summary"] and summary["keywords"]
    chapters = out.documents[KIND_CHAPTERS]["chapters"]
    assert [c["title"] for c in chapters] == [c.title for c in lecture_chapters()]
    assert all(c["keywords"] for c in chapters)
    assert out.output_key is not None
    written = json.loads(Storage(tmp_path / "storage").path(out.output_key).read_text())
    assert written == summary


def test_chapters_alone_are_summarised_when_the_transcript_failed(tmp_path: Path) -> None:
    out = build_summary(context(tmp_path, transcript=False))
    assert out.documents[KIND_SUMMARY]["keywords"]


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_the_provider_writes_summary_keywords_and_titles(
    tmp_path: Path, server: FakeLlm, provider: str
) -> None:
    server.respond = lambda i, r: text_reply(provider, json.dumps(ANSWER))
    out = build_summary(context(tmp_path, **with_provider(server, provider)))
    summary = out.documents[KIND_SUMMARY]
    assert (summary["provider"], summary["summary"]) == (provider, ANSWER["summary"])
    chapters = out.documents[KIND_CHAPTERS]["chapters"]
    assert [(c["title"], c["title_source"]) for c in chapters] == [(t, "llm") for t in TITLES]
    assert len(server.requests) == 1


def test_a_rate_limit_delays_the_job_and_the_last_try_keeps_the_offline_result(
    tmp_path: Path, server: FakeLlm
) -> None:
    server.respond = lambda i, r: error_reply("openai", 429, headers={"retry-after": "0.1"})
    with pytest.raises(ProviderRateLimited):
        build_summary(context(tmp_path, last_try=False, **with_provider(server)))
    out = build_summary(context(tmp_path / "last", last_try=True, **with_provider(server)))
    summary = out.documents[KIND_SUMMARY]
    assert summary["provider"] == "offline" and summary["summary"]
    assert "rate limited" in summary["provider_error"]


def test_a_refused_key_keeps_the_offline_result_at_once(tmp_path: Path, server: FakeLlm) -> None:
    server.respond = lambda i, r: error_reply("openai", 401)
    out = build_summary(context(tmp_path, last_try=False, **with_provider(server)))
    summary = out.documents[KIND_SUMMARY]
    assert summary["provider"] == "offline" and "401" in summary["provider_error"]
    assert len(server.requests) == 1  # no retry on a 4xx other than 429
    assert "sk-test-key" not in summary["provider_error"]


def test_no_key_is_a_provider_error_not_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    out = build_summary(context(tmp_path, llm_provider="openai"))
    assert "no API key" in out.documents[KIND_SUMMARY]["provider_error"]


def test_a_session_that_opts_out_asks_no_provider(tmp_path: Path, server: FakeLlm) -> None:
    server.respond = lambda i, r: Reply(status=500)
    out = build_summary(
        context(tmp_path, options=SessionOptions(llm=False), **with_provider(server))
    )
    assert out.documents[KIND_SUMMARY]["provider"] == "offline" and not server.requests


def test_a_session_that_does_not_ask_for_a_summary_skips_it(tmp_path: Path) -> None:
    out = build_summary(context(tmp_path, options=SessionOptions(enrich=("transcript",))))
    assert out.result == {"skipped": "not asked for by this session"} and not out.documents


def test_chapters_without_a_screen_title_are_titled_from_the_speech(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    key = ctx.outputs["chapters"]
    assert key is not None
    untitled = [
        {**c.to_json(), "title": f"Chapter {i + 1}", "title_source": "none", "screen_text": ""}
        for i, c in enumerate(lecture_chapters())
    ]
    ctx.storage.path(key).write_text(json.dumps({"chapters": untitled}))
    chapters = build_summary(ctx).documents[KIND_CHAPTERS]["chapters"]
    assert [c["title_source"] for c in chapters] == ["transcript"] * 3
    assert chapters[1]["title"] == "Next, the celery workers and their queues"
