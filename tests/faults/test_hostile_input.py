"""Fault scenario 9, hostile input: refused or failed by name, nothing outside the root.

A real celery worker on PostgreSQL and Redis is sent hostile events (10 MB, thousands of
fields, nesting 500 deep in the body or the headers, ids with ``..``/NUL/control
characters/10,000 characters, keys of another session, absurd numbers, messages that are not
events at all) and hostile sessions
(a segment that is an HLS or ffconcat playlist, a symlink in storage leading outside). Each
is refused or fails naming the offending thing, nothing is stored for a refused event,
nothing listed by a playlist or behind a symlink is opened, no file appears outside the
storage root, and a normal session then completes on the same worker. The commands that
take a session folder (``sessionpipe process``, ``capture-agent ship``) refuse hostile
folders before anything starts.
"""

from __future__ import annotations

import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from sqlalchemy import func, select

from capture_agent.emit import EventEmitter
from shared import events, models
from shared.broker import MAX_MESSAGE_DEPTH
from shared.db import session_scope
from shared.routing import QUEUE_DEFAULT, TASK_INGEST_EVENT
from shared.segments import SegmentKind
from shared.sessiondir import load_manifest
from shared.settings import Settings
from shared.storage import Storage
from synthetic.clips import write_tone_segment
from synthetic.plan import SyntheticSpec
from synthetic.session import record_synthetic_session
from tests.support.cli import agent_env, capture_agent, clean_env, run
from tests.support.services import WorkerProcess, wait_for_session
from tests.support.shipping import SessionShipper, ship_session_dir
from tests.support.waiting import wait_for
from workers.pipeline import STAGES as PIPELINE_STAGES

pytestmark = pytest.mark.integration

STARTED = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
SPEC = SyntheticSpec(
    duration=4.0, segment_seconds=2.0, audio_holes=(), width=160, height=96, fps=10
)
STAGES = {stage.value for stage in PIPELINE_STAGES}
OLD_ATIME = 1_000_000.0
REJECTED = "rejected event"  # what the worker logs for an event it refuses


# -- helpers ---------------------------------------------------------------------------------


def age(path: Path) -> None:
    """An access time far in the past: reading the file (relatime too) moves it."""
    os.utime(path, (OLD_ATIME, path.stat().st_mtime), follow_symlinks=True)


def atime_tracked(folder: Path) -> bool:
    control = folder / "atime-control"
    control.write_bytes(b"x")
    age(control)
    control.read_bytes()
    tracked = control.stat().st_atime != OLD_ATIME
    control.unlink()
    return tracked


