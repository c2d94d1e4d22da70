"""bench/bench_search.py at a tiny size on SQLite: sessions made from text are indexed as
the index stage does it, queried, and the figures come out in the shape the report uses."""

from __future__ import annotations

import random

from bench.bench_search import SESSION_S, queries, run_backend
from synthetic.search_corpus import session_documents
from workers.search import build_moments

SESSIONS = 2
QUERIES = 10


def test_a_tiny_run_indexes_every_moment_and_times_every_query() -> None:
    result = run_backend("sqlite", SESSIONS, QUERIES)
    expected = 0
    for k in range(SESSIONS):
        docs = session_documents(13 * 100_000 + k, SESSION_S)
        expected += len(build_moments(transcript=docs["transcript"], chapters=docs["chapters"],
                                      summary=docs["summary"], duration=SESSION_S))  # fmt: skip
    assert result.moments == expected > SESSIONS * 450  # a segment every 4 s, and more
    assert result.index is not None and result.index.n == SESSIONS
    assert result.queries.n == QUERIES
    assert 0 < result.queries.p50_ms <= result.queries.p99_ms <= result.queries.max_ms
    assert result.mean_hits_common > 0  # the most common words are everywhere


def test_queries_are_two_distinct_words_past_the_most_common() -> None:
    from synthetic.search_corpus import vocabulary

    common = set(vocabulary()[:50])
    for text in queries(random.Random(1), 50, common=False):
        first, second = text.split()
        assert first != second and not {first, second} & common


def test_a_kept_database_is_reused_without_indexing_again() -> None:
    import uuid

    from bench.bench_search import kept_url

    name = f"search_bench_test_{uuid.uuid4().hex[:8]}"
    path = kept_url("sqlite", name).removeprefix("sqlite:///")
    try:
        first = run_backend("sqlite", 1, 5, keep=name)
        again = run_backend("sqlite", 1, 5, keep=name)
        assert first.index is not None and first.index.n == 1
        assert again.index is None and again.moments == first.moments
    finally:
        import os

        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
