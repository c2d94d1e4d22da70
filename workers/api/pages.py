"""The web page: ``/ui/`` (the sessions, live) and ``/ui/sessions/{id}`` (one session).

Static files shipped in the package (``workers/api/static``), no CDN, no build step: the
HTML is the same for every session and the browser's script reads everything through the
API (``/sessions``, ``/search``, ``/sessions/{id}/events``, ``/sessions/{id}/enrichment``,
the media),
with the login cookie (``workers.api.auth``). The server never puts data into HTML, and the
script writes data only as text (never as markup), so a session's name or transcript cannot
inject script; the Content-Security-Policy allows this origin's own files only.
"""

from __future__ import annotations

from importlib import resources
from typing import Final

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from shared import models
from shared.db import session_scope
from shared.ids import validate_session_id
from workers.status import UnknownSessionError

#: The files the page is made of, by name in the URL, with their media types (nothing else
#: under /ui/static/ is served: a name is looked up, never joined to a path).
ASSETS: Final = {
    "app.css": "text/css; charset=utf-8",
    "common.js": "text/javascript; charset=utf-8",
    "list.js": "text/javascript; charset=utf-8",
    "live.js": "text/javascript; charset=utf-8",
    "session.js": "text/javascript; charset=utf-8",
}
HTML: Final = "text/html; charset=utf-8"
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The pages are tiny and change with the package: always revalidate.
    "Cache-Control": "no-cache",
}


def _static(name: str) -> bytes:
    return resources.files("workers.api").joinpath("static", name).read_bytes()


def _page(name: str) -> Response:
    return Response(_static(name), media_type=HTML, headers=SECURITY_HEADERS)


class Pages:
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    def root(self, request: Request) -> Response:
        return RedirectResponse("/ui/", status_code=307)

    def sessions(self, request: Request) -> Response:
        return _page("index.html")

    def session(self, request: Request) -> Response:
        session_id = validate_session_id(request.path_params["session_id"])
        with session_scope(self.database_url) as db:
            if db.get(models.Session, session_id) is None:
                raise UnknownSessionError(f"unknown session {session_id!r}")
        return _page("session.html")

    def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        media_type = ASSETS.get(name)
        if media_type is None:
            return Response(f"no such file {name!r}", status_code=404, media_type="text/plain")
        return Response(_static(name), media_type=media_type, headers=SECURITY_HEADERS)


def routes(database_url: str) -> list[Route]:
    pages = Pages(database_url)
    return [
        Route("/", pages.root),
        Route("/ui", pages.root),
        Route("/ui/", pages.sessions),
        Route("/ui/sessions/{session_id}", pages.session),
        Route("/ui/static/{name}", pages.asset),
    ]
