"""Engine and session factory; SQLite gets WAL and a busy timeout so threads can share it.

Writes go through :func:`session_scope` (one transaction). A read of one statement may use
:func:`read_scope` instead: autocommit, so it costs no BEGIN and COMMIT round trips (the
status API's reads, bench/RESULTS.md); each statement sees its own snapshot, so what must
agree is read in one statement.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000
#: How much of an SQLite database file a connection reads through a memory map instead of
#: a system call and a copy per page (the default page cache is 2 MB: searching 1,000
#: sessions, a third of a query's time was reading pages; bench/RESULTS.md).
SQLITE_MMAP_BYTES = 1 << 30


def make_engine(url: str, *, pre_ping: bool = True, autocommit: bool = False) -> Engine:
    """An engine for ``url``; ``pre_ping`` (PostgreSQL) tests a pooled connection with a
    round trip before handing it out, ``autocommit`` makes every connection autocommit."""
    options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            **options,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA mmap_size={SQLITE_MMAP_BYTES}")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=pre_ping, **options)


_ENGINES: dict[str, Engine] = {}
_READ_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()


def engine_for(url: str) -> Engine:
    """The process's one engine (and connection pool) for ``url``."""
    with _ENGINES_LOCK:
        engine = _ENGINES.get(url)
        if engine is None:
            engine = _ENGINES[url] = make_engine(url)
        return engine


def read_engine_for(url: str) -> Engine:
    """The process's engine for reads of one statement that are retried once when their
    connection turns out to be dead (``workers.search``): a pool of its own whose
    connections are autocommit from the start and are not pinged before use (on
    PostgreSQL, the ping is a round trip, and setting autocommit at each checkout and
    unsetting it at each return costs as much again: together a tenth of a search)."""
    with _ENGINES_LOCK:
        engine = _READ_ENGINES.get(url)
        if engine is None:
            engine = _READ_ENGINES[url] = make_engine(url, pre_ping=False, autocommit=True)
        return engine


def dispose_engines(url: str) -> None:
    """Close the pooled connections of this process's engines for ``url`` (before its
    database is dropped)."""
    with _ENGINES_LOCK:
        engines = [e for e in (_ENGINES.get(url), _READ_ENGINES.get(url)) if e is not None]
    for engine in engines:
        engine.dispose()


def _forget_parent_connections() -> None:
    """In a forked child: drop the pooled connections inherited from the parent, without
    closing them (they are the parent's sockets, still in use there).

    A Celery worker's main process sweeps the database (workers.dispatch) and then forks a
    new pool process when one dies; sharing a connection made both ends fail ("server
    closed the connection unexpectedly", "connection in transaction status INTRANS").
    """
    global _ENGINES_LOCK
    _ENGINES_LOCK = threading.Lock()  # the parent may have held it while forking
    for engine in (*_ENGINES.values(), *_READ_ENGINES.values()):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_parent_connections)


def session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(engine_for(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A transaction: commit on success, roll back on error."""
    session = session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@contextmanager
def read_scope(url: str) -> Iterator[Session]:
    """A session whose statements each run on their own, in autocommit: for reads only."""
    with engine_for(url).connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        session = Session(bind=conn, expire_on_commit=False)
        try:
            yield session
        finally:
            session.close()
