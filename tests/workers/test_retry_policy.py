"""The one transient/permanent rule, and the task base class that applies it."""

from __future__ import annotations

import kombu.exceptions
import pytest
import sqlalchemy.exc

from shared.ids import InvalidNameError
from shared.sessiondir import ManifestError
from workers.enrich.documents import EnrichError
from workers.enrich.llm import ProviderFailed, ProviderRateLimited
from workers.media.errors import MediaError
from workers.retry import (
    RETRY_CAP_S,
    is_transient,
    retry_delay_seconds,
    task_backoff_seconds,
    will_retry,
)

TRANSIENT = [
    sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection")),
    kombu.exceptions.OperationalError("Connection refused"),
    ConnectionResetError("reset by peer"),
    TimeoutError("timed out"),
    OSError(5, "Input/output error"),
    ProviderRateLimited("429 after 4 tries", retry_after_s=20.0),
]
PERMANENT = [
    MediaError("segment 'mic-0001.m4a' is truncated", path="mic-0001.m4a"),
    InvalidNameError("bad id"),
    ManifestError("session.json: bad"),
    ValueError("no media"),
    EnrichError("cannot decode audio 'x.m4a'"),
    ProviderFailed("401: invalid key"),  # the stage keeps the offline result instead
    KeyError("a bug"),  # unknown errors are the code's: retrying cannot help
]


@pytest.mark.parametrize("exc", TRANSIENT, ids=lambda e: type(e).__name__)
def test_transient_errors_are_retried_until_the_limit(exc: BaseException) -> None:
    assert is_transient(exc)
    assert will_retry(exc, retries=0, max_retries=3)
    assert not will_retry(exc, retries=3, max_retries=3)


@pytest.mark.parametrize("exc", PERMANENT, ids=lambda e: type(e).__name__)
def test_permanent_errors_fail_at_once(exc: BaseException) -> None:
    assert not is_transient(exc)
    assert not will_retry(exc, retries=0, max_retries=3)


def test_task_backoff_grows_and_is_capped() -> None:
    assert 1.0 <= task_backoff_seconds(0) <= 2.0
    assert 8.0 <= task_backoff_seconds(3) <= 16.0
    assert RETRY_CAP_S / 2 <= task_backoff_seconds(40) <= RETRY_CAP_S


def test_a_provider_asking_for_a_longer_wait_delays_the_retry_that_long_up_to_the_cap() -> None:
    assert retry_delay_seconds(ProviderRateLimited("429", retry_after_s=45.0), 0) == 45.0
    assert retry_delay_seconds(ProviderRateLimited("429", retry_after_s=1e9), 0) == RETRY_CAP_S
    no_hint = retry_delay_seconds(ProviderRateLimited("429"), 0)
    assert 1.0 <= no_hint <= 2.0  # the plain backoff
    assert 1.0 <= retry_delay_seconds(TimeoutError("t"), 0) <= 2.0
