"""Exceptions raised by the media engine.

The split matters to callers: a :class:`MediaError` is the input's fault and retrying cannot
help, while any other exception (disk full, a bug) may be transient.
"""

from __future__ import annotations

import av

__all__ = ["Cancelled", "MediaError", "decode_failure", "failure_reason"]


class MediaError(Exception):
    """Permanent failure caused by the input (corrupt, truncated, missing, unsupported).

    Never retried. The message always names the offending file so an operator can find it.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        if path is not None and path not in message:
            message = f"{path}: {message}"
        super().__init__(message)
        self.path = path


def failure_reason(exc: BaseException) -> str:
    """libav's own words for an error (``Invalid data found ...``) where it has them."""
    if isinstance(exc, av.error.FFmpegError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def decode_failure(path: str, exc: BaseException) -> MediaError:
    """The MediaError for an input that libav could not demux or decode."""
    return MediaError(f"cannot decode {path}: {failure_reason(exc)}", path=path)


class Cancelled(Exception):
    """Raised from a progress callback to stop a long stage."""
