"""The one polling helper of the tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T | None], timeout: float, what: str, poll: float = 0.05) -> T:
    """Poll until ``predicate`` returns something truthy and return it.

    Fails with ``AssertionError`` naming ``what`` once ``timeout`` seconds have passed (the
    predicate is always asked once more at the deadline).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)
