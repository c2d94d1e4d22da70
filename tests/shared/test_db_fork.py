"""A forked child never uses its parent's pooled connections.

A Celery worker's main process sweeps the database and forks a new pool process when one
dies; before ``shared.db`` dropped inherited connections in the child, parent and child
shared one socket, and both failed ("server closed the connection unexpectedly", "can't
change 'autocommit' now: connection in transaction status INTRANS").
"""

from __future__ import annotations

import multiprocessing

import pytest
from sqlalchemy import text
from sqlalchemy.pool import QueuePool

from shared.db import engine_for, session_scope

pytestmark = pytest.mark.integration

ROUNDS = 200


def _queries(url: str, rounds: int) -> int:
    done = 0
    for i in range(rounds):
        with session_scope(url) as db:
            assert db.execute(text("SELECT :i"), {"i": i}).scalar_one() == i
        done += 1
    return done


def _child(url: str, results: multiprocessing.Queue[object]) -> None:
    try:
        results.put(_queries(url, ROUNDS))
    except Exception as exc:  # reported to the parent, which fails the test with it
        results.put(repr(exc))


def test_parent_and_forked_child_query_side_by_side(pg_url: str) -> None:
    _queries(pg_url, 1)  # the parent holds a pooled connection when it forks
    pool = engine_for(pg_url).pool
    assert isinstance(pool, QueuePool) and pool.checkedin() >= 1
    context = multiprocessing.get_context("fork")
    results: multiprocessing.Queue[object] = context.Queue()
    child = context.Process(target=_child, args=(pg_url, results))
    child.start()
    parent_done = _queries(pg_url, ROUNDS)
    child_result = results.get(timeout=60)
    child.join(60)
    assert (parent_done, child_result, child.exitcode) == (ROUNDS, ROUNDS, 0)
