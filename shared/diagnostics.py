"""Text about failures for logs, status output and stored error columns.

* :func:`describe` names an exception with its type, so "timed out" becomes
  ``TimeoutError: timed out`` wherever it is shown.
* :func:`describe_invalid` lists what pydantic refused, field by field.
* :func:`redact` hides the credentials in a URL (broker, database) before it is printed.
* :func:`quoted` shows a value that came from outside (an id, a file name) in a message:
  its ``repr`` (so NUL bytes and control characters are visible), cut short when long.
"""

from __future__ import annotations

import re
from typing import Final

from pydantic import ValidationError

#: Characters of a value's ``repr`` that :func:`quoted` shows before cutting it short.
QUOTED_CHARS: Final = 60
_VALUE_ERROR = "Value error, "  # how pydantic introduces a validator's ValueError
#: What replaces a hidden credential.
MASK: Final = "***"
#: Query-string parameters whose value is a secret (``?password=...``).
SECRET_PARAMS: Final = ("password", "passwd", "pwd", "secret", "token", "access_key")

_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#]*)@")
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&;](?:" + "|".join(SECRET_PARAMS) + r")=)[^&;#]*", re.IGNORECASE
)


def describe(exc: BaseException, *, limit: int | None = None) -> str:
    """``"Type: message"`` of an exception, cut to ``limit`` characters when given."""
    text = f"{type(exc).__name__}: {exc}"
    return text if limit is None else text[:limit]


def quoted(value: object, *, limit: int = QUOTED_CHARS) -> str:
    """``repr(value)``, or its first ``limit`` characters and the value's length when longer.

    A hostile value (10,000 characters, a 10 MB payload) is named, never copied whole into a
    log line or an error column.
    """
    text = repr(value)
    if len(text) <= limit:
        return text
    if isinstance(value, str):
        size = f"{len(value)} characters"
    elif isinstance(value, bytes):
        size = f"{len(value)} bytes"
    else:
        size = f"{len(text)} characters in all"
    return f"{text[:limit]}... ({size})"


def describe_invalid(exc: ValidationError) -> str:
    """Every problem pydantic found, as ``field.path: message; ...`` (a problem of the whole
    object without a path); our own validators' messages without pydantic's prefix."""
    problems = []
    for error in exc.errors():
        message = error["msg"].removeprefix(_VALUE_ERROR)
        where = ".".join(str(part) for part in error["loc"])
        problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems)


def redact(url: str) -> str:
    """``url`` with its credentials hidden: ``user:pass@`` and ``user@`` become ``***@``, and
    a secret query parameter (``?password=...``) keeps its name but not its value."""
    hidden = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", url, count=1)
    return _SECRET_QUERY.sub(lambda m: f"{m['key']}{MASK}", hidden)
