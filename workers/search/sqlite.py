"""Search on SQLite (the embedded default): FTS5 ``MATCH`` over ``search_moments_fts``,
ranked from the narrow ``search_index`` row of each match (migration 0010;
``workers.search.ranking``).

As on PostgreSQL, a prefix (``migr``, the word being typed) is replaced by the words of the
index that start with it, ``("migrate" OR "migration")``, read from the lexicon
(``search_lexemes``, migration 0011, a superset of the words indexed) when there are at
most ``MAX_EXPANSIONS``: FTS5 merges the rows of every word a prefix starts before it
intersects them with the other words', and whole words are intersected a third faster
(bench/RESULTS.md). The lexicon is read by a statement of its own just before the search's:
a word first indexed between the two is matched by a later search, as if it had come a
moment later.

The ``MATCH`` expression is written here from parsed terms, every token in double quotes
(a token is letters and digits only: ``workers.search.text``, so it holds no quote): ``"a"
AND "b"`` for words, ``"a b"`` for a phrase, ``"migr"*`` for a prefix. FTS5's own syntax
(``NEAR``, ``OR``, ``NOT``, column filters, ``^``) can never be reached from a query.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from sqlalchemy import Connection, text

from workers.search.query import MAX_EXPANSIONS, Query, Term
from workers.search.ranking import CANDIDATES, length_sql, ranked_hits_sql

#: The first words of the lexicon from a prefix on (binary order: a prefix's words are a
#: range), one more than are expanded, to tell "too many" from "all of them".
_LEXICON: Final = text(
    "SELECT lexeme FROM search_lexemes WHERE lexeme >= :prefix ORDER BY lexeme LIMIT :n"
)


def expansions(db: Connection, query: Query) -> dict[str, list[str]]:
    """The words of the lexicon (``search_lexemes``, migration 0011) that each prefix of
    ``query`` starts, for the prefixes that start 1 to ``MAX_EXPANSIONS`` of them; the
    others stay partial matches."""
    out: dict[str, list[str]] = {}
    for prefix in dict.fromkeys(t.tokens[-1] for t in query.terms if t.prefix):
        first = db.execute(_LEXICON, {"prefix": prefix, "n": MAX_EXPANSIONS + 1}).scalars()
        words = [word for word in first if word.startswith(prefix)]
        if 1 <= len(words) <= MAX_EXPANSIONS:
            out[prefix] = words
    return out


def _term(term: Term, expanded: Mapping[str, Sequence[str]]) -> str:
    words = expanded.get(term.tokens[-1]) if term.prefix else None
    if words:  # the prefix's whole words: FTS5 intersects them without merging them first
        head = "".join(token + " " for token in term.tokens[:-1])
        return "(" + " OR ".join(f'"{head}{word}"' for word in words) + ")"
    phrase = '"' + " ".join(term.tokens) + '"'
    return phrase + "*" if term.prefix else phrase


def match(query: Query, expanded: Mapping[str, Sequence[str]] | None = None) -> str:
    """The ``MATCH`` expression of ``query``, its prefixes replaced by the words in
    ``expanded`` (:func:`expansions`) where given."""
    return " AND ".join(_term(term, expanded or {}) for term in query.terms)


def statement(*, by_session: bool, since: bool) -> str:
    """The search SQL; binds ``:match``, ``:limit`` and, when asked, ``:session_id`` and
    ``:since``. FTS5 gives the matches' rowids only (no ``bm25()``: its IDFs counted every
    row of each word on every query); their session, kind and length come from
    ``search_index``; unnarrowed, only the ``CANDIDATES`` most relevant matches are
    weighed (``workers.search.ranking``); only the hits kept are joined back for their
    text."""
    # ``+``: the filters apply to FTS5's matches; through the index on ``session_id``
    # SQLite would instead run the MATCH once per moment of the session (80 ms, not 0.5)
    filters = ""
    if by_session:
        filters += " AND +s.session_id = :session_id"
    if since:
        filters += " AND +s.session_id IN (SELECT id FROM sessions WHERE created_at >= :since)"
    cap = "" if filters else f"ORDER BY relevance DESC, s.id LIMIT {CANDIDATES}"
    return f"""
WITH matches AS (
    SELECT s.id, s.session_id, s.kind, {length_sql("s.tokens")} AS relevance
    FROM search_moments_fts f JOIN search_index s ON s.id = f.rowid
    WHERE search_moments_fts MATCH :match{filters}
    {cap}
),
{ranked_hits_sql()}"""
