"""Watching a folder of sessions written by another recorder (the Mac app's own).

``DIR`` holds session folders (each with a ``session.json`` in the README format), or is one
itself. The watcher reacts to file-system events (watchdog) and rescans periodically anyway,
so a missed event, or a file written while it was not running, is still found.

Rules:

* A session is begun when its ``session.json`` is first read and valid. An invalid one
  (hostile paths, absurd durations, unknown kinds, bad id, a symlink leading out, an id
  already used by another folder), or a session folder that is a symlink leading out of
  ``DIR``, is *rejected*: logged once and shown in the status, and
  looked at again only when the file changes. A ``session.json`` that fails to parse within
  ``MANIFEST_SETTLE_S`` of being modified is taken as half-written and retried quietly.
* A listed segment is handed to the agent once it is complete: closed after writing
  (inotify ``IN_CLOSE_WRITE``, on Linux) and unchanged for ``CLOSE_SETTLE_S`` since, or at
  once when the recorder said it is finished: the first ``session.json`` the watcher saw
  listing it was written after the file's last modification (ffmpeg's segment list names a
  segment once it is finished; one listed while it was still being written waits the
  settle, since such a writer may close and reopen it), or it moved on to a later listed
  segment of the same kind (its file has data: a recorder writes each track's segments
  one after another); or its size and mtime unchanged for ``stable_seconds`` (the only
  signal on macOS). Once ``session.json`` says the session is over, a segment last
  modified before it is complete at once: a recorder writes that end marker last (the
  README's session format), so the last segment ships without waiting, and the session's
  end reaches the workers sooner.
* A session is ended (``end_session``) once every listed segment has been handed over and
  ``session.json`` says it is over: an ``"ended_at"`` time, or ``"complete": true``.
* What was handed over is remembered in ``<state_dir>/watch/<root-hash>.state.json`` so a
  restart does not add it again (the outbox would also ignore an identical re-add).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from capture_agent.sink import SessionSink
from shared.atomicfile import atomic_write_text
from shared.ids import InvalidNameError
from shared.sessiondir import (
    MANIFEST_NAME,
    Manifest,
    ManifestError,
    load_manifest,
    segment_file,
)

log = logging.getLogger(__name__)

#: Default seconds a segment's size and mtime must stay unchanged before it is shipped.
DEFAULT_STABLE_S = 5.0
#: Default seconds between full rescans (events trigger a scan at once, too).
DEFAULT_RESCAN_S = 5.0
#: After a close-after-write event, the file must stay unchanged this long (seconds):
#: guards against writers that close and reopen a file between chunks.
CLOSE_SETTLE_S = 1.0
#: A session.json modified less than this many seconds ago that fails to parse is assumed
#: to be mid-write rather than hostile.
MANIFEST_SETTLE_S = 1.0
#: Coarser than any file system's timestamp tick (Linux takes them from a clock read once
#: per scheduler tick, 1 to 10 ms): a file may be rewritten within one tick unseen by its
#: mtime, so a manifest is only remembered once its mtime is older than this (seconds).
MTIME_GRANULARITY_S = 0.1
#: While a listed file is waiting to become stable, re-check this often (seconds).
PENDING_POLL_S = 0.25
WATCH_DIR_NAME = "watch"
STATE_VERSION = 1

Signature = tuple[int, int]  # (size in bytes, mtime in ns)
#: The "signature" of a rejected session folder that is a symlink leading out of the root.
_LEADS_OUT: Signature = (-1, -1)


@dataclass
class _Shipped:
    """Durable per-folder record of what the agent has been given."""

    session_id: str
    begun: bool = False
    shipped: list[str] = field(default_factory=list)
    ended: bool = False


@dataclass
class _Tracker:
    signature: Signature
    since: float  # monotonic time this signature was first seen


@dataclass
class _Live:
    """Non-durable view of one folder, for the status."""

    session_id: str | None = None
    listed: int = 0
    waiting: list[str] = field(default_factory=list)
    error: str | None = None
    rejected_signature: Signature | None = None


def watch_dir(state_dir: Path) -> Path:
    return state_dir / WATCH_DIR_NAME


def _root_key(root: Path) -> str:
    return hashlib.sha256(str(root).encode()).hexdigest()[:16]


def read_watch_status(state_dir: Path) -> list[dict[str, Any]]:
    """Status documents of every watcher that ran with this state dir (for ``status``)."""
    folder = watch_dir(state_dir)
    found = []
    for path in sorted(folder.glob("*.status.json")) if folder.is_dir() else []:
        with contextlib.suppress(OSError, ValueError):
            found.append(json.loads(path.read_text(encoding="utf-8")))
    return found


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: SessionWatcher) -> None:
        self._watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        self._watcher.wake()

    def on_closed(self, event: FileSystemEvent) -> None:
        self._watcher.note_closed(Path(os.fsdecode(event.src_path)))


class SessionWatcher:
    """Finds complete segments under ``root`` and hands them to the agent."""

    def __init__(
        self,
        root: Path,
        agent: SessionSink,
        *,
        state_dir: Path,
        stable_seconds: float = DEFAULT_STABLE_S,
        rescan_seconds: float = DEFAULT_RESCAN_S,
        use_observer: bool = True,
        close_settle_seconds: float = CLOSE_SETTLE_S,
        notify: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if stable_seconds <= 0 or rescan_seconds <= 0:
            raise ValueError("stable_seconds and rescan_seconds must be positive")
        self.root = root.expanduser().absolute()
        self.agent = agent
        self.stable_seconds = stable_seconds
        self.rescan_seconds = rescan_seconds
        self.use_observer = use_observer
        self.close_settle_seconds = close_settle_seconds
        self.notify = notify or (lambda message: log.info("%s", message))
        self._clock = clock
        self._wall = wall
        key = _root_key(self.root)
        self.state_path = watch_dir(state_dir) / f"{key}.state.json"
        self.status_path = watch_dir(state_dir) / f"{key}.status.json"
        self._shipped: dict[str, _Shipped] = self._load_state()
        self._live: dict[str, _Live] = {}
        self._trackers: dict[Path, _Tracker] = {}
        self._closed: dict[Path, tuple[Signature, float]] = {}
        # Each folder's parsed manifest and the identity of the file it came from.
        self._manifests: dict[str, tuple[tuple[int, int, int], Manifest]] = {}
        # The mtime (ns) of the first session.json seen listing each unshipped segment.
        self._first_listed: dict[Path, int] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._last_status: str | None = None

    # -- events (observer thread) ---------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def note_closed(self, path: Path) -> None:
        """A writer closed ``path``: remember the file as it was at that moment."""
        try:
            st = path.stat()
        except OSError:
            return
        with self._lock:
            self._closed[path.resolve()] = ((st.st_size, st.st_mtime_ns), self._clock())
        self._wake.set()

    # -- main loop -------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Scan on every event and every ``rescan_seconds`` until ``stop`` is set."""
        if not self.root.is_dir():
            raise NotADirectoryError(f"{self.root} is not a folder")
        observer: Any = None
        if self.use_observer:
            observer = Observer()
            observer.schedule(_Handler(self), str(self.root), recursive=True)
            observer.start()
        try:
            while not stop.is_set():
                self._wake.clear()
                pending = self.scan()
                self._wake.wait(PENDING_POLL_S if pending else self.rescan_seconds)
                if stop.is_set():
                    break
        finally:
            if observer is not None:
                observer.stop()
                observer.join()

    def scan(self) -> bool:
        """One pass over every session folder; True while some listed file is waiting."""
        pending = False
        for folder in self._session_folders():
            try:
                pending |= self._scan_folder(folder)
            except Exception as exc:  # one bad folder must not stop the others
                log.exception("%s: unexpected error", folder)
                self._live.setdefault(str(folder), _Live()).error = f"unexpected error: {exc}"
        self._write_status()
        return pending

    def status(self) -> dict[str, Any]:
        sessions = []
        for key in sorted(set(self._live) | set(self._shipped)):
            live = self._live.get(key, _Live())
            done = self._shipped.get(key)
            sessions.append(
                {
                    "folder": key,
                    "session_id": done.session_id if done else live.session_id,
                    "listed": live.listed,
                    "shipped": len(done.shipped) if done else 0,
                    "waiting": list(live.waiting),
                    "ended": bool(done and done.ended),
                    "state": (
                        "rejected"
                        if live.rejected_signature is not None
                        else "error"
                        if live.error
                        else "ended"
                        if done and done.ended
                        else "open"
                        if done
                        else "new"
                    ),
                    "error": live.error,
                }
            )
        return {"root": str(self.root), "pid": os.getpid(), "sessions": sessions}

    # -- internals -----------------------------------------------------------------------

    def _session_folders(self) -> list[Path]:
        if (self.root / MANIFEST_NAME).exists():
            return [self.root]
        try:
            children = sorted(self.root.iterdir())
        except OSError as exc:
            log.warning("cannot list %s: %s", self.root, exc)
            return []
        return [c for c in children if not c.name.startswith(".") and c.is_dir()]

    def _scan_folder(self, folder: Path) -> bool:
        key = str(folder)
        done = self._shipped.get(key)
        if done is not None and done.ended:
            return False
        if folder != self.root and self.root.resolve() not in folder.resolve().parents:
            live = self._live.setdefault(key, _Live())
            if live.rejected_signature != _LEADS_OUT:
                self._reject(
                    key, live, _LEADS_OUT, f"{folder} is a symlink leading outside {self.root}"
                )
            return False
        manifest_path = folder / MANIFEST_NAME
        try:
            st = manifest_path.stat()
        except FileNotFoundError:
            return False
        signature = (st.st_size, st.st_mtime_ns)
        live = self._live.setdefault(key, _Live())
        if live.rejected_signature == signature:
            return False
        try:
            manifest, paths = self._read_manifest(
                folder, st, set(done.shipped) if done is not None else set()
            )
        except (ManifestError, InvalidNameError) as exc:
            if self._wall() - st.st_mtime < MANIFEST_SETTLE_S:
                return True  # probably still being written; look again shortly
            self._reject(key, live, signature, str(exc))
            return False
        claimed = self._owner_of(manifest.id)
        if claimed is not None and claimed != key:
            self._reject(
                key, live, signature, f"session id {manifest.id!r} is already used by {claimed}"
            )
            return False
        if done is not None and done.session_id != manifest.id:
            self._reject(
                key,
                live,
                signature,
                f"session id changed from {done.session_id!r} to {manifest.id!r}",
            )
            return False
        if live.rejected_signature is not None:
            self.notify(f"{folder}: session.json is valid again")
        live.rejected_signature = None
        live.error = None
        live.session_id = manifest.id
        live.listed = len(manifest.segments)

        if done is None:
            done = self._shipped[key] = _Shipped(session_id=manifest.id)
        if not done.begun:
            self.agent.begin_session(
                manifest.id,
                name=manifest.name,
                started_at=manifest.started_at,
                priority=manifest.priority,
                options=manifest.options,
            )
            done.begun = True
            self._save_state()
            self.notify(f"session {manifest.id}: begun ({folder})")

        waiting = []
        shipped = set(done.shipped)
        # Files written before the end marker are final (see the module's rules).
        ended_at, complete = manifest.ended_at, manifest.complete
        final_before = st.st_mtime_ns if (ended_at is not None or complete) else None
        for i, segment in enumerate(manifest.segments):
            if segment.file in shipped:
                continue
            path = paths[segment.file]
            listed_at = self._first_listed.setdefault(path, st.st_mtime_ns)
            moved_on = any(
                later.kind == segment.kind
                and (later.file in shipped or _has_data(paths[later.file]))
                for later in manifest.segments[i + 1 :]
            )
            state = self._completeness(path, final_before, moved_on=moved_on,
                                       listed_at=listed_at)  # fmt: skip
            if state is not True:
                if state is False:
                    waiting.append(segment.file)
                elif state is not None:
                    live.error = state
                continue
            try:
                self.agent.add_segment(manifest.id, path, segment.spec())
            except (OSError, ValueError) as exc:
                live.error = f"segment {segment.file!r}: {exc}"
                log.warning("session %s: %s", manifest.id, live.error)
                continue
            done.shipped.append(segment.file)
            shipped.add(segment.file)
            self._trackers.pop(path, None)
            with self._lock:
                self._closed.pop(path, None)
            self._first_listed.pop(path, None)
            self._save_state()
            self.notify(f"session {manifest.id}: segment {segment.file} queued for upload")
        live.waiting = waiting

        if (ended_at is not None or complete) and not waiting and live.error is None:
            all_listed = all(s.file in shipped for s in manifest.segments)
            if all_listed:
                self.agent.end_session(manifest.id, ended_at=ended_at)
                done.ended = True
                self._manifests.pop(key, None)
                self._save_state()
                self.notify(f"session {manifest.id}: ended ({len(done.shipped)} segments)")
        return bool(waiting)

    def _read_manifest(
        self, folder: Path, st: os.stat_result, shipped: set[str]
    ) -> tuple[Manifest, dict[str, Path]]:
        """The folder's manifest (``st``: its ``session.json``'s stat) and the local path of
        every listed segment not shipped yet, each checked to stay inside the folder.

        The watcher scans on every file event (a recorder writing a segment makes several a
        second) and a session lists thousands of segments, so the parsed manifest is kept
        while its file is unchanged, and only unshipped segments are resolved: a shipped one
        was checked before it was read, and is never read again. A manifest modified within
        ``MTIME_GRANULARITY_S`` of its reading is not kept (a rewrite in the same timestamp
        tick would look unchanged)."""
        key = str(folder)
        identity = (st.st_size, st.st_mtime_ns, st.st_ino)
        cached = self._manifests.get(key)
        if cached is not None and cached[0] == identity:
            manifest = cached[1]
        else:
            read_at = self._wall()
            manifest = load_manifest(folder)
            if read_at - st.st_mtime > MTIME_GRANULARITY_S:
                self._manifests[key] = (identity, manifest)
            else:
                self._manifests.pop(key, None)
        # refuses symlinks leading out before any is read
        paths = {
            segment.file: segment_file(folder, segment)
            for segment in manifest.segments
            if segment.file not in shipped
        }
        return manifest, paths

    def _completeness(
        self,
        path: Path,
        final_before: int | None = None,
        *,
        moved_on: bool = False,
        listed_at: int | None = None,
    ) -> bool | str | None:
        """True when complete, False while waiting, a message when the entry is unusable.

        ``final_before``: the end marker's mtime (ns); a file not modified since is complete.
        ``moved_on``: a later segment of the same kind has data: a closed file is complete;
        so is one whose first listing (``listed_at``: that session.json's mtime, ns) was
        written after the file's last modification.
        """
        try:
            st = path.lstat()
        except FileNotFoundError:
            self._trackers.pop(path, None)
            return False
        if stat.S_ISLNK(st.st_mode):
            try:
                st = path.stat()  # segment_file already checked it stays inside
            except FileNotFoundError:
                return False
        if not stat.S_ISREG(st.st_mode):
            return f"{path.name} is not a regular file"
        signature = (st.st_size, st.st_mtime_ns)
        now = self._clock()
        tracker = self._trackers.get(path)
        if tracker is None or tracker.signature != signature:
            tracker = self._trackers[path] = _Tracker(signature, now)
        if st.st_size == 0:
            return False
        if final_before is not None and st.st_mtime_ns <= final_before:
            return True
        with self._lock:
            closed = self._closed.get(path)
        listed_after_close = listed_at is not None and listed_at > st.st_mtime_ns
        if closed is not None and closed[0] == signature and (
            moved_on or listed_after_close or now - closed[1] >= self.close_settle_seconds
        ):
            return True
        if now - tracker.since >= self.stable_seconds:
            return True
        return self._wall() - st.st_mtime >= self.stable_seconds and tracker.since < now

    def _owner_of(self, session_id: str) -> str | None:
        for key, done in self._shipped.items():
            if done.session_id == session_id:
                return key
        return None

    def _reject(self, key: str, live: _Live, signature: Signature, message: str) -> None:
        live.rejected_signature = signature
        live.error = message
        live.waiting = []
        log.error("rejected %s: %s", key, message)
        self.notify(f"rejected {key}: {message}")

    def _load_state(self) -> dict[str, _Shipped]:
        try:
            raw = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("%s unreadable (%s); starting afresh", self.state_path, exc)
            return {}
        sessions = raw.get("sessions", {}) if isinstance(raw, dict) else {}
        loaded = {}
        for key, value in sessions.items():
            with contextlib.suppress(TypeError, KeyError):
                loaded[key] = _Shipped(
                    session_id=str(value["session_id"]),
                    begun=bool(value.get("begun")),
                    shipped=[str(f) for f in value.get("shipped", [])],
                    ended=bool(value.get("ended")),
                )
        return loaded

    def _save_state(self) -> None:
        doc = {
            "version": STATE_VERSION,
            "root": str(self.root),
            "sessions": {key: asdict(value) for key, value in self._shipped.items()},
        }
        _write_json(self.state_path, doc)

    def _write_status(self) -> None:
        doc = self.status()
        text = json.dumps(doc, indent=2)
        if text != self._last_status:
            _write_json(self.status_path, doc)
            self._last_status = text


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(doc, indent=2))


def _has_data(path: Path) -> bool:
    """The file exists and is not empty (a recorder has started writing it)."""
    try:
        return path.stat().st_size > 0
    except OSError:
        return False
