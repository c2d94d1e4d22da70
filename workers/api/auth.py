"""Who may use the status API: the holder of ``SESSIONPIPE_API_TOKEN``, and when it may start.

The rule:

- With a token configured, every request but the open paths (``/healthz``) must carry
  ``Authorization: Bearer <token>``; anything else gets 401. The comparison is constant
  time (``hmac.compare_digest``) and the token is never logged or echoed.
- Without a token, the API starts only where nobody else can reach it and nothing else is
  at stake: bound to 127.0.0.1 on the embedded default (SQLite and the filesystem broker
  of one machine). Then it asks for no token. Anywhere else :func:`check_start` refuses.
"""

from __future__ import annotations

import hmac
from typing import Final

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.settings import Settings

#: The one address the API may listen on without a token.
LOOPBACK_HOST: Final = "127.0.0.1"
#: Paths anyone may read: a load balancer's health check carries no token.
OPEN_PATHS: Final = frozenset({"/healthz"})
BEARER_SCHEME: Final = "bearer"
UNAUTHORIZED_HEADERS: Final = {"WWW-Authenticate": 'Bearer realm="sessionpipe"'}


class StartRefusedError(RuntimeError):
    """The API would be reachable without a token: it does not start."""


def check_start(settings: Settings, host: str) -> None:
    """Raise :class:`StartRefusedError` unless a token is set, or the API is bound to
    127.0.0.1 on the embedded default."""
    if settings.api_token is not None:
        return
    problems = []
    if host != LOOPBACK_HOST:
        problems.append(f"it would listen on {host}, not only on {LOOPBACK_HOST}")
    if not settings.embedded_broker:
        problems.append("the broker is not the embedded default")
    if problems:
        raise StartRefusedError(
            "no SESSIONPIPE_API_TOKEN is set and " + " and ".join(problems)
            + ": set a token, or run on the embedded default bound to 127.0.0.1"
        )


def authorized(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``token`` as a bearer token."""
    if not header:
        return False
    scheme, _, given = header.partition(" ")
    if scheme.lower() != BEARER_SCHEME:
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


class BearerTokenMiddleware:
    """ASGI middleware: 401 for an HTTP request to a closed path without the token.

    ``token`` None means no authentication (allowed only by :func:`check_start`).
    """

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.token is not None and scope["path"] not in OPEN_PATHS:
            header = Headers(scope=scope).get("authorization")
            if not authorized(header, self.token):
                response = JSONResponse(
                    {"error": "a valid bearer token is required"},
                    status_code=401,
                    headers=UNAUTHORIZED_HEADERS,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
