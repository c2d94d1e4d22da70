"""Retry policy, declared once: which failures are transient, how long to wait between tries.

The rule: a failure is *transient* (the same call may succeed later: a database, broker or
file system that is not reachable right now) when its type is one of ``TRANSIENT_ERRORS``
and not one of ``PERMANENT_ERRORS``. Everything else is *permanent*: the input is wrong
(a corrupt or missing segment, a bad name) or the code is, and trying again cannot help,
so the job fails at once with the reason. Tasks get the policy from
:class:`workers.tasks.PipelineTask`; they never call ``self.retry`` by hand.
"""

from __future__ import annotations

import kombu.exceptions
import redis.exceptions
import sqlalchemy.exc

from shared.backoff import backoff_seconds
from shared.ids import InvalidNameError
from shared.sessiondir import ManifestError
from shared.storage import StorageError
from workers.enrich.documents import EnrichError
from workers.enrich.llm.errors import ProviderRateLimited
from workers.media.errors import MediaError

RETRY_BASE_S = 2.0  # first wait; doubles with every retry
RETRY_CAP_S = 600.0  # longest wait between two tries

# Checked first: these subclass OSError or ValueError in places, and are never transient.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    MediaError,
    EnrichError,  # bad input to an enrichment step
    InvalidNameError,
    ManifestError,
    StorageError,
    ValueError,
)
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,  # the database went away, a lock timed out
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,  # no pooled connection in time
    kombu.exceptions.OperationalError,  # the broker went away
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
    OSError,  # a shared file system that blinked (a missing segment is a MediaError)
    ProviderRateLimited,  # the LLM provider says 429 still: the job waits, then tries again
)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT_ERRORS) and not isinstance(exc, PERMANENT_ERRORS)


def will_retry(exc: BaseException, retries: int, max_retries: int) -> bool:
    """Whether a task that raised ``exc`` after ``retries`` retries is tried again."""
    return is_transient(exc) and retries < max_retries


def task_backoff_seconds(retries: int) -> float:
    """Wait before a task's next try (shared.backoff's formula, this module's base and cap)."""
    return backoff_seconds(retries, base=RETRY_BASE_S, cap=RETRY_CAP_S)


def retry_delay_seconds(exc: BaseException, retries: int) -> float:
    """Wait before retrying after ``exc``: the backoff, or longer when the failure says how
    long to wait (an LLM provider's Retry-After), up to the cap."""
    asked = getattr(exc, "retry_after_s", None)
    backoff = task_backoff_seconds(retries)
    if isinstance(asked, int | float) and asked > backoff:
        return min(float(asked), RETRY_CAP_S)
    return backoff
