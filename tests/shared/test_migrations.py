from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from shared.db import make_engine
from shared.migrate import downgrade, upgrade
from shared.models import Base, described_by_models

TABLES = {"sessions", "segments", "jobs", "events", "search_moments", "alembic_version"}


def _roundtrip(url: str) -> None:
    upgrade(url)
    engine = make_engine(url)
    try:
        assert set(inspect(engine).get_table_names()) >= TABLES
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"include_object": described_by_models}
            )
            diff = compare_metadata(context, Base.metadata)
        assert diff == [], f"models and migrations disagree: {diff}"
        downgrade(url)
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade(url)
        assert set(inspect(engine).get_table_names()) >= TABLES
    finally:
        engine.dispose()


def test_migrations_roundtrip_on_sqlite(tmp_path: pytest.TempPathFactory) -> None:
    _roundtrip(f"sqlite:///{tmp_path}/m.db")


@pytest.mark.integration
def test_migrations_roundtrip_on_postgresql(pg_url: str) -> None:
    _roundtrip(pg_url)


def test_upgrading_gives_finished_sessions_their_index_job(tmp_path: Path) -> None:
    """0009: a session whose summary finished before search existed gets a pending index
    job (the sweeper sends it); one still summarising gets it from the graph as usual."""
    from sqlalchemy import text

    url = f"sqlite:///{tmp_path}/b.db"
    upgrade(url, "0008")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            for sid, summary in (("done", "succeeded"), ("failed", "failed"), ("busy", "running")):
                conn.execute(text("INSERT INTO sessions (id, name, status, priority) "
                                  "VALUES (:s, '', 'completed', 'normal')"), {"s": sid})
                conn.execute(text("INSERT INTO jobs (session_id, stage, status, attempts, "
                                  "progress) VALUES (:s, 'summary', :st, 1, 1.0)"),
                             {"s": sid, "st": summary})  # fmt: skip
        upgrade(url)
        jobs = "SELECT session_id, status, dispatched_at FROM jobs WHERE stage = 'index'"
        with engine.connect() as conn:
            rows = sorted(tuple(r) for r in conn.execute(text(jobs)))
        assert rows == [("done", "pending", None), ("failed", "pending", None)]
        downgrade(url, "0008")
        with engine.connect() as conn:
            assert list(conn.execute(text(jobs))) == []
    finally:
        engine.dispose()
