"""The agent's durable outbox: a SQLite database of everything that must leave the Mac.

Every segment and every event is written here (and fsynced: WAL, ``synchronous=FULL``)
before anything is sent, so a crash, a reboot or a dead network loses nothing: the uploader
resumes from these rows. Sequence numbers are assigned here, per session, inside the same
transaction that records the item, so numbering continues across restarts and a re-sent
event is byte-for-byte the one sent before (same ``seq`` and ``event_id``), which the workers
recognise as a duplicate.

An item is one event to deliver; a segment's item also carries the file to copy first:

    upload  --stored-->  announce  --published-->  done
       \\--(source changed / missing, destination conflict)-->  failed

Items of one session are delivered strictly in id order (FIFO); ``session.ended`` therefore
goes out only after every earlier segment of its session is stored and announced.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from shared import events
from shared.clock import as_utc, utcnow
from shared.events import Event, SegmentStored
from shared.ids import validate_relative_path, validate_session_id
from shared.options import SessionOptions
from shared.routing import Priority, priority_value
from shared.segments import SegmentSpec

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0

UPLOAD = "upload"
ANNOUNCE = "announce"
DONE = "done"
FAILED = "failed"
PENDING = (UPLOAD, ANNOUNCE)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT
);
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    name TEXT NOT NULL DEFAULT '',
    priority TEXT NOT NULL DEFAULT 'normal',
    started_at TEXT,
    begun INTEGER NOT NULL DEFAULT 0,
    paused INTEGER NOT NULL DEFAULT 0,
    ended INTEGER NOT NULL DEFAULT 0,
    ended_at TEXT,
    next_seq INTEGER NOT NULL DEFAULT 0,
    next_index INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL REFERENCES sessions(session_id),
    seq INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    event TEXT NOT NULL,
    state TEXT NOT NULL,
    seg_index INTEGER,
    path TEXT,
    file TEXT,
    key TEXT,
    size INTEGER,
    sha256 TEXT,
    mtime_ns INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    local_deleted INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    stored_at TEXT,
    done_at TEXT,
    UNIQUE (session_id, seq)
);
CREATE UNIQUE INDEX IF NOT EXISTS items_session_file ON items(session_id, file)
    WHERE file IS NOT NULL;
CREATE INDEX IF NOT EXISTS items_state ON items(state, id);
"""


class OutboxError(ValueError):
    """A request the outbox refuses (it would break what was already recorded)."""


class SessionClosedError(OutboxError):
    """Something was added to a session after its ``session.ended`` was recorded."""


class SegmentConflictError(OutboxError):
    """The same segment file was added again with different content."""


@dataclass(frozen=True)
class OutboxItem:
    id: int
    session_id: str
    seq: int
    event_type: str
    event_json: str
    state: str
    priority: str
    attempts: int
    last_error: str | None
    seg_index: int | None = None
    path: str | None = None
    file: str | None = None
    key: str | None = None
    size: int | None = None
    sha256: str | None = None
    mtime_ns: int | None = None

    @property
    def is_segment(self) -> bool:
        return self.file is not None

    def event(self) -> Event:
        return Event.model_validate_json(self.event_json)


_ITEM_COLUMNS = (
    "i.id, i.session_id, i.seq, i.event_type, i.event, i.state, s.priority, i.attempts, "
    "i.last_error, i.seg_index, i.path, i.file, i.key, i.size, i.sha256, i.mtime_ns"
)


def _item(row: sqlite3.Row) -> OutboxItem:
    return OutboxItem(
        id=row["id"],
        session_id=row["session_id"],
        seq=row["seq"],
        event_type=row["event_type"],
        event_json=row["event"],
        state=row["state"],
        priority=row["priority"],
        attempts=row["attempts"],
        last_error=row["last_error"],
        seg_index=row["seg_index"],
        path=row["path"],
        file=row["file"],
        key=row["key"],
        size=row["size"],
        sha256=row["sha256"],
        mtime_ns=row["mtime_ns"],
    )


