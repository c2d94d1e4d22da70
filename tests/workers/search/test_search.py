"""Search on both databases (SQLite FTS5, and a PostgreSQL database of this module's own):
words found where they were said and shown, a word only on screen found through the screen
text, the dense session first, prefixes and phrases, hostile queries harmless, the index
stage idempotent, and a deleted session's moments gone from the index."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, text, update

from shared import models
from shared.clock import utcnow
from shared.db import session_scope
from shared.migrate import upgrade
from shared.options import ENRICH_STAGES, SessionOptions
from shared.settings import Settings
from shared.storage import Storage
from tests.support.services import create_database, drop_database
from tests.workers.search import lecture_text
from tests.workers.search.lecture_text import DURATION_S, SAID, SESSION, SHOWN
from workers import search
from workers.search import Hit, QueryError, parse_query
from workers.search.highlight import HIGHLIGHT_END, HIGHLIGHT_START
from workers.search.moments import Moment
from workers.stages.context import SessionSnapshot, StageContext
from workers.stages.index import build_index

#: How close to the known time a hit must start (seconds).
TIME_TOLERANCE_S = 1.0


@pytest.fixture(scope="module")
def module_pg() -> Iterator[str]:
    url = create_database()
    upgrade(url)
    yield url
    drop_database(url)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def database(request: pytest.FixtureRequest) -> str:
    """An empty database of either kind, migrated."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    url = str(request.getfixturevalue("module_pg"))
    with session_scope(url) as db:
        db.execute(delete(models.Session))  # its moments go with it (ON DELETE CASCADE)
    return url


def _session(url: str, session_id: str) -> None:
    with session_scope(url) as db:
        db.add(models.Session(id=session_id, name="", status="completed", priority="normal"))


def _index(
    url: str, tmp_path: Path, session_id: str, documents: dict[str, Any], *, enrich: bool = True
) -> int:
    """What the runner does with the index stage: its work, then its moments stored."""
    asked = SessionOptions(enrich=ENRICH_STAGES if enrich else ())
    ctx = StageContext(
        snapshot=SessionSnapshot(id=session_id, started_at=None, segments=(), options=asked),
        storage=Storage(tmp_path / "storage"),
        settings=Settings(home=tmp_path),
        progress=lambda _fraction: None,
        results={"merge": {"duration": DURATION_S}},
        documents=documents,
    )
    out = build_index(ctx)
    assert out.moments is not None
    with session_scope(url) as db:
        return search.replace(db, session_id, out.moments)


@pytest.fixture
def lecture(database: str, tmp_path: Path) -> str:
    _session(database, SESSION)
    _index(database, tmp_path, SESSION, lecture_text.documents())
    return database


def _find(url: str, query: str, **filters: Any) -> list[Hit]:
    return search.search(url, parse_query(query), **filters)


def _near(hits: list[Hit], kind: str, at: float) -> bool:
    return any(h.kind == kind and abs(h.start - at) <= TIME_TOLERANCE_S for h in hits)


def test_known_words_are_found_where_they_were_said_and_shown(lecture: str) -> None:
    for word, at in SAID.items():
        hits = _find(lecture, word)
        assert _near(hits, "spoken", at), (word, hits)
        spoken = next(h for h in hits if h.kind == "spoken")
        assert f"{HIGHLIGHT_START}" in spoken.text and HIGHLIGHT_END in spoken.text
    for word, at in SHOWN.items():
        assert _near(_find(lecture, word), "screen", at), word
    titles = _find(lecture, "celery workers")
    assert titles[0].kind == "chapter" and titles[0].start == 12.0  # a title ranks first
    assert all(h.session_id == SESSION for h in titles)
    assert {h.kind for h in _find(lecture, "migrations")} >= {"spoken", "screen", "keyword"}


def test_a_word_misheard_by_speech_recognition_is_found_on_screen(lecture: str) -> None:
    hits = _find(lecture, "kubernetes")
    assert [(h.kind, h.start, h.end) for h in hits] == [("screen", 12.0, 24.0)]
    assert f"{HIGHLIGHT_START}Kubernetes{HIGHLIGHT_END} cluster" in hits[0].text
    # a table name shown in the scrolled editor, only while it was on screen
    [table] = _find(lecture, "user_accounts")
    assert (table.kind, table.start, table.end) == ("screen", 8.0, 12.0)


