"""The folder watcher: complete files only, hostile manifests rejected, nothing missed."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from capture_agent.watch import SessionWatcher, read_watch_status
from shared.options import SessionOptions
from tests.capture_agent.recording.helpers import FakeAgent, fake_cli, logged_calls, recording_env
from tests.support import ROOT
from tests.support.waiting import wait_for

STABLE_S = 1.0
RESCAN_S = 0.5
CHUNK_BYTES = 16 * 1024
STARTED = "2026-11-21T10:00:00Z"


def write_manifest(folder: Path, session_id: str, files: list[str], **extra: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    doc = {
        "id": session_id,
        "name": session_id,
        "started_at": STARTED,
        "segments": [
            {"kind": "audio" if f.startswith("mic") else "video", "file": f, "duration": 1.0}
            for f in files
        ],
        **extra,
    }
    tmp = folder / ".session.json.tmp"
    tmp.write_text(json.dumps(doc))
    tmp.replace(folder / "session.json")


def write_file(path: Path, size: int = 3 * CHUNK_BYTES) -> None:
    path.write_bytes(os.urandom(size))


@contextmanager
def watching(
    root: Path,
    agent: FakeAgent,
    state_dir: Path,
    *,
    use_observer: bool = True,
    stable_seconds: float = STABLE_S,
    close_settle_seconds: float = 1.0,
) -> Iterator[SessionWatcher]:
    watcher = SessionWatcher(
        root,
        agent,
        state_dir=state_dir,
        stable_seconds=stable_seconds,
        close_settle_seconds=close_settle_seconds,
        rescan_seconds=RESCAN_S,
        use_observer=use_observer,
    )
    stop = threading.Event()
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            watcher.run(stop)
        except BaseException as exc:  # surfaced in the test thread
            errors.append(exc)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield watcher
    finally:
        stop.set()
        watcher.wake()
        thread.join(10)
        assert not thread.is_alive()
        assert not errors, errors


@pytest.mark.parametrize("use_observer", [True, False], ids=["events", "rescan-only"])
def test_a_file_still_being_written_is_not_shipped(tmp_path: Path, use_observer: bool) -> None:
    root, agent = tmp_path / "Recorder", FakeAgent()
    write_manifest(root / "s1", "s1", ["screen-0000.mp4"], complete=True)
    target = root / "s1" / "screen-0000.mp4"
    written = threading.Event()

    def writer() -> None:
        with target.open("wb") as handle:  # one open file, like a recorder's
            for _ in range(12):
                handle.write(os.urandom(CHUNK_BYTES))
                handle.flush()
                time.sleep(0.3)  # shorter than STABLE_S: never looks finished
        written.set()

    with watching(root, agent, tmp_path / "state", use_observer=use_observer):
        wait_for(lambda: agent.names() == ["begin_session"], 5, "begin_session")
        thread = threading.Thread(target=writer)
        thread.start()
        while not written.is_set():
            assert agent.files() == [], "shipped while still being written"
            time.sleep(0.05)
        finished = time.monotonic()
        wait_for(lambda: agent.names()[-1:] == ["end_session"], STABLE_S + 5, "end_session")
        thread.join()
    shipped = agent.segments()
    assert [c.kwargs["file"] for c in shipped] == ["screen-0000.mp4"]
    assert shipped[0].sha256 == hashlib.sha256(target.read_bytes()).hexdigest()
    assert shipped[0].kwargs["duration"] == 1.0
    assert shipped[0].monotonic - finished < STABLE_S + 2 * RESCAN_S + 1.0
    assert agent.names() == ["begin_session", "add_segment", "end_session"]


#: Longer than any test waits: a file can only ship sooner by the end-marker rule.
NEVER_STABLE_S = 3600.0


def test_files_written_before_the_end_marker_ship_at_once(tmp_path: Path) -> None:
    root, agent = tmp_path / "Recorder", FakeAgent()
    folder = root / "s1"
    folder.mkdir(parents=True)
    write_file(folder / "screen-0000.mp4")
    write_file(folder / "screen-0001.mp4")
    write_manifest(folder, "s1", ["screen-0000.mp4", "screen-0001.mp4"])
    with watching(root, agent, tmp_path / "state", use_observer=False,
                  stable_seconds=NEVER_STABLE_S):  # fmt: skip
        wait_for(lambda: agent.names() == ["begin_session"], 5, "begin_session")
        time.sleep(3 * RESCAN_S)
        assert agent.files() == []  # still recording: nothing is known to be complete
        late = folder / "screen-0001.mp4"
        write_manifest(folder, "s1", ["screen-0000.mp4", "screen-0001.mp4"], complete=True)
        os.utime(late, ns=(time.time_ns(), (folder / "session.json").stat().st_mtime_ns + 10**9))
        wait_for(lambda: agent.files() == ["screen-0000.mp4"], 5, "the file older than the end")
        time.sleep(3 * RESCAN_S)
        # one modified after the end marker waits for the usual rules
        assert agent.files() == ["screen-0000.mp4"]
        assert "end_session" not in agent.names()


def test_a_closed_segment_ships_once_the_recorder_moved_on_to_the_next(tmp_path: Path) -> None:
    """A file closed after writing waits ``close_settle_seconds`` (a writer may reopen it)
    unless a later segment of the same kind has data: the recorder moved on, it is final.
    A later segment of the other kind says nothing about it."""
    root, agent = tmp_path / "Recorder", FakeAgent()
    folder = root / "s1"
    files = ["screen-0000.mp4", "mic-0000.m4a", "screen-0001.mp4"]
    write_manifest(folder, "s1", files)
    with watching(root, agent, tmp_path / "state", stable_seconds=NEVER_STABLE_S,
                  close_settle_seconds=NEVER_STABLE_S):  # fmt: skip
        wait_for(lambda: agent.names() == ["begin_session"], 5, "begin_session")
        write_file(folder / "screen-0000.mp4")  # written and closed
        write_file(folder / "mic-0000.m4a")  # the other track goes on
        time.sleep(3 * RESCAN_S)
        assert agent.files() == []  # closed, but the recorder may still come back to it
        (folder / "screen-0001.mp4").write_bytes(b"\0" * 100)  # the next video segment begins
        wait_for(lambda: agent.files() == ["screen-0000.mp4"], 5, "the segment left behind")
        time.sleep(3 * RESCAN_S)
        assert agent.files() == ["screen-0000.mp4"]  # the microphone's has no successor yet


def test_a_segment_listed_only_once_closed_ships_at_once(tmp_path: Path) -> None:
    """A recorder that names a segment in ``session.json`` once it has finished it (as
    ffmpeg's segment list does) has said it is final: no settle. One listed while it was
    still being written waits the settle (its writer may reopen it)."""
    root, agent = tmp_path / "Recorder", FakeAgent()
    folder = root / "s1"
    write_manifest(folder, "s1", ["screen-0000.mp4"])
    with watching(root, agent, tmp_path / "state", stable_seconds=NEVER_STABLE_S,
                  close_settle_seconds=NEVER_STABLE_S):  # fmt: skip
        wait_for(lambda: agent.names() == ["begin_session"], 5, "begin_session")
        time.sleep(3 * RESCAN_S)  # the watcher has seen screen-0000 listed, not written
        write_file(folder / "screen-0000.mp4")  # written and closed after it was listed
        write_file(folder / "mic-0000.m4a")  # written and closed, not listed yet
        time.sleep(3 * RESCAN_S)
        assert agent.files() == []
        write_manifest(folder, "s1", ["screen-0000.mp4", "mic-0000.m4a"])
        wait_for(lambda: agent.files() == ["mic-0000.m4a"], 5, "the segment listed once closed")
        time.sleep(3 * RESCAN_S)
        assert agent.files() == ["mic-0000.m4a"]  # the other one waits the settle


HOSTILE: dict[str, tuple[dict[str, Any], str]] = {
    "escape": (
        {"segments": [{"kind": "video", "file": "../../etc/passwd"}]},
        "../../etc/passwd",
    ),
    "absolute": ({"segments": [{"kind": "video", "file": "/etc/passwd"}]}, "/etc/passwd"),
    "absurd-duration": (
        {"segments": [{"kind": "video", "file": "a.mp4", "duration": 1e9}]},
        "duration",
    ),
    "unknown-kind": ({"segments": [{"kind": "screen", "file": "a.mp4"}]}, "kind"),
    "bad-id": ({"id": "../../x", "segments": []}, "invalid session id"),
    "not-json": ({}, "cannot be read"),
    "bad-ended-at": ({"segments": [], "ended_at": "yesterday"}, "ended_at"),
    "nul-file": ({"segments": [{"kind": "video", "file": "a\x00.mp4"}]}, "NUL"),
    "control-file": ({"segments": [{"kind": "video", "file": "a\x1b.mp4"}]}, "control character"),
    "long-file": ({"segments": [{"kind": "video", "file": "a" * 10_000}]}, "10000 characters"),
    "long-id": ({"id": "i" * 10_000, "segments": []}, "10000 characters"),
    "negative-duration": (
        {"segments": [{"kind": "video", "file": "a.mp4", "duration": -1}]},
        "duration",
    ),
    "text-duration": (
        {"segments": [{"kind": "video", "file": "a.mp4", "duration": "ten"}]},
        "duration",
    ),
    "negative-offset": (
        {"segments": [{"kind": "video", "file": "a.mp4", "started_at": "2026-11-20T10:00:00Z"}]},
        "'a.mp4': started_at",
    ),
    "billion-segments": ({"segments": 10**9}, "segments"),
}


def test_hostile_session_json_is_rejected_and_a_good_one_beside_it_ships(
    tmp_path: Path,
) -> None:
    root, agent, state = tmp_path / "Recorder", FakeAgent(), tmp_path / "state"
    for name, (fields, _) in HOSTILE.items():
        folder = root / name
        folder.mkdir(parents=True)
        if name == "not-json":
            (folder / "session.json").write_text('{"id": "half-writ')
        else:
            doc = {"id": name, "started_at": STARTED, **fields}
            (folder / "session.json").write_text(json.dumps(doc))
    # A symlink that leads out of its folder.
    outside = tmp_path / "secret.mp4"
    write_file(outside)
    (root / "symlink").mkdir()
    (root / "symlink" / "link.mp4").symlink_to(outside)
    write_manifest(root / "symlink", "symlink", ["link.mp4"], complete=True)
    # A session.json that is a symlink out of its folder, or a FIFO (reading would block).
    write_manifest(tmp_path / "elsewhere", "elsewhere", [], complete=True)
    (root / "manifest-link").mkdir()
    (root / "manifest-link" / "session.json").symlink_to(tmp_path / "elsewhere" / "session.json")
    (root / "fifo").mkdir()
    os.mkfifo(root / "fifo" / "session.json")
    # A session folder that is itself a symlink out of the watched folder.
    write_manifest(tmp_path / "outside-session", "outside", ["screen-0000.mp4"], complete=True)
    write_file(tmp_path / "outside-session" / "screen-0000.mp4")
    (root / "folder-link").symlink_to(tmp_path / "outside-session")
    LEADING_OUT = {"symlink": "outside", "manifest-link": "outside", "fifo": "regular file"}
    HOSTILE_NAMES = [*HOSTILE, *LEADING_OUT, "folder-link"]
    # Age the hostile files past the "maybe half-written" grace period.
    old = time.time() - 60
    for name in HOSTILE_NAMES:
        if name not in ("manifest-link", "folder-link"):
            os.utime(root / name / "session.json", (old, old))
    os.utime(tmp_path / "elsewhere" / "session.json", (old, old))
    write_manifest(root / "good", "good", ["screen-0000.mp4", "mic-0000.m4a"], complete=True)
    write_file(root / "good" / "screen-0000.mp4")
    write_file(root / "good" / "mic-0000.m4a")

    with watching(root, agent, state) as watcher:
        wait_for(lambda: agent.names()[-1:] == ["end_session"], STABLE_S + 5, "end_session")
        status = {Path(s["folder"]).name: s for s in watcher.status()["sessions"]}
        for name in HOSTILE_NAMES:
            assert status[name]["state"] == "rejected", status[name]
        for name, (_, message) in HOSTILE.items():
            assert message in status[name]["error"], (name, status[name]["error"])
        for name, message in LEADING_OUT.items():
            assert message in status[name]["error"], (name, status[name]["error"])
        assert "symlink leading outside" in status["folder-link"]["error"]
        assert all(len(status[name]["error"]) < 1000 for name in HOSTILE_NAMES)
        assert status["good"]["state"] == "ended" and status["good"]["shipped"] == 2
        assert {c.session_id for c in agent.calls} == {"good"}
        # The status is visible to `capture-agent status` through the state folder.
        published = read_watch_status(state)
        assert len(published) == 1 and published[0]["root"] == str(root)

        # Fixed in place, a rejected session is read again and shipped.
        write_manifest(root / "escape", "escape", ["screen-0000.mp4"], complete=True)
        write_file(root / "escape" / "screen-0000.mp4")
        wait_for(
            lambda: "escape" in {c.session_id for c in agent.calls if c.name == "end_session"},
            STABLE_S + 5,
            "the escape session's end_session",
        )
    assert agent.files("escape") == ["screen-0000.mp4"]


def test_a_reused_session_id_is_rejected(tmp_path: Path) -> None:
    root, agent = tmp_path / "Recorder", FakeAgent()
    write_manifest(root / "a", "same", ["screen-0000.mp4"])
    write_file(root / "a" / "screen-0000.mp4")
    with watching(root, agent, tmp_path / "state") as watcher:
        wait_for(lambda: agent.files() == ["screen-0000.mp4"], STABLE_S + 5, "the first segment")
        write_manifest(root / "b", "same", ["screen-0000.mp4"])
        wait_for(
            lambda: any(s["state"] == "rejected" for s in watcher.status()["sessions"]),
            5,
            "the reused id to be rejected",
        )
    status = {Path(s["folder"]).name: s for s in watcher.status()["sessions"]}
    assert "already used" in status["b"]["error"]
    assert agent.names() == ["begin_session", "add_segment"]


def test_rescan_finds_what_was_written_while_the_watcher_was_down(tmp_path: Path) -> None:
    root, state = tmp_path / "Recorder", tmp_path / "state"
    folder = root / "s2"
    write_manifest(folder, "s2", ["screen-0000.mp4"])
    write_file(folder / "screen-0000.mp4")
    first = FakeAgent()
    with watching(root, first, state):
        wait_for(
            lambda: first.files() == ["screen-0000.mp4"],
            STABLE_S + 5,
            "the first watcher's segment",
        )
    assert first.names() == ["begin_session", "add_segment"]  # not ended: no end marker

    # Written while no watcher runs.
    write_file(folder / "screen-0001.mp4")
    write_manifest(
        folder, "s2", ["screen-0000.mp4", "screen-0001.mp4"], ended_at="2026-11-21T10:00:20Z"
    )

    second = FakeAgent()
    with watching(root, second, state):
        wait_for(
            lambda: second.names()[-1:] == ["end_session"],
            STABLE_S + 5,
            "the second watcher's end_session",
        )
    assert second.names() == ["add_segment", "end_session"], "nothing is added twice"
    assert second.files() == ["screen-0001.mp4"]
    assert str(second.calls[-1].kwargs["ended_at"]) == "2026-11-21 10:00:20+00:00"


def test_periodic_rescan_without_events_and_a_single_session_folder(tmp_path: Path) -> None:
    folder, agent = tmp_path / "one-session", FakeAgent()
    write_manifest(folder, "solo", [])
    with watching(folder, agent, tmp_path / "state", use_observer=False):
        wait_for(lambda: agent.names() == ["begin_session"], 5, "begin_session")
        write_file(folder / "mic-0000.m4a")
        write_manifest(folder, "solo", ["mic-0000.m4a"], complete=True)
        wait_for(lambda: agent.names()[-1:] == ["end_session"], STABLE_S + 5, "end_session")
    assert agent.files() == ["mic-0000.m4a"]


def test_the_session_options_are_passed_on(tmp_path: Path) -> None:
    folder, agent = tmp_path / "one-session", FakeAgent()
    options = {"enrich": ["transcript"], "language": "de", "llm": False}
    write_manifest(folder, "opts", [], options=options)
    with watching(folder, agent, tmp_path / "state", use_observer=False):
        wait_for(lambda: agent.names() == ["begin_session"], 5, "begin_session")
    (begun,) = agent.calls
    assert begun.kwargs["options"] == SessionOptions.model_validate(options)


def test_a_segment_the_agent_refuses_is_reported_and_retried(tmp_path: Path) -> None:
    root, agent = tmp_path / "Recorder", FakeAgent(fail_files={"screen-0000.mp4"})
    write_manifest(root / "s3", "s3", ["screen-0000.mp4"], complete=True)
    write_file(root / "s3" / "screen-0000.mp4")
    with watching(root, agent, tmp_path / "state") as watcher:
        wait_for(
            lambda: any(s["error"] for s in watcher.status()["sessions"]),
            STABLE_S + 5,
            "the refused segment's error",
        )
        assert "refused" in watcher.status()["sessions"][0]["error"]
        assert "end_session" not in agent.names()
        agent.fail_files.clear()
        wait_for(lambda: agent.names()[-1:] == ["end_session"], 5, "end_session after the retry")


@pytest.mark.integration
def test_watch_command_runs_until_signalled(tmp_path: Path) -> None:
    root = tmp_path / "Recorder"
    write_manifest(root / "cli", "cli-watch", ["screen-0000.mp4"], complete=True)
    write_file(root / "cli" / "screen-0000.mp4")
    proc = subprocess.Popen(
        fake_cli("watch", str(root), "--stable-seconds", "0.5", "--rescan-seconds", "0.5"),
        cwd=ROOT,
        env=recording_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: any(c["call"] == "end_session" for c in logged_calls(tmp_path)),
            20,
            "the command's end_session",
        )
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    names = [c["call"] for c in logged_calls(tmp_path)]
    assert names == ["start", "begin_session", "add_segment", "end_session", "stop"]
    assert "watcher stopped" in out


def test_a_scan_reads_an_unchanged_manifest_once_and_resolves_only_unshipped_segments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watcher scans on every file event, several a second while a recorder writes, and
    a two-hour session lists 1,440 segments: a scan that parsed the manifest and resolved
    every listed path took 0.23 s of CPU at that size (the agent used more CPU than the
    media worker during a replay). Now the manifest is parsed again only when its file
    changes, and only segments not shipped yet are resolved (a shipped one was checked
    before it was read and is never read again)."""
    from capture_agent import watch

    loads: list[Path] = []
    resolved: list[str] = []
    real_load, real_resolve = watch.load_manifest, watch.segment_file

    def counting_load(folder: Path) -> Any:
        loads.append(folder)
        return real_load(folder)

    def counting_resolve(folder: Path, segment: Any) -> Path:
        resolved.append(segment.file)
        return real_resolve(folder, segment)

    monkeypatch.setattr(watch, "load_manifest", counting_load)
    monkeypatch.setattr(watch, "segment_file", counting_resolve)
    root, agent = tmp_path / "Recorder", FakeAgent()
    folder = root / "s1"
    files = [f"screen-{i:04d}.mp4" for i in range(40)]
    folder.mkdir(parents=True)
    for name in files:
        write_file(folder / name, size=100)
    write_manifest(folder, "s1", files)
    old = time.time() - 10  # older than the file system's timestamp tick: may be remembered
    for name in files[:-1]:  # unchanged for longer than stable_seconds: complete
        os.utime(folder / name, (old - 10, old - 10))
    os.utime(folder / "session.json", (old, old))
    watcher = SessionWatcher(
        root, agent, state_dir=tmp_path / "state", stable_seconds=5.0,
        rescan_seconds=RESCAN_S, use_observer=False, close_settle_seconds=NEVER_STABLE_S,
    )  # fmt: skip
    watcher.scan()  # first sight of each file
    watcher.scan()  # every segment but the last (just written) has been stable: 39 ship
    assert agent.files() == files[:-1]
    assert len(loads) == 1
    loads.clear()
    resolved.clear()
    for _ in range(5):
        watcher.scan()
    assert loads == []  # unchanged: never parsed again
    assert resolved == [files[-1]] * 5  # the one waiting segment, checked on every scan

    # A new listing is read (a new file: another inode), and only its new segments resolved.
    write_file(folder / "screen-0040.mp4", size=100)
    write_manifest(folder, "s1", [*files, "screen-0040.mp4"])
    watcher.scan()
    assert len(loads) == 1
    assert sorted(set(resolved[5:])) == [files[-1], "screen-0040.mp4"]
    assert agent.files() == files[:-1]

    # A hostile entry added later is still refused before anything is read.
    write_manifest(folder, "s1", [*files, "screen-0040.mp4", "../outside.mp4"])
    os.utime(folder / "session.json", (old + 5, old + 5))  # settled: not half-written
    watcher.scan()
    assert watcher.status()["sessions"][0]["state"] == "rejected"
    assert agent.files() == files[:-1]
