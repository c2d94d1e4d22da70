"""The capture agent facade: what a recorder calls, and the threads that ship its output.

Recording methods (``begin_session``, ``add_segment``, ``pause``, ``resume``,
``end_session``) only write to the durable outbox and return; the uploader thread started by
``start`` ships everything in order, retrying forever. A recorder can therefore crash, the Mac
can reboot and the network can vanish without losing a segment: the next ``start`` (or
``capture-agent run``) resumes from the outbox.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from capture_agent.agentstate import build_status
from capture_agent.emit import EventEmitter
from capture_agent.outbox import Outbox, OutboxError
from capture_agent.recover import Recovered, recover_dead_recordings
from capture_agent.settings import AgentSettings
from capture_agent.stores import LocalStore, S3Store, TokenBucket, make_store
from capture_agent.uploader import Publisher, Uploader
from shared.clock import utcnow
from shared.diagnostics import describe
from shared.events import Event, SegmentStored
from shared.options import SessionOptions
from shared.routing import Priority
from shared.segments import SegmentKind, SegmentSpec
from shared.sessiondir import Manifest, listed_files, load_manifest
from shared.settings import Settings, get_settings
from shared.storage import COPY_CHUNK_BYTES, segment_key

log = logging.getLogger(__name__)

WAIT_POLL_S = 0.05
THREAD_JOIN_S = 30.0


def _hash_stable(path: Path) -> tuple[str, int, int]:
    """sha256, size and mtime of a finished file; refuses one that changes while hashed."""
    before = path.stat()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(COPY_CHUNK_BYTES):
            digest.update(chunk)
    after = path.stat()
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        raise OutboxError(f"{path} changed while it was being hashed (still being written?)")
    return digest.hexdigest(), after.st_size, after.st_mtime_ns


class Agent:
    def __init__(
        self,
        settings: AgentSettings | None = None,
        *,
        shared: Settings | None = None,
        publisher: Publisher | None = None,
    ) -> None:
        """``shared`` (broker) defaults to the environment; ``publisher`` replaces the broker."""
        self.settings = settings or AgentSettings()
        self.shared = shared or get_settings()
        assert self.settings.state_dir is not None
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(self.settings.outbox_path)
        self._publisher = publisher
        self._stop = threading.Event()
        self._uploader: Uploader | None = None
        self._heartbeat: threading.Thread | None = None
        self._emitters: list[EventEmitter] = []
        self._started_at: float | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def _make_store(self) -> LocalStore | S3Store:
        limit = self.settings.bandwidth_limit
        return make_store(
            self.settings.storage,
            create_root=not self.settings.storage_explicit,
            endpoint_url=self.settings.s3_endpoint_url,
            region=self.settings.s3_region,
            throttle=TokenBucket(limit) if limit else None,
            cancel=self._stop,
        )

    def _make_publisher(self) -> Publisher:
        if self._publisher is not None:
            return self._publisher
        emitter = EventEmitter(self.shared)
        self._emitters.append(emitter)
        return emitter

    def start(self) -> None:
        """Start uploader and heartbeat threads; they resume whatever the outbox holds."""
        if self._uploader is not None:
            return
        self._stop.clear()
        self._started_at = time.monotonic()
        self._uploader = Uploader(
            self.outbox,
            self._make_store(),
            self._make_publisher(),
            self.settings,
            stop=self._stop,
        )
        self._uploader.start()
        heartbeat_publisher = self._make_publisher()  # own connection: never blocks uploads
        self._heartbeat = threading.Thread(
            target=self._heartbeat_loop,
            args=(heartbeat_publisher,),
            name="capture-agent-heartbeat",
            daemon=True,
        )
        self._heartbeat.start()

    def stop(self, *, drain: bool = True, timeout: float | None = None) -> bool:
        """Stop the threads (after draining, by default); True if the outbox is empty.

        ``drain`` waits (up to ``timeout``) only if this agent was started; an upload in
        progress is abandoned at once (its temporary copy is never visible and is cleaned up
        by the next attempt), and everything unshipped stays in the outbox for the next start.
        """
        if drain and self._uploader is not None:
            self.wait_idle(timeout)
        self._stop.set()
        if self._uploader is not None:
            self._uploader.join(THREAD_JOIN_S)
            self._uploader = None
        if self._heartbeat is not None:
            self._heartbeat.join(THREAD_JOIN_S)
            self._heartbeat = None
        for emitter in self._emitters:
            emitter.close()
        self._emitters.clear()
        return self.outbox.pending_count() == 0

    def close(self) -> None:
        self.stop(drain=False)
        self.outbox.close()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until the outbox is empty (failed segments excepted); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.outbox.pending_count() > 0:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(WAIT_POLL_S)
        return True

    def _wake(self) -> None:
        if self._uploader is not None:
            self._uploader.wake()

    # -- recording ----------------------------------------------------------------------------
    def begin_session(
        self,
        session_id: str,
        *,
        name: str,
        started_at: datetime,
        priority: str = Priority.NORMAL,
        options: SessionOptions | None = None,
    ) -> None:
        self.outbox.begin_session(
            session_id, name=name, started_at=started_at, priority=priority, options=options
        )
        self._wake()

    def add_segment(self, session_id: str, path: Path, segment: SegmentSpec) -> None:
        """Record a finished segment durably (hashed now) and return; it ships in the background.

        Adding the same file again with the same content is a no-op (safe after a restart).
        """
        path = Path(path).absolute()
        sha256, size, mtime_ns = _hash_stable(path)
        self.outbox.add_segment(
            session_id,
            path,
            segment,
            key=segment_key(session_id, segment.file),
            sha256=sha256,
            size=size,
            mtime_ns=mtime_ns,
        )
        self._wake()

    def pause(self, session_id: str, *, at: datetime) -> None:
        self.outbox.add_event(session_id, "session.paused", {"at": at.isoformat()})
        self._wake()

    def resume(self, session_id: str, *, at: datetime) -> None:
        self.outbox.add_event(session_id, "session.resumed", {"at": at.isoformat()})
        self._wake()

    def end_session(self, session_id: str, *, ended_at: datetime | None = None) -> None:
        """Record ``session.ended``; it is published after all the session's segments."""
        self.outbox.end_session(session_id, ended_at=ended_at or utcnow())
        self._wake()

    def recorded_segments(self, session_id: str) -> list[SegmentStored]:
        return self.outbox.recorded_segments(session_id)

    def session_state(self, session_id: str) -> Literal["unknown", "open", "ended"]:
        info = self.outbox.session_info(session_id)
        if info is None:
            return "unknown"
        return "ended" if info["ended"] else "open"

    def prune_outbox(self, now: datetime | None = None) -> int:
        """Forget sessions shipped over ``keep_shipped_days`` ago (Outbox.prune_shipped)."""
        cutoff = (now or utcnow()) - timedelta(days=self.settings.keep_shipped_days)
        return self.outbox.prune_shipped(
            before=cutoff, keep_awaiting_receipts=self.settings.delete_after_confirm
        )

    def recover_recordings(self) -> list[Recovered]:
        """Finish the recordings of this agent whose recorder died (see capture_agent.recover)."""
        assert self.settings.state_dir is not None
        return recover_dead_recordings(self.settings.state_dir, self)

    def enqueue_session_dir(self, session_dir: Path) -> Manifest:
        """Put a whole session folder in the outbox (idempotent; completes a partial one)."""
        manifest = load_manifest(session_dir)
        files = listed_files(session_dir, manifest)
        self.begin_session(
            manifest.id,
            name=manifest.name,
            started_at=manifest.started_at,
            priority=manifest.priority,
            options=manifest.options,
        )
        # Audio first (stable within a kind): its files are small, and the playable MP4 waits
        # for the audio track, which the workers then encode while the video is still copied.
        listed = sorted(
            zip(manifest.segments, files, strict=True),
            key=lambda pair: pair[0].kind != SegmentKind.AUDIO,
        )
        for segment, path in listed:
            self.add_segment(manifest.id, path, segment.spec())
        self.end_session(manifest.id)
        return manifest

    # -- status and heartbeats ----------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        status = build_status(self.outbox, self.settings, self.shared)
        status["uptime_s"] = (
            round(time.monotonic() - self._started_at, 3) if self._started_at is not None else None
        )
        return status

    def _heartbeat_stats(self) -> dict[str, Any]:
        snap = self.outbox.snapshot()
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "segments_pending": snap["pending"]["segments"],
            "bytes_pending": snap["pending"]["bytes"],
            "events_pending": snap["pending"]["events"],
            "segments_uploaded": snap["uploaded"]["segments"],
            "bytes_uploaded": snap["uploaded"]["bytes"],
            "segments_failed": len(snap["failed"]),
            "last_error": snap["meta"].get("last_error"),
            "uptime_s": round(time.monotonic() - (self._started_at or time.monotonic()), 3),
        }

    def send_heartbeats(self, publisher: Publisher) -> int:
        """One heartbeat per recording session; best effort, never stored. Returns how many.

        Sent only by the process that drains the outbox, and not while the broker is known to
        be down: a heartbeat that cannot go out is dropped, not queued.
        """
        uploader = self._uploader
        if uploader is None or not uploader.holds_lock or not uploader.broker.healthy:
            return 0
        sessions = self.outbox.recording_sessions()
        if not sessions:
            return 0
        stats = self._heartbeat_stats()
        sent = 0
        for session_id in sessions:
            seq = self.outbox.allocate_seq(session_id)
            if seq is None:
                continue  # ended meanwhile
            event = Event(type="heartbeat", session_id=session_id, seq=seq, payload=stats)
            try:
                publisher.emit(event, priority="low", retry=False)
            except Exception as exc:
                log.info("heartbeat dropped: %s", describe(exc))
                break
            sent += 1
        return sent

    def _heartbeat_loop(self, publisher: Publisher) -> None:
        while not self._stop.wait(self.settings.heartbeat_s):
            try:
                self.send_heartbeats(publisher)
            except Exception:
                log.exception("heartbeat failed")
