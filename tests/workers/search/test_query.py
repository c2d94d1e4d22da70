"""Queries from a person's text: words, phrases and prefixes, hostile input refused or made
harmless, and the backends' syntax written from tokens only (no database here)."""

from __future__ import annotations

import re

import pytest

from workers.search import postgres, sqlite
from workers.search.highlight import HIGHLIGHT_END, HIGHLIGHT_START, snippet, spoken_start
from workers.search.query import MAX_QUERY_CHARS, MAX_TERMS, QueryError, Term, parse_query
from workers.search.text import _folded_spans, spans, terms, tokens

#: What may appear in a backend query besides tokens: quotes we put, and our operators.
PG_SYNTAX = re.compile(r"^(?:'[^\W_]+'(?::\*)?|[()&<>-]| )+$")
FTS5_SYNTAX = re.compile(r'^(?:"[^\W_]+(?: [^\W_]+)*"\*?| AND )+$')


def test_the_tokeniser_folds_case_accents_and_separators() -> None:
    assert tokens("Café user_accounts, v1.2-rc NAÏVE") == [
        "cafe", "user", "accounts", "v1", "2", "rc", "naive"
    ]  # fmt: skip
    assert terms("example.com /usr/bin") == "example com usr bin"
    assert tokens("«»\x00\t  ") == []


def test_words_phrases_and_prefixes() -> None:
    query = parse_query('"Database migration" review migr')
    assert query.terms == (
        Term(("database", "migration")), Term(("review",)), Term(("migr",), prefix=True)
    )  # fmt: skip
    assert parse_query("migr* plan ").terms == (Term(("migr",), True), Term(("plan",)))
    assert parse_query("user_accounts").terms == (Term(("user", "accounts"), True),)
    assert parse_query('"unclosed phrase').terms == (Term(("unclosed", "phrase")),)
    assert parse_query("a* ab").terms == (Term(("a",)), Term(("ab",)))  # too short: words
    assert postgres.tsquery(parse_query('"data migration" rev')) == (
        "('data' <-> 'migration') & 'rev':*"
    )
    assert sqlite.match(parse_query('"data migration" rev')) == '"data migration" AND "rev"*'


@pytest.mark.parametrize(
    "hostile",
    [
        "a' | b:* & !c", "NEAR(x y, 2) OR z NOT w", "col:word ^start", "x\x00y\x00",
        "'; DROP TABLE search_moments; --", '"""', "(((", "***", "tsquery <-> <2> !!",
        "\\x00 \\' \\\"", "a" * 300, "ünïcödé 数据库 ",
    ],
)  # fmt: skip
def test_hostile_text_only_ever_becomes_quoted_tokens(hostile: str) -> None:
    try:
        query = parse_query(hostile)
    except QueryError as exc:
        assert "nothing to search for" in str(exc)
        return
    assert PG_SYNTAX.match(postgres.tsquery(query)), postgres.tsquery(query)
    assert FTS5_SYNTAX.match(sqlite.match(query)), sqlite.match(query)
    assert all(re.fullmatch(r"[^\W_]+", p) for p in postgres.prefixes(query))


def test_the_prefixes_to_expand_are_the_last_tokens_of_prefix_terms() -> None:
    query = parse_query("data_migr* review migr")  # a phrase ending in the prefix, and it
    assert postgres.tsquery(query) == "('data' <-> 'migr':*) & 'review' & 'migr':*"
    assert postgres.prefixes(query) == ["migr"]
    assert postgres.prefixes(parse_query("rev* data migr")) == ["rev", "migr"]
    assert postgres.prefixes(parse_query('"data migr"')) == []


@pytest.mark.parametrize(
    "text",
    [
        "Kubernetes DASHBOARD: user_accounts v1.2-rc!", "", "   ", "x" * 101 + " ok " + "y" * 100,
        "CamelCaseWord __init__ 3.14159 a-b-c\td", "«quoted» and — dashes",
    ],
)  # fmt: skip
def test_spans_of_ascii_text_are_those_of_folding_each_token(text: str) -> None:
    assert list(spans(text)) == list(_folded_spans(text))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "nothing to search for"),
        ("  \x00 ?! -- ", "nothing to search for"),
        ("x" * (MAX_QUERY_CHARS + 1), f"at most {MAX_QUERY_CHARS}"),
        (
            " ".join(f"w{k}" for k in range(MAX_TERMS + 1)),
            f"{MAX_TERMS + 1} terms; at most {MAX_TERMS}",
        ),
    ],
)
def test_unsearchable_queries_are_clear_errors(text: str, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        parse_query(text)


def test_snippets_mark_the_matched_words_and_cut_long_text() -> None:
    query = parse_query('"alembic revisions" migr')
    assert snippet("Review the Alembic revisions of every migration.", query) == (
        f"Review the {HIGHLIGHT_START}Alembic{HIGHLIGHT_END} "
        f"{HIGHLIGHT_START}revisions{HIGHLIGHT_END} of every "
        f"{HIGHLIGHT_START}migration{HIGHLIGHT_END}."
    )
    long = " ".join(f"word{k}" for k in range(200)) + " migrations " + "tail " * 50
    cut = snippet(long, parse_query("migrations"))
    assert cut.startswith("…") and cut.endswith("…")
    assert f"{HIGHLIGHT_START}migrations{HIGHLIGHT_END}" in cut and len(cut.split()) <= 34
    # the marks never come from the text itself
    marked = f"{HIGHLIGHT_START}word{HIGHLIGHT_END}"
    assert snippet("a «quoted» word", parse_query("word")) == f'a "quoted" {marked}'


def test_a_spoken_hit_starts_at_its_word() -> None:
    words = [[10.0, "Today"], [10.4, "we"], [10.6, "review"], [11.0, "database"],
             [11.5, "migrations."]]  # fmt: skip
    assert spoken_start(words, parse_query('"database migrations"'), 10.0) == 11.0
    assert spoken_start(words, parse_query("migra"), 10.0) == 11.5
    assert spoken_start(words, parse_query("absent"), 10.0) == 10.0
    assert spoken_start(None, parse_query("review"), 10.0) == 10.0
