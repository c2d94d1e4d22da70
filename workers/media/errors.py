"""Exceptions raised by the media engine.

The split matters to callers: a :class:`MediaError` is the input's fault and retrying cannot
help, while any other exception (disk full, a bug) may be transient.
"""

from __future__ import annotations

__all__ = ["Cancelled", "MediaError"]


class MediaError(Exception):
    """Permanent failure caused by the input (corrupt, truncated, missing, unsupported).

    Never retried. The message always names the offending file so an operator can find it.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        if path is not None and path not in message:
            message = f"{path}: {message}"
        super().__init__(message)
        self.path = path


class Cancelled(Exception):
    """Raised from a progress callback to stop a long stage."""
