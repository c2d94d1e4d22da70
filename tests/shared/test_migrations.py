from __future__ import annotations

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