class Outbox:
    """One SQLite file; safe to share between threads of a process and between processes."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self._lock = threading.RLock()
        if readonly:
            uri = f"file:{path}?mode=ro"
            self._db = sqlite3.connect(
                uri,
                uri=True,
                timeout=BUSY_TIMEOUT_S,
                check_same_thread=False,
                isolation_level=None,
            )
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None
            )
        self._db.row_factory = sqlite3.Row
        if not readonly:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # survive power loss, not only SIGKILL
            self._db.execute("PRAGMA foreign_keys=ON")
            with self._lock:  # each statement is idempotent, so concurrent openers are fine
                self._db.executescript(_SCHEMA)
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; BEGIN IMMEDIATE so concurrent writers queue, never deadlock."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._db.execute(sql, params).fetchall())

    # -- recording side ---------------------------------------------------------------------
    def _session(
        self, db: sqlite3.Connection, session_id: str, *, priority: str = Priority.NORMAL
    ) -> sqlite3.Row:
        validate_session_id(session_id)
        db.execute(
            "INSERT OR IGNORE INTO sessions (session_id, priority, created_at) VALUES (?, ?, ?)",
            (session_id, priority, utcnow().isoformat()),
        )
        row: sqlite3.Row = db.execute(
            "SELECT * FROM sessions WHERE session_id = ?", (session_id,)
        ).fetchone()
        return row

    def _take_seq(self, db: sqlite3.Connection, session_id: str) -> int:
        # No RETURNING: older SQLite builds (some macOS Pythons) lack it. The caller holds
        # the write transaction, so read-then-update is atomic.
        seq: int = db.execute(
            "SELECT next_seq FROM sessions WHERE session_id = ?", (session_id,)
        ).fetchone()[0]
        db.execute("UPDATE sessions SET next_seq = ? WHERE session_id = ?", (seq + 1, session_id))
        return seq

    def _insert_event(
        self, db: sqlite3.Connection, event: Event, *, state: str = ANNOUNCE, **segment: Any
    ) -> int:
        columns = ["session_id", "seq", "event_type", "event", "state", "created_at", *segment]
        values = [
            event.session_id,
            event.seq,
            event.type,
            event.model_dump_json(),
            state,
            utcnow().isoformat(),
            *segment.values(),
        ]
        marks = ", ".join("?" for _ in columns)
        cursor = db.execute(f"INSERT INTO items ({', '.join(columns)}) VALUES ({marks})", values)
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def begin_session(
        self,
        session_id: str,
        *,
        name: str,
        started_at: datetime,
        priority: str = Priority.NORMAL,
        options: SessionOptions | None = None,
    ) -> int | None:
        """Record ``session.started``; its seq, or None if the session was already begun."""
        priority_value(priority)
        with self._tx() as db:
            row = self._session(db, session_id, priority=priority)
            if row["begun"]:
                return None
            db.execute(
                "UPDATE sessions SET begun = 1, name = ?, priority = ?, started_at = ? "
                "WHERE session_id = ?",
                (name, priority, started_at.isoformat(), session_id),
            )
            seq = self._take_seq(db, session_id)
            self._insert_event(
                db,
                events.session_started(
                    session_id,
                    seq,
                    name=name,
                    started_at=started_at,
                    priority=priority,
                    options=options,
                ),
            )
            return seq

    def add_segment(
        self,
        session_id: str,
        path: Path,
        segment: SegmentSpec,
        *,
        key: str,
        sha256: str,
        size: int,
        mtime_ns: int,
    ) -> OutboxItem | None:
        """Record a finished segment (hashed by the caller); None if already recorded as is."""
        rel = validate_relative_path(segment.file)
        with self._tx() as db:
            row = self._session(db, session_id)
            known = db.execute(
                "SELECT sha256 FROM items WHERE session_id = ? AND file = ?", (session_id, rel)
            ).fetchone()
            if known is not None:
                if known["sha256"] == sha256:
                    return None
                raise SegmentConflictError(
                    f"segment {rel!r} of session {session_id!r} was already recorded with "
                    "different content"
                )
            if row["ended"]:
                raise SessionClosedError(
                    f"session {session_id!r} has ended; segment {rel!r} cannot be added"
                )
            index: int = row["next_index"]
            db.execute(
                "UPDATE sessions SET next_index = next_index + 1 WHERE session_id = ?",
                (session_id,),
            )
            seq = self._take_seq(db, session_id)
            stored = SegmentStored(
                kind=segment.kind,
                file=rel,
                key=key,
                sha256=sha256,
                size=size,
                index=index,
                started_at=segment.started_at,
                duration=segment.duration,
            )
            item_id = self._insert_event(
                db,
                events.segment_stored(session_id, seq, stored),
                state=UPLOAD,
                seg_index=index,
                path=str(path),
                file=rel,
                key=key,
                size=size,
                sha256=sha256,
                mtime_ns=mtime_ns,
            )
        return self.item(item_id)

    def add_event(
        self, session_id: str, event_type: events.EventType, payload: dict[str, Any]
    ) -> int:
        """Record a plain event (``session.paused``/``session.resumed``); returns its seq."""
        with self._tx() as db:
            row = self._session(db, session_id)
            if row["ended"]:
                raise SessionClosedError(f"session {session_id!r} has ended")
            if event_type in ("session.paused", "session.resumed"):
                db.execute(
                    "UPDATE sessions SET paused = ? WHERE session_id = ?",
                    (int(event_type == "session.paused"), session_id),
                )
            seq = self._take_seq(db, session_id)
            self._insert_event(
                db, Event(type=event_type, session_id=session_id, seq=seq, payload=payload)
            )
            return seq

    def end_session(self, session_id: str, *, ended_at: datetime) -> int | None:
        """Record ``session.ended``; its seq, or None if it was already recorded."""
        with self._tx() as db:
            row = self._session(db, session_id)
            if row["ended"]:
                return None
            count = db.execute(
                "SELECT count(*) FROM items WHERE session_id = ? AND file IS NOT NULL "
                "AND state != ?",
                (session_id, FAILED),
            ).fetchone()[0]
            db.execute(
                "UPDATE sessions SET ended = 1, paused = 0, ended_at = ? WHERE session_id = ?",
                (ended_at.isoformat(), session_id),
            )
            seq = self._take_seq(db, session_id)
            self._insert_event(
                db,
                events.session_ended(session_id, seq, segment_count=count, ended_at=ended_at),
            )
            return seq

    def allocate_seq(self, session_id: str) -> int | None:
        """A seq for an event sent at once and never stored here (heartbeats); None once ended.

        Taken from the session's persistent counter so it can never collide with a later
        event, which the workers would otherwise drop as a duplicate; refused after
        ``session.ended`` so nothing of the session is numbered after its end.
        """
        with self._tx() as db:
            if self._session(db, session_id)["ended"]:
                return None
            return self._take_seq(db, session_id)

    # -- draining side ----------------------------------------------------------------------
    def item(self, item_id: int) -> OutboxItem:
        rows = self._query(
            f"SELECT {_ITEM_COLUMNS} FROM items i JOIN sessions s USING (session_id) "
            "WHERE i.id = ?",
            (item_id,),
        )
        return _item(rows[0])

    def next_upload(self, now: float | None = None) -> OutboxItem | None:
        """The next segment to copy whose backoff has expired: high priority first, then FIFO."""
        now = time.time() if now is None else now
        rows = self._query(
            f"SELECT {_ITEM_COLUMNS} FROM items i JOIN sessions s USING (session_id) "
            "WHERE i.state = ? AND i.next_attempt_at <= ? "
            "ORDER BY CASE s.priority WHEN 'high' THEN 0 WHEN 'normal' THEN 1 ELSE 2 END, i.id "
            "LIMIT 1",
            (UPLOAD, now),
        )
        return _item(rows[0]) if rows else None

    def next_upload_due(self) -> float | None:
        """Earliest time (epoch s) a waiting segment may be retried, or None if none waits."""
        rows = self._query("SELECT min(next_attempt_at) FROM items WHERE state = ?", (UPLOAD,))
        value = rows[0][0]
        return float(value) if value is not None else None

    def ready_announcements(self) -> list[OutboxItem]:
        """Each session's oldest undelivered item if it is ready to publish (FIFO per session)."""
        rows = self._query(
            f"SELECT {_ITEM_COLUMNS} FROM items i JOIN sessions s USING (session_id) "
            "JOIN (SELECT session_id, min(id) AS head FROM items WHERE state IN (?, ?) "
            "      GROUP BY session_id) h ON i.id = h.head "
            "WHERE i.state = ? ORDER BY i.id",
            (UPLOAD, ANNOUNCE, ANNOUNCE),
        )
        return [_item(row) for row in rows]

    def mark_stored(self, item_id: int) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE items SET state = ?, stored_at = ?, attempts = 0, next_attempt_at = 0, "
                "last_error = NULL WHERE id = ? AND state = ?",
                (ANNOUNCE, utcnow().isoformat(), item_id, UPLOAD),
            )

    def mark_done(self, item_id: int) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE items SET state = ?, done_at = ?, last_error = NULL WHERE id = ?",
                (DONE, utcnow().isoformat(), item_id),
            )

    def mark_failed(self, item_id: int, error: str) -> None:
        """Give up on one segment for good (its content can no longer be shipped faithfully)."""
        with self._tx() as db:
            db.execute(
                "UPDATE items SET state = ?, last_error = ?, done_at = ? WHERE id = ?",
                (FAILED, error, utcnow().isoformat(), item_id),
            )

    def note_failure(self, item_id: int, error: str, *, retry_at: float) -> int:
        """Count a failed attempt and schedule the next one; returns the attempt count."""
        with self._tx() as db:
            db.execute(
                "UPDATE items SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? "
                "WHERE id = ?",
                (error, retry_at, item_id),
            )
            attempts: int = db.execute(
                "SELECT attempts FROM items WHERE id = ?", (item_id,)
            ).fetchone()[0]
            return attempts

    def reset_upload_backoff(self) -> None:
        """Storage answered again: every waiting segment may be tried at once."""
        with self._tx() as db:
            db.execute("UPDATE items SET next_attempt_at = 0 WHERE state = ?", (UPLOAD,))

    def freeze_ended(self, item: OutboxItem) -> OutboxItem:
        """Fix ``segment_count`` of a ``session.ended`` about to be published.

        Called only when every earlier item of the session is done or failed, so the count of
        delivered segments is final; a segment given up on is not counted (the workers would
        otherwise wait for it forever). Repeated calls give the same answer.
        """
        if item.event_type != "session.ended":
            return item
        with self._tx() as db:
            count = db.execute(
                "SELECT count(*) FROM items WHERE session_id = ? AND file IS NOT NULL "
                "AND state = ? AND id < ?",
                (item.session_id, DONE, item.id),
            ).fetchone()[0]
            event = item.event()
            if event.payload.get("segment_count") != count:
                event.payload["segment_count"] = count
                db.execute(
                    "UPDATE items SET event = ? WHERE id = ?", (event.model_dump_json(), item.id)
                )
        return self.item(item.id)

    def awaiting_receipts(self, limit: int = 100) -> list[OutboxItem]:
        rows = self._query(
            f"SELECT {_ITEM_COLUMNS} FROM items i JOIN sessions s USING (session_id) "
            "WHERE i.state = ? AND i.file IS NOT NULL AND i.local_deleted = 0 "
            "ORDER BY i.id LIMIT ?",
            (DONE, limit),
        )
        return [_item(row) for row in rows]

    def mark_local_deleted(self, item_id: int, *, kept: bool = False) -> None:
        """The local copy is gone (1), or was kept because it changed after shipping (2)."""
        with self._tx() as db:
            db.execute(
                "UPDATE items SET local_deleted = ? WHERE id = ?", (2 if kept else 1, item_id)
            )

    def prune_shipped(self, *, before: datetime, keep_awaiting_receipts: bool) -> int:
        """Forget the items of ended sessions whose every item shipped before ``before``.

        A session with anything unshipped or given up on (``failed``: an operator must see
        it) keeps all its items, and so does one whose local files still wait for their
        receipts to be deleted. The session row stays as a tombstone: its sequence numbers
        never restart, and a segment added to it again is refused as "ended", not taken for
        new work. Returns how many items were removed.
        """
        with self._tx() as db:
            cursor = db.execute(
                "DELETE FROM items WHERE session_id IN ("
                " SELECT s.session_id FROM sessions s WHERE s.ended = 1 AND NOT EXISTS ("
                "  SELECT 1 FROM items i WHERE i.session_id = s.session_id AND ("
                "   i.state != ? OR i.done_at IS NULL OR i.done_at >= ?"
                "   OR (? AND i.file IS NOT NULL AND i.local_deleted = 0))))",
                (DONE, as_utc(before).isoformat(), int(keep_awaiting_receipts)),
            )
            return int(cursor.rowcount)

    def pending_count(self) -> int:
        rows = self._query("SELECT count(*) FROM items WHERE state IN (?, ?)", (UPLOAD, ANNOUNCE))
        return int(rows[0][0])

    def recording_sessions(self) -> list[str]:
        return [r[0] for r in self._query("SELECT session_id FROM sessions WHERE ended = 0")]

    def session_segments(self, session_id: str) -> dict[str, str]:
        """Files already recorded for a session, with their sha256."""
        rows = self._query(
            "SELECT file, sha256 FROM items WHERE session_id = ? AND file IS NOT NULL",
            (session_id,),
        )
        return {r["file"]: r["sha256"] for r in rows}

    def recorded_segments(self, session_id: str) -> list[SegmentStored]:
        """The segments recorded for a session, as their events describe them."""
        rows = self._query(
            "SELECT event FROM items WHERE session_id = ? AND file IS NOT NULL ORDER BY seq",
            (session_id,),
        )
        return [
            SegmentStored.model_validate(Event.model_validate_json(r["event"]).payload)
            for r in rows
        ]

    def session_info(self, session_id: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM sessions WHERE session_id = ?", (session_id,))
        return dict(rows[0]) if rows else None

    # -- meta (contact times, last error, uploader identity) --------------------------------
    def set_meta(self, **values: str | None) -> None:
        with self._tx() as db:
            db.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                list(values.items()),
            )

    def meta(self) -> dict[str, str | None]:
        return {r["key"]: r["value"] for r in self._query("SELECT key, value FROM meta")}

    # -- status -----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Counts and lists for ``capture-agent status`` (read-only; works from any process)."""
        recording = [
            {
                "session_id": r["session_id"],
                "name": r["name"],
                "started_at": r["started_at"],
                "paused": bool(r["paused"]),
                "segments": r["segments"],
            }
            for r in self._query(
                "SELECT s.*, (SELECT count(*) FROM items i WHERE i.session_id = s.session_id "
                "AND i.file IS NOT NULL) AS segments FROM sessions s WHERE s.ended = 0 "
                "ORDER BY s.created_at"
            )
        ]
        to_upload = self._query(
            "SELECT count(*), coalesce(sum(size), 0) FROM items WHERE state = ?", (UPLOAD,)
        )[0]
        undelivered = self._query(
            "SELECT count(*) FROM items WHERE state IN (?, ?)", (UPLOAD, ANNOUNCE)
        )[0][0]
        stored = self._query(
            "SELECT count(*), coalesce(sum(size), 0) FROM items WHERE file IS NOT NULL "
            "AND state IN (?, ?)",
            (ANNOUNCE, DONE),
        )[0]
        waiting_receipt = self._query(
            "SELECT count(*) FROM items WHERE file IS NOT NULL AND state = ? AND local_deleted = 0",
            (DONE,),
        )[0][0]
        failed = [
            {
                "session_id": r["session_id"],
                "index": r["seg_index"],
                "file": r["file"],
                "path": r["path"],
                "error": r["last_error"],
            }
            for r in self._query("SELECT * FROM items WHERE state = ? ORDER BY id", (FAILED,))
        ]
        retrying = [
            {
                "session_id": r["session_id"],
                "seq": r["seq"],
                "type": r["event_type"],
                "file": r["file"],
                "attempts": r["attempts"],
                "error": r["last_error"],
            }
            for r in self._query(
                "SELECT * FROM items WHERE state IN (?, ?) AND attempts > 0 ORDER BY id LIMIT 20",
                (UPLOAD, ANNOUNCE),
            )
        ]
        return {
            "recording": recording,
            "pending": {
                "segments": int(to_upload[0]),
                "bytes": int(to_upload[1]),
                "events": int(undelivered),
            },
            "uploaded": {"segments": int(stored[0]), "bytes": int(stored[1])},
            "not_yet_confirmed": int(waiting_receipt),
            "failed": failed,
            "retrying": retrying,
            "meta": self.meta(),
        }
