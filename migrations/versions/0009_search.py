"""Search: every session's moments (``search_moments``) and the database's own full-text
index of them (``workers.search``).

A moment is what was said (a transcript segment), shown (screen text over a span), a
chapter's title, its keywords or the summary, with its span on the output timeline; its
``terms`` column is its text as the index sees it (letters and digits, case and accents
folded: ``workers.search.text``), so both databases index the very same words:

- **PostgreSQL**: ``tsv``, a ``tsvector`` column generated from ``terms`` with the
  ``simple`` configuration (no stemming, no stop words: a session may be in any language,
  and screen text is names), and a GIN index on it.
- **SQLite**: ``search_moments_fts``, an FTS5 table whose content is ``search_moments``
  (external content: the text is stored once), tokenised by ``unicode61``, kept in step by
  triggers on insert, update and delete (a row deleted by the session's ON DELETE CASCADE
  fires them too). A later migration that rebuilds ``search_moments`` in batch mode must
  create the triggers again.

Neither object is in the models (alembic's comparison leaves them out:
``shared.models.described_by_models``).

Sessions processed before this revision get their ``index`` job here, pending (where their
``summary`` job has finished, as the stage graph would have made it): the workers' sweeper
sends them (``workers.dispatch``), so upgrading indexes what is there, and an earlier
session is not left looking unfinished for want of a stage it never had. A downgrade
deletes the ``index`` jobs with the index.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

FTS = "search_moments_fts"
SQLITE_FTS = [
    f"CREATE VIRTUAL TABLE {FTS} USING fts5(terms, content='search_moments', "
    "content_rowid='id', tokenize='unicode61 remove_diacritics 0')",
    f"CREATE TRIGGER {FTS}_insert AFTER INSERT ON search_moments BEGIN "
    f"INSERT INTO {FTS}(rowid, terms) VALUES (new.id, new.terms); END",
    f"CREATE TRIGGER {FTS}_delete AFTER DELETE ON search_moments BEGIN "
    f"INSERT INTO {FTS}({FTS}, rowid, terms) VALUES ('delete', old.id, old.terms); END",
    f"CREATE TRIGGER {FTS}_update AFTER UPDATE ON search_moments BEGIN "
    f"INSERT INTO {FTS}({FTS}, rowid, terms) VALUES ('delete', old.id, old.terms); "
    f"INSERT INTO {FTS}(rowid, terms) VALUES (new.id, new.terms); END",
]
#: The index jobs of the sessions whose summary finished before this revision.
BACKFILL_JOBS = """
INSERT INTO jobs (session_id, stage, status, attempts, progress, created_at, updated_at)
SELECT s.session_id, 'index', 'pending', 0, 0.0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP
FROM jobs s
WHERE s.stage = 'summary' AND s.status IN ('succeeded', 'failed', 'cancelled')
  AND NOT EXISTS (SELECT 1 FROM jobs i WHERE i.session_id = s.session_id AND i.stage = 'index')
"""
POSTGRES_TSV = [
    "ALTER TABLE search_moments ADD COLUMN tsv tsvector "
    "GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, terms)) STORED",
    "CREATE INDEX ix_search_moments_tsv ON search_moments USING gin (tsv)",
]


def upgrade() -> None:
    op.create_table(
        "search_moments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("start_s", sa.Float(), nullable=False),
        sa.Column("end_s", sa.Float(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("terms", sa.Text(), nullable=False),
        sa.Column("words", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name=op.f("fk_search_moments_session_id_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_search_moments")),
    )
    op.create_index(
        op.f("ix_search_moments_session_id"), "search_moments", ["session_id"], unique=False
    )
    dialect = op.get_bind().dialect.name
    for statement in SQLITE_FTS if dialect == "sqlite" else POSTGRES_TSV:
        op.execute(statement)
    op.execute(BACKFILL_JOBS)


def downgrade() -> None:
    op.execute("DELETE FROM jobs WHERE stage = 'index'")
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS {FTS}_{trigger}")
        op.execute(f"DROP TABLE IF EXISTS {FTS}")
    op.drop_index(op.f("ix_search_moments_session_id"), table_name="search_moments")
    op.drop_table("search_moments")