def test_prefixes_and_phrases(lecture: str) -> None:
    assert _near(_find(lecture, "migr"), "spoken", SAID["migrations"])  # the last word
    assert _find(lecture, "migr ") == []  # a whole word once followed by a space
    assert _near(_find(lecture, "revis* hand"), "spoken", SAID["revision"])
    [phrase] = [h for h in _find(lecture, '"every revision"') if h.kind == "spoken"]
    assert abs(phrase.start - SAID["revision"] + 1.0) <= TIME_TOLERANCE_S  # at "Every"
    assert [h for h in _find(lecture, '"revision every"') if h.kind == "spoken"] == []
    assert _find(lecture, "migrations kubernetes") == []  # never in one moment


def test_the_session_where_the_words_are_dense_comes_first(database: str, tmp_path: Path) -> None:
    said = "we talked about the rollback plan again"
    dense = {"transcript": {"segments": [
        {"start": 10.0 * k, "end": 10.0 * k + 5.0, "text": f"Step {k}: {said}."}
        for k in range(8)
    ]}}  # fmt: skip
    sparse = {"transcript": {"segments": [
        {"start": 0.0, "end": 5.0, "text": "A rollback plan."},
        *({"start": 10.0 * k, "end": 10.0 * k + 5.0, "text": f"Unrelated point {k}."}
          for k in range(1, 8)),
    ]}}  # fmt: skip
    for session_id, documents in (("sparse", sparse), ("dense", dense)):
        _session(database, session_id)
        _index(database, tmp_path, session_id, documents)
    hits = _find(database, "rollback plan", limit=3)
    assert [h.session_id for h in hits] == ["dense"] * 3
    assert [h.session_id for h in _find(database, "rollback plan", session_id="sparse")] == [
        "sparse"
    ]
    assert len(_find(database, "rollback plan", limit=200)) == 9
    later = utcnow() + timedelta(hours=1)
    assert _find(database, "rollback plan", since=later) == []
    with session_scope(database) as db:
        db.execute(update(models.Session).where(models.Session.id == "dense")
                   .values(created_at=utcnow() + timedelta(hours=2)))  # fmt: skip
    assert {h.session_id for h in _find(database, "rollback", since=later)} == {"dense"}


@pytest.mark.parametrize(
    "hostile",
    [
        "a' | b:* & !c", "terms: x", "NEAR(rollback plan, 2)", "x\x00y", "\x00",
        "'; DROP TABLE search_moments; --", '"', "***", "rollback OR NOT plan ^x",
        "migrations -kubernetes", "a" * 120, "x" * 5000, "数据库 ünïcödé", "tsv @@ 'x'",
        " ".join(["w"] * 40),
    ],
)  # fmt: skip
def test_hostile_queries_are_clear_errors_or_searches(lecture: str, hostile: str) -> None:
    try:
        query = parse_query(hostile)
    except QueryError as exc:
        assert "nothing to search for" in str(exc) or "at most" in str(exc)
        return
    hits = search.search(lecture, query)  # never a database error
    assert all(h.session_id == SESSION for h in hits)
    with session_scope(lecture) as db:  # and nothing was dropped
        assert db.execute(select(models.SearchMoment.id)).first() is not None


def _rows(url: str) -> list[tuple[Any, ...]]:
    with session_scope(url) as db:
        rows = db.execute(
            select(models.SearchMoment).order_by(models.SearchMoment.start_s,
                                                 models.SearchMoment.kind,
                                                 models.SearchMoment.text)
        ).scalars()  # fmt: skip
        return [(m.session_id, m.kind, m.start_s, m.end_s, m.text, m.terms, m.words)
                for m in rows]  # fmt: skip


def test_indexing_again_leaves_the_same_rows(lecture: str, tmp_path: Path) -> None:
    first = _rows(lecture)
    assert len(first) == _index(lecture, tmp_path, SESSION, lecture_text.documents())
    assert _rows(lecture) == first
    assert [h.kind for h in _find(lecture, "kubernetes")] == ["screen"]  # not twice
    # a re-run without the documents (enrichment gone) empties the session's index, and so
    # does one of a session asking for no enrichment
    assert _index(lecture, tmp_path, SESSION, {}) == 0
    assert _rows(lecture) == [] and _find(lecture, "kubernetes") == []
    _index(lecture, tmp_path, SESSION, lecture_text.documents())
    assert _index(lecture, tmp_path, SESSION, lecture_text.documents(), enrich=False) == 0
    assert _rows(lecture) == []


