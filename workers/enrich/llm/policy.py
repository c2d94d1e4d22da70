"""The retry policy of one provider request: which failures to try again, how long to wait.

An attempt fails with an :class:`AttemptFailed` (the provider clients turn each SDK's
exceptions into one). It is tried again when the cause may pass: HTTP 429, 408 and 5xx, a
timeout, a lost connection; never on another 4xx (400, 401, 403, 404: the request or the
key is wrong) or a malformed answer. The wait is the provider's ``Retry-After`` when it
gives one (``retry-after-ms``, then ``Retry-After`` in seconds or as an HTTP date), else
shared.backoff's jittered exponential (``base`` doubling, capped at ``cap``).

When the tries run out, a 429 becomes :class:`ProviderRateLimited` (the job is delayed),
anything else :class:`ProviderFailed`. A Retry-After beyond ``cap`` ends the call at once
(sitting idle that long in a worker is worse than delaying the job), and so does a wait
that would pass the enrichment's deadline. The SDKs' own retries are off (``max_retries=0``)
so this is the only policy, and the tests see it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final, Literal, TypeVar

from shared.backoff import backoff_seconds
from workers.enrich.llm.errors import ProviderFailed, ProviderRateLimited, redact

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Statuses worth another try besides 5xx: rate limited, and the server's own timeout.
RETRY_STATUSES: Final = frozenset({408, 429})
#: Longest reason kept (a provider's error body can be long).
MAX_REASON_CHARS: Final = 500

Kind = Literal["status", "timeout", "connection", "malformed", "other"]


class AttemptFailed(Exception):
    """One attempt's failure, the same for every provider."""

    def __init__(
        self,
        kind: Kind,
        detail: str,
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(kind, detail, status, retry_after_s)
        self.kind = kind
        self.detail = detail
        self.status = status
        self.retry_after_s = retry_after_s

    @property
    def retryable(self) -> bool:
        if self.kind == "status":
            return self.status is not None and (
                self.status in RETRY_STATUSES or 500 <= self.status <= 599
            )
        return self.kind in ("timeout", "connection")

    def __str__(self) -> str:
        what = f"HTTP {self.status}" if self.kind == "status" else self.kind
        return f"{what}: {self.detail}" if self.detail else what


def parse_retry_after(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """Seconds the provider asks to wait, or None: ``retry-after-ms``, then ``retry-after``
    as seconds (a float allowed) or as an HTTP date. Negative waits are 0."""
    lower = {k.lower(): v for k, v in headers.items()}
    millis = lower.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000.0
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return max(0.0, value)
    raw = lower.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
    return max(0.0, value) if math.isfinite(value) else None


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    base_s: float
    cap_s: float
    deadline: float  # clock() value past which no try or wait starts
    label: str = "provider"  # names the provider in reasons and logs
    secret: str = field(default="", repr=False)  # redacted from every reason


def call_with_retries(
    send: Callable[[], T],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """``send()`` under ``policy``; raises ProviderRateLimited or ProviderFailed."""
    last: AttemptFailed | None = None
    attempts = 0
    stop = ""
    while attempts < policy.max_attempts:
        if clock() >= policy.deadline:
            stop = "the time budget ran out"
            break
        attempts += 1
        try:
            return send()
        except AttemptFailed as failed:
            last = failed
        if not last.retryable:
            raise ProviderFailed(_reason(policy, last, attempts), retryable=False) from last
        if attempts >= policy.max_attempts:
            break
        wait = last.retry_after_s
        if wait is None:
            wait = backoff_seconds(attempts - 1, base=policy.base_s, cap=policy.cap_s)
        elif wait > policy.cap_s:
            stop = f"the provider asked to wait {wait:.0f} s"
            break
        if clock() + wait >= policy.deadline:
            stop = "the time budget ran out"
            break
        log.info("%s: %s; try %d of %d in %.2f s", policy.label, last, attempts + 1,
                 policy.max_attempts, wait)  # fmt: skip
        sleep(wait)
    assert last is not None or stop
    if last is None:
        raise ProviderFailed(f"{policy.label}: {stop} before a request", retryable=True)
    reason = _reason(policy, last, attempts) + (f" ({stop})" if stop else "")
    if last.kind == "status" and last.status == 429:
        raise ProviderRateLimited(reason, last.retry_after_s) from last
    raise ProviderFailed(reason, retry_after_s=last.retry_after_s, retryable=True) from last


def _reason(policy: RetryPolicy, failed: AttemptFailed, attempts: int) -> str:
    tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
    reason = f"{policy.label}: {failed} after {tries}"
    return redact(reason, policy.secret)[:MAX_REASON_CHARS]
