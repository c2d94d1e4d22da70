"""Search: a narrow ``search_index`` table that matching and ranking read instead of the wide
``search_moments`` rows, and on PostgreSQL a lexicon (``search_lexemes``) to expand the
prefix a person is typing into whole words (``workers.search``).

Measured over 1,000 sessions of 30 minutes (bench/bench_search.py, bench/RESULTS.md), a
two-word query's tail (500-700 matching moments) was spent reading each match in its wide
row (the text, the terms, the word times) and ranking it (``ts_rank_cd``'s cover search,
FTS5's ``bm25()`` counting every row of each word), and on PostgreSQL also in the GIN
index's partial match of a prefix (``'migr':*``), which collects every entry's rows in a
bitmap before intersecting. Now, per moment, one narrow row holds what searching reads
(and ``workers.search.ranking`` ranks from it):

- ``search_index`` (``id`` = the moment's, ``session_id``, ``kind``; no index on
  ``session_id``: ``--session`` filters the full-text matches, which is what both databases
  do best, where an index would tempt them to test every moment of the session instead;
  a session's rows go by ``id``, with its moments): on PostgreSQL with the
  ``tsvector`` (``tsv``, the ``simple`` configuration over ``terms``, as in 0009) and its GIN
  index, moved here from ``search_moments`` (whose ``tsv`` column and index are dropped); on
  SQLite with the moment's number of tokens (``tokens``: FTS5 ``search_moments_fts`` still
  finds the rows; the length is what ranking needs). Kept in step with ``search_moments`` by
  triggers on insert and update (statement level with transition tables on PostgreSQL, row
  level on SQLite, as the FTS5 table's); a deleted moment takes its row with it (a foreign
  key with ON DELETE CASCADE on PostgreSQL, a delete trigger on SQLite, which fires for the
  session's cascade too).
- ``search_lexemes`` (PostgreSQL only): every word ever indexed (``C`` collation, so a
  prefix is a range of the primary key), added by the insert and update triggers, in order
  (two index jobs adding the same new words wait on each other instead of deadlocking),
  and never removed: a word of a deleted moment expands a prefix to a word that matches
  nothing, which costs a few entries in the query and changes no result. What the table
  must be is a superset of the words in ``search_index``, and the triggers make it one for
  every writer. ``search_tsquery(query, prefixes, max_words)`` makes a query's ``tsquery``
  with its prefixes expanded in the search statement itself (``workers.search.postgres``).

Both are filled here from the rows already indexed. Neither is in the models (alembic's
comparison leaves them out: ``shared.models.described_by_models``).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TABLE = "search_index"
LEXEMES = "search_lexemes"

POSTGRES_UP = [
    "DROP INDEX ix_search_moments_tsv",
    "ALTER TABLE search_moments DROP COLUMN tsv",
    f"""CREATE TABLE {TABLE} (
        id integer NOT NULL,
        session_id varchar(128) NOT NULL,
        kind varchar(16) NOT NULL,
        tsv tsvector NOT NULL,
        CONSTRAINT pk_{TABLE} PRIMARY KEY (id),
        CONSTRAINT fk_{TABLE}_id_search_moments FOREIGN KEY (id)
            REFERENCES search_moments (id) ON DELETE CASCADE
    )""",
    # a screenful's tsvector is near the 2 kB where PostgreSQL would compress it: kept
    # plain, ranking reads it without decompressing (out of line only when very long)
    f"ALTER TABLE {TABLE} ALTER COLUMN tsv SET STORAGE EXTERNAL",
    f"""CREATE TABLE {LEXEMES} (
        lexeme text COLLATE "C" NOT NULL,
        CONSTRAINT pk_{LEXEMES} PRIMARY KEY (lexeme)
    )""",
    f"""CREATE FUNCTION {TABLE}_insert() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        WITH added AS (
            INSERT INTO {TABLE} (id, session_id, kind, tsv)
            SELECT id, session_id, kind, to_tsvector('simple'::regconfig, terms)
            FROM new_moments
            RETURNING tsv
        )
        INSERT INTO {LEXEMES} (lexeme)
        SELECT DISTINCT unnest(tsvector_to_array(tsv)) COLLATE "C" FROM added ORDER BY 1
        ON CONFLICT DO NOTHING;
        RETURN NULL;
    END $$""",
    f"""CREATE FUNCTION {TABLE}_update() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM {TABLE} WHERE id IN (SELECT id FROM old_moments);
        WITH added AS (
            INSERT INTO {TABLE} (id, session_id, kind, tsv)
            SELECT id, session_id, kind, to_tsvector('simple'::regconfig, terms)
            FROM new_moments
            RETURNING tsv
        )
        INSERT INTO {LEXEMES} (lexeme)
        SELECT DISTINCT unnest(tsvector_to_array(tsv)) COLLATE "C" FROM added ORDER BY 1
        ON CONFLICT DO NOTHING;
        RETURN NULL;
    END $$""",
    # the tsquery of a query whose prefixes are written 'migr':*, each replaced by the
    # lexicon's words starting with it when there are 1 to max_words of them
    f"""CREATE FUNCTION search_tsquery(query text, prefixes text[], max_words integer)
    RETURNS tsquery LANGUAGE plpgsql STABLE AS $$
    DECLARE
        prefix text;
        words text[];
    BEGIN
        FOREACH prefix IN ARRAY prefixes LOOP
            words := ARRAY(
                SELECT lexeme FROM (
                    SELECT lexeme FROM {LEXEMES} WHERE lexeme >= prefix COLLATE "C"
                    ORDER BY lexeme LIMIT max_words + 1
                ) first_words
                WHERE starts_with(lexeme, prefix)
            );
            IF cardinality(words) BETWEEN 1 AND max_words THEN
                query := replace(
                    query,
                    quote_literal(prefix) || ':*',
                    '(' || array_to_string(ARRAY(
                        SELECT quote_literal(word) FROM unnest(words) AS word
                    ), ' | ') || ')'
                );
            END IF;
        END LOOP;
        RETURN to_tsquery('simple'::regconfig, query);
    END $$""",
    f"""CREATE TRIGGER {TABLE}_insert AFTER INSERT ON search_moments
        REFERENCING NEW TABLE AS new_moments
        FOR EACH STATEMENT EXECUTE FUNCTION {TABLE}_insert()""",
    f"""CREATE TRIGGER {TABLE}_update AFTER UPDATE ON search_moments
        REFERENCING OLD TABLE AS old_moments NEW TABLE AS new_moments
        FOR EACH STATEMENT EXECUTE FUNCTION {TABLE}_update()""",
    # the rows already indexed, in id order (a session's moments together, as written)
    f"""INSERT INTO {TABLE} (id, session_id, kind, tsv)
        SELECT id, session_id, kind, to_tsvector('simple'::regconfig, terms)
        FROM search_moments ORDER BY id""",
    f"""INSERT INTO {LEXEMES} (lexeme)
        SELECT DISTINCT unnest(tsvector_to_array(tsv)) COLLATE "C" FROM {TABLE}""",
    f"CREATE INDEX ix_{TABLE}_tsv ON {TABLE} USING gin (tsv)",
    f"ANALYZE {TABLE}",
    f"ANALYZE {LEXEMES}",
]
POSTGRES_DOWN = [
    f"DROP TRIGGER {TABLE}_update ON search_moments",
    f"DROP TRIGGER {TABLE}_insert ON search_moments",
    f"DROP FUNCTION {TABLE}_update()",
    f"DROP FUNCTION {TABLE}_insert()",
    "DROP FUNCTION search_tsquery(text, text[], integer)",
    f"DROP TABLE {LEXEMES}",
    f"DROP TABLE {TABLE}",
    "ALTER TABLE search_moments ADD COLUMN tsv tsvector "
    "GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, terms)) STORED",
    "CREATE INDEX ix_search_moments_tsv ON search_moments USING gin (tsv)",
]

#: A moment's number of tokens: ``terms`` is its tokens joined by single spaces.
SQLITE_TOKENS = (
    "CASE WHEN new.terms = '' THEN 0 "
    "ELSE length(new.terms) - length(replace(new.terms, ' ', '')) + 1 END"
)
SQLITE_INSERT = (
    f"INSERT INTO {TABLE} (id, session_id, kind, tokens) "
    f"VALUES (new.id, new.session_id, new.kind, {SQLITE_TOKENS});"
)
SQLITE_UP = [
    f"""CREATE TABLE {TABLE} (
        id INTEGER NOT NULL,
        session_id VARCHAR(128) NOT NULL,
        kind VARCHAR(16) NOT NULL,
        tokens INTEGER NOT NULL,
        CONSTRAINT pk_{TABLE} PRIMARY KEY (id)
    )""",
    f"CREATE TRIGGER {TABLE}_insert AFTER INSERT ON search_moments BEGIN {SQLITE_INSERT} END",
    f"CREATE TRIGGER {TABLE}_delete AFTER DELETE ON search_moments BEGIN "
    f"DELETE FROM {TABLE} WHERE id = old.id; END",
    f"CREATE TRIGGER {TABLE}_update AFTER UPDATE ON search_moments BEGIN "
    f"DELETE FROM {TABLE} WHERE id = old.id; {SQLITE_INSERT} END",
    f"INSERT INTO {TABLE} (id, session_id, kind, tokens) "
    f"SELECT id, session_id, kind, {SQLITE_TOKENS.replace('new.', '')} FROM search_moments",
]
SQLITE_DOWN = [
    *(f"DROP TRIGGER {TABLE}_{trigger}" for trigger in ("insert", "delete", "update")),
    f"DROP TABLE {TABLE}",
]


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for statement in POSTGRES_UP if postgres else SQLITE_UP:
        op.execute(statement)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for statement in POSTGRES_DOWN if postgres else SQLITE_DOWN:
        op.execute(statement)
