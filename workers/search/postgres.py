"""Search on PostgreSQL: a ``tsquery`` over the generated ``tsvector`` column (GIN index),
ranked by ``ts_rank_cd`` (``workers.search.ranking``).

The ``tsquery`` is written here from parsed terms, every token single-quoted (a token is
letters and digits only: ``workers.search.text``) and parsed with the ``simple``
configuration, the index's own: ``'a' & 'b'`` for words, ``'a' <-> 'b'`` for a phrase,
``'migr':*`` for a prefix.
"""

from __future__ import annotations

from workers.search.query import Query, Term
from workers.search.ranking import CANDIDATES, density_sql, weight_sql

CONFIG = "simple"


def _term(term: Term) -> str:
    quoted = [f"'{token}'" for token in term.tokens]
    if term.prefix:
        quoted[-1] += ":*"
    phrase = " <-> ".join(quoted)
    return f"({phrase})" if len(quoted) > 1 else phrase


def tsquery(query: Query) -> str:
    """The ``to_tsquery`` text of ``query``."""
    return " & ".join(_term(term) for term in query.terms)


def statement(*, by_session: bool, since: bool) -> str:
    """The search SQL; binds ``:tsquery``, ``:limit`` and, when asked, ``:session_id`` and
    ``:since``. Unnarrowed, only the ``CANDIDATES`` most relevant matches are weighed
    (``workers.search.ranking``); only the hits kept are joined back for their text."""
    filters = ""
    if by_session:
        filters += " AND m.session_id = :session_id"
    if since:
        filters += " AND m.session_id IN (SELECT id FROM sessions WHERE created_at >= :since)"
    cap = "" if filters else f"ORDER BY relevance DESC, m.id LIMIT {CANDIDATES}"
    return f"""
WITH q AS (SELECT to_tsquery('{CONFIG}', :tsquery) AS q),
matches AS (
    SELECT m.id, m.session_id, m.kind, ts_rank_cd(m.tsv, q.q, 1) AS relevance
    FROM search_moments m, q
    WHERE m.tsv @@ q.q{filters}
    {cap}
),
counted AS (
    SELECT id, relevance * {weight_sql("kind")} AS rank,
           count(*) OVER (PARTITION BY session_id) AS n
    FROM matches
),
top AS (
    SELECT id, rank * {density_sql("n")} AS score FROM counted
    ORDER BY score DESC, id LIMIT :limit
)
SELECT m.session_id, m.start_s, m.end_s, m.kind, m.text, m.words, top.score
FROM top JOIN search_moments m ON m.id = top.id
ORDER BY top.score DESC, m.session_id, m.start_s
"""
