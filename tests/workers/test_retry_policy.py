"""The one transient/permanent rule, and the task base class that applies it."""

from __future__ import annotations

import kombu.exceptions
import pytest
import sqlalchemy.exc

from shared.ids import InvalidNameError
from shared.sessiondir import ManifestError
from workers.media.errors import MediaError
from workers.retry import RETRY_CAP_S, is_transient, task_backoff_seconds, will_retry

TRANSIENT = [
    sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection")),
    kombu.exceptions.OperationalError("Connection refused"),
    ConnectionResetError("reset by peer"),
    TimeoutError("timed out"),
    OSError(5, "Input/output error"),
]
PERMANENT = [
    MediaError("segment 'mic-0001.m4a' is truncated", path="mic-0001.m4a"),
    InvalidNameError("bad id"),
    ManifestError("session.json: bad"),
    ValueError("no media"),
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
