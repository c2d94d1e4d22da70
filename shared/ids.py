"""Validation of everything that becomes part of a path: session ids and segment file names.

Checked before anything touches the filesystem, so a hostile id (``../x``, ``/etc``) or a
segment path that escapes its session folder is refused with a message naming it.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

SESSION_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
PATH_PART_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._ -]{0,254}$")
MAX_PATH_DEPTH = 8


class InvalidNameError(ValueError):
    """A session id or relative path that is not safe to use."""


def validate_session_id(session_id: object) -> str:
    if not isinstance(session_id, str) or not SESSION_ID_PATTERN.fullmatch(session_id):
        raise InvalidNameError(
            f"invalid session id {session_id!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if ".." in session_id:
        raise InvalidNameError(f"invalid session id {session_id!r}: '..' is not allowed")
    return session_id


def validate_relative_path(path: object, *, what: str = "segment path") -> str:
    """Return a normalised POSIX relative path, or raise naming the offending value."""
    if not isinstance(path, str) or not path or "\x00" in path or "\\" in path:
        raise InvalidNameError(f"invalid {what} {path!r}")
    pure = PurePosixPath(path)
    if pure.is_absolute():
        raise InvalidNameError(f"invalid {what} {path!r}: absolute paths are not allowed")
    parts = pure.parts
    if not parts or len(parts) > MAX_PATH_DEPTH:
        raise InvalidNameError(f"invalid {what} {path!r}: too deep or empty")
    for part in parts:
        bad_shape = not PATH_PART_PATTERN.fullmatch(part) or part.endswith((" ", "."))
        if part in (".", "..") or bad_shape:
            raise InvalidNameError(f"invalid {what} {path!r}: component {part!r} is not allowed")
    return pure.as_posix()
