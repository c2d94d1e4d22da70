"""How hits are ordered, the same on both databases.

A moment's score is the backend's relevance of its text, times its kind's weight
(:data:`KIND_WEIGHTS`: a chapter's title or keywords name what a stretch is about; the
summary spans the whole session, so it says least about *when*), times its session's
*density*: ``1 + DENSITY_GAIN * n / (n + DENSITY_HALF)`` for the ``n`` moments of the
session that matched, so of two sessions that both mention the words, the one where they
come up again and again ranks first (the factor grows from 1 towards ``1 + DENSITY_GAIN``,
half way at ``DENSITY_HALF`` matches). Scores compare hits of one query; both databases
work them out alike (below), so the same query gives the same scores on either.

The relevance is worked out from the narrow ``search_index`` row of a match (migrations
0010, 0011), never from the wide moment, and it is the same on both databases:
:func:`length_sql`, BM25's length normalisation for words that occur once,
``(K1 + 1) / (1 + K1 * (1 - B + B * tokens / AVERAGE_TOKENS))``. Every moment a query finds
holds every one of its words, so with each word once in each match (as in a sentence)
FTS5's ``bm25()`` is this factor times the sum of the words' IDFs, the same for all of a
query's matches: it orders them alike, and so both databases give the same hits in the
same order. What it leaves out: how often a word recurs in one moment and how close the
words are (PostgreSQL's ``ts_rank``, used until 0011, weighed both; it cost some 5
microseconds a match, most of a slow query's ranking: bench/RESULTS.md). ``bm25()`` itself
counted every row of each word on every query for those IDFs, and read each match's length
in FTS5's own tables; here the length is a column of the row read anyway.

Words common enough to match a large part of the index would make every query rank all of
them twice over: the kind weights and the densities are worked out for the
``CANDIDATES`` moments of best relevance only, so ``n`` counts a session's moments among
those. A query narrowed to a session or a time (``--session``, ``--since``) ranks all its
matches: it has to look at them anyway.
"""

from __future__ import annotations

from typing import Final

from workers.search.moments import KIND_CHAPTER, KIND_KEYWORD, KIND_SUMMARY

KIND_WEIGHTS: Final[dict[str, float]] = {KIND_CHAPTER: 2.0, KIND_KEYWORD: 1.5, KIND_SUMMARY: 0.5}
DEFAULT_WEIGHT: Final = 1.0  # spoken and screen
DENSITY_GAIN: Final = 2.0
DENSITY_HALF: Final = 4.0
#: Moments of best relevance that weights and densities are worked out for.
CANDIDATES: Final = 1000
#: BM25's constants (FTS5's), and the moment length its normalisation is relative to (a
#: transcript segment's words; FTS5 uses the index's average, which is near it).
K1: Final = 1.2
B: Final = 0.75
AVERAGE_TOKENS: Final = 10.0


def weight_sql(column: str) -> str:
    """The kind weight as a SQL CASE over ``column`` (constants only, nothing from a user)."""
    cases = " ".join(f"WHEN '{kind}' THEN {weight}" for kind, weight in KIND_WEIGHTS.items())
    return f"(CASE {column} {cases} ELSE {DEFAULT_WEIGHT} END)"


def density_sql(count: str) -> str:
    """The session density factor as SQL over a match count ``count`` (a column name)."""
    n = f"CAST({count} AS FLOAT)"
    return f"(1 + {DENSITY_GAIN} * {n} / ({n} + {DENSITY_HALF}))"


def length_sql(tokens: str) -> str:
    """BM25's relevance of a moment of ``tokens`` tokens (a column name) holding each word of
    the query once, without the IDFs (see above): shorter moments first."""
    n = f"CAST({tokens} AS FLOAT)"
    return f"({K1 + 1} / (1 + {K1} * ({1 - B} + {B} * {n} / {AVERAGE_TOKENS})))"


def ranked_hits_sql() -> str:
    """What follows a backend's ``matches`` CTE (id, session_id, kind, relevance) in both
    databases' statements: the kind weights, the session densities (each session's matches
    counted once, by grouping, and joined back: cheaper than a window over the matches
    sorted by session), the ``:limit`` best, and their moments' rows (``session_id,
    start_s, end_s, kind, text, words, score``)."""
    return f"""per_session AS (
    SELECT session_id, count(*) AS n FROM matches GROUP BY session_id
),
top AS (
    SELECT m.id, m.relevance * {weight_sql("m.kind")} * {density_sql("s.n")} AS score
    FROM matches m JOIN per_session s ON s.session_id = m.session_id
    ORDER BY score DESC, m.id LIMIT :limit
)
SELECT m.session_id, m.start_s, m.end_s, m.kind, m.text, m.words, top.score
FROM top JOIN search_moments m ON m.id = top.id
ORDER BY top.score DESC, m.session_id, m.start_s
"""
