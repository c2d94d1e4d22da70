"""Validation of everything that becomes part of a path: session ids and segment file names.

Checked before anything touches the filesystem, so a hostile id (``../x``, ``/etc``, a NUL
byte, a control character, 10,000 characters) or a segment path that escapes its session
folder is refused with a message naming it (cut short when long) and saying why.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import PurePosixPath

from shared.diagnostics import quoted

MAX_SESSION_ID_LENGTH = 128  # the database's sessions.id column
SESSION_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
PATH_PART_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._ -]{0,254}$")
#: Components of a segment path (``screen/0001.mp4`` has two).
MAX_PATH_DEPTH = 8
#: Characters of a segment path: the database's segments.file column.
MAX_PATH_LENGTH = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class InvalidNameError(ValueError):
    """A session id or relative path that is not safe to use."""


def _text_problem(value: object, max_length: int) -> str | None:
    """Why ``value`` cannot be a name at all (not a string, empty, too long, control bytes)."""
    if not isinstance(value, str):
        return f"not a string but {type(value).__name__}"
    if not value:
        return "empty"
    if len(value) > max_length:
        return f"longer than {max_length} characters"
    if "\x00" in value:
        return "contains a NUL byte"
    control = _CONTROL.search(value)
    if control is not None:
        return f"contains a control character ({control.group()!r})"
    return None


def validate_session_id(session_id: object) -> str:
    problem = _text_problem(session_id, MAX_SESSION_ID_LENGTH)
    if problem is None and ".." in str(session_id):
        problem = "'..' is not allowed"
    if problem is None and not SESSION_ID_PATTERN.fullmatch(str(session_id)):
        problem = (
            f"use 1-{MAX_SESSION_ID_LENGTH} letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if problem is not None:
        raise InvalidNameError(f"invalid session id {quoted(session_id)}: {problem}")
    assert isinstance(session_id, str)
    return session_id


def validate_relative_path(
    path: object,
    *,
    what: str = "segment path",
    max_length: int = MAX_PATH_LENGTH,
    max_depth: int = MAX_PATH_DEPTH,
) -> str:
    """Return a normalised POSIX relative path, or raise naming the offending value.

    ``max_length`` and ``max_depth`` are a segment path's; a storage key, which prefixes
    one with ``sessions/<id>/segments/``, passes larger ones.
    """
    if isinstance(path, str):  # the answers for strings are remembered (see below)
        return _valid_relative_path(path, what, max_length, max_depth)
    return _checked_relative_path(path, what, max_length, max_depth)


#: Validated paths remembered: a pure function of its arguments, asked for every segment of
#: a session on every pass while it records (a refusal raises and is not remembered).
VALID_PATHS_REMEMBERED = 65536


@lru_cache(maxsize=VALID_PATHS_REMEMBERED)
def _valid_relative_path(path: str, what: str, max_length: int, max_depth: int) -> str:
    return _checked_relative_path(path, what, max_length, max_depth)


def _checked_relative_path(path: object, what: str, max_length: int, max_depth: int) -> str:
    problem = _text_problem(path, max_length)
    if problem is not None:
        raise InvalidNameError(f"invalid {what} {quoted(path)}: {problem}")
    assert isinstance(path, str)
    if "\\" in path:
        raise InvalidNameError(f"invalid {what} {quoted(path)}: backslashes are not allowed")
    pure = PurePosixPath(path)
    if pure.is_absolute():
        raise InvalidNameError(f"invalid {what} {quoted(path)}: absolute paths are not allowed")
    parts = pure.parts
    if not parts or len(parts) > max_depth:
        raise InvalidNameError(
            f"invalid {what} {quoted(path)}: empty or deeper than {max_depth} components"
        )
    for part in parts:
        bad_shape = not PATH_PART_PATTERN.fullmatch(part) or part.endswith((" ", "."))
        if part in (".", "..") or bad_shape:
            raise InvalidNameError(
                f"invalid {what} {quoted(path)}: component {quoted(part)} is not allowed"
            )
    return pure.as_posix()
