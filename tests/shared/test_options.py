"""Per-session options: parsed strictly, carried by session.json and session.started, stored
by ingest, and resolved against the workers' settings."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from celery import Celery
from pydantic import ValidationError

from shared import events, models
from shared.db import session_scope
from shared.options import ENRICH_STAGES, SessionOptions, parse_enrich_list, resolve
from shared.sessiondir import load_manifest
from shared.settings import Settings
from workers.ingest import ingest
from workers.snapshot import load_snapshot

STARTED = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


def test_enrich_lists_parse_and_unknown_stages_are_named() -> None:
    assert parse_enrich_list("all") == ENRICH_STAGES
    assert parse_enrich_list(" none ") == ()
    assert parse_enrich_list("") == ()
    assert parse_enrich_list("Transcript, summary,transcript") == ("transcript", "summary")
    with pytest.raises(ValueError, match="slides"):
        parse_enrich_list("transcript,slides")
    with pytest.raises(ValidationError):
        Settings(enrich="chapters,bogus")


def test_options_resolve_against_the_settings() -> None:
    defaults = {"enrich": ENRICH_STAGES, "language": "en"}
    none = resolve(SessionOptions(), llm_configured=False, **defaults)  # type: ignore[arg-type]
    assert none.enrich == set(ENRICH_STAGES) and none.language == "en" and not none.llm
    asked = resolve(
        SessionOptions(enrich=("transcript",), language="de", llm=False),
        llm_configured=True,
        **defaults,  # type: ignore[arg-type]
    )
    assert asked.runs("transcript") and not asked.runs("chapters")
    assert asked.language == "de" and not asked.llm
    assert resolve(SessionOptions(), llm_configured=True, **defaults).llm  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [{"enrich": ["slides"]}, {"language": "english"}, {"language": "EN"}, {"llm": "maybe"}],
)
def test_hostile_options_are_refused_in_session_json(tmp_path: Path, bad: dict[str, Any]) -> None:
    manifest = {"id": "s1", "started_at": STARTED.isoformat(), "segments": [], "options": bad}
    (tmp_path / "session.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="options"):
        load_manifest(tmp_path)


def test_stored_options_that_no_longer_parse_count_as_none() -> None:
    assert SessionOptions.from_json({"enrich": ["slides"]}) == SessionOptions()
    assert SessionOptions.from_json(None) == SessionOptions()


def test_options_travel_from_session_json_to_the_stages(tmp_path: Path, sqlite_url: str) -> None:
    manifest = {
        "id": "opt-1",
        "started_at": STARTED.isoformat(),
        "segments": [],
        "options": {"enrich": ["transcript", "summary"], "language": "de", "llm": False},
    }
    (tmp_path / "session.json").write_text(json.dumps(manifest))
    options = load_manifest(tmp_path).options
    event = events.session_started("opt-1", 0, name="x", started_at=STARTED, options=options)
    assert event.payload["options"] == manifest["options"]
    settings = Settings(home=tmp_path / "home", database_url=sqlite_url)
    assert ingest(cast(Celery, None), settings, event.model_dump(mode="json")) == "applied"
    with session_scope(sqlite_url) as db:
        session = db.get(models.Session, "opt-1")
        assert session is not None and session.options == manifest["options"]
        snapshot = load_snapshot(db, session)
    assert snapshot.options == options
    # without options the event carries none, and the row keeps NULL (the settings decide)
    plain = events.session_started("opt-2", 0, name="x", started_at=STARTED)
    assert "options" not in plain.payload
    ingest(cast(Celery, None), settings, plain.model_dump(mode="json"))
    with session_scope(sqlite_url) as db:
        row = db.get(models.Session, "opt-2")
        assert row is not None and row.options is None
