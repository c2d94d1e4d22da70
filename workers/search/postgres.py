"""Search on PostgreSQL: a ``tsquery`` over the narrow ``search_index`` table's ``tsvector``
(GIN index; migration 0010), ranked by the moment's length (``tokens``, migration 0011), as
on SQLite (``workers.search.ranking``).

The ``tsquery`` is written here from parsed terms, every token single-quoted (a token is
letters and digits only: ``workers.search.text``) and parsed with the ``simple``
configuration, the index's own: ``'a' & 'b'`` for words, ``'a' <-> 'b'`` for a phrase,
``'migr':*`` for a prefix.

In the statement, ``search_tsquery`` (a function of migration 0010) replaces each prefix
(``migr``, the word being typed) with the words of the index that start with it,
``('migrate' | 'migration' | 'migrations')``, read from the lexicon (``search_lexemes``, a
superset of the words indexed) when there are at most :data:`MAX_EXPANSIONS`. GIN
intersects whole words' entries quickly; a partial match (``'migr':*``) first gathers every
matching entry's rows in a bitmap, which was most of a typed query's time
(bench/RESULTS.md). A prefix of more words, or of none, stays a partial match.
"""

from __future__ import annotations

from workers.search.query import MAX_EXPANSIONS, Query, Term
from workers.search.ranking import CANDIDATES, length_sql, ranked_hits_sql

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


def prefixes(query: Query) -> list[str]:
    """The prefixes of ``query``, each once: what ``search_tsquery`` expands."""
    return list(dict.fromkeys(term.tokens[-1] for term in query.terms if term.prefix))


def statement(*, by_session: bool, since: bool) -> str:
    """The search SQL; binds ``:tsquery`` and ``:prefixes`` (:func:`tsquery`,
    :func:`prefixes`), ``:limit`` and, when asked, ``:session_id`` and ``:since``.
    Matching and ranking read ``search_index`` only (no heap page of the moments);
    unnarrowed, only the ``CANDIDATES`` most relevant matches are weighed
    (``workers.search.ranking``); only the hits kept are joined back for their text."""
    # ``q`` MATERIALIZED: inlined, the function's call would be the scan's condition and
    # run for every row the GIN index returns
    filters = ""
    if by_session:
        filters += " AND m.session_id = :session_id"
    if since:
        filters += " AND m.session_id IN (SELECT id FROM sessions WHERE created_at >= :since)"
    cap = "" if filters else f"ORDER BY relevance DESC, m.id LIMIT {CANDIDATES}"
    return f"""
WITH q AS MATERIALIZED (
    SELECT search_tsquery(:tsquery, CAST(:prefixes AS text[]), {MAX_EXPANSIONS}) AS q
),
matches AS (
    SELECT m.id, m.session_id, m.kind, {length_sql("m.tokens")} AS relevance
    FROM search_index m, q
    WHERE m.tsv @@ q.q{filters}
    {cap}
),
{ranked_hits_sql()}"""
