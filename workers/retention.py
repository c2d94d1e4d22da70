"""Retention of originals: a session's segments are deleted only once its compressed copy
exists and ``keep_originals_days`` have passed since it was finalized. Off by default.

Only originals go: the derived outputs stay (the playable MP4, the compressed copy, the
enrichment), and so does the session's search index (``workers.search``): its moments are
times in the playable MP4, which a hit still opens. The index goes with the session's rows
(``jobs purge``)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import aliased

from shared import models
from shared.clock import as_utc, utcnow
from shared.db import session_scope
from shared.models import JobStatus
from shared.storage import SEGMENTS_DIR, SESSIONS_DIR, Storage

RETENTION_MARKER = "retention.json"


@dataclass(frozen=True)
class RetentionAction:
    session_id: str
    deleted_files: int
    deleted_bytes: int


def expired_sessions(database_url: str, *, keep_days: float, now: datetime) -> list[str]:
    """Completed sessions with a compressed copy, finalized more than ``keep_days`` ago."""
    finalize = aliased(models.Job)
    compress = aliased(models.Job)
    cutoff = now - timedelta(days=keep_days)
    with session_scope(database_url) as db:
        rows = db.execute(
            select(models.Session.id, finalize.finished_at)
            .join(
                finalize,
                (finalize.session_id == models.Session.id) & (finalize.stage == "finalize"),
            )
            .join(
                compress,
                (compress.session_id == models.Session.id) & (compress.stage == "compress"),
            )
            .where(
                finalize.status == JobStatus.SUCCEEDED.value,
                compress.status == JobStatus.SUCCEEDED.value,
                compress.output_key.is_not(None),
            )
        ).all()
    return [sid for sid, finished in rows if finished is not None and as_utc(finished) <= cutoff]


def apply_retention(
    database_url: str,
    storage: Storage,
    *,
    keep_days: float,
    now: datetime | None = None,
    dry_run: bool = False,
) -> list[RetentionAction]:
    """Delete expired sessions' segments; a marker in ``derived/`` records what went."""
    moment = now or utcnow()
    actions = []
    for session_id in expired_sessions(database_url, keep_days=keep_days, now=moment):
        marker_key = storage.derived_key(session_id, RETENTION_MARKER)
        if storage.exists(marker_key):
            continue
        folder = storage.path(f"{SESSIONS_DIR}/{session_id}/{SEGMENTS_DIR}")
        files = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
        size = sum(p.stat().st_size for p in files)
        actions.append(RetentionAction(session_id, len(files), size))
        if dry_run:
            continue
        record = {
            "deleted_at": moment.isoformat(),
            "segments_deleted": len(files),
            "bytes": size,
            "keep_originals_days": keep_days,
        }
        with storage.atomic_path(marker_key) as tmp:
            tmp.write_text(json.dumps(record, indent=2), encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)
    return actions
