"""Exponential backoff with jitter: the one retry-delay formula of the agent and the workers.

"Equal jitter": the ceiling doubles per retry up to ``cap``, and the delay is drawn uniformly
from [ceiling / 2, ceiling]. Retries of many clients spread out, yet none comes back sooner
than half the ceiling.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Final

#: Doublings beyond this cannot matter (2**64 times any sane base exceeds any cap) and would
#: only risk a float overflow.
MAX_DOUBLINGS: Final = 64


def backoff_seconds(
    retries: int,
    *,
    base: float,
    cap: float,
    jitter: bool = True,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry number ``retries`` (0 = the first retry).

    Without ``jitter`` the ceiling itself. ``rand`` (uniform in [0, 1)) is for tests.
    """
    ceiling = min(cap, base * 2.0 ** min(max(retries, 0), MAX_DOUBLINGS))
    if not jitter:
        return ceiling
    return ceiling / 2 + rand() * ceiling / 2
