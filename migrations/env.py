"""Alembic environment: the database URL comes from sessionpipe's settings unless given."""

from __future__ import annotations

from alembic import context
from sqlalchemy import pool

from shared.db import make_engine
from shared.models import Base, described_by_models
from shared.settings import get_settings

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or get_settings().database_url


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        include_object=described_by_models,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = _url()
    engine = make_engine(url)
    if not url.startswith("sqlite"):
        engine = engine.execution_options()  # keep pool defaults for servers
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=url.startswith("sqlite"),
            include_object=described_by_models,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
    _ = pool  # NullPool not needed: the engine is disposed right after


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