def test_a_deleted_session_leaves_nothing_in_the_index(lecture: str) -> None:
    _session(lecture, "other")
    with session_scope(lecture) as db:
        search.replace(db, "other", [Moment("screen", 0.0, 1.0, "Kubernetes dashboard")])
    with session_scope(lecture) as db:
        db.execute(delete(models.Session).where(models.Session.id == SESSION))
    assert [h.session_id for h in _find(lecture, "kubernetes")] == ["other"]
    assert {row[0] for row in _rows(lecture)} == {"other"}
    if lecture.startswith("sqlite"):  # the FTS5 index followed the cascade
        with session_scope(lecture) as db:
            db.execute(text("INSERT INTO search_moments_fts(search_moments_fts) "
                            "VALUES ('integrity-check')"))  # fmt: skip
            fts = db.execute(text("SELECT count(*) FROM search_moments_fts_docsize")).scalar()
            assert fts == 1


def _derived_rows_agree(url: str) -> None:
    """search_index (0010) holds one row per moment, with its session, kind and length
    (0011), and the lexicon every word indexed, whatever wrote or deleted moments."""
    with session_scope(url) as db:
        moments = set(db.execute(text("SELECT id, session_id, kind FROM search_moments")).all())
        index = set(db.execute(text("SELECT id, session_id, kind FROM search_index")).all())
        assert index == moments
        lengths = db.execute(text("SELECT m.terms, s.tokens FROM search_moments m "
                                  "JOIN search_index s ON s.id = m.id")).all()  # fmt: skip
        assert all(len(terms.split()) == tokens for terms, tokens in lengths)
        if url.startswith("sqlite"):  # 0011: the lexicon a prefix is expanded from
            words = {word for terms, _ in lengths for word in terms.split()}
            lexicon = set(db.execute(text("SELECT lexeme FROM search_lexemes")).scalars())
            assert words <= lexicon
        else:
            assert db.execute(text(
                "SELECT count(*) FROM search_moments m JOIN search_index s ON s.id = m.id "
                "WHERE s.tsv IS DISTINCT FROM to_tsvector('simple', m.terms)"
            )).scalar() == 0  # fmt: skip
            assert db.execute(text(
                "SELECT count(*) FROM (SELECT unnest(tsvector_to_array(tsv)) AS w "
                "FROM search_index) x WHERE w NOT IN (SELECT lexeme FROM search_lexemes)"
            )).scalar() == 0  # fmt: skip


def test_the_narrow_index_follows_every_write_and_delete(lecture: str, tmp_path: Path) -> None:
    _derived_rows_agree(lecture)
    assert _rows(lecture)
    _index(lecture, tmp_path, SESSION, lecture_text.documents())  # replaced
    _derived_rows_agree(lecture)
    _session(lecture, "other")
    with session_scope(lecture) as db:
        search.replace(db, "other", [Moment("screen", 0.0, 1.0, "Kubernetes dashboard")])
    with session_scope(lecture) as db:  # an update (nothing in sessionpipe does it)
        db.execute(update(models.SearchMoment).where(models.SearchMoment.session_id == "other")
                   .values(kind="chapter", text="Zeppelin", terms="zeppelin"))  # fmt: skip
    _derived_rows_agree(lecture)
    assert [(h.session_id, h.kind) for h in _find(lecture, "zeppel")] == [("other", "chapter")]
    assert all(h.session_id == SESSION for h in _find(lecture, "dashboard"))  # updated away
    with session_scope(lecture) as db:
        search.delete_session(db, SESSION)  # jobs purge
    _derived_rows_agree(lecture)
    with session_scope(lecture) as db:
        db.execute(delete(models.Session).where(models.Session.id == "other"))  # the cascade
    _derived_rows_agree(lecture)
    assert _rows(lecture) == [] and _find(lecture, "zeppel") == []


