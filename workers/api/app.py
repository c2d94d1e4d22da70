"""The status API's routes: a Starlette app over the pipeline's database.

Every handler is a plain function (Starlette runs it in its thread pool), reads with the
same SQLAlchemy sessions as the workers, and answers JSON; ``/sessions/{id}/events`` streams
server-sent events (``workers.api.events``) and ``/ui/`` is the web page
(``workers.api.pages``). The rules:

- Bad input is the client's error, never a 500: a hostile session id (``shared.ids``) or
  an unknown stage, status, time or page size is 400 naming it; an unknown session is 404
  naming it; an unknown route is 404. A search query that cannot be searched (empty, no
  letter or digit, too long, too many terms: ``workers.search.query``) is 422 naming why.
- File paths never leave the server: a session's outputs are links to
  ``/sessions/{id}/media/{playable|compressed}``, which serves the finished file with HTTP
  Range (Starlette's FileResponse: 206 with Content-Range, 416 for a range past the end).
- While a session records, ``/sessions/{id}/live.m3u8`` is its live view: an HLS master
  playlist whose media playlist (``live/media.m3u8``) lists the fragments written so far
  and whose files (``live/<name>``, names checked against ``workers.live.SERVED_NAME``)
  are served like the media (``workers.live``). 404 until the first fragment exists.
- Retry and cancel go through the functions ``sessionpipe jobs retry|cancel`` use
  (``workers.jobs.reopen``/``cancel``, ``workers.dispatch.send_all``). On the embedded
  default the retried stage's message waits in the embedded broker for the next embedded
  worker (``sessionpipe process``, ``sessionpipe doctor --fix``).
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Any, Final

from celery import Celery
from sqlalchemy import Row, select, text
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from shared import models
from shared.clock import as_utc
from shared.db import engine_for, read_scope, session_scope
from shared.diagnostics import describe, quoted
from shared.ids import InvalidNameError, validate_session_id
from shared.settings import Settings, get_settings
from shared.storage import Storage, StorageError
from workers import live
from workers.api import events, pages
from workers.api.auth import BearerTokenMiddleware
from workers.api.metrics import Metrics
from workers.backlog import read_backlog
from workers.config import celery_config
from workers.enrichment import enrichment_document
from workers.pipeline import PLAYABLE_STAGE, STAGES, Stage, outcome
from workers.search import QueryError, parse_query, search
from workers.search.store import DEFAULT_LIMIT as SEARCH_DEFAULT_LIMIT
from workers.search.store import MAX_LIMIT as SEARCH_MAX_LIMIT
from workers.status import UnknownSessionError, session_status

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 200
#: The finished files served, by the name in the URL: the stage whose output each is.
MEDIA_STAGES: Final = {"playable": Stage.MERGE, "compressed": Stage.COMPRESS}
MP4_MEDIA_TYPE: Final = "video/mp4"
HLS_MEDIA_TYPE: Final = "application/vnd.apple.mpegurl"
#: Playlists change with every fragment: never cached.
NO_STORE: Final = {"Cache-Control": "no-store"}
#: What retry resets, as ``sessionpipe jobs retry``: a stage that ended unsuccessfully.
RETRYABLE: Final = (models.JobStatus.FAILED, models.JobStatus.CANCELLED)
CHECK_OK: Final = "ok"
CHECK_FAILED: Final = "unavailable"
#: What a session of ``GET /sessions`` shows of its row.
BRIEF_COLUMNS: Final = (
    models.Session.id,
    models.Session.name,
    models.Session.status,
    models.Session.priority,
    models.Session.created_at,
    models.Session.started_at,
    models.Session.ended_at,
)


class BadRequestError(ValueError):
    """A query or path parameter the API cannot use (400, with this message)."""


def _error(status_code: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code)


def _media_url(session_id: str, kind: str) -> str:
    return f"/sessions/{session_id}/media/{kind}"


# -- parameters -------------------------------------------------------------------------------
def _session_id(request: Request) -> str:
    return validate_session_id(request.path_params["session_id"])


def _stage(request: Request) -> Stage:
    value = request.path_params["stage"]
    try:
        return Stage(value)
    except ValueError:
        choices = ", ".join(s.value for s in Stage)
        raise BadRequestError(f"unknown stage {quoted(value)}; one of {choices}") from None


def _int_param(request: Request, name: str, default: int, low: int, high: int | None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequestError(f"{name} must be an integer, not {quoted(raw)}") from None
    if value < low or (high is not None and value > high):
        bounds = f"{low}-{high}" if high is not None else f"at least {low}"
        raise BadRequestError(f"{name} must be {bounds}, not {value}")
    return value


def _since_param(request: Request) -> datetime | None:
    raw = request.query_params.get("since")
    if raw is None:
        return None
    try:
        return as_utc(datetime.fromisoformat(raw))
    except ValueError:
        raise BadRequestError(f"since must be an ISO 8601 time, not {quoted(raw)}") from None


def _status_param(request: Request) -> str | None:
    raw = request.query_params.get("status")
    if raw is None:
        return None
    try:
        return models.SessionStatus(raw).value
    except ValueError:
        choices = ", ".join(s.value for s in models.SessionStatus)
        raise BadRequestError(f"unknown status {quoted(raw)}; one of {choices}") from None


# -- routes -----------------------------------------------------------------------------------
class Api:
    """The handlers, bound to one process's settings, storage and metrics."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.storage = Storage(settings.storage)
        self.metrics = Metrics(settings)
        self._producer: Celery | None = None
        #: Set when the server stops: the open event streams end (``workers.api.server``).
        self.stopping = threading.Event()
        self._producer_lock = threading.Lock()

    def producer(self) -> Celery:
        """A Celery app configured from these settings, used only to send tasks (the
        module-level ``workers.app`` follows the process's environment instead)."""
        with self._producer_lock:
            if self._producer is None:
                producer = Celery("sessionpipe-api", set_as_current=False)
                producer.config_from_object(celery_config(self.settings))
                self._producer = producer
            return self._producer

    def healthz(self, request: Request) -> JSONResponse:
        """200 when the database answers SELECT 1 and the broker's queues can be read; else
        503 saying which failed (the details go to the log, not to an open endpoint)."""
        checks = {"database": CHECK_OK, "broker": CHECK_OK}
        try:
            with engine_for(self.settings.database_url).connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            log.warning("health check: database unavailable: %s", describe(exc))
            checks["database"] = CHECK_FAILED
        try:
            backlog = read_backlog(self.settings)
            failure = backlog.error
        except Exception as exc:  # an embedded broker folder that cannot be listed
            failure = describe(exc)
        if failure is not None:
            log.warning("health check: broker unavailable: %s", failure)
            checks["broker"] = CHECK_FAILED
        healthy = all(value == CHECK_OK for value in checks.values())
        return JSONResponse(checks, status_code=200 if healthy else 503)

    def list_sessions(self, request: Request) -> JSONResponse:
        """Sessions newest first, ``status`` and ``since`` (created at or after) filtering;
        ``limit``/``offset`` paging, the next page's URL in a ``Link: rel="next"`` header."""
        status = _status_param(request)
        since = _since_param(request)
        limit = _int_param(request, "limit", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
        offset = _int_param(request, "offset", 0, 0, None)
        query = select(*BRIEF_COLUMNS).order_by(
            models.Session.created_at.desc(), models.Session.id.desc()
        )
        if status is not None:
            query = query.where(models.Session.status == status)
        if since is not None:
            query = query.where(models.Session.created_at >= since)
        # Only the columns the page shows, in autocommit (bench/RESULTS.md: loading whole
        # rows, JSON results included, took most of a page's time).
        with read_scope(self.settings.database_url) as db:
            rows = list(db.execute(query.offset(offset).limit(limit + 1)).all())
            more = len(rows) > limit
            rows = rows[:limit]
            jobs: dict[str, dict[str, tuple[str, float]]] = {row.id: {} for row in rows}
            columns = (models.Job.session_id, models.Job.stage, models.Job.status,
                       models.Job.progress)  # fmt: skip
            query_jobs = select(*columns).where(models.Job.session_id.in_(list(jobs)))
            for session_id, stage, job_status, progress in db.execute(query_jobs).all():
                jobs[session_id][stage] = (job_status, progress)
        body = [_brief(row, jobs[row.id]) for row in rows]
        headers = {}
        if more:
            next_url = request.url.include_query_params(limit=limit, offset=offset + limit)
            headers["Link"] = f'<{next_url.path}?{next_url.query}>; rel="next"'
        return JSONResponse(body, headers=headers)

    def get_session(self, request: Request) -> JSONResponse:
        """``workers.status.session_status``, file paths replaced by media links."""
        session_id = _session_id(request)
        report = session_status(
            self.settings.database_url, self.storage, session_id, with_paths=False
        )
        media: dict[str, str | None] = dict.fromkeys(MEDIA_STAGES)
        for stage in report["stages"]:
            stage.pop("output_path", None)
            stage["output_url"] = None
            for kind, media_stage in MEDIA_STAGES.items():
                if stage["stage"] == media_stage.value and _served(stage):
                    stage["output_url"] = media[kind] = _media_url(session_id, kind)
        report["media"] = media
        return JSONResponse(report)

    async def get_events(self, request: Request) -> Response:
        """Server-sent events of the session's progress (``workers.api.events``)."""
        from starlette.concurrency import run_in_threadpool

        session_id = _session_id(request)
        first = await run_in_threadpool(events.snapshot, self.settings.database_url, session_id)
        return StreamingResponse(
            events.stream(self.settings.database_url, session_id, first, stopping=self.stopping),
            media_type=events.MEDIA_TYPE,
            headers=events.STREAM_HEADERS,
        )

    def get_enrichment(self, request: Request) -> JSONResponse:
        session_id = _session_id(request)
        return JSONResponse(enrichment_document(self.settings.database_url, session_id))

    def get_media(self, request: Request) -> Response:
        session_id = _session_id(request)
        kind = request.path_params["kind"]
        stage = MEDIA_STAGES.get(kind)
        if stage is None:
            choices = ", ".join(MEDIA_STAGES)
            return _error(404, f"unknown media {quoted(kind)}; one of {choices}")
        with session_scope(self.settings.database_url) as db:
            if db.get(models.Session, session_id) is None:
                raise UnknownSessionError(f"unknown session {session_id!r}")
            job = db.execute(
                select(models.Job).where(
                    models.Job.session_id == session_id, models.Job.stage == stage.value
                )
            ).scalar_one_or_none()
            key = job.output_key if job is not None else None
            done = job is not None and job.status == models.JobStatus.SUCCEEDED.value
        if not done or key is None:
            return _error(404, f"session {session_id!r} has no {kind} file (yet)")
        try:
            path = self.storage.path(key)
        except (StorageError, InvalidNameError) as exc:
            log.warning("media of %s not served: %s", session_id, describe(exc))
            return _error(404, f"session {session_id!r} has no {kind} file")
        if not path.is_file():  # deleted by retention, or storage not mounted here
            return _error(404, f"session {session_id!r}'s {kind} file is gone")
        return FileResponse(path, media_type=MP4_MEDIA_TYPE, filename=path.name)

    def _live(self, request: Request) -> tuple[str, live.LiveState]:
        session_id = _session_id(request)
        state = live.live_state(self.settings, session_id)
        if state is None:
            raise UnknownSessionError(f"unknown session {session_id!r}")
        return session_id, state

    def get_live(self, request: Request) -> Response:
        """The live view's HLS master playlist (one variant, with its codecs)."""
        session_id, state = self._live(request)
        if not state.listed:
            return _error(404, f"session {session_id!r} has no live view (yet)")
        body = live.master_playlist(state.listed, f"{live.LIVE_DIR}/media.m3u8")
        return Response(body, media_type=HLS_MEDIA_TYPE, headers=NO_STORE)

    def get_live_file(self, request: Request) -> Response:
        """The media playlist, an init segment or a media segment of the live view."""
        session_id, state = self._live(request)
        name = request.path_params["name"]
        if name == "media.m3u8":
            if not state.listed:
                return _error(404, f"session {session_id!r} has no live view (yet)")
            body = live.media_playlist(state.listed, ended=state.ended)
            return Response(body, media_type=HLS_MEDIA_TYPE, headers=NO_STORE)
        path = live.served_file(self.settings, session_id, name)
        if path is None:
            return _error(404, f"session {session_id!r} has no live file {quoted(name)}")
        return FileResponse(path, media_type=MP4_MEDIA_TYPE)

    def retry(self, request: Request) -> JSONResponse:
        """Run a failed or cancelled stage again (``sessionpipe jobs retry``): 202, or 409
        when the stage has no failed or cancelled job."""
        from workers.dispatch import send_all
        from workers.jobs import reopen

        session_id = _session_id(request)
        stage = _stage(request)
        with session_scope(self.settings.database_url) as db:
            if db.get(models.Session, session_id) is None:
                raise UnknownSessionError(f"unknown session {session_id!r}")
            session = reopen(db, session_id, stage.value, from_statuses=RETRYABLE)
        if session is None:
            wanted = "/".join(s.value for s in RETRYABLE)
            return _error(409, f"no {wanted} {stage.value} job for session {session_id!r}")
        send_all(self.producer(), self.settings.database_url, session, [stage])
        return JSONResponse(
            {"session_id": session_id, "stage": stage.value, "status": "pending"},
            status_code=202,
        )

    def cancel(self, request: Request) -> JSONResponse:
        """Cancel a pending or running stage (``sessionpipe jobs cancel --stage``): 200, or
        409 when it has none (a running stage stops at its next progress report)."""
        from workers.jobs import cancel

        session_id = _session_id(request)
        stage = _stage(request)
        with session_scope(self.settings.database_url) as db:
            if db.get(models.Session, session_id) is None:
                raise UnknownSessionError(f"unknown session {session_id!r}")
            count = cancel(db, session_id, stage.value)
        if not count:
            return _error(409, f"no pending or running {stage.value} job for {session_id!r}")
        return JSONResponse({"session_id": session_id, "stage": stage.value, "status": "cancelled"})

    def search(self, request: Request) -> JSONResponse:
        """``GET /search?q=&session=&since=&limit=``: the moments that match, best first;
        what ``sessionpipe search --json`` prints."""
        raw = request.query_params.get("q")
        if raw is None:
            raise BadRequestError("the query parameter q is required")
        session_id = request.query_params.get("session")
        if session_id is not None:
            validate_session_id(session_id)
        since = _since_param(request)
        limit = _int_param(request, "limit", SEARCH_DEFAULT_LIMIT, 1, SEARCH_MAX_LIMIT)
        query = parse_query(raw)  # QueryError: 422
        hits = search(
            self.settings.database_url, query, session_id=session_id, since=since, limit=limit
        )
        return JSONResponse({"query": raw, "hits": [hit.to_json() for hit in hits]})

    def metrics_text(self, request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(self.metrics.scrape(), media_type=CONTENT_TYPE_LATEST)


def _served(stage: dict[str, Any]) -> bool:
    return stage["status"] == models.JobStatus.SUCCEEDED.value and bool(stage["output_key"])


#: A row of :data:`BRIEF_COLUMNS`.
BriefRow = Row[str, str, str, str, datetime, datetime | None, datetime | None]
_STAGE_ORDER: Final = {stage.value: i for i, stage in enumerate(STAGES)}


def _brief(session: BriefRow, jobs: dict[str, tuple[str, float]]) -> dict[str, Any]:
    """A session of the list: ``session`` has :data:`BRIEF_COLUMNS`, ``jobs`` its jobs'
    (status, progress) by stage. A bar's status is the job's column: a skipped optional
    stage shows as succeeded here (its result, which says so, is not read for a list)."""
    statuses = {stage: status for stage, (status, _) in jobs.items()}
    session_outcome = outcome(statuses)
    return {
        "session_id": session.id,
        "name": session.name,
        "status": session.status,
        "outcome": session_outcome,
        "playable": statuses.get(PLAYABLE_STAGE.value) == models.JobStatus.SUCCEEDED.value,
        "complete": session_outcome == "completed",
        "priority": session.priority,
        "created_at": as_utc(session.created_at).isoformat(),
        "started_at": as_utc(session.started_at).isoformat() if session.started_at else None,
        "ended_at": as_utc(session.ended_at).isoformat() if session.ended_at else None,
        "url": f"/sessions/{session.id}",
        "stages": [
            {"stage": stage, "status": jobs[stage][0], "progress": jobs[stage][1]}
            for stage in sorted(jobs, key=lambda name: _STAGE_ORDER.get(name, len(_STAGE_ORDER)))
        ],
    }


# -- errors -----------------------------------------------------------------------------------
async def _bad_request(request: Request, exc: Exception) -> Response:
    return _error(400, str(exc))


async def _unsearchable(request: Request, exc: Exception) -> Response:
    return _error(422, str(exc))


async def _not_found(request: Request, exc: Exception) -> Response:
    return _error(404, str(exc.args[0]) if exc.args else "not found")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def create_app(settings: Settings | None = None) -> Starlette:
    """The ASGI app; authentication as the settings' token says (see workers.api.auth)."""
    settings = settings if settings is not None else get_settings()
    api = Api(settings)
    session = "/sessions/{session_id}"
    app = Starlette(
        routes=[
            Route("/healthz", api.healthz),
            Route("/metrics", api.metrics_text),
            Route("/sessions", api.list_sessions),
            Route("/search", api.search),
            Route(session, api.get_session),
            Route(f"{session}/events", api.get_events),
            Route(f"{session}/enrichment", api.get_enrichment),
            Route(f"{session}/media/{{kind}}", api.get_media, methods=["GET", "HEAD"]),
            Route(f"{session}/live.m3u8", api.get_live),
            Route(f"{session}/live/{{name}}", api.get_live_file, methods=["GET", "HEAD"]),
            Route(f"{session}/stages/{{stage}}/retry", api.retry, methods=["POST"]),
            Route(f"{session}/stages/{{stage}}/cancel", api.cancel, methods=["POST"]),
            *pages.routes(settings.database_url),
        ],
        exception_handlers={
            InvalidNameError: _bad_request,
            BadRequestError: _bad_request,
            QueryError: _unsearchable,
            UnknownSessionError: _not_found,
            HTTPException: _http_error,
        },
    )
    app.state.stopping = api.stopping
    token = settings.api_token.get_secret_value() if settings.api_token else None
    app.add_middleware(BearerTokenMiddleware, token=token)
    return app
