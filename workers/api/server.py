"""Serving the API with uvicorn: the one place ``sessionpipe api`` and ``demo --serve`` run it.

Uvicorn's access log prints every request's path with its query, and the web page's login
is a ``?token=`` query: :class:`RedactToken` removes the value before a line is written,
so the token never reaches a log.
"""

from __future__ import annotations

import logging
import re
from typing import Final

from starlette.applications import Starlette

from workers.api.auth import TOKEN_PARAM

ACCESS_LOGGER: Final = "uvicorn.access"
REDACTED: Final = "[redacted]"
_TOKEN_IN_QUERY: Final = re.compile(rf"([?&]{TOKEN_PARAM}=)[^&\s\"]*")


def redact(text: str) -> str:
    return _TOKEN_IN_QUERY.sub(rf"\g<1>{REDACTED}", text)


class RedactToken(logging.Filter):
    """Replaces the value of a ``token`` query parameter in a log record's arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        record.msg = redact(record.msg) if isinstance(record.msg, str) else record.msg
        return True


def serve(app: Starlette, host: str, port: int, *, log_level: str = "info") -> None:
    """Run ``app`` until Ctrl-C (SIGINT or SIGTERM end it gracefully)."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level)  # sets up logging
    logging.getLogger(ACCESS_LOGGER).addFilter(RedactToken())
    uvicorn.Server(config).run()
