"""The compressed copy's parts: each video segment compressed on its own while its session
records, joined by the ``compress`` stage (``workers.stages.compressed``).

The rows, their transitions and the rules every kind of part shares are ``workers.parts``;
this module is what is particular to the compressed copy: where a part's file goes, when a
part serves (:func:`usable`), making one (:func:`make`, ``workers.media.compress_part``),
the part task (:func:`make_in_background`) and the stage's way to every part
(:func:`gather`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from shared import models
from shared.db import session_scope
from shared.settings import Settings
from shared.storage import Storage
from workers import parts
from workers.media import Cancelled, MediaError
from workers.media.compress import CompressPreset, compress_part


def part_key(storage: Storage, session_id: str, segment_file: str) -> str:
    """Where a segment's compressed part is stored (a derived file of the session)."""
    stem = Path(segment_file).stem
    return storage.derived_key(session_id, f"{parts.PARTS_DIR}/{stem}-compressed.mp4")


def usable(part: parts.PartState, source: parts.SegmentSource, storage: Storage) -> str | None:
    """The part's file key when it can be used for ``source`` as it is now."""
    if part.status != parts.SUCCEEDED or part.output_key is None:
        return None
    if part.source_sha256 != source.sha256:
        return None
    return part.output_key if storage.path(part.output_key).is_file() else None


def make(
    settings: Settings,
    storage: Storage,
    source: parts.SegmentSource,
    part_id: int,
    owner: str,
    *,
    preset: CompressPreset,
    progress: Callable[[float], None] | None = None,
) -> str:
    """Make a claimed part (``owner`` holds it): its output key. PartFailed on bad input
    (the part is failed with the reason); Cancelled when the claim was lost; any other error
    releases the part for the next claim and propagates."""
    key = part_key(storage, source.session_id, source.file)
    name = f"compressed part of {source.file}"
    with parts.making(settings, part_id, owner, name=name, bad_input=(MediaError,),
                failure=_part_failed, progress=progress) as maker:  # fmt: skip
        made = compress_part(
            storage.path(source.storage_key), storage.output_path(key), preset=preset,
            progress=maker.report,
        )  # fmt: skip
        maker.finish(key, {
            "frames_in": made.frames_in,
            "frames_out": made.frames_out,
            "size": made.size,
            "duration": made.duration,
        })  # fmt: skip
    return key


def _part_failed(reason: str, error: Exception) -> Exception:
    return parts.PartFailed(reason, path=error.path if isinstance(error, MediaError) else None)


def gather(
    settings: Settings,
    storage: Storage,
    sources: list[parts.SegmentSource],
    *,
    owner: str,
    preset: CompressPreset,
    heartbeat: Callable[[float], None] = lambda _: None,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[dict[str, str], int]:
    """The stage's way to every part: ({segment file: part key}, how many it made itself).

    Uses the parts that are done, makes those nobody holds, and meanwhile waits for those
    another worker makes (their claims live). ``heartbeat(fraction done)`` is called while
    it works and waits (it may raise Cancelled). PartFailed when a part of a segment's
    current content failed.
    """
    with session_scope(settings.database_url) as db:
        for source in sources:
            parts.request(db, source.session_id, source.file, source.sha256)
    keys: dict[str, str] = {}
    made_here = 0
    waiting = list(sources)
    while waiting:
        progressed = False
        for source in list(waiting):
            done = len(keys) / len(sources)
            key, made = _step(settings, storage, source, owner, preset, heartbeat, done)
            if key is not None:
                keys[source.file] = key
                made_here += made
                waiting.remove(source)
                progressed = True
        if waiting and not progressed:
            heartbeat(len(keys) / len(sources))
            sleep(parts.WAIT_POLL_S)
    return keys, made_here


def _step(
    settings: Settings,
    storage: Storage,
    source: parts.SegmentSource,
    owner: str,
    preset: CompressPreset,
    heartbeat: Callable[[float], None],
    done: float,
) -> tuple[str | None, int]:
    """One look at a part: (its key, 1 if made now) when it is ready, (None, 0) to look again."""
    part = parts.state(settings.database_url, source.session_id, source.file)
    assert part is not None  # requested by gather; rows go only with their session
    key = usable(part, source, storage)
    if key is not None:
        return key, 0
    if part.status == parts.FAILED and part.source_sha256 == source.sha256:
        raise parts.PartFailed(part.error or f"compressed part of {source.file} failed")
    if part.status == parts.SUCCEEDED:  # its file is gone, or it was made from other content
        parts.reopen(settings.database_url, part.id, part.output_key)
        return None, 0
    if part.status == parts.FAILED:  # failed on content the segment no longer has
        parts.reopen_failed(settings.database_url, part.id)
        return None, 0
    if part.live or not parts.claim(
        settings.database_url, part.id, owner, source.sha256, lease=parts.lease_of(settings)
    ):
        return None, 0
    made = make(
        settings, storage, source, part.id, owner, preset=preset,
        progress=lambda _: heartbeat(done),
    )  # fmt: skip
    return made, 1


def make_in_background(settings: Settings, session_id: str, segment_file: str, *,
                       owner: str) -> str:  # fmt: skip
    """What a part task does: make the part unless it is done, held, or the session's
    compress stage has started (it has every part then). A short outcome for the log."""
    with session_scope(settings.database_url) as db:
        stage = parts.stage_moved_on(db, session_id, "compress")
        if _session_failed(db, session_id):
            return "skipped: the session failed"
        source = parts.stored_segment(db, session_id, segment_file)
        if source is None:
            return f"skipped: no segment {segment_file!r} in session {session_id!r}"
    if stage is not None:
        return f"skipped: the compress stage is {stage}"
    storage = Storage(settings.storage)
    part = parts.state(settings.database_url, session_id, segment_file)
    if part is None:
        return "skipped: not requested"
    if usable(part, source, storage) is not None:
        return "done already"
    lease = parts.lease_of(settings)
    if not parts.claim(settings.database_url, part.id, owner, source.sha256, lease=lease):
        return "held by another worker"
    try:
        key = make(settings, storage, source, part.id, owner, preset=settings.compress_preset)
    except parts.PartFailed as exc:
        return f"failed: {exc}"
    except Cancelled as exc:
        return f"stopped: {exc}"
    with session_scope(settings.database_url) as db:
        failed = _session_failed(db, session_id)
    if failed:  # it failed while the part was made: its parts were discarded, this one too
        storage.path(key).unlink(missing_ok=True)
        return "made, then discarded: the session failed"
    return "made"


def _session_failed(db: DbSession, session_id: str) -> bool:
    status = db.execute(
        select(models.Session.status).where(models.Session.id == session_id)
    ).scalar_one_or_none()
    return status == models.SessionStatus.FAILED.value


