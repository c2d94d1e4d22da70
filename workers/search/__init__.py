"""Search: find the moment in any session where something was said or shown.

The rule: **the database the deployment runs is the search engine**, and both backends
index the very same words. A session's *moments* (``moments``: transcript segments, the
text on screen over a span, chapter titles, keywords, the summary; each with its span on the
output timeline) are made from its enrichment documents by pure functions, and written by
the ``index`` stage (``workers.stages.index``) all at once: delete-then-insert in the
transaction that marks the stage succeeded (``store.replace``), so the index of a session
is always one whole run's. Text is folded to letters and digits by one tokeniser
(``text``) before either database sees it; a query is parsed by the same tokeniser into
words, phrases and prefixes (``query``) and only then written in the backend's syntax
(``postgres``: ``tsquery`` over a ``tsvector`` with a GIN index; ``sqlite``: FTS5
``MATCH``; on both, a prefix expanded to the indexed words it starts), never from the
user's raw text. Matching and ranking read a narrow row per moment (``search_index``,
migrations 0010 and 0011), not the moment's text, and rank alike on both databases (BM25's
length factor, the kind, the session's density: ``ranking``).
A hit is a moment: session, start, end, kind, a highlighted snippet and a score
(``highlight``, one implementation for both backends).
"""

from __future__ import annotations

from workers.search.moments import KINDS, Moment, build_moments
from workers.search.query import MAX_QUERY_CHARS, Query, QueryError, parse_query
from workers.search.store import Hit, delete_session, replace, search

__all__ = [
    "KINDS",
    "MAX_QUERY_CHARS",
    "Hit",
    "Moment",
    "Query",
    "QueryError",
    "build_moments",
    "delete_session",
    "parse_query",
    "replace",
    "search",
]
