"""One request to a provider through its official SDK: a system and a user message in, the
model's text out, every failure as a :class:`~workers.enrich.llm.policy.AttemptFailed`.

Anthropic: ``anthropic.Anthropic(...).messages.create``; OpenAI (and servers speaking its
API at ``base_url``): ``openai.OpenAI(...).chat.completions.create`` in JSON mode. Each client
gets the key, ``base_url``, the timeout and ``max_retries=0`` (retries are
``policy.call_with_retries``'s). Both SDKs share one error layout: ``APIStatusError`` (with
the response, hence its status and headers), ``APITimeoutError`` under
``APIConnectionError``, and the rest under ``APIError``. An answer cut at the token limit,
refused or empty is malformed. Details are redacted of the key.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final, Protocol

from workers.enrich.documents import EnrichUnavailable
from workers.enrich.llm.config import LlmConfig
from workers.enrich.llm.errors import redact
from workers.enrich.llm.policy import AttemptFailed, parse_retry_after

#: Characters of a provider's error message kept in a reason.
MAX_DETAIL_CHARS: Final = 300


class ProviderClient(Protocol):
    def complete(self, system: str, user: str, max_tokens: int) -> str: ...

    def close(self) -> None: ...


def _failure(sdk: Any, exc: Exception, secret: str) -> AttemptFailed:
    """``exc`` of SDK module ``sdk`` as an AttemptFailed."""
    if isinstance(exc, sdk.APIStatusError):
        message = getattr(exc, "api_message", None) or _body_message(exc.body) or exc.message
        return AttemptFailed(
            "status",
            _detail(str(message), secret),
            status=int(exc.status_code),
            retry_after_s=parse_retry_after(exc.response.headers),
        )
    if isinstance(exc, sdk.APITimeoutError):
        return AttemptFailed("timeout", "no answer within the timeout")
    if isinstance(exc, sdk.APIConnectionError):
        cause = exc.__cause__
        return AttemptFailed("connection", _detail(repr(cause) if cause else exc.message, secret))
    if isinstance(exc, sdk.APIError):  # the answer did not parse as the API's shape
        return AttemptFailed("malformed", _detail(exc.message, secret))
    return AttemptFailed("other", _detail(f"{type(exc).__name__}: {exc}", secret))


def _body_message(body: object) -> str | None:
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
    return None


def _detail(text: str, secret: str) -> str:
    return redact(" ".join(text.split()), secret)[:MAX_DETAIL_CHARS]


class AnthropicClient:
    def __init__(self, config: LlmConfig) -> None:
        try:
            import anthropic
        except ImportError as exc:
            raise EnrichUnavailable("the anthropic package is not installed") from exc
        self._sdk: Any = anthropic
        self._model = config.model
        self._secret = config.api_key
        self._client = anthropic.Anthropic(
            api_key=config.api_key,
            base_url=config.base_url,
            timeout=config.timeout_s,
            max_retries=0,
        )

    def complete(self, system: str, user: str, max_tokens: int) -> str:
        try:
            message = self._client.messages.create(
                model=self._model,
                max_tokens=max_tokens,
                system=system,
                messages=[{"role": "user", "content": user}],
            )
        except self._sdk.AnthropicError as exc:
            raise _failure(self._sdk, exc, self._secret) from None
        if message.stop_reason == "max_tokens":
            raise AttemptFailed("malformed", f"answer cut at max_tokens={max_tokens}")
        if message.stop_reason == "refusal":
            raise AttemptFailed("malformed", "the model refused")
        text = "".join(block.text for block in message.content if block.type == "text")
        if not text.strip():
            raise AttemptFailed("malformed", "empty answer")
        return text

    def close(self) -> None:
        self._client.close()


class OpenAIClient:
    def __init__(self, config: LlmConfig) -> None:
        try:
            import openai
        except ImportError as exc:
            raise EnrichUnavailable("the openai package is not installed") from exc
        self._sdk: Any = openai
        self._model = config.model
        self._secret = config.api_key
        self._client = openai.OpenAI(
            api_key=config.api_key,
            base_url=config.base_url,
            timeout=config.timeout_s,
            max_retries=0,
        )

    def complete(self, system: str, user: str, max_tokens: int) -> str:
        try:
            completion = self._client.chat.completions.create(
                model=self._model,
                max_completion_tokens=max_tokens,
                response_format={"type": "json_object"},
                messages=[
                    {"role": "system", "content": system},
                    {"role": "user", "content": user},
                ],
            )
        except self._sdk.OpenAIError as exc:
            raise _failure(self._sdk, exc, self._secret) from None
        if not completion.choices:
            raise AttemptFailed("malformed", "no choices in the answer")
        choice = completion.choices[0]
        if choice.finish_reason == "length":
            raise AttemptFailed("malformed", f"answer cut at max_tokens={max_tokens}")
        if choice.message.refusal:
            raise AttemptFailed("malformed", "the model refused")
        text = choice.message.content or ""
        if not text.strip():
            raise AttemptFailed("malformed", "empty answer")
        return text

    def close(self) -> None:
        self._client.close()


@contextmanager
def open_client(config: LlmConfig) -> Iterator[ProviderClient]:
    """The provider's client, closed after."""
    client = AnthropicClient(config) if config.provider == "anthropic" else OpenAIClient(config)
    try:
        yield client
    finally:
        client.close()
