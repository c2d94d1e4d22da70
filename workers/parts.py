r"""Parts: work made while the session records, one piece of input at a time.

A stage whose work grows with the session's length does it piece by piece while the session
records, so that after the end only the last pieces and a join remain. The first kind, and
the model of the others, is the compressed copy (``workers.compressparts``): each stored
video segment of a session still recording asks for its *part* (``TASK_COMPRESS_PART``,
media queue, one priority step after its session's stages), the segment compressed on its
own, so at the end the ``compress`` stage only joins the parts by stream copy with the
session's finished audio and makes whatever part is missing. Parts are independent tasks:
as many workers (and machines) as there are share them. This module is what every kind
shares: the rows, their transitions, making a claimed part (:func:`making`) and a stage's
way to the parts it needs (:func:`collect`).

A part is a row of ``parts`` per (session, kind, segment file), the idempotency key of that
work; every transition is a conditional UPDATE, as for jobs::

                      claim (owner, lease = now + job_lease_s)
      pending ──────────────────────────────────────────────▶ running ──finish(owner)──▶ succeeded
         ▲  ▲                                                  │  │                        │
         │  └──── release(owner): a transient failure ─────────┘  └─fail(owner)─▶ failed   │
         │                                                         (bad input:    (the     │
         │      running with its lease run out: the next claim      its reason)   stage    │
         │      takes it over (its maker died)                                    reports  │
         └──────── reopen: succeeded but its file is gone (the stage makes it again) ──────┘

- The maker renews its lease (the jobs' ``job_lease_s``) with every progress report (about
  once a second), and stops at its next report once it lost the part (taken over): only the
  owner finishes it. A part whose maker died is taken over once its lease ran out.
- A part is used only if it was made from the segment's current content
  (``source_sha256``) and its file exists.
- The stage owns completion (``compressparts.gather``, :func:`collect`). For each
  segment it uses the succeeded part, or claims the part and makes it itself, or waits
  while another worker's claim is live (its lease renewed), making the unclaimed ones
  meanwhile; a failed part ends the parts path with the part's reason (the stage then
  compresses the whole MP4, which fails naming a truly bad input). A lost part message
  costs nothing but time: the stage makes that part.
- A part task finding the session's compress stage already started does nothing (the stage
  has it), so no part is made twice but where a maker died; nor for a failed session.
- Part files are scratch: :func:`discard` deletes them once the compressed copy is
  recorded (``finalize``), :func:`discard_all` (every kind's) once the session failed (a
  retry makes them again).

Other kinds of work made while recording use the same rows and transitions, with a
``kind`` of their own and :func:`collect` as the stage's (and a background pass's) way to
them: ``workers.transcriptparts`` (a transcript piece per minute of audio; its
``segment_file`` is the piece's name and its ``source_sha256`` the signature of the audio it
hears) and ``workers.chapterparts`` (a video segment's chapter samples).
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final, TypeVar

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session as DbSession

from shared import models
from shared.clock import as_utc
from shared.db import session_scope
from shared.settings import Settings
from shared.storage import Storage
from workers.jobs import MAX_ERROR_CHARS, affected, insert_ignore, now
from workers.media import Cancelled, MediaError

log = logging.getLogger(__name__)

KIND_COMPRESSED: Final = "compressed"
PENDING: Final = "pending"
RUNNING: Final = "running"
SUCCEEDED: Final = "succeeded"
FAILED: Final = "failed"
#: How often the stage looks whether a part another worker makes is done (seconds).
WAIT_POLL_S: Final = 0.2
#: A claim's lease when the caller gives none (the settings' job_lease_s default).
LEASE: Final = timedelta(seconds=120)
PARTS_DIR: Final = "parts"
#: Folders of other kinds' part files, each deleted by the stage that uses them
#: (``workers.chapterparts``: the chapters stage), and all of them when the session fails.
SAMPLES_DIR: Final = "chapter-samples"
SCRATCH_DIRS: Final = (SAMPLES_DIR,)


_T = TypeVar("_T")


class PartFailed(MediaError):
    """A part could not be made from its segment (bad input); the reason names it."""


@dataclass(frozen=True)
class PartState:
    id: int
    status: str
    source_sha256: str
    owner: str | None
    live: bool  # running with its lease not run out
    attempts: int  # claims so far
    output_key: str | None
    error: str | None
    result: dict[str, Any] | None


def discard(storage: Storage, session_id: str) -> None:
    """Delete a session's compressed part files: once its compressed copy is recorded
    (``finalize``)."""
    shutil.rmtree(storage.path(storage.derived_key(session_id, PARTS_DIR)), ignore_errors=True)


def discard_all(storage: Storage, session_id: str) -> None:
    """Delete every part file of a session, whatever its kind: once it failed (a retry
    makes them again)."""
    discard(storage, session_id)
    for folder in SCRATCH_DIRS:
        shutil.rmtree(storage.path(storage.derived_key(session_id, folder)), ignore_errors=True)


def lease_of(settings: Settings) -> timedelta:
    """A claim's lease: the jobs' ``job_lease_s``."""
    return timedelta(seconds=settings.job_lease_s)


def new_owner(prefix: str) -> str:
    return f"{prefix}:{uuid.uuid4().hex[:16]}"


# -- transitions ------------------------------------------------------------------------------
def request(
    db: DbSession, session_id: str, segment_file: str, sha256: str, *, kind: str = KIND_COMPRESSED
) -> bool:
    """In the ingest transaction: the part of a stored video segment is wanted; True when
    newly recorded (send its task after the commit). Another ``kind`` names other work
    (``workers.transcriptparts``: a transcript piece, ``segment_file`` its name)."""
    return insert_ignore(
        db,
        models.Part,
        {
            "session_id": session_id,
            "kind": kind,
            "segment_file": segment_file,
            "source_sha256": sha256,
            "status": PENDING,
            "attempts": 0,
        },
        ["session_id", "kind", "segment_file"],
    )


def state(
    database_url: str, session_id: str, segment_file: str, *, kind: str = KIND_COMPRESSED
) -> PartState | None:
    with session_scope(database_url) as db:
        part = _get(db, session_id, segment_file, kind)
        if part is None:
            return None
        lease = as_utc(part.lease_until) if part.lease_until is not None else None
        return PartState(
            id=part.id,
            status=part.status,
            source_sha256=part.source_sha256,
            owner=part.owner,
            live=part.status == RUNNING and lease is not None and lease > now(),
            attempts=part.attempts,
            output_key=part.output_key,
            error=part.error,
            result=part.result,
        )


def _get(db: DbSession, session_id: str, segment_file: str, kind: str) -> models.Part | None:
    return db.execute(
        select(models.Part).where(
            models.Part.session_id == session_id,
            models.Part.kind == kind,
            models.Part.segment_file == segment_file,
        )
    ).scalar_one_or_none()


def claim(
    database_url: str, part_id: int, owner: str, sha256: str, *, lease: timedelta = LEASE
) -> bool:
    """pending (or running past its lease) -> running, held by ``owner``; the part is for
    ``sha256``'s content from now on (a segment stored again replaces what was wanted)."""
    at = now()
    with session_scope(database_url) as db:
        return bool(
            affected(
                db,
                update(models.Part)
                .where(
                    models.Part.id == part_id,
                    or_(
                        models.Part.status == PENDING,
                        (models.Part.status == RUNNING) & (models.Part.lease_until < at),
                    ),
                )
                .values(
                    status=RUNNING,
                    owner=owner,
                    lease_until=at + lease,
                    attempts=models.Part.attempts + 1,
                    source_sha256=sha256,
                    error=None,
                ),
            )
        )


