"""Text about failures for logs, status output and stored error columns.

* :func:`describe` names an exception with its type, so "timed out" becomes
  ``TimeoutError: timed out`` wherever it is shown.
* :func:`describe_invalid` lists what pydantic refused, field by field.
* :func:`redact` hides the credentials in a URL (broker, database) before it is printed.
"""

from __future__ import annotations

import re
from typing import Final

from pydantic import ValidationError

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


def describe_invalid(exc: ValidationError) -> str:
    """Every problem pydantic found, as ``field.path: message; ...``."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()
    )


def redact(url: str) -> str:
    """``url`` with its credentials hidden: ``user:pass@`` and ``user@`` become ``***@``, and
    a secret query parameter (``?password=...``) keeps its name but not its value."""
    hidden = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", url, count=1)
    return _SECRET_QUERY.sub(lambda m: f"{m['key']}{MASK}", hidden)
