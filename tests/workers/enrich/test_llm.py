"""The provider path against a fake provider on 127.0.0.1, through the real SDKs.

No SDK is mocked: ``fake_llm`` speaks Anthropic's and OpenAI's HTTP API and records every
request with its arrival time, so waits are measured where the provider sees them.
Backoffs and timeouts are short (the config's, not the defaults) to keep this fast.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from tests.workers.enrich.fake_llm import (
    ANTHROPIC_PATH,
    OPENAI_PATH,
    FakeLlm,
    Recorded,
    Reply,
    error_reply,
    fake_llm,
    text_reply,
)
from tests.workers.enrich.lecture_docs import lecture_chapters, lecture_transcript
from workers.enrich.documents import Chapter, Summary, Transcript, TranscriptSegment
from workers.enrich.llm import (
    LlmConfig,
    ProviderFailed,
    ProviderRateLimited,
    llm_enrichment,
)
from workers.enrich.llm.chunks import CHARS_PER_TOKEN
from workers.enrich.llm.policy import parse_retry_after

PROVIDERS = ("anthropic", "openai")
KEY = "sk-test-0123456789abcdef0123456789"
MODEL = "model-under-test"
OFFLINE = Summary("Offline summary.", ("database migrations", "celery workers"))
SUMMARY = "The session reviews database migrations, celery workers and the search index."
TITLES = ["Reviewing migrations", "Celery workers", "The search index"]
ANSWER: dict[str, Any] = {
    "summary": SUMMARY,
    "keywords": ["database migrations", "celery workers", "search index", "Celery Workers"],
    "chapter_titles": TITLES,
}


@pytest.fixture
def server() -> Iterator[FakeLlm]:
    with fake_llm() as fake:
        yield fake


def config(server: FakeLlm, provider: str, **overrides: Any) -> LlmConfig:
    fast: dict[str, Any] = {
        "timeout_s": 2.0,
        "max_attempts": 3,
        "backoff_base_s": 0.05,
        "max_backoff_s": 5.0,
        "total_timeout_s": 30.0,
    }
    fast.update(overrides)
    return LlmConfig(
        provider=provider,  # type: ignore[arg-type]
        model=MODEL,
        api_key=KEY,
        base_url=server.base_url(provider),
        **fast,
    )


def enrich(cfg: LlmConfig, chapters: list[Chapter] | None = None) -> Summary:
    chapters = lecture_chapters() if chapters is None else chapters
    return llm_enrichment(cfg, lecture_transcript(), chapters, OFFLINE)


def answering(provider: str, answer: Any = ANSWER) -> Reply:
    return text_reply(provider, answer if isinstance(answer, str) else json.dumps(answer))


def sent_key(request: Recorded) -> str | None:
    auth = request.headers.get("authorization", "")
    return request.headers.get("x-api-key") or (auth[7:] if auth.startswith("Bearer ") else None)


def user_text(request: Recorded) -> str:
    messages = request.body["messages"]
    return str(messages[-1]["content"])


def system_text(request: Recorded) -> str:
    if "system" in request.body:
        return str(request.body["system"])
    return str(request.body["messages"][0]["content"])


def answer_tokens(request: Recorded) -> int:
    body = request.body
    return int(body.get("max_tokens") or body.get("max_completion_tokens"))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_success_parses_summary_keywords_and_titles(server: FakeLlm, provider: str) -> None:
    server.respond = lambda i, r: answering(provider)
    summary = enrich(config(server, provider))
    assert summary == Summary(
        summary=SUMMARY,
        keywords=("database migrations", "celery workers", "search index"),  # case repeat gone
        provider=provider,
        chapter_titles=tuple(TITLES),
    )
    [request] = server.requests
    assert request.path == (ANTHROPIC_PATH if provider == "anthropic" else OPENAI_PATH)
    assert request.body["model"] == MODEL
    assert sent_key(request) == KEY
    assert request.headers.get("x-stainless-retry-count") == "0"  # the SDK's retries are off
    text = user_text(request)
    for line in lecture_transcript().segments:
        assert line.text in text
    assert "Search Index" in text  # the screen text too
    assert "JSON" in system_text(request)
    if provider == "openai":
        assert request.body["response_format"] == {"type": "json_object"}


def test_a_fenced_answer_is_read(server: FakeLlm) -> None:
    server.respond = lambda i, r: answering("anthropic", f"```json\n{json.dumps(ANSWER)}\n```")
    assert enrich(config(server, "anthropic")).chapter_titles == tuple(TITLES)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_429_with_retry_after_waits_that_long(server: FakeLlm, provider: str) -> None:
    def respond(index: int, request: Recorded) -> Reply:
        if index == 0:
            return error_reply(provider, 429, headers={"retry-after": "1"})
        return answering(provider)

    server.respond = respond
    # a backoff of its own would wait 0.025-0.05 s: only Retry-After explains a 1 s gap
    summary = enrich(config(server, provider))
    assert summary.provider == provider
    first, second = server.requests
    assert second.at - first.at >= 1.0


def test_retry_after_ms_wins_over_retry_after(server: FakeLlm) -> None:
    def respond(index: int, request: Recorded) -> Reply:
        if index == 0:
            return error_reply("openai", 429, headers={"retry-after-ms": "300", "retry-after": "9"})
        return answering("openai")

    server.respond = respond
    enrich(config(server, "openai"))
    first, second = server.requests
    assert 0.3 <= second.at - first.at < 5.0


@pytest.mark.parametrize("provider", PROVIDERS)
def test_500_then_success(server: FakeLlm, provider: str) -> None:
    server.respond = lambda i, r: error_reply(provider, 500) if i == 0 else answering(provider)
    summary = enrich(config(server, provider, backoff_base_s=0.2))
    assert summary.summary == SUMMARY
    first, second = server.requests
    assert second.at - first.at >= 0.1  # equal jitter: at least half the first ceiling


@pytest.mark.parametrize("provider", PROVIDERS)
def test_persistent_429_delays_the_job(server: FakeLlm, provider: str) -> None:
    server.respond = lambda i, r: error_reply(provider, 429, headers={"retry-after-ms": "50"})
    with pytest.raises(ProviderRateLimited) as caught:
        enrich(config(server, provider))
    assert len(server.requests) == 3
    assert caught.value.retry_after_s == pytest.approx(0.05)
    assert "429" in str(caught.value)
    assert not isinstance(caught.value, ProviderFailed)


def test_a_long_retry_after_delays_the_job_at_once(server: FakeLlm) -> None:
    server.respond = lambda i, r: error_reply("anthropic", 429, headers={"retry-after": "120"})
    with pytest.raises(ProviderRateLimited) as caught:
        enrich(config(server, "anthropic", max_backoff_s=5.0))
    assert len(server.requests) == 1
    assert caught.value.retry_after_s == 120.0


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_timeout_is_retried_then_fails(server: FakeLlm, provider: str) -> None:
    server.respond = lambda i, r: Reply(delay_s=3.0)
    with pytest.raises(ProviderFailed) as caught:
        enrich(config(server, provider, timeout_s=0.3, max_attempts=2))
    assert len(server.requests) == 2
    assert "timeout" in str(caught.value)
    assert caught.value.retryable


MALFORMED = {
    "not json": "Here is your summary: migrations, workers, search.",
    "a list": json.dumps([ANSWER]),
    "missing key": json.dumps({k: v for k, v in ANSWER.items() if k != "keywords"}),
    "extra key": json.dumps({**ANSWER, "notes": "extra"}),
    "two titles for three chapters": json.dumps({**ANSWER, "chapter_titles": TITLES[:2]}),
    "keywords not a list": json.dumps({**ANSWER, "keywords": "migrations, workers"}),
    "a title not a string": json.dumps({**ANSWER, "chapter_titles": ["A", 2, "C"]}),
    "empty summary": json.dumps({**ANSWER, "summary": " "}),
    "overlong summary": json.dumps({**ANSWER, "summary": "word " * 1000}),
}


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_answer_fails_without_retry(server: FakeLlm, provider: str, case: str) -> None:
    server.respond = lambda i, r: answering(provider, MALFORMED[case])
    with pytest.raises(ProviderFailed) as caught:
        enrich(config(server, provider))
    assert len(server.requests) == 1
    assert "malformed" in str(caught.value)
    assert not caught.value.retryable


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_answer_cut_at_max_tokens_is_malformed(server: FakeLlm, provider: str) -> None:
    server.respond = lambda i, r: text_reply(provider, '{"summary": "The sess', truncated=True)
    with pytest.raises(ProviderFailed, match="max_tokens"):
        enrich(config(server, provider))
    assert len(server.requests) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_other_4xx_fail_at_once(server: FakeLlm, provider: str, status: int) -> None:
    def respond(index: int, request: Recorded) -> Reply:
        reply = error_reply(provider, status)
        body = json.loads(json.dumps(reply.body))
        body["error"]["message"] = f"key {KEY} is not allowed"  # a provider echoing the key
        return replace(reply, body=body)

    server.respond = respond
    with pytest.raises(ProviderFailed) as caught:
        enrich(config(server, provider))
    assert len(server.requests) == 1
    assert f"HTTP {status}" in str(caught.value)
    assert not caught.value.retryable
    assert KEY not in str(caught.value) and KEY not in repr(caught.value.args)
    assert KEY[-12:] not in str(caught.value)


def test_a_refused_connection_is_retried_then_fails() -> None:
    with fake_llm() as gone:
        url = gone.base_url("openai")
    cfg = replace(config(gone, "openai"), base_url=url)
    with pytest.raises(ProviderFailed) as caught:
        enrich(cfg)
    assert "connection" in str(caught.value)
    assert "3 attempts" in str(caught.value)
    assert caught.value.retryable


def test_the_time_budget_stops_retries(server: FakeLlm) -> None:
    server.respond = lambda i, r: error_reply("anthropic", 503)
    with pytest.raises(ProviderFailed, match="time budget") as caught:
        enrich(config(server, "anthropic", backoff_base_s=2.0, total_timeout_s=0.5))
    assert len(server.requests) == 1
    assert caught.value.retryable


def long_session(minutes: int, chapters: int) -> tuple[Transcript, list[Chapter]]:
    sentence = (
        "In this stretch we walk through the worker logs, the retry counters and the "
        "queue depths, and explain what each number means for segment {i}."
    )
    segments = tuple(
        TranscriptSegment(i * 4.0, i * 4.0 + 3.5, sentence.format(i=i)) for i in range(minutes * 15)
    )
    duration = minutes * 60.0
    step = duration / chapters
    marks = [
        Chapter(i * step, (i + 1) * step, f"Slide {i + 1}", "screen", f"Slide {i + 1}\nPoint")
        for i in range(chapters)
    ]
    return Transcript("en", segments, duration), marks


def chunk_answer(provider: str, request: Recorded) -> Reply:
    """Answer any part or combine request with the number of titles it asks for."""
    text = user_text(request)
    match = re.search(r"a list of exactly (\d+) titles?", text)
    titles = int(match.group(1)) if match else 0
    combine = "Summaries of the parts:" in text
    answer = {
        "summary": "The whole session." if combine else "One part of the session.",
        "keywords": ["worker logs", "retry counters"],
        "chapter_titles": [f"Title {n + 1}" for n in range(titles)],
    }
    return answering(provider, answer)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_long_transcript_is_mapped_then_reduced(server: FakeLlm, provider: str) -> None:
    transcript, chapters = long_session(minutes=30, chapters=7)
    server.respond = lambda i, r: chunk_answer(provider, r)
    cfg = config(server, provider, context_tokens=4_000, answer_tokens=600, max_chunks=12)
    summary = llm_enrichment(cfg, transcript, chapters, OFFLINE)

    *maps, reduce = server.requests
    assert 2 <= len(maps) <= cfg.max_chunks
    assert all("Summaries of the parts:" not in user_text(r) for r in maps)
    assert "Summaries of the parts:" in user_text(reduce)
    for request in server.requests:
        prompt_chars = len(system_text(request)) + len(user_text(request))
        assert prompt_chars / CHARS_PER_TOKEN + answer_tokens(request) <= cfg.context_tokens
    said = "\n".join(user_text(r) for r in maps)
    assert all(s.text in said for s in transcript.segments)  # every segment sent once at least
    asked = [
        int(m) for r in maps for m in re.findall(r"a list of exactly (\d+) titles?", user_text(r))
    ]
    assert sum(asked) == len(chapters)  # each chapter titled by the part it starts in
    assert summary.summary == "The whole session."
    assert summary.chapter_titles == tuple(f"Title {n + 1}" for n in range(len(chapters)))


def test_a_session_too_long_for_max_chunks_fails_before_asking(server: FakeLlm) -> None:
    transcript, chapters = long_session(minutes=30, chapters=3)
    cfg = config(server, "anthropic", context_tokens=4_000, answer_tokens=600, max_chunks=2)
    with pytest.raises(ProviderFailed, match="max_chunks=2") as caught:
        llm_enrichment(cfg, transcript, chapters, OFFLINE)
    assert server.requests == []
    assert not caught.value.retryable


def test_without_chapters_no_titles_are_asked(server: FakeLlm) -> None:
    server.respond = lambda i, r: answering("openai", {**ANSWER, "chapter_titles": []})
    summary = enrich(config(server, "openai"), chapters=[])
    assert summary.chapter_titles == ()
    assert "an empty list" in user_text(server.requests[0])


def test_nothing_to_summarise_asks_nothing(server: FakeLlm) -> None:
    silent = Transcript("en", (TranscriptSegment(0.0, 2.0, "  "),))
    blank = [replace(c, screen_text="") for c in lecture_chapters()]
    assert llm_enrichment(config(server, "anthropic"), silent, blank, OFFLINE) is OFFLINE
    assert llm_enrichment(config(server, "anthropic"), None, [], OFFLINE) is OFFLINE
    assert server.requests == []


def test_the_key_is_not_in_the_config_repr() -> None:
    cfg = LlmConfig("anthropic", MODEL, KEY)
    assert KEY not in repr(cfg)


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"provider": "mistral"}, "provider"),
        ({"api_key": " "}, "ANTHROPIC_API_KEY"),
        ({"model": ""}, "model"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"context_tokens": 1000}, "context_tokens"),
        ({"answer_tokens": 20_000}, "answer_tokens"),
    ],
)
def test_an_unworkable_config_is_refused(changes: dict[str, Any], problem: str) -> None:
    fields: dict[str, Any] = {"provider": "anthropic", "model": MODEL, "api_key": KEY}
    with pytest.raises(ValueError, match=problem):
        LlmConfig(**{**fields, **changes})


def test_the_errors_survive_pickling() -> None:
    limited = pickle.loads(pickle.dumps(ProviderRateLimited("anthropic: HTTP 429", 12.5)))
    assert isinstance(limited, ProviderRateLimited)
    assert (str(limited), limited.retry_after_s, limited.retryable) == (
        "anthropic: HTTP 429",
        12.5,
        True,
    )
    failed = pickle.loads(pickle.dumps(ProviderFailed("openai: HTTP 401", retryable=False)))
    assert (str(failed), failed.retry_after_s, failed.retryable) == (
        "openai: HTTP 401",
        None,
        False,
    )


def test_retry_after_forms() -> None:
    now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after({}) is None
    assert parse_retry_after({"Retry-After": "7"}) == 7.0
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after": "-3"}) == 0.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after-ms": "soon", "retry-after": "9"}) == 9.0
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after({"retry-after": later}, now) == 30.0
    earlier = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after({"retry-after": earlier}, now) == 0.0
    assert parse_retry_after({"retry-after": "tomorrow-ish"}) is None
    assert parse_retry_after({"retry-after": "nan"}) is None
