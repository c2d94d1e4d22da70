"""Abstractive enrichment by a provider: one request when the session fits, else map/reduce.

The session (chapters with their screen text, the transcript with times) is rendered as
lines (``chunks.session_lines``). When the whole prompt, plus the answer's tokens, fits the
configured context, one request answers. Otherwise the lines are packed into parts that do
(at most ``max_chunks``), each part is summarised (*map*), and one more request combines
the parts' summaries, keywords and proposed titles (*reduce*). Every request goes through
``policy.call_with_retries`` under one deadline for the whole enrichment.

The offline result lends its keywords as hints; it is also what the stage keeps when this
raises. A session with nothing said and nothing on screen asks nothing and returns
``offline`` as it is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from workers.enrich.documents import Chapter, Summary, Transcript
from workers.enrich.llm import prompts
from workers.enrich.llm.chunks import (
    CHARS_PER_TOKEN,
    Part,
    estimate_tokens,
    pack,
    session_lines,
    usable_tokens,
)
from workers.enrich.llm.config import LlmConfig
from workers.enrich.llm.errors import ProviderFailed
from workers.enrich.llm.policy import RetryPolicy, call_with_retries
from workers.enrich.llm.providers import open_client

log = logging.getLogger(__name__)


def fits(prompt: str, config: LlmConfig) -> bool:
    """Whether ``prompt`` (with the system prompt and the answer) fits one request."""
    need = estimate_tokens(prompts.SYSTEM) + estimate_tokens(prompt) + config.answer_tokens
    return need <= usable_tokens(config.context_tokens)


def part_budget_chars(config: LlmConfig, chapters: int, language: str | None) -> int:
    """Characters of session text one part may hold: what the map prompt leaves."""
    empty = Part(lines=(), starting=tuple(range(chapters)), start=0.0, end=0.0)
    overhead = prompts.part_prompt(
        empty, config.max_chunks, config.max_chunks, keywords=config.keywords, language=language
    )
    room = (
        usable_tokens(config.context_tokens)
        - config.answer_tokens
        - estimate_tokens(prompts.SYSTEM)
        - estimate_tokens(overhead)
    )
    return room * CHARS_PER_TOKEN


def llm_enrichment(
    config: LlmConfig,
    transcript: Transcript | None,
    chapters: Sequence[Chapter],
    offline: Summary,
    *,
    language: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Summary:
    """The provider's summary, keywords and one title per chapter.

    Raises ProviderRateLimited (delay the job), ProviderFailed (keep ``offline``), or
    EnrichUnavailable when the provider's SDK is not installed. ``language`` (a code the
    prompt names) defaults to the transcript's; ``sleep`` and ``clock`` are for tests.
    """
    chapters = list(chapters)
    said = any(s.text.strip() for s in (transcript.segments if transcript else ()))
    if not said and not any(c.screen_text.strip() for c in chapters):
        return offline  # nothing said, nothing on screen: nothing to ask
    lines = session_lines(transcript, chapters)
    if language is None and transcript is not None and transcript.language:
        language = transcript.language
    duration = max(
        [transcript.duration if transcript else 0.0]
        + [c.end for c in chapters]
        + [s.end for s in (transcript.segments if transcript else ())]
    )
    policy = RetryPolicy(
        max_attempts=config.max_attempts,
        base_s=config.backoff_base_s,
        cap_s=config.max_backoff_s,
        deadline=clock() + config.total_timeout_s,
        label=config.provider,
        secret=config.api_key,
    )
    hints = offline.keywords
    whole = prompts.whole_prompt(
        "\n".join(line.text for line in lines),
        len(chapters),
        keywords=config.keywords,
        sentences=config.summary_sentences,
        language=language,
        offline_keywords=hints,
    )
    parts: list[Part] = []
    if not fits(whole, config):
        budget = part_budget_chars(config, len(chapters), language)
        if budget < 200:
            raise ProviderFailed(
                f"{config.provider}: context_tokens={config.context_tokens} leaves no room "
                "for the session's text"
            )
        parts = pack(lines, chapters, budget, duration)
        if len(parts) > config.max_chunks:
            raise ProviderFailed(
                f"{config.provider}: the session needs {len(parts)} requests of "
                f"{config.context_tokens} tokens, more than max_chunks={config.max_chunks}"
            )
    with open_client(config) as client:

        def ask(prompt: str, titles: int, summary_chars: int) -> prompts.Answer:
            def send() -> prompts.Answer:
                text = client.complete(prompts.SYSTEM, prompt, config.answer_tokens)
                return prompts.parse_answer(text, titles=titles, summary_chars=summary_chars)

            return call_with_retries(send, policy, sleep=sleep, clock=clock)

        if not parts:
            answer = ask(whole, len(chapters), prompts.MAX_SUMMARY_CHARS)
        else:
            answer = _map_reduce(ask, parts, chapters, config, language, hints)
    return Summary(
        summary=answer.summary,
        keywords=answer.keywords[: config.keywords],
        provider=config.provider,
        chapter_titles=answer.chapter_titles,
    )


def _map_reduce(
    ask: Callable[[str, int, int], prompts.Answer],
    parts: Sequence[Part],
    chapters: Sequence[Chapter],
    config: LlmConfig,
    language: str | None,
    hints: Sequence[str],
) -> prompts.Answer:
    answers = []
    for index, part in enumerate(parts):
        log.info("%s: part %d of %d", config.provider, index + 1, len(parts))
        prompt = prompts.part_prompt(
            part, index, len(parts), keywords=config.keywords, language=language
        )
        answers.append(ask(prompt, len(part.starting), prompts.MAX_PART_SUMMARY_CHARS))
    combine = prompts.combine_prompt(
        parts,
        answers,
        chapters,
        keywords=config.keywords,
        sentences=config.summary_sentences,
        language=language,
        offline_keywords=hints,
    )
    if not fits(combine, config):
        raise ProviderFailed(
            f"{config.provider}: the parts' summaries do not fit one request of "
            f"{config.context_tokens} tokens"
        )
    return ask(combine, len(chapters), prompts.MAX_SUMMARY_CHARS)