def test_a_prefix_finds_every_word_it_starts(database: str) -> None:
    """On PostgreSQL a prefix is expanded to the lexicon's words (up to MAX_EXPANSIONS, a
    partial match past that): the same moments as a partial match finds, on both."""
    from workers.search.postgres import MAX_EXPANSIONS

    _session(database, "words")
    many = " ".join(f"zebra{k:03d}" for k in range(MAX_EXPANSIONS + 5))
    moments = [
        Moment("spoken", 0.0, 4.0, "We migrate the tables."),
        Moment("spoken", 4.0, 8.0, "The migration is done, migrations are next."),
        Moment("screen", 8.0, 20.0, "MIGRATED: 12 rows. Migr-ation log."),
        Moment("spoken", 20.0, 24.0, "Mikado and mitigation are not migrations of anything."),
        Moment("screen", 24.0, 30.0, many),
        Moment("spoken", 30.0, 34.0, "zebra zebra001 crossing"),
    ]
    with session_scope(database) as db:
        search.replace(db, "words", moments)

    def starts(query: str) -> list[float]:
        return sorted(h.start for h in _find(database, query, limit=50))

    assert starts("migr") == [0.0, 4.0, 8.0, 20.0]
    assert starts("migra") == [0.0, 4.0, 8.0, 20.0]
    assert starts("migrati") == [4.0, 20.0]  # "migr ation" is two words
    assert starts("migrations") == [4.0, 20.0]
    assert starts("migrations ") == [4.0, 20.0]  # a whole word
    assert starts("migrate ") == [0.0]
    assert starts("tables migr") == [0.0]
    assert starts('"the migr"') == []  # quoted: whole words
    assert starts("the migr*") == [0.0, 4.0]
    assert starts("migrx") == []
    assert starts("zebra") == [24.0, 30.0]  # more words than are expanded
    assert starts("zebra00") == [24.0, 30.0]
    assert starts("zebra0011") == []
    assert starts("crossing zebra0") == [30.0]


def test_the_shorter_moment_with_the_words_ranks_first(database: str) -> None:
    _session(database, "lengths")
    filler = " ".join(f"filler{k}" for k in range(60))
    with session_scope(database) as db:
        search.replace(db, "lengths", [
            Moment("screen", 0.0, 10.0, f"{filler} rollback plan {filler}"),
            Moment("screen", 10.0, 20.0, "Rollback plan"),
            Moment("screen", 20.0, 30.0, f"rollback plan {filler}"),
        ])  # fmt: skip
    assert [h.start for h in _find(database, "rollback plan")] == [10.0, 20.0, 0.0]


@pytest.mark.integration
def test_a_search_survives_its_pooled_connection_dying(module_pg: str, tmp_path: Path) -> None:
    """Searches use connections that are not pinged before use (shared.db.read_engine_for):
    one the server closed is found dead by the search's statement, which runs again on a
    new connection."""
    with session_scope(module_pg) as db:
        db.execute(delete(models.Session))
    _session(module_pg, SESSION)
    _index(module_pg, tmp_path, SESSION, lecture_text.documents())
    before = _find(module_pg, "kubernetes")
    assert before
    killed = text(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    with session_scope(module_pg) as db:  # every other connection to the database
        db.execute(killed)
    assert _find(module_pg, "kubernetes") == before


@pytest.mark.integration
def test_both_databases_give_the_same_hits(sqlite_url: str, module_pg: str) -> None:
    """Both rank by the same function of the same narrow rows (workers.search.ranking,
    migration 0011): the same hits, in the same order, with the same scores."""
    with session_scope(module_pg) as db:
        db.execute(delete(models.Session))
    for url in (sqlite_url, module_pg):
        for session_id, seed in (("first", 1), ("second", 2)):
            _session(url, session_id)
            with session_scope(url) as db:
                search.replace(db, session_id, _moments(seed))
    for query in ("rollback plan", "rollback", "plan roll", '"the rollback"', "kubern"):
        on_sqlite = _find(sqlite_url, query, limit=50)
        assert on_sqlite, query
        assert _find(module_pg, query, limit=50) == on_sqlite, query


def _moments(seed: int) -> list[Moment]:
    """Moments of the words of a few sentences, of various lengths and kinds."""
    import random

    rng = random.Random(seed)
    words = ["rollback", "plan", "the", "kubernetes", "cluster", "rolled", "planning", "we"]
    kinds = ["spoken", "spoken", "screen", "chapter", "keyword", "summary"]
    return [
        Moment(rng.choice(kinds), 10.0 * k, 10.0 * k + 5.0,
               " ".join(rng.choices(words, k=rng.randint(2, 30))))
        for k in range(60)
    ]  # fmt: skip