def _held(part_id: int, owner: str) -> Any:
    return (
        (models.Part.id == part_id)
        & (models.Part.status == RUNNING)
        & (models.Part.owner == owner)
    )


def _if_held(database_url: str, part_id: int, holder: str, values: dict[str, Any]) -> bool:
    """Change a running part only if ``holder`` still holds it; whether it did."""
    with session_scope(database_url) as db:
        return bool(
            affected(db, update(models.Part).where(_held(part_id, holder)).values(**values))
        )


def renew(database_url: str, part_id: int, owner: str, *, lease: timedelta = LEASE) -> bool:
    return _if_held(database_url, part_id, owner, {"lease_until": now() + lease})


def finish(
    database_url: str, part_id: int, owner: str, output_key: str | None, result: dict[str, Any]
) -> bool:
    """running -> succeeded with its file (``output_key``) or, for a part that is all result
    (a transcript piece), none."""
    return _if_held(database_url, part_id, owner, {
        "status": SUCCEEDED, "owner": None, "lease_until": None, "output_key": output_key,
        "result": result,
    })  # fmt: skip


def fail(database_url: str, part_id: int, owner: str, error: str) -> bool:
    return _if_held(database_url, part_id, owner, {
        "status": FAILED, "owner": None, "lease_until": None, "error": error[:MAX_ERROR_CHARS],
    })  # fmt: skip


