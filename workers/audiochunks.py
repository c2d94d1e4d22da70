"""Incremental audio: encoding a session's settled AAC chunks while it still records.

Not a stage: it has no job row and its work is optional, since ``concat_audio`` encodes
whatever is missing. Each stored audio segment asks for one *chunk pass*
(``TASK_AUDIO_CHUNKS``, on the audio queue with ``concat_audio``). Passes of one session
take turns under a lock kept in its ``audio_chunk_state`` row, changed only by conditional
UPDATEs, so two passes never write chunks at the same time and the stage can take over.

The lock, per session::

                 acquire (owner = pass, lease = now + AUDIO_CHUNK_LEASE_S)
      free  ────────────────────────────────────────────────────▶  held by a pass
    (owner NULL) ◀──────────────────────────────────────────────   │  renew before each
       │   ▲      release (covered = max(covered, what it read))   │  chunk write (lease
       │   └───────────── lease ran out: the next acquire wins ────┘  extended)
       │ close (concat_audio takes over)                           │ close
       ▼                                                           ▼
    closed ◀───────────────── the holder's next renew fails, it stops before writing

- ``requested`` counts stored audio segments (incremented in the ingest transaction), and
  ``covered`` is the largest count a finished pass had read. A pass whose segment is covered
  already does nothing (a worker behind the recording would otherwise repeat a whole pass
  for every queued request); one that finds the lock held retries later unless its segment
  is covered by then; a holder that releases with ``requested > covered`` runs another pass
  for the segments that arrived meanwhile.
- ``closed`` is final: once the stage has closed the row, no pass starts and the holder
  stops before its next write. The stage reads the chunk store at once (a chunk file
  appears whole or not at all) and waits for the holder to give the lock back (or for its
  lease to run out) only before it deletes the chunk files.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import case, or_, select, update
from sqlalchemy.orm import Session as DbSession

from shared.clock import as_utc
from shared.db import session_scope
from shared.models import AudioChunkState, Session
from shared.settings import Settings
from shared.storage import Storage, StorageError
from workers import assembly
from workers.jobs import affected, insert_ignore, now
from workers.media import IncrementalResult, MediaError
from workers.media.videocopy import CopyNotExact
from workers.snapshot import load_snapshot, remember_probes
from workers.stages.audio import encode_audio_chunks
from workers.stages.context import SessionSnapshot, build_timeline

log = logging.getLogger(__name__)

# A pass renews its lease before writing each chunk (a chunk takes about a second), so a pass
# that died blocks the session's chunking, and the stage's take-over, this long.
AUDIO_CHUNK_LEASE_S = 60.0
AUDIO_CHUNK_MAX_PASSES = 1000  # passes of one task while segments keep arriving
TAKE_OVER_POLL_S = 0.05  # how often concat_audio checks whether a chunk pass has stopped


class LockHeld(Exception):
    """Another chunk pass holds the session's lock and has not covered this request yet."""


# -- the lock (each function runs inside the caller's transaction) ---------------------------
def chunk_state(db: DbSession, session_id: str) -> AudioChunkState:
    """The session's row, created on first use, read fresh from the database."""
    insert_ignore(
        db,
        AudioChunkState,
        {
            "session_id": session_id,
            "requested": 0,
            "covered": 0,
            "closed": False,
            "chunks_encoded": 0,
        },
        ["session_id"],
    )
    return db.execute(
        select(AudioChunkState)
        .where(AudioChunkState.session_id == session_id)
        .execution_options(populate_existing=True)
    ).scalar_one()


def request(db: DbSession, session_id: str) -> int:
    """Count one more stored audio segment; returns the count a chunk pass must cover.

    Runs in the ingest transaction, so a pass that reads the count also sees the segment.
    """
    chunk_state(db, session_id)
    db.execute(
        update(AudioChunkState)
        .where(AudioChunkState.session_id == session_id)
        .values(requested=AudioChunkState.requested + 1, updated_at=now())
    )
    return chunk_state(db, session_id).requested


def acquire(db: DbSession, session_id: str, owner: str, *, lease: timedelta) -> int | None:
    """Take the lock for ``owner``; the request count the pass covers.

    None when the stage has taken over (closed) or another live pass holds the lock. Read
    the snapshot in the same transaction, after this, so it holds every counted segment.
    """
    chunk_state(db, session_id)
    at = now()
    taken = affected(
        db,
        update(AudioChunkState)
        .where(
            AudioChunkState.session_id == session_id,
            AudioChunkState.closed.is_(False),
            or_(
                AudioChunkState.owner.is_(None),
                AudioChunkState.owner == owner,
                AudioChunkState.lease_until < at,
            ),
        )
        .values(owner=owner, lease_until=at + lease, updated_at=at)
        .execution_options(synchronize_session=False),
    )
    if taken != 1:
        return None
    return chunk_state(db, session_id).requested


def renew(db: DbSession, session_id: str, owner: str, *, lease: timedelta) -> bool:
    """Extend the lease before writing a chunk; False = stop (closed, or the lock was lost)."""
    at = now()
    stmt = (
        update(AudioChunkState)
        .where(
            AudioChunkState.session_id == session_id,
            AudioChunkState.owner == owner,
            AudioChunkState.closed.is_(False),
        )
        .values(lease_until=at + lease, updated_at=at)
        .execution_options(synchronize_session=False)
    )
    return affected(db, stmt) == 1


