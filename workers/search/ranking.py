"""How hits are ordered, the same on both databases.

A moment's score is the backend's relevance of its text (PostgreSQL ``ts_rank_cd`` with
length normalisation 1, SQLite FTS5 ``bm25``, negated so more is better), times its
kind's weight (:data:`KIND_WEIGHTS`: a chapter's title or keywords name what a stretch is
about; the summary spans the whole session, so it says least about *when*), times its
session's *density*: ``1 + DENSITY_GAIN * n / (n + DENSITY_HALF)`` for the ``n`` moments of
the session that matched, so of two sessions that both mention the words, the one where
they come up again and again ranks first (the factor grows from 1 towards
``1 + DENSITY_GAIN``, half way at ``DENSITY_HALF`` matches). Scores compare hits of one
query on one database; they are not comparable between the two.

Words common enough to match a large part of the index would make every query rank all of
them twice over: the kind weights and the densities are worked out for the
``CANDIDATES`` moments of best relevance only (both databases pick those from their index
and their relevance alone: ``bm25`` in SQLite, ``ts_rank_cd`` in PostgreSQL), so ``n``
counts a session's moments among those. A query narrowed to a session or a time
(``--session``, ``--since``) ranks all its matches: it has to look at them anyway.
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


def weight_sql(column: str) -> str:
    """The kind weight as a SQL CASE over ``column`` (constants only, nothing from a user)."""
    cases = " ".join(f"WHEN '{kind}' THEN {weight}" for kind, weight in KIND_WEIGHTS.items())
    return f"(CASE {column} {cases} ELSE {DEFAULT_WEIGHT} END)"


def density_sql(count: str) -> str:
    """The session density factor as SQL over a match count ``count`` (a column name)."""
    n = f"CAST({count} AS FLOAT)"
    return f"(1 + {DENSITY_GAIN} * {n} / ({n} + {DENSITY_HALF}))"