def release(database_url: str, part_id: int, owner: str) -> bool:
    """running -> pending: the maker failed transiently; the next claim makes it."""
    return _if_held(
        database_url, part_id, owner, {"status": PENDING, "owner": None, "lease_until": None}
    )


def reopen(database_url: str, part_id: int, output_key: str | None) -> bool:
    """succeeded -> pending: its file is gone or its content is not the segment's."""
    with session_scope(database_url) as db:
        return bool(
            affected(
                db,
                update(models.Part)
                .where(
                    models.Part.id == part_id,
                    models.Part.status == SUCCEEDED,
                    models.Part.output_key == output_key,
                )
                .values(status=PENDING, output_key=None, result=None),
            )
        )


# -- making a part ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SegmentSource:
    """The stored segment a part is made from."""

    session_id: str
    file: str
    storage_key: str
    sha256: str


class Making:
    """What a maker of a claimed part calls: ``report(fraction)`` renews the claim (Cancelled
    once it was taken over) and passes the fraction on to ``progress``."""

    def __init__(
        self,
        settings: Settings,
        part_id: int,
        owner: str,
        name: str,
        progress: Callable[[float], None] | None,
    ) -> None:
        self.url, self.part_id, self.owner, self.name = settings.database_url, part_id, owner, name
        self.lease = lease_of(settings)
        self.progress = progress

    def report(self, fraction: float) -> None:
        if not renew(self.url, self.part_id, self.owner, lease=self.lease):
            raise Cancelled(f"{self.name} was taken over")
        if self.progress is not None:
            self.progress(fraction)

    def finish(self, output_key: str | None, result: dict[str, Any]) -> None:
        """Record the part as made (Cancelled if it was taken over meanwhile)."""
        if not finish(self.url, self.part_id, self.owner, output_key, result):
            raise Cancelled(f"{self.name} was taken over before it was recorded")


@contextmanager
def making(
    settings: Settings,
    part_id: int,
    owner: str,
    *,
    name: str,
    bad_input: tuple[type[Exception], ...],
    failure: Callable[[str, Exception], Exception],
    progress: Callable[[float], None] | None = None,
) -> Iterator[Making]:
    """The one way a claimed part (``owner`` holds it) is made, whatever its kind: inside,
    the maker reports progress and finishes through the :class:`Making`; a ``bad_input``
    error fails the part with ``"<name>: <error>"`` and raises ``failure(reason, error)``;
    Cancelled (the claim was lost) propagates; any other error releases the part for the
    next claim and propagates."""
    try:
        yield Making(settings, part_id, owner, name, progress)
    except Cancelled:
        raise
    except bad_input as exc:
        reason = f"{name}: {exc}"
        fail(settings.database_url, part_id, owner, reason)
        raise failure(reason, exc) from exc
    except BaseException:
        release(settings.database_url, part_id, owner)
        raise


def reopen_failed(database_url: str, part_id: int) -> None:
    """failed -> pending: it failed on content its input no longer has."""
    with session_scope(database_url) as db:
        db.execute(
            update(models.Part)
            .where(models.Part.id == part_id, models.Part.status == FAILED)
            .values(status=PENDING, error=None)
        )