def release(
    db: DbSession, session_id: str, owner: str, *, covered: int | None, encoded: int
) -> bool:
    """Give the lock back, recording what the pass covered; True = run another pass.

    Another pass is due when segments were counted after this one read the count and the
    stage has not taken over: their tasks saw the lock held and rely on this one.
    """
    values: dict[str, object] = {
        "owner": None,
        "lease_until": None,
        "updated_at": now(),
        "chunks_encoded": AudioChunkState.chunks_encoded + encoded,
    }
    if covered is not None:
        values["covered"] = case(
            (AudioChunkState.covered < covered, covered), else_=AudioChunkState.covered
        )
    released = affected(
        db,
        update(AudioChunkState)
        .where(AudioChunkState.session_id == session_id, AudioChunkState.owner == owner)
        .values(**values)
        .execution_options(synchronize_session=False),
    )
    state = chunk_state(db, session_id)
    return released == 1 and covered is not None and not state.closed and state.requested > covered


def close(db: DbSession, session_id: str) -> None:
    """The concat_audio stage takes over: no chunk pass may write after this commits."""
    chunk_state(db, session_id)
    db.execute(
        update(AudioChunkState)
        .where(AudioChunkState.session_id == session_id)
        .values(closed=True, updated_at=now())
    )


def busy(db: DbSession, session_id: str) -> bool:
    """Whether a live chunk pass still holds the lock (it stops before its next write)."""
    state = chunk_state(db, session_id)
    if state.owner is None or state.lease_until is None:
        return False
    return as_utc(state.lease_until) > now()  # SQLite hands back naive UTC


# -- the passes and the take-over ------------------------------------------------------------
def run_passes(settings: Settings, session_id: str, wanted: int, *, owner: str) -> str:
    """Passes under the session's lock until no segment arrived during the last one.

    Raises LockHeld when another live pass holds the lock and has not covered ``wanted``.
    """
    url = settings.database_url
    lease = timedelta(seconds=AUDIO_CHUNK_LEASE_S)
    encoded = 0
    for attempt in range(AUDIO_CHUNK_MAX_PASSES):
        with session_scope(url) as db:
            session = db.get(Session, session_id)
            if session is None:
                return f"unknown session {session_id!r}"
            if attempt == 0:
                state = chunk_state(db, session_id)
                if state.closed:
                    return "stage took over"
                if state.covered >= wanted:
                    # A pass that finished after this request read it (and the segment): a
                    # worker behind the recording skips its queued passes instead of
                    # repeating, each over the whole session, what one pass did.
                    return "covered by another pass"
            seen = acquire(db, session_id, owner, lease=lease)
            if seen is None:
                state = chunk_state(db, session_id)
                if state.closed:
                    return "stage took over"
                if state.covered >= wanted:
                    return "covered by another pass"
                raise LockHeld(f"chunk lock of {session_id} is held by {state.owner}")
            snapshot = load_snapshot(db, session)

        def keep_going() -> bool:
            with session_scope(url) as db:
                return renew(db, session_id, owner, lease=lease)

        probed: dict[str, float] = {}
        try:
            result = (
                encode_audio_chunks(snapshot, settings, keep_going, probed)
                if settings.audio_incremental
                else IncrementalResult(settled=0, chunks=0, reused=0, encoded=0, stopped=False)
            )
            if settings.playable_assembly and not result.stopped:
                _assemble(settings, snapshot, keep_going, probed)
        except BaseException:
            with session_scope(url) as db:
                release(db, session_id, owner, covered=None, encoded=0)
            raise
        encoded += result.encoded
        remember_probes(url, session_id, probed)
        with session_scope(url) as db:
            again = release(db, session_id, owner, covered=seen, encoded=result.encoded)
        if not again or result.stopped:
            break
    return f"encoded {encoded} chunk(s)"


def _assemble(
    settings: Settings,
    snapshot: SessionSnapshot,
    keep_going: Callable[[], bool],
    probed: dict[str, float],
) -> None:
    """Append the playable MP4's pieces that are final now (``workers.assembly``).

    An optimisation like the chunks: what it cannot do (a segment whose packets cannot be
    copied exactly, a broken file) the merge stage does, and reports.
    """
    storage = Storage(settings.storage)
    try:
        timeline = build_timeline(snapshot, storage, cut_pauses=settings.cut_pauses,
                                  probed=probed)  # fmt: skip
        appended = assembly.append_ready(settings, snapshot, timeline, keep_going)
    except (MediaError, CopyNotExact, StorageError) as exc:
        log.info("playable MP4 of %s not assembled while recording: %s", snapshot.id, exc)
        return
    if appended:
        log.info("playable MP4 of %s: %d piece(s) appended", snapshot.id, appended)


def take_over(database_url: str, session_id: str) -> Callable[[], None]:
    """Close the lock: from now on no pass starts, and a running one stops before its next
    write. Returns the wait for that running pass, to call before deleting chunk files.

    The stage need not wait to start: it may read the chunk store while a pass finishes its
    last chunk (chunk files appear whole or not at all). A pass that died holding the lock
    is waited for until its lease runs out.
    """
    with session_scope(database_url) as db:
        close(db, session_id)

    def wait_for_passes() -> None:
        deadline = time.monotonic() + AUDIO_CHUNK_LEASE_S
        while time.monotonic() < deadline:
            with session_scope(database_url) as db:
                if not busy(db, session_id):
                    return
            time.sleep(TAKE_OVER_POLL_S)
        log.warning("chunk pass of %s still holds the lock after its lease", session_id)

    return wait_for_passes