def files_outside(root: Path, *skip: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` but the ``skip`` trees: (size, mtime) by path."""
    found = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if any(path == s or s in path.parents for s in skip):
                continue
            st = path.lstat()
            found[str(path)] = (st.st_size, st.st_mtime_ns)
    return found


class Buffer:
    """Collects events so storage can be tampered with before they are sent."""

    def __init__(self) -> None:
        self.events: list[events.Event] = []

    def emit(self, event: events.Event, *, priority: str = "normal") -> None:
        self.events.append(event)


def ship_one(
    storage: Storage, session_id: str, kind: SegmentKind, file: str, source: Path
) -> list[events.Event]:
    """A one-segment session's events (its segment copied into storage first)."""
    buffer = Buffer()
    shipper = SessionShipper(storage, buffer, session_id)
    shipper.start(name=session_id, started_at=STARTED)
    shipper.ship_segment(source, kind=kind, file=file, started_at=STARTED, duration=2.0)
    shipper.end()
    return buffer.events


def envelope(number: int, type_: str = "heartbeat", payload: Any = None, **fields: Any) -> Any:
    return {
        "schema_version": 1,
        "event_id": f"evil-{number}",
        "type": type_,
        "session_id": "hostile-target",
        "seq": number,
        "emitted_at": STARTED.isoformat(),
        "payload": {} if payload is None else payload,
        **fields,
    }


def nested(levels: int) -> dict[str, Any]:
    top: dict[str, Any] = {}
    inner = top
    for _ in range(levels):
        inner["a"] = {}
        inner = inner["a"]
    return top


def hostile_events() -> list[Any]:
    segment = {
        "kind": "audio",
        "file": "mic-00000.m4a",
        "key": "sessions/hostile-after/segments/mic-00000.m4a",  # another session's file
        "sha256": "0" * 64,
        "size": 1,
        "index": 0,
    }
    made = [
        envelope(1, payload={"blob": "x" * 10_000_000}),
        envelope(2, payload={f"field{i}": i for i in range(5000)}),
        envelope(4, "segment.stored", segment),
        envelope(5, "segment.stored", {**segment, "file": "../../../etc/passwd"}),
        envelope(6, "segment.stored", {**segment, "key": "/etc/passwd"}),
        envelope(7, "segment.stored", {**segment, "size": 10**30, "index": -1}),
        envelope(8, "session.ended", {"segment_count": 10**9}),
        envelope(9, "session.started", {"name": "a\x00b", "started_at": "yesterday"}),
        envelope(10, session_id="../../etc"),
        envelope(11, session_id="nul\x00id"),
        envelope(12, session_id="s" * 10_000),
        envelope(13, session_id="esc\x1b[2Jid"),
        envelope(14, event_id="e" * 10_000),
        envelope(15, seq=2**40),
        envelope(16, "session.ended", {"segment_count": 10**9}, session_id="hostile-after"),
    ]
    return [*made, "not an event", None, [1, 2, 3]]


# -- the worker ------------------------------------------------------------------------------


def test_hostile_events_and_sessions_fail_by_name_and_a_normal_session_completes(
    tmp_path: Path, worker_system: tuple[Settings, WorkerProcess]
) -> None:
    settings, worker = worker_system
    storage = Storage(settings.storage)
    storage.root.mkdir(parents=True, exist_ok=True)
    outside = tmp_path / "outside"  # files a hostile session points at, outside the root
    outside.mkdir()
    secret = write_tone_segment(outside / "secret.m4a", seconds=2.0)  # readable media
    normal = record_synthetic_session(
        tmp_path / "hostile-after",
        session_id="hostile-after",
        name="after",
        spec=SPEC,
        started_at=STARTED,
    )
    playlists = tmp_path / "playlists"
    playlists.mkdir()
    hls = playlists / "hls.m3u8"
    hls.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n{secret}\n#EXT-X-ENDLIST\n")
    concat = playlists / "concat.mp4"
    concat.write_text("ffconcat version 1.0\nfile /etc/passwd\nfile mic-0000.m4a\n")
    shipped = {
        # An HLS playlist under the extension FFmpeg's hls probe wants, listing a file
        # outside the storage root.
        "hostile-hls": ship_one(storage, "hostile-hls", SegmentKind.AUDIO, "mic-0000.m3u8", hls),
        "hostile-concat": ship_one(
            storage, "hostile-concat", SegmentKind.VIDEO, "screen-0000.mp4", concat
        ),
        "hostile-link": ship_one(
            storage, "hostile-link", SegmentKind.AUDIO, "mic-0000.m4a", secret
        ),
    }
    linked = storage.path(storage.segment_key("hostile-link", "mic-0000.m4a"))
    linked.unlink()
    linked.symlink_to(secret)  # placed inside storage, leading outside it
    age(secret)
    before = files_outside(tmp_path, storage.root, worker.log_path)

    client = Celery("hostile-client", broker=settings.broker_url, set_as_current=False)
    hostile = hostile_events()
    for event in hostile:
        client.send_task(TASK_INGEST_EVENT, args=[event], queue=QUEUE_DEFAULT)
    # Nested so deep that handing it to a pool process (pickle) used to kill the worker:
    # refused when the message is decoded.
    deep = envelope(3, payload=nested(500))
    client.send_task(TASK_INGEST_EVENT, args=[deep], queue=QUEUE_DEFAULT)
    # The same depth in headers any client may add: refused before the event is looked at
    # (the event itself is valid, and never stored).
    client.send_task(
        TASK_INGEST_EVENT,
        args=[envelope(17)],
        headers={"deep": nested(500)},
        task_id="evil-headers",
        queue=QUEUE_DEFAULT,
    )
    client.send_task(TASK_INGEST_EVENT, args=[], queue=QUEUE_DEFAULT)  # no event at all
    client.send_task(TASK_INGEST_EVENT, args=[{}], kwargs={"junk": 1}, queue=QUEUE_DEFAULT)
    client.close()
    emitter = EventEmitter(settings)
    for session_events in shipped.values():
        for event in session_events:
            emitter.emit(event)

    failed = {
        session_id: {
            j.stage: j for j in wait_for_session(settings.database_url, session_id, worker)
        }
        for session_id in shipped
    }
    errors = {
        session_id: next(j.error or "" for j in jobs.values() if j.status == "failed")
        for session_id, jobs in failed.items()
    }
    assert "segment 'mic-0000.m3u8' of session 'hostile-hls': " in errors["hostile-hls"]
    assert "HLS playlist" in errors["hostile-hls"]
    assert "segment 'screen-0000.mp4' of session 'hostile-concat': " in errors["hostile-concat"]
    assert "ffconcat playlist" in errors["hostile-concat"]
    assert "segment 'mic-0000.m4a' of session 'hostile-link': " in errors["hostile-link"]
    assert "outside the storage root" in errors["hostile-link"]

    # Every hostile message was consumed, and each event is named in one bounded line.
    def rejections() -> list[str]:
        return [
            line
            for line in worker.log().splitlines()
            if "ERROR/ForkPoolWorker" in line and REJECTED in line
        ]

    wait_for(lambda: len(rejections()) >= len(hostile), 30, "every hostile event rejected")
    lines = rejections()
    assert len(lines) == len(hostile), lines
    assert all(len(line) < 2500 for line in lines)
    log = worker.log()
    for number in (1, 2, 4, 8, 9, 15):
        assert f"rejected event 'evil-{number}'" in log
    assert f"nested deeper than {MAX_MESSAGE_DEPTH} levels" in log and '"evil-3"' in log
    assert "refused message 'evil-headers' of task 'sessionpipe.ingest_event'" in log
    assert "'../../etc'" in log and "'nul\\x00id'" in log and "(10000 characters)" in log
    assert "more than 65536" in log and "more than 256 fields" in log
    with session_scope(settings.database_url) as db:
        stored_evil = db.execute(
            select(func.count())
            .select_from(models.Event)
            .where(models.Event.event_id.like("evil-%"))
        ).scalar_one()
        assert stored_evil == 0
        assert db.get(models.Session, "hostile-target") is None

    # The same worker then processes a normal session, unaffected.
    ship_session_dir(normal, storage, emitter)
    emitter.close()
    jobs = wait_for_session(settings.database_url, "hostile-after", worker)
    assert {j.stage: j.status for j in jobs} == dict.fromkeys(STAGES, "succeeded"), worker.log()
    with session_scope(settings.database_url) as db:
        session = db.get(models.Session, "hostile-after")
        assert session is not None
        assert session.expected_segments == len(load_manifest(normal).segments)
    assert worker.proc.poll() is None, "the worker died"

    # Nothing appeared or changed outside the storage root, and nothing listed by a
    # playlist or behind the symlink was read.
    assert files_outside(tmp_path, storage.root, worker.log_path) == before
    if atime_tracked(outside):
        assert secret.stat().st_atime == OLD_ATIME, "the file outside storage was read"
    assert not (storage.root / "sessions" / "hostile-target").exists()


# -- the commands that take a session folder ------------------------------------------------


def hostile_folders(root: Path, secret: Path) -> dict[str, tuple[Path, str]]:
    """Session folders, each with the text its refusal must contain."""
    manifest = (
        '{"id": "%s", "started_at": "2026-11-21T10:00:00Z", '
        '"segments": [{"kind": "audio", "file": "a.m4a"}]}'
    )
    made: dict[str, tuple[Path, str]] = {}
    folder = root / "segment-link"
    folder.mkdir()
    (folder / "session.json").write_text(manifest % "segment-link")
    (folder / "a.m4a").symlink_to(secret)
    made["segment-link"] = (folder, "segment 'a.m4a' resolves outside")

    folder = root / "manifest-link"
    folder.mkdir()
    elsewhere = root / "elsewhere.json"
    elsewhere.write_text(manifest % "manifest-link")
    (folder / "session.json").symlink_to(elsewhere)
    shutil.copy(secret, folder / "a.m4a")
    made["manifest-link"] = (folder, "a symlink leading outside")

    folder = root / "fifo-segment"
    folder.mkdir()
    (folder / "session.json").write_text(manifest % "fifo-segment")
    os.mkfifo(folder / "a.m4a")
    made["fifo-segment"] = (folder, "segment 'a.m4a' listed in session.json is not a regular")

    folder = root / "absurd"
    folder.mkdir()
    (folder / "session.json").write_text(
        '{"id": "absurd", "started_at": "2026-11-21T10:00:00Z", "segments": 1000000000}'
    )
    made["absurd"] = (folder, "segments: Input should be a valid list")
    return made


def test_the_folder_commands_refuse_hostile_folders_before_anything_starts(
    tmp_path: Path,
) -> None:
    secret = write_tone_segment(tmp_path / "secret.m4a", seconds=1.0)
    folders = hostile_folders(tmp_path, secret)
    age(secret)
    commands: list[tuple[str, str, list[str], dict[str, str], Path]] = []
    for name, (folder, _) in folders.items():
        home = tmp_path / f"home-{name}"
        commands.append(
            (
                name,
                "sessionpipe process",
                [
                    sys.executable,
                    "-m",
                    "sessionpipe.cli",
                    "process",
                    str(folder),
                    "--home",
                    str(home),
                ],
                clean_env(),
                home,  # nothing at all is created when the folder is refused
            )
        )
        ship_home = tmp_path / f"ship-{name}"
        commands.append(
            (
                name,
                "capture-agent ship",
                capture_agent("ship", str(folder), "--timeout", "5"),
                agent_env(ship_home, state_dir=str(tmp_path / f"state-{name}")),
                ship_home / "storage",
            )
        )
    with ThreadPoolExecutor(max_workers=4) as pool:  # the commands' start-up dominates
        results = list(pool.map(lambda c: run(c[2], c[3]), commands))
    for (name, command, _, _, untouched), result in zip(commands, results, strict=True):
        assert result.returncode == 2, (name, command, result.stdout, result.stderr)
        assert folders[name][1] in result.stderr, (name, command, result.stderr)
        assert not untouched.exists(), f"{name}: `{command}` wrote {untouched}"
    if atime_tracked(tmp_path):
        assert secret.stat().st_atime == OLD_ATIME, "the file behind the symlink was read"
