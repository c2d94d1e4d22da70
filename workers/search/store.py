"""The search index in the database: writing a session's moments, and searching them.

Writes happen in the caller's transaction: :func:`replace` deletes a session's moments and
inserts the new ones (the ``index`` stage, in the transaction that marks it succeeded, so
a rerun leaves exactly one run's rows), :func:`delete_session` removes them (``jobs
purge``; deleting the session row cascades to them as well). :func:`search` reads in
autocommit (one statement; on SQLite the lexicon's words for the prefix first) with the
backend's SQL (``workers.search.postgres``, ``workers.search.sqlite``), on a pool of its own
whose connections are not pinged before use (``shared.db.read_engine_for``: once a dead
connection is found, the statement runs again on a new one), then makes each hit's snippet
and, for a spoken moment, moves its start to the matched word
(``workers.search.highlight``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Final

from sqlalchemy import JSON, DateTime, Engine, Row, TextClause, bindparam, delete, insert, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.sql.selectable import TextualSelect

from shared.clock import as_utc
from shared.db import read_engine_for
from shared.models import SearchMoment
from workers.search import postgres, sqlite
from workers.search.highlight import snippet, spoken_start
from workers.search.moments import KIND_SPOKEN, Moment
from workers.search.query import Query

DEFAULT_LIMIT: Final = 20
MAX_LIMIT: Final = 200
#: Tries of a search's statement: a dead pooled connection is found by using it, once.
READ_ATTEMPTS: Final = 2
#: Decimal places of a score shown.
SCORE_DECIMALS: Final = 6


@dataclass(frozen=True)
class Hit:
    session_id: str
    start: float  # seconds on the output timeline
    end: float
    kind: str  # workers.search.moments.KINDS
    text: str  # the snippet, matched words between HIGHLIGHT_START and HIGHLIGHT_END
    score: float  # higher is better; comparable within one query's hits

    def to_json(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "start": self.start,
            "end": self.end,
            "kind": self.kind,
            "text": self.text,
            "score": self.score,
        }


def replace(db: DbSession, session_id: str, moments: list[Moment]) -> int:
    """The session's moments, and only these, in the caller's transaction; how many."""
    delete_session(db, session_id)
    if moments:
        db.execute(insert(SearchMoment), [m.row(session_id) for m in moments])
    return len(moments)


def delete_session(db: DbSession, session_id: str) -> None:
    db.execute(delete(SearchMoment).where(SearchMoment.session_id == session_id))


@lru_cache(maxsize=8)
def _statement(dialect: str, by_session: bool, since: bool) -> TextualSelect:
    """The search statement of a dialect and a shape, made once: SQLAlchemy then finds its
    compiled form at once (made anew on every query, it cost more than the query itself on
    PostgreSQL: bench/bench_search.py)."""
    if dialect == "postgresql":
        sql = postgres.statement(by_session=by_session, since=since)
    elif dialect == "sqlite":
        sql = sqlite.statement(by_session=by_session, since=since)
    else:  # pragma: no cover - only PostgreSQL and SQLite are supported
        raise RuntimeError(f"unsupported database dialect {dialect}")
    clause: TextClause = text(sql)
    if since:
        clause = clause.bindparams(bindparam("since", type_=DateTime(timezone=True)))
    return clause.columns(words=JSON)


def _rows(
    engine: Engine, stmt: TextualSelect, params: dict[str, Any], query: Query
) -> list[Row[Any]]:
    """The statement's rows, on a connection of the read engine (autocommit, not pinged
    before use: ``shared.db.read_engine_for``), tried once more on a new connection when
    the pooled one was dead (the database restarted, an idle connection dropped)."""
    for attempt in range(READ_ATTEMPTS):
        try:
            with engine.connect() as db:
                if engine.dialect.name != "postgresql":
                    params["match"] = sqlite.match(query, sqlite.expansions(db, query))
                return list(db.execute(stmt, params).all())
        except DBAPIError as exc:
            if not exc.connection_invalidated or attempt == READ_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def search(
    database_url: str,
    query: Query,
    *,
    session_id: str | None = None,
    since: datetime | None = None,
    limit: int = DEFAULT_LIMIT,
) -> list[Hit]:
    """The best ``limit`` moments for ``query`` (ValueError for a limit out of range)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be 1-{MAX_LIMIT}, not {limit}")
    params: dict[str, Any] = {"limit": limit}
    if session_id is not None:
        params["session_id"] = session_id
    if since is not None:
        params["since"] = as_utc(since)
    engine = read_engine_for(database_url)
    dialect = engine.dialect.name
    if dialect == "postgresql":
        params["tsquery"] = postgres.tsquery(query)
        params["prefixes"] = postgres.prefixes(query)
    stmt = _statement(dialect, session_id is not None, since is not None)
    rows = _rows(engine, stmt, params, query)
    hits = []
    for row in rows:
        start = float(row.start_s)
        if row.kind == KIND_SPOKEN:
            start = spoken_start(row.words, query, start)
        hits.append(
            Hit(
                session_id=row.session_id,
                start=start,
                end=float(row.end_s),
                kind=row.kind,
                text=snippet(row.text, query),
                score=round(float(row.score), SCORE_DECIMALS),
            )
        )
    return hits
