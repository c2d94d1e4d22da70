"""The uploader: one thread that drains the outbox, in order, until it is empty.

Per pass it (1) publishes every session's next ready event (FIFO per session), (2) copies
one segment to storage, and (3) with ``delete_after_confirm``, deletes local segments the
workers have confirmed. Storage and broker are retried independently, forever, with
exponential backoff and jitter, so segments keep leaving the Mac while the broker is down and
events keep flowing while one file is stuck. Only one process drains a state directory at a
time (an exclusive ``flock``); others wait for it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from pathlib import Path
from typing import IO, Protocol

from capture_agent.outbox import Outbox, OutboxItem
from capture_agent.settings import AgentSettings
from capture_agent.stores import (
    Cancelled,
    PermanentUploadError,
    SourceChanged,
    SourceMissing,
    Store,
)
from shared import diagnostics
from shared.backoff import backoff_seconds
from shared.clock import utcnow
from shared.events import Event

log = logging.getLogger(__name__)

ERROR_TEXT_MAX = 2000
SourceError = (SourceChanged, SourceMissing)


class Publisher(Protocol):
    def emit(self, event: Event, *, priority: str = "normal", retry: bool = True) -> None: ...


def describe(exc: BaseException) -> str:
    """``Type: message``, cut to what the outbox stores (ERROR_TEXT_MAX)."""
    return diagnostics.describe(exc, limit=ERROR_TEXT_MAX)


class Channel:
    """Backoff shared by everything sent to one destination (storage, or the broker)."""

    def __init__(self, name: str, base: float, cap: float) -> None:
        self.name, self.base, self.cap = name, base, cap
        self.failures = 0
        self._not_before = 0.0

    def ready(self) -> bool:
        return time.monotonic() >= self._not_before

    def failed(self) -> float:
        delay = backoff_seconds(self.failures, base=self.base, cap=self.cap)
        self.failures += 1
        self._not_before = time.monotonic() + delay
        return delay

    def succeeded(self) -> bool:
        """Record a success; True if the channel was failing until now (it recovered)."""
        recovered = self.failures > 0
        self.failures = 0
        self._not_before = 0.0
        return recovered

    @property
    def healthy(self) -> bool:
        return self.failures == 0


class DrainLock:
    """Exclusive per-state-directory lock so two agent processes never drain together."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: IO[bytes] | None = None

    @property
    def held(self) -> bool:
        return self._handle is not None

    def try_acquire(self) -> bool:
        if self._handle is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("ab")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._handle = handle
        return True

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def lock_is_held(path: Path) -> bool:
    """Whether some process drains this state directory (probe without blocking it for long)."""
    if not path.exists():
        return False
    with path.open("ab") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return False


