"""Retry policy: which failures are transient (retry with backoff) and which are permanent."""

from __future__ import annotations

import random

import kombu.exceptions
import sqlalchemy.exc

from shared.ids import InvalidNameError
from shared.sessiondir import ManifestError
from shared.storage import StorageError
from workers.media.errors import MediaError

RETRY_BASE_S = 2.0
RETRY_CAP_S = 600.0


class TransientError(Exception):
    """Something outside the input is not ready or not reachable yet; try again later."""


class PermanentError(Exception):
    """The input is wrong; retrying cannot help."""


PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    MediaError,
    InvalidNameError,
    ManifestError,
    StorageError,
    PermanentError,
    ValueError,
)
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TransientError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    kombu.exceptions.OperationalError,
    ConnectionError,
    TimeoutError,
    OSError,
)


def is_permanent(exc: BaseException) -> bool:
    return isinstance(exc, PERMANENT_ERRORS) and not isinstance(exc, TransientError)


def backoff_seconds(
    retries: int, *, base: float = RETRY_BASE_S, cap: float = RETRY_CAP_S, jitter: bool = True
) -> float:
    """Exponential backoff with full jitter (retries counts from 0)."""
    ceiling = min(cap, base * (2**retries))
    return random.uniform(ceiling / 2, ceiling) if jitter else ceiling