# -- the background task's look at the database (every kind) ---------------------------------
def stage_moved_on(db: DbSession, session_id: str, stage: str) -> str | None:
    """The status of the session's ``stage`` job once it is no longer pending (the stage
    then has every part: a background task does nothing), else None."""
    status = db.execute(
        select(models.Job.status).where(
            models.Job.session_id == session_id, models.Job.stage == stage
        )
    ).scalar_one_or_none()
    return status if status is not None and status != models.JobStatus.PENDING.value else None


def stored_segment(db: DbSession, session_id: str, segment_file: str) -> SegmentSource | None:
    """The stored segment ``segment_file`` of the session, as a part's source."""
    segment = db.execute(
        select(models.Segment).where(
            models.Segment.session_id == session_id, models.Segment.file == segment_file
        )
    ).scalar_one_or_none()
    if segment is None:
        return None
    return SegmentSource(session_id, segment.file, segment.storage_key, segment.sha256)


# -- any kind of part: the look a stage or a background pass takes at each ---------------------
@dataclass(frozen=True)
class Wanted:
    """A part a caller needs: its name (``segment_file``) and the signature of its input
    (``source_sha256``: a segment's sha256, or a hash of whatever the part depends on)."""

    name: str
    signature: str


@dataclass
class Collected:
    """What :func:`collect` found or made, by index into the wanted list."""

    values: dict[int, Any]
    made: int = 0
    failed: dict[int, str] | None = None  # index -> reason (only when not waiting)


def collect(
    settings: Settings,
    session_id: str,
    kind: str,
    wanted: list[Wanted],
    *,
    owner: str,
    usable: Callable[[PartState], _T | None],
    make: Callable[[int, int], _T],
    wait: bool = True,
    heartbeat: Callable[[float], None] = lambda _: None,
    sleep: Callable[[float], None] = time.sleep,
) -> Collected:
    """Every wanted part of ``kind``: done ones used (``usable(state)``, called only for a
    part succeeded with the wanted signature), free ones claimed and made
    (``make(index, part id)``, which finishes, fails or releases the claim as
    ``compressparts.make`` does), and, with ``wait``, those another worker holds waited for.

    With ``wait`` a part failed on its wanted input raises :class:`PartFailed` with its
    reason; without (a background pass), held parts are left to their holder and failures
    are returned in ``failed``. Parts made from other input are reopened and made again.
    """
    url, lease = settings.database_url, lease_of(settings)
    with session_scope(url) as db:
        for item in wanted:
            request(db, session_id, item.name, item.signature, kind=kind)
    out = Collected(values={}, failed={} if not wait else None)
    waiting = list(range(len(wanted)))
    while waiting:
        progressed = False
        for k in list(waiting):
            item = wanted[k]
            part = state(url, session_id, item.name, kind=kind)
            assert part is not None  # requested above; rows go only with their session
            same = part.source_sha256 == item.signature
            value = usable(part) if part.status == SUCCEEDED and same else None
            if value is None and part.status == FAILED and same:
                reason = part.error or f"{kind} part {item.name} failed"
                if out.failed is None:
                    raise PartFailed(reason)
                out.failed[k] = reason
                waiting.remove(k)
                continue
            if value is None and part.status == SUCCEEDED:  # other input, or its file is gone
                reopen(url, part.id, part.output_key)
                part = state(url, session_id, item.name, kind=kind) or part
            elif value is None and part.status == FAILED:  # failed on input it no longer has
                reopen_failed(url, part.id)
                part = state(url, session_id, item.name, kind=kind) or part
            if value is None and not part.live and part.status in (PENDING, RUNNING) and claim(
                url, part.id, owner, item.signature, lease=lease
            ):
                value = make(k, part.id)
                out.made += 1
            if value is not None:
                out.values[k] = value
                waiting.remove(k)
                progressed = True
            elif not wait:
                waiting.remove(k)  # its holder makes it
        if waiting and not progressed:
            heartbeat(len(out.values) / len(wanted))
            sleep(WAIT_POLL_S)
    return out