class Uploader:
    def __init__(
        self,
        outbox: Outbox,
        store: Store,
        publisher: Publisher,
        settings: AgentSettings,
        *,
        stop: threading.Event,
    ) -> None:
        self.outbox = outbox
        self.store = store
        self.publisher = publisher
        self.settings = settings
        self.storage = Channel("storage", settings.retry_base_s, settings.retry_cap_s)
        self.broker = Channel("broker", settings.retry_base_s, settings.retry_cap_s)
        self.lock = DrainLock(settings.lock_path)
        self._stop = stop
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_receipt_check = 0.0

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="capture-agent-uploader", daemon=True
        )
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to finish (after the stop event was set); True if it did."""
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    @property
    def holds_lock(self) -> bool:
        return self.lock.held

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._wake.clear()
                try:
                    if not self.lock.held:
                        if not self.lock.try_acquire():
                            self._wake.wait(self.settings.idle_poll_s)
                            continue  # another process drains this outbox
                        self._claim()
                    busy = self.step()
                except Cancelled:
                    break
                except Exception as exc:  # a bug or a broken state dir: report, keep going
                    log.exception("uploader pass failed")
                    with contextlib.suppress(Exception):
                        self._record_error("agent", exc)
                    busy = False
                if not busy:
                    self._wake.wait(self.settings.idle_poll_s)
        finally:
            self.lock.release()

    def _claim(self) -> None:
        self.outbox.set_meta(uploader_pid=str(os.getpid()), uploader_since=utcnow().isoformat())

    # -- one pass -----------------------------------------------------------------------------
    def step(self) -> bool:
        """Publish what is ready, copy one segment, check receipts; True if anything moved."""
        busy = self._announce()
        busy = self._upload_one() or busy
        if self.settings.delete_after_confirm:
            self._check_receipts()
        return busy

    def _announce(self) -> bool:
        if not self.broker.ready():
            return False
        moved = False
        for item in self.outbox.ready_announcements():
            if self._stop.is_set():
                break
            item = self.outbox.freeze_ended(item)
            try:
                self.publisher.emit(item.event(), priority=item.priority)
            except Exception as exc:
                delay = self.broker.failed()
                self.outbox.note_failure(item.id, describe(exc), retry_at=time.time() + delay)
                self._record_error("broker", exc)
                log.warning("broker unreachable, retrying in %.1f s: %s", delay, describe(exc))
                return moved
            self.outbox.mark_done(item.id)
            self.broker.succeeded()
            self.outbox.set_meta(last_broker_ok_at=utcnow().isoformat())
            moved = True
        return moved

    def _upload_one(self) -> bool:
        if not self.storage.ready():
            return False
        item = self.outbox.next_upload()
        if item is None:
            return False
        try:
            self._copy(item)
        except Cancelled:
            raise
        except PermanentUploadError as exc:
            self.outbox.mark_failed(item.id, describe(exc))
            self._record_error("source" if isinstance(exc, SourceError) else "storage", exc)
            log.error("giving up on segment %s of %s: %s", item.file, item.session_id, exc)
            return True
        except Exception as exc:
            self.storage.failed()
            delay = backoff_seconds(
                item.attempts, base=self.settings.retry_base_s, cap=self.settings.retry_cap_s
            )
            self.outbox.note_failure(item.id, describe(exc), retry_at=time.time() + delay)
            self._record_error("storage", exc)
            log.warning("upload of %s failed, retrying: %s", item.file, describe(exc))
            return False
        self.outbox.mark_stored(item.id)
        if self.storage.succeeded():
            self.outbox.reset_upload_backoff()  # storage is back: everything may go now
        self.outbox.set_meta(last_storage_ok_at=utcnow().isoformat())
        return True

    def _copy(self, item: OutboxItem) -> None:
        assert item.key and item.sha256 and item.path is not None and item.size is not None
        if self.store.exists(item.key, item.sha256):
            # An earlier attempt got it there but the agent stopped before noting it; it may
            # have left its temporary copy behind (S3: killed between copy and delete).
            self.store.cleanup(item.key)
            return
        self.store.put(Path(item.path), item.key, item.sha256, item.size)

    def _check_receipts(self) -> None:
        now = time.monotonic()
        if now < self._next_receipt_check:
            return
        self._next_receipt_check = now + self.settings.receipt_poll_s
        for item in self.outbox.awaiting_receipts():
            if self._stop.is_set():
                return
            assert item.seg_index is not None and item.path is not None
            try:
                receipt = self.store.read_receipt(item.session_id, item.seg_index)
            except Exception as exc:
                log.info("cannot read receipts yet: %s", describe(exc))
                return
            if receipt is None or receipt.sha256 != item.sha256:
                continue
            path = Path(item.path)
            try:
                stat = path.stat()
            except FileNotFoundError:
                self.outbox.mark_local_deleted(item.id)
                continue
            if stat.st_size != item.size or stat.st_mtime_ns != item.mtime_ns:
                # Not what was shipped any more: keeping it is the only safe choice.
                self.outbox.mark_local_deleted(item.id, kept=True)
                continue
            path.unlink(missing_ok=True)
            self.outbox.mark_local_deleted(item.id)
            log.info("deleted confirmed local segment %s", path)

    def _record_error(self, where: str, exc: BaseException) -> None:
        self.outbox.set_meta(
            last_error=describe(exc), last_error_at=utcnow().isoformat(), last_error_where=where
        )
