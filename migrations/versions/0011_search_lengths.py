"""Search: the moment's length in PostgreSQL's ``search_index`` (both databases now rank by
it alike), and on SQLite the lexicon that a typed prefix is expanded from
(``workers.search``).

Measured over 1,000 sessions of 30 minutes (bench/bench_search.py, bench/RESULTS.md), what
was left of a two-word query's tail (500-800 matching moments) was, on PostgreSQL,
``ts_rank`` over each match's ``tsvector`` (some 5 microseconds a match with a prefix
expanded to a few words), and on SQLite FTS5's partial match of the prefix (``"migr"*``
merges the rows of every word it starts before the words are intersected; whole words are
intersected a third faster):

- **PostgreSQL**: ``search_index`` gains ``tokens``, the moment's number of tokens (as on
  SQLite since 0010), and ranking is the same function of it on both databases
  (``workers.search.ranking.length_sql``) instead of ``ts_rank``. The table is rebuilt in
  ``id`` order with the column (an UPDATE of every row would leave the heap twice its size,
  and its pages are what a query reads), its GIN index made again; the trigger functions of
  0010 now fill the column.
- **SQLite**: ``search_lexemes``, every word ever indexed, as PostgreSQL has had since 0010
  (and for the same use: ``workers.search.sqlite`` expands a prefix to at most
  ``MAX_EXPANSIONS`` whole words, a partial match past that). Kept by triggers on insert
  and update of ``search_moments`` (``terms`` is tokens of letters and digits separated by
  single spaces, so it is read as a JSON array of strings by ``json_each``), never shrunk:
  a word of a deleted moment expands a prefix to a word that matches nothing, which changes
  no result. Filled here from the FTS5 index's own vocabulary.

Neither object is in the models (``shared.models.described_by_models``).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TABLE = "search_index"
LEXEMES = "search_lexemes"
OLD = "search_index_0010"

#: A moment's number of tokens: ``terms`` is its tokens joined by single spaces.
TOKENS = "CASE WHEN {t} = '' THEN 0 ELSE length({t}) - length(replace({t}, ' ', '')) + 1 END"


def _postgres_functions(with_tokens: bool) -> list[str]:
    """The insert and update trigger functions of 0010, filling ``tokens`` when asked."""
    columns = "id, session_id, kind, tokens, tsv" if with_tokens else "id, session_id, kind, tsv"
    values = (
        f"id, session_id, kind, {TOKENS.format(t='terms')}, to_tsvector('simple'::regconfig, terms)"
        if with_tokens
        else "id, session_id, kind, to_tsvector('simple'::regconfig, terms)"
    )
    added = f"""WITH added AS (
            INSERT INTO {TABLE} ({columns})
            SELECT {values}
            FROM new_moments
            RETURNING tsv
        )
        INSERT INTO {LEXEMES} (lexeme)
        SELECT DISTINCT unnest(tsvector_to_array(tsv)) COLLATE "C" FROM added ORDER BY 1
        ON CONFLICT DO NOTHING;"""
    return [
        f"""CREATE OR REPLACE FUNCTION {TABLE}_insert() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        {added}
        RETURN NULL;
    END $$""",
        f"""CREATE OR REPLACE FUNCTION {TABLE}_update() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM {TABLE} WHERE id IN (SELECT id FROM old_moments);
        {added}
        RETURN NULL;
    END $$""",
    ]


def _postgres_rebuild(with_tokens: bool) -> list[str]:
    """``search_index`` made again, in ``id`` order, with or without ``tokens``."""
    tokens_column = "tokens integer NOT NULL," if with_tokens else ""
    columns = "id, session_id, kind, tokens, tsv" if with_tokens else "id, session_id, kind, tsv"
    source = (
        f"SELECT s.id, s.session_id, s.kind, {TOKENS.format(t='m.terms')}, s.tsv "
        f"FROM {OLD} s JOIN search_moments m ON m.id = s.id ORDER BY s.id"
        if with_tokens
        else f"SELECT id, session_id, kind, tsv FROM {OLD} ORDER BY id"
    )
    return [
        f"ALTER TABLE {TABLE} RENAME TO {OLD}",
        f"ALTER TABLE {OLD} RENAME CONSTRAINT pk_{TABLE} TO pk_{OLD}",
        f"ALTER TABLE {OLD} RENAME CONSTRAINT fk_{TABLE}_id_search_moments "
        f"TO fk_{OLD}_id_search_moments",
        f"DROP INDEX ix_{TABLE}_tsv",
        f"""CREATE TABLE {TABLE} (
        id integer NOT NULL,
        session_id varchar(128) NOT NULL,
        kind varchar(16) NOT NULL,
        {tokens_column}
        tsv tsvector NOT NULL,
        CONSTRAINT pk_{TABLE} PRIMARY KEY (id),
        CONSTRAINT fk_{TABLE}_id_search_moments FOREIGN KEY (id)
            REFERENCES search_moments (id) ON DELETE CASCADE
    )""",
        f"ALTER TABLE {TABLE} ALTER COLUMN tsv SET STORAGE EXTERNAL",  # as in 0010
        f"INSERT INTO {TABLE} ({columns}) {source}",
        f"DROP TABLE {OLD}",
        f"CREATE INDEX ix_{TABLE}_tsv ON {TABLE} USING gin (tsv)",
        f"ANALYZE {TABLE}",
    ]


def _sqlite_lexemes_insert(row: str) -> str:
    return (
        f"INSERT OR IGNORE INTO {LEXEMES} (lexeme) SELECT value FROM "
        f"json_each('[\"' || replace({row}.terms, ' ', '\",\"') || '\"]') "
        f"WHERE {row}.terms <> '';"
    )


VOCABULARY = "search_vocabulary_0011"
SQLITE_UP = [
    f"""CREATE TABLE {LEXEMES} (
        lexeme TEXT NOT NULL,
        CONSTRAINT pk_{LEXEMES} PRIMARY KEY (lexeme)
    ) WITHOUT ROWID""",
    f"CREATE TRIGGER {LEXEMES}_insert AFTER INSERT ON search_moments BEGIN "
    f"{_sqlite_lexemes_insert('new')} END",
    f"CREATE TRIGGER {LEXEMES}_update AFTER UPDATE ON search_moments BEGIN "
    f"{_sqlite_lexemes_insert('new')} END",
    f"CREATE VIRTUAL TABLE temp.{VOCABULARY} USING fts5vocab(main, search_moments_fts, row)",
    f"INSERT INTO {LEXEMES} (lexeme) SELECT term FROM temp.{VOCABULARY} ORDER BY term",
    f"DROP TABLE temp.{VOCABULARY}",
]
SQLITE_DOWN = [
    f"DROP TRIGGER {LEXEMES}_update",
    f"DROP TRIGGER {LEXEMES}_insert",
    f"DROP TABLE {LEXEMES}",
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in [*_postgres_rebuild(True), *_postgres_functions(True)]:
            op.execute(statement)
    else:
        for statement in SQLITE_UP:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in [*_postgres_functions(False), *_postgres_rebuild(False)]:
            op.execute(statement)
    else:
        for statement in SQLITE_DOWN:
            op.execute(statement)
