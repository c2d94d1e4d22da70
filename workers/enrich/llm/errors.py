"""How the provider path fails: rate limited (wait and try the job again) or failed.

Neither subclasses OSError or ValueError, so ``workers.retry`` classifies them only where it
names them. The intended policy:

- :class:`ProviderRateLimited`: transient. The provider still said 429 after every try of
  the call (or asked for a longer wait than a worker should sit through); the job retries
  later, no sooner than ``retry_after_s`` when the provider said.
- :class:`ProviderFailed`: the stage keeps the offline result and records the reason as the
  summary's ``provider_error``. ``retryable`` is True when the cause may pass (5xx, timeouts,
  a lost connection, the time budget) should the job want another go; False when trying
  again cannot help (400, 401, 403, 404, a malformed answer, a transcript too long).

Reasons never hold the API key: every message built from a provider's answer is redacted.
"""

from __future__ import annotations


class ProviderError(Exception):
    """Base of the provider path's failures; ``str()`` is the reason."""

    def __init__(self, reason: str, retry_after_s: float | None = None, retryable: bool = False):
        super().__init__(reason, retry_after_s, retryable)  # args: pickles, crosses Celery
        self.reason = reason
        self.retry_after_s = retry_after_s
        self.retryable = retryable

    def __str__(self) -> str:
        return self.reason


class ProviderRateLimited(ProviderError):
    """Still rate limited after the call's tries: delay the job (``retry_after_s``: the
    provider's last Retry-After in seconds, None when it gave none)."""

    def __init__(
        self, reason: str, retry_after_s: float | None = None, retryable: bool = True
    ) -> None:
        super().__init__(reason, retry_after_s, retryable)


class ProviderFailed(ProviderError):
    """The provider could not give a usable answer: keep the offline result."""


def redact(text: str, secret: str) -> str:
    """``text`` with ``secret`` (and any long piece of it) replaced by ``***``."""
    if secret:
        text = text.replace(secret, "***")
        if len(secret) >= 16:  # a log line may carry a key's tail or head only
            text = text.replace(secret[-12:], "***").replace(secret[:12], "***")
    return text
