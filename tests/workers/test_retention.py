"""Originals are deleted only after the compressed copy exists and the retention passed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from shared import models
from shared.db import session_scope
from shared.storage import Storage
from workers.retention import RETENTION_MARKER, apply_retention

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def _session(
    url: str, storage: Storage, sid: str, *, finalized: datetime, compressed: bool
) -> Path:
    with session_scope(url) as db:
        db.add(models.Session(id=sid, name=sid, status="completed", priority="normal"))
        db.flush()
        db.add(
            models.Job(
                session_id=sid,
                stage="finalize",
                status="succeeded",
                attempts=1,
                progress=1.0,
                finished_at=finalized,
            )
        )
        db.add(
            models.Job(
                session_id=sid,
                stage="compress",
                status="succeeded" if compressed else "failed",
                attempts=1,
                progress=1.0,
                finished_at=finalized,
                output_key=storage.derived_key(sid, "c.mp4") if compressed else None,
            )
        )
    segment = storage.output_path(storage.segment_key(sid, "screen-0000.mp4"))
    segment.write_bytes(b"x" * 100)
    return segment


def test_retention_deletes_only_expired_compressed_sessions(
    tmp_path: Path, sqlite_url: str
) -> None:
    storage = Storage(tmp_path / "storage")
    old = _session(sqlite_url, storage, "old", finalized=NOW - timedelta(days=10), compressed=True)
    recent = _session(
        sqlite_url, storage, "recent", finalized=NOW - timedelta(days=1), compressed=True
    )
    uncompressed = _session(
        sqlite_url, storage, "plain", finalized=NOW - timedelta(days=10), compressed=False
    )

    dry = apply_retention(sqlite_url, storage, keep_days=7, now=NOW, dry_run=True)
    assert [(a.session_id, a.deleted_files, a.deleted_bytes) for a in dry] == [("old", 1, 100)]
    assert old.exists()

    done = apply_retention(sqlite_url, storage, keep_days=7, now=NOW)
    assert [a.session_id for a in done] == ["old"]
    assert not old.exists() and recent.exists() and uncompressed.exists()
    assert storage.exists(storage.derived_key("old", RETENTION_MARKER))
    assert apply_retention(sqlite_url, storage, keep_days=7, now=NOW) == []


def test_retention_keeps_the_search_index(tmp_path: Path, sqlite_url: str) -> None:
    """Only originals go: the session's moments (times in the playable MP4, which stays)
    are still found."""
    from workers import search
    from workers.search.moments import Moment

    storage = Storage(tmp_path / "storage")
    old = _session(sqlite_url, storage, "old", finalized=NOW - timedelta(days=10), compressed=True)
    with session_scope(sqlite_url) as db:
        search.replace(db, "old", [Moment("spoken", 3.0, 6.0, "the rollback plan")])
    assert [a.session_id for a in apply_retention(sqlite_url, storage, keep_days=7, now=NOW)] == [
        "old"
    ]
    assert not old.exists()
    hits = search.search(sqlite_url, search.parse_query("rollback plan"))
    assert [(h.session_id, h.start) for h in hits] == [("old", 3.0)]
