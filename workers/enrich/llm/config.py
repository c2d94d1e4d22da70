"""What the provider path is told: which provider and model, the key, and its patience.

A frozen dataclass the stage fills from settings (the API key from the provider's own
environment variable). Every default is a named constant with its unit and reason. The key
is never part of ``repr`` (a logged config shows no secret).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

Provider = Literal["anthropic", "openai"]
PROVIDERS: Final[tuple[Provider, ...]] = ("anthropic", "openai")

#: A model per provider when none is configured: small, fast and cheap ones whose context
#: holds a two-hour transcript; a summary needs no more.
DEFAULT_MODELS: Final[dict[Provider, str]] = {
    "anthropic": "claude-haiku-4-5",
    "openai": "gpt-4.1-mini",
}
#: Where each provider's key comes from (read by the caller, never by this package).
API_KEY_ENV: Final[dict[Provider, str]] = {
    "anthropic": "ANTHROPIC_API_KEY",
    "openai": "OPENAI_API_KEY",
}

#: Seconds one request may take, connecting included. A summary of a long session is a
#: few hundred tokens out of tens of thousands in: well under a minute on current models.
TIMEOUT_S: Final = 60.0
#: Tries of one request (the first included) on 429, 5xx, a timeout or a lost connection.
MAX_ATTEMPTS: Final = 4
#: First wait between tries, seconds; doubles per retry (jittered: shared.backoff).
BACKOFF_BASE_S: Final = 1.0
#: Longest wait between two tries of one request, seconds. A Retry-After longer than this
#: ends the call at once: the job is delayed rather than an enrich worker held idle.
MAX_BACKOFF_S: Final = 30.0
#: Seconds one whole enrichment may spend (every request, try and wait): no new try or
#: wait starts past it, so a slow provider cannot hold an enrich slot for long.
TOTAL_TIMEOUT_S: Final = 300.0
#: Tokens one request may use, prompt and answer together. Below every current model's
#: window (local OpenAI-compatible servers often have 32 k): a two-hour talk (about 25 k
#: tokens of speech) still fits in one request, and a request's cost stays bounded.
CONTEXT_TOKENS: Final = 32_000
#: Tokens the answer may use (the JSON: a paragraph, keywords, a title per chapter).
ANSWER_TOKENS: Final = 2_048
#: Parts a long transcript is cut into at most (plus one request combining them): bounds
#: the requests, hence the cost and time, of one session. Longer sessions fail the
#: provider path with the reason (the offline result stays); raise context_tokens then.
MAX_CHUNKS: Final = 8
#: Keywords asked of the model for the session.
KEYWORDS: Final = 10
#: Sentences the abstractive summary should have at most.
SUMMARY_SENTENCES: Final = 5
#: Smallest sensible context: the instructions alone take about 600 tokens.
MIN_CONTEXT_TOKENS: Final = 2_048


@dataclass(frozen=True)
class LlmConfig:
    provider: Provider
    model: str
    api_key: str = field(repr=False)
    base_url: str | None = None  # None: the SDK's (or its *_BASE_URL variable's) default
    timeout_s: float = TIMEOUT_S
    max_attempts: int = MAX_ATTEMPTS
    backoff_base_s: float = BACKOFF_BASE_S
    max_backoff_s: float = MAX_BACKOFF_S
    total_timeout_s: float = TOTAL_TIMEOUT_S
    context_tokens: int = CONTEXT_TOKENS
    answer_tokens: int = ANSWER_TOKENS
    max_chunks: int = MAX_CHUNKS
    keywords: int = KEYWORDS
    summary_sentences: int = SUMMARY_SENTENCES

    def __post_init__(self) -> None:
        """Reject a configuration that cannot work (a ValueError: a permanent failure)."""
        problems = []
        if self.provider not in PROVIDERS:
            problems.append(f"provider must be one of {', '.join(PROVIDERS)}")
        if not self.model.strip():
            problems.append("model is empty")
        if not self.api_key.strip():
            problems.append(f"no API key (set {API_KEY_ENV.get(self.provider, 'the key')})")
        positive = ("timeout_s", "backoff_base_s", "max_backoff_s", "total_timeout_s")
        problems += [f"{name} must be > 0" for name in positive if not getattr(self, name) > 0]
        counts = ("max_attempts", "max_chunks", "keywords", "summary_sentences", "answer_tokens")
        problems += [f"{name} must be >= 1" for name in counts if getattr(self, name) < 1]
        if self.context_tokens < MIN_CONTEXT_TOKENS:
            problems.append(f"context_tokens must be >= {MIN_CONTEXT_TOKENS}")
        elif self.answer_tokens > self.context_tokens // 2:
            problems.append("answer_tokens must be at most half of context_tokens")
        if problems:
            raise ValueError("LLM configuration: " + "; ".join(problems))
