"""Search on SQLite (the embedded default): FTS5 ``MATCH`` over ``search_moments_fts``,
ranked by ``bm25`` (``workers.search.ranking``).

The ``MATCH`` expression is written here from parsed terms, every token in double quotes
(a token is letters and digits only: ``workers.search.text``, so it holds no quote): ``"a"
AND "b"`` for words, ``"a b"`` for a phrase, ``"migr"*`` for a prefix. FTS5's own syntax
(``NEAR``, ``OR``, ``NOT``, column filters, ``^``) can never be reached from a query.
"""

from __future__ import annotations

from workers.search.query import Query, Term
from workers.search.ranking import CANDIDATES, density_sql, weight_sql


def _term(term: Term) -> str:
    phrase = '"' + " ".join(term.tokens) + '"'
    return phrase + "*" if term.prefix else phrase


def match(query: Query) -> str:
    """The ``MATCH`` expression of ``query``."""
    return " AND ".join(_term(term) for term in query.terms)


def statement(*, by_session: bool, since: bool) -> str:
    """The search SQL; binds ``:match``, ``:limit`` and, when asked, ``:session_id`` and
    ``:since``. ``bm25`` is read in the query that holds the ``MATCH``, as FTS5 requires;
    unnarrowed, only the ``CANDIDATES`` most relevant matches are weighed
    (``workers.search.ranking``). They are picked by SQLite's own top-N sort, not FTS5's
    ``ORDER BY rank``, which measured slower here (bench/bench_search.py)."""
    filters = ""
    if by_session:
        filters += " AND m.session_id = :session_id"
    if since:
        filters += " AND m.session_id IN (SELECT id FROM sessions WHERE created_at >= :since)"
    cap = "" if filters else f"ORDER BY bm LIMIT {CANDIDATES}"
    return f"""
WITH matches AS (
    SELECT rowid AS id, bm25(search_moments_fts) AS bm
    FROM search_moments_fts WHERE search_moments_fts MATCH :match
    {cap}
),
ranked AS (
    SELECT x.id, m.session_id, -x.bm * {weight_sql("m.kind")} AS rank
    FROM matches x JOIN search_moments m ON m.id = x.id
    WHERE 1 = 1{filters}
),
counted AS (
    SELECT id, rank, count(*) OVER (PARTITION BY session_id) AS n FROM ranked
),
top AS (
    SELECT id, rank * {density_sql("n")} AS score FROM counted
    ORDER BY score DESC, id LIMIT :limit
)
SELECT m.session_id, m.start_s, m.end_s, m.kind, m.text, m.words, top.score
FROM top JOIN search_moments m ON m.id = top.id
ORDER BY top.score DESC, m.session_id, m.start_s
"""
