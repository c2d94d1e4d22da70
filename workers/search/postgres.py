"""Search on PostgreSQL: a ``tsquery`` over the narrow ``search_index`` table's ``tsvector``
(GIN index; migration 0010), ranked by ``ts_rank`` (``workers.search.ranking``).

The ``tsquery`` is written here from parsed terms, every token single-quoted (a token is
letters and digits only: ``workers.search.text``) and parsed with the ``simple``
configuration, the index's own: ``'a' & 'b'`` for words, ``'a' <-> 'b'`` for a phrase.

A prefix (``migr``, the word being typed) is written as the words of the index that start
with it, ``('migrate' | 'migration' | 'migrations')``, read from the lexicon
(``search_lexemes``, a superset of the words indexed: :data:`LEXEMES_SQL`) just before the
search. GIN intersects whole words' entries quickly; a partial match (``'migr':*``) first
gathers every matching entry's rows into a bitmap, which was most of a typed query's time
(bench/RESULTS.md). A prefix of more than :data:`MAX_EXPANSIONS` words stays a partial
match, as does one the lexicon has no word for (it finds nothing either way).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from workers.search.query import Query, Term
from workers.search.ranking import CANDIDATES, density_sql, weight_sql

CONFIG = "simple"
#: Most words a prefix is expanded to; past that it is a partial match (``'mi':*``).
MAX_EXPANSIONS: Final = 32
#: The lexicon's first words from ``:prefix`` on, one more than :data:`MAX_EXPANSIONS`
#: (those not starting with it are dropped by the caller: a range scan of the key).
LEXEMES_SQL: Final = (
    f'SELECT lexeme FROM search_lexemes WHERE lexeme >= :prefix COLLATE "C" '
    f"ORDER BY lexeme LIMIT {MAX_EXPANSIONS + 1}"
)


def prefixes(query: Query) -> list[str]:
    """The prefixes of ``query`` to expand, each once."""
    return list(dict.fromkeys(term.tokens[-1] for term in query.terms if term.prefix))


def expansion(prefix: str, lexemes: Sequence[str]) -> list[str] | None:
    """The words ``prefix`` stands for, from :data:`LEXEMES_SQL`'s answer; None for a
    partial match (too many words, or none)."""
    words = [lexeme for lexeme in lexemes if lexeme.startswith(prefix)]
    return words if 0 < len(words) <= MAX_EXPANSIONS else None


def _term(term: Term, expansions: Mapping[str, list[str] | None]) -> str:
    quoted = [f"'{token}'" for token in term.tokens]
    if term.prefix:
        words = expansions.get(term.tokens[-1])
        if words is None:
            quoted[-1] += ":*"
        elif len(words) > 1:
            quoted[-1] = "(" + " | ".join(f"'{word}'" for word in words) + ")"
        else:
            quoted[-1] = f"'{words[0]}'"
    phrase = " <-> ".join(quoted)
    return f"({phrase})" if len(quoted) > 1 else phrase


def tsquery(query: Query, expansions: Mapping[str, list[str] | None] | None = None) -> str:
    """The ``to_tsquery`` text of ``query``, its prefixes written as ``expansions`` has them
    (a partial match for a prefix it leaves out)."""
    return " & ".join(_term(term, expansions or {}) for term in query.terms)


def statement(*, by_session: bool, since: bool) -> str:
    """The search SQL; binds ``:tsquery``, ``:limit`` and, when asked, ``:session_id`` and
    ``:since``. Matching and ranking read ``search_index`` only (no heap page of the wide
    moments); unnarrowed, only the ``CANDIDATES`` most relevant matches are weighed
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
    SELECT m.id, m.session_id, m.kind, ts_rank(m.tsv, q.q, 1) AS relevance
    FROM search_index m, q
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
