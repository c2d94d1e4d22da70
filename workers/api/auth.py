"""Who may use the status API: the holder of ``SESSIONPIPE_API_TOKEN``, and when it may start.

The rule:

- With a token configured, every request but the open paths (``/healthz``) must prove it
  holds the token, or gets 401. The comparisons are constant time (``hmac.compare_digest``)
  and the token is never logged or echoed. Two proofs are accepted:

  - ``Authorization: Bearer <token>``: API clients and scripts, any method.
  - The web page's login cookie, as Jupyter does it: opening a page under ``/ui/`` with
    ``?token=<token>`` once answers 303 to the same URL without the token and sets an
    HttpOnly, SameSite=Strict cookie holding an HMAC of the token (not the token itself; a
    new token ends every cookie). The cookie is good for reading (GET and HEAD) only: a
    change (retry, cancel) needs the bearer header, so no other site can make a browser
    change anything (no CSRF), and a browser's EventSource and <video>, which cannot send
    headers, still work.

- Without a token, the API starts only where nobody else can reach it and nothing else is
  at stake: bound to 127.0.0.1 on the embedded default (SQLite and the filesystem broker
  of one machine). Then it asks for no token. Anywhere else :func:`check_start` refuses.
"""

from __future__ import annotations

import hashlib
import hmac
from http.cookies import SimpleCookie
from typing import Final
from urllib.parse import urlencode

from starlette.datastructures import URL, Headers, QueryParams
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.settings import Settings

#: The one address the API may listen on without a token.
LOOPBACK_HOST: Final = "127.0.0.1"
#: Paths anyone may read: a load balancer's health check carries no token.
OPEN_PATHS: Final = frozenset({"/healthz"})
BEARER_SCHEME: Final = "bearer"
UNAUTHORIZED_HEADERS: Final = {"WWW-Authenticate": 'Bearer realm="sessionpipe"'}
#: The web page's paths: where ``?token=`` logs in and a 401 is a page, not JSON.
UI_PREFIX: Final = "/ui"
TOKEN_PARAM: Final = "token"
COOKIE_NAME: Final = "sessionpipe_ui"
#: How long a browser stays logged in (seconds): a week, then open the URL with the token again.
COOKIE_MAX_AGE_S: Final = 7 * 24 * 3600
#: What the cookie holds: HMAC-SHA256(token, this), so the cookie is not the token.
COOKIE_CONTEXT: Final = b"sessionpipe web page login v1"
#: Methods the cookie may be used for: reading only.
SAFE_METHODS: Final = frozenset({"GET", "HEAD"})
LOGIN_PAGE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sessionpipe: token required</title></head>
<body><h1>401: a token is required</h1>
<p>Open this page with the API token once: <code>/ui/?token=&lt;SESSIONPIPE_API_TOKEN&gt;</code>
(<code>sessionpipe demo --serve</code> prints such a link). The browser then keeps a login
cookie and the token leaves the address bar.</p></body></html>
"""


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


def cookie_value(token: str) -> str:
    """The login cookie's value for ``token``."""
    return hmac.new(token.encode(), COOKIE_CONTEXT, hashlib.sha256).hexdigest()


def _cookie(headers: Headers) -> str | None:
    raw = headers.get("cookie")
    if not raw:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except Exception:  # a malformed Cookie header is no login
        return None
    morsel = jar.get(COOKIE_NAME)
    return morsel.value if morsel is not None else None


def _without_token(url: URL) -> str:
    kept = [(k, v) for k, v in QueryParams(url.query).multi_items() if k != TOKEN_PARAM]
    return url.path + (f"?{urlencode(kept)}" if kept else "")


class BearerTokenMiddleware:
    """ASGI middleware: 401 for an HTTP request to a closed path without the token (a page
    under /ui/ gets an HTML 401 saying how to log in); the ``?token=`` login of the pages.

    ``token`` None means no authentication (allowed only by :func:`check_start`).
    """

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token
        self.cookie = cookie_value(token) if token is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.token is None or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        response = self._login(scope)
        if response is None and not self._allowed(scope):
            response = self._refusal(scope)
        if response is not None:
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        assert self.token is not None and self.cookie is not None
        headers = Headers(scope=scope)
        if authorized(headers.get("authorization"), self.token):
            return True
        given = _cookie(headers)
        return (
            given is not None
            and scope["method"] in SAFE_METHODS
            and hmac.compare_digest(given.encode(), self.cookie.encode())
        )

    def _login(self, scope: Scope) -> Response | None:
        """``/ui/...?token=T``: with the right T, 303 to the same page without it, setting
        the cookie; with a wrong one, 401. None when the request is no login."""
        assert self.token is not None and self.cookie is not None
        if not _is_ui(scope["path"]) or scope["method"] not in SAFE_METHODS:
            return None
        url = URL(scope=scope)
        given = QueryParams(url.query).get(TOKEN_PARAM)
        if given is None:
            return None
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return self._refusal(scope)
        response = RedirectResponse(_without_token(url), status_code=303)
        response.set_cookie(
            COOKIE_NAME,
            self.cookie,
            max_age=COOKIE_MAX_AGE_S,
            path="/",
            httponly=True,
            samesite="strict",
            secure=url.scheme == "https",
        )
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    def _refusal(self, scope: Scope) -> Response:
        if _is_ui(scope["path"]):
            return HTMLResponse(LOGIN_PAGE, status_code=401, headers=UNAUTHORIZED_HEADERS)
        return JSONResponse(
            {"error": "a valid bearer token is required"},
            status_code=401,
            headers=UNAUTHORIZED_HEADERS,
        )


def _is_ui(path: str) -> bool:
    return path == UI_PREFIX or path.startswith(UI_PREFIX + "/")
