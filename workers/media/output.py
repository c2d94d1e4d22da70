"""Writing an output file: throttled progress, and a file that is whole or absent.

Every writer of the engine (the audio track, the playable MP4, the compressed copy, audio
chunks) writes under a temporary name beside its output and renames it into place at the
end, reporting progress through a :class:`Throttle` whose callback may cancel the work.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from shared.atomicfile import atomic_path, temp_path

__all__ = ["ProgressCallback", "Throttle", "atomic_output", "output_url", "temp_path"]

ProgressCallback = Callable[[float], None]
PROGRESS_INTERVAL_S = 1.0  # progress goes to a database: once a second is plenty


class Throttle:
    """Forward progress to a callback at most about once a second.

    Workers report progress to a database; once a second is plenty and keeps that cheap. A
    :class:`Cancelled` raised by the callback propagates to stop the stage.
    """

    def __init__(
        self, callback: ProgressCallback | None, interval: float = PROGRESS_INTERVAL_S
    ) -> None:
        self._callback = callback
        self._interval = interval
        self._last = -math.inf  # the first report goes through at once

    def __call__(self, fraction: float) -> None:
        if self._callback is None:
            return
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            self._callback(min(1.0, max(0.0, fraction)))

    def done(self) -> None:
        """Report completion once, whatever the throttle says."""
        if self._callback is not None:
            self._callback(1.0)


@contextmanager
def atomic_output(output: Path, throttle: Throttle) -> Iterator[Path]:
    """The temporary path to write ``output`` at; renamed into place when the block ends
    (after a last chance to cancel), removed when it raises: the file is whole or absent.

    Not fsynced, like ffmpeg's own outputs: a killed writer leaves at worst a stale temporary
    file (removed by the stage's retry, ``Storage.output_path``); only a power cut right
    after the rename could leave a short file, which ``finalize`` then fails to probe.
    """
    with atomic_path(output, durable=False) as tmp:
        yield tmp
        throttle.done()  # last chance to cancel before the file becomes visible


def output_url(path: Path) -> str:
    """``file:`` URL for an output path, so a ``:`` in the name is never read as a protocol."""
    return "file:" + os.path.abspath(path)
