"""The recorder with real ffmpeg processes (synthetic source) and a fake agent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from capture_agent import control
from capture_agent.record import Recorder, RecordingResult, RecordOptions
from shared.sessiondir import load_manifest
from synthetic.lavfi import SyntheticSource
from tests.capture_agent.recording.helpers import (
    Call,
    FakeAgent,
    fake_cli,
    logged_calls,
    recording_env,
)
from tests.support import ROOT
from tests.support.cli import run
from tests.support.media import decode
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

SEGMENT_S = 1.0
#: Slack for "the recorded time": ffmpeg startup and the recorder's poll interval.
# Recorded time vs the wall clock around it: ffmpeg start-up and a loaded 2-core machine
# shift it by a few hundred ms; a lost segment (>= 0.5 s here) is caught by the counts.
TIMING_SLACK_S = 1.0
SMALL = SyntheticSource(width=320, height=180, fps=15)


class Background:
    """A Recorder running in a thread, as the CLI runs it in the main one."""

    def __init__(self, tmp_path: Path, session_id: str = "rec-1", **options: object) -> None:
        self.agent = FakeAgent()
        self.state_dir = tmp_path / "state"
        params: dict[str, object] = {
            "session_id": session_id,
            "name": "test recording",
            "folder": tmp_path / session_id,
            "source": SMALL,
            "segment_seconds": SEGMENT_S,
            "state_dir": self.state_dir,
        }
        params.update(options)
        self.recorder = Recorder(RecordOptions(**params), self.agent)  # type: ignore[arg-type]
        self.result: RecordingResult | None = None
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.result = self.recorder.run()

    def join(self, timeout: float = 60.0) -> RecordingResult:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "recorder did not finish"
        assert self.result is not None
        return self.result

    def state(self) -> str | None:
        running = control.running_recorders(self.state_dir)
        return running[0].state if running else None


def check_segments_complete(calls: list[Call]) -> None:
    """Every handed-over file was already final, and decodes fully."""
    import hashlib

    for call in calls:
        path: Path = call.kwargs["path"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == call.sha256, (
            f"{path.name} changed after it was handed to the agent"
        )
        (decoded,) = decode(path).tracks
        assert decoded.codec == ("h264" if call.kwargs["kind"] == "video" else "aac")
        assert decoded.frames > 0
        assert abs(decoded.seconds - call.kwargs["duration"]) < 0.15, (path.name, decoded)


def of_kind(calls: list[Call], kind: str) -> list[Call]:
    return [c for c in calls if c.kwargs["kind"] == kind]


def start_end(call: Call) -> tuple[datetime, datetime]:
    start: datetime = call.kwargs["started_at"]
    return start, start + timedelta(seconds=call.kwargs["duration"])


def test_stop_during_a_segment_ships_the_last_one_before_the_end(tmp_path: Path) -> None:
    bg = Background(tmp_path)
    wait_for(lambda: bg.state() == "recording", 10, "the recorder to record")
    time.sleep(3.5)  # mid-way through the fourth segment
    stop_requested = time.monotonic()
    bg.recorder.request("stop")
    result = bg.join()
    assert result.error is None

    names = bg.agent.names()
    assert names[0] == "begin_session" and names[-1] == "end_session"
    assert set(names[1:-1]) == {"add_segment"}
    segments = bg.agent.segments()
    check_segments_complete(segments)

    for kind, prefix, ext in (("video", "screen", "mp4"), ("audio", "mic", "m4a")):
        calls = of_kind(segments, kind)
        assert [c.kwargs["file"] for c in calls] == [
            f"{prefix}-{n:05d}.{ext}" for n in range(len(calls))
        ]
        # 3.5 s of 1 s segments: four, or five when a loaded machine lets ffmpeg open the
        # next one just before the stop; the last one is always partial and still shipped.
        assert len(calls) in (4, 5), [c.kwargs["duration"] for c in calls]
        assert 0 < calls[-1].kwargs["duration"] < SEGMENT_S - 0.05, "stopped mid-segment"
        for before, after in zip(calls, calls[1:], strict=False):
            assert abs((start_end(before)[1] - start_end(after)[0]).total_seconds()) < 0.02
        total = sum(c.kwargs["duration"] for c in calls)
        assert abs(total - (stop_requested - bg.started)) < TIMING_SLACK_S, total

    assert result.manifest_path is not None
    manifest = load_manifest(result.folder)
    assert manifest.id == "rec-1"
    assert sorted(s.file for s in manifest.segments) == sorted(bg.agent.files())
    raw = json.loads(result.manifest_path.read_text())
    assert raw["complete"] is True and raw["ended_at"]
    assert control.running_recorders(bg.state_dir) == []


def test_pause_and_resume_never_span_a_segment(tmp_path: Path) -> None:
    bg = Background(tmp_path, "rec-pause")
    wait_for(lambda: bg.state() == "recording", 10, "the recorder to record")
    time.sleep(2.4)
    bg.recorder.request("pause")
    wait_for(lambda: bg.state() == "paused", 20, "the recorder to pause")
    assert bg.recorder.ffmpeg_pid is None
    time.sleep(1.5)
    bg.recorder.request("resume")
    wait_for(lambda: bg.state() == "recording", 10, "the recorder to record again")
    time.sleep(2.2)
    bg.recorder.request("stop")
    result = bg.join()
    assert result.error is None and result.pauses == 1

    names = bg.agent.names()
    assert names[0] == "begin_session" and names[-1] == "end_session"
    assert names.count("pause") == 1 and names.count("resume") == 1
    assert names.index("pause") < names.index("resume")
    calls = bg.agent.calls
    paused_at: datetime = calls[names.index("pause")].kwargs["at"]
    resumed_at: datetime = calls[names.index("resume")].kwargs["at"]
    assert (resumed_at - paused_at).total_seconds() > 1.0

    segments = bg.agent.segments()
    check_segments_complete(segments)
    before = [
        c for i, c in enumerate(calls) if c.name == "add_segment" and i < names.index("pause")
    ]
    after = [
        c for i, c in enumerate(calls) if c.name == "add_segment" and i > names.index("resume")
    ]
    assert before and after and len(before) + len(after) == len(segments)
    for call in before:
        assert start_end(call)[1] <= paused_at + timedelta(milliseconds=1)
    for call in after:
        assert start_end(call)[0] >= resumed_at
    for kind, prefix, ext in (("video", "screen", "mp4"), ("audio", "mic", "m4a")):
        files = [c.kwargs["file"] for c in of_kind(segments, kind)]
        assert files == [f"{prefix}-{n:05d}.{ext}" for n in range(len(files))], "numbering"
    video = sum(c.kwargs["duration"] for c in of_kind(segments, "video"))
    assert abs(video - (2.4 + 2.2)) < 2 * TIMING_SLACK_S


def test_synthetic_duration_stops_by_itself(tmp_path: Path) -> None:
    bg = Background(tmp_path, "rec-duration", duration=2.5)
    result = bg.join()
    assert result.error is None
    video = of_kind(bg.agent.segments(), "video")
    assert [c.kwargs["file"] for c in video] == [
        "screen-00000.mp4",
        "screen-00001.mp4",
        "screen-00002.mp4",
    ]
    assert abs(sum(c.kwargs["duration"] for c in video) - 2.5) < 0.1
    assert bg.agent.names()[-1] == "end_session"


def test_ffmpeg_that_cannot_record_leaves_no_session(tmp_path: Path) -> None:
    bg = Background(tmp_path, "rec-broken", ffmpeg="/bin/false")
    result = bg.join()
    assert result.error is not None and "status 1" in result.error
    assert bg.agent.calls == []
    assert control.running_recorders(bg.state_dir) == []


def test_killed_ffmpeg_still_ships_its_readable_last_segment(tmp_path: Path) -> None:
    bg = Background(tmp_path, "rec-killed", segment_seconds=3.0)
    wait_for(lambda: bg.recorder.ffmpeg_pid is not None, 10, "the recorder's ffmpeg")
    time.sleep(2.6)  # two 1 s fragments of the first segment are on disk, it is not listed
    pid = bg.recorder.ffmpeg_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    result = bg.join()
    assert result.error is not None and "-9" in result.error
    names = bg.agent.names()
    assert names[0] == "begin_session" and names[-1] == "end_session"
    segments = bg.agent.segments()
    assert sorted(c.kwargs["file"] for c in segments) == ["mic-00000.m4a", "screen-00000.mp4"]
    for call in segments:
        assert 0.9 < call.kwargs["duration"] < 2.7
    check_segments_complete(segments)


def _calls_until(
    tmp_path: Path,
    predicate: Callable[[list[dict[str, Any]]], bool],
    timeout: float,
    what: str,
    proc: subprocess.Popen[str] | None = None,
) -> None:
    """Wait until the fake agent's log satisfies ``predicate``; fail at once if ``proc`` died."""

    def done() -> bool:
        if predicate(logged_calls(tmp_path)):
            return True
        if proc is not None and proc.poll() is not None:
            stderr = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"the recorder exited before {what}: {stderr}")
        return False

    wait_for(done, timeout, what)


def _start_cli_recorder(tmp_path: Path, session_id: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        fake_cli(
            "record",
            "--synthetic",
            "--session-name",
            "cli test",
            "--session-id",
            session_id,
            "--segment-seconds",
            str(SEGMENT_S),
            "--out",
            str(tmp_path / "recordings"),
        ),
        cwd=ROOT,
        env=recording_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _recording_calls(tmp_path: Path) -> list[dict[str, object]]:
    return [c for c in logged_calls(tmp_path) if c["call"] not in ("start", "stop")]


def _check_cli_recording(tmp_path: Path, session_id: str) -> list[dict[str, object]]:
    calls = _recording_calls(tmp_path)
    names = [c["call"] for c in calls]
    assert names[0] == "begin_session" and names[-1] == "end_session", names
    folder = tmp_path / "recordings" / session_id
    manifest = load_manifest(folder)
    segments = [c for c in calls if c["call"] == "add_segment"]
    assert sorted(s.file for s in manifest.segments) == sorted(str(c["file"]) for c in segments)
    import hashlib

    for call in segments:
        path = Path(str(call["path"]))
        assert hashlib.sha256(path.read_bytes()).hexdigest() == call["sha256"]
        (track,) = decode(path).tracks
        assert track.frames > 0
    # The agent was drained after the session ended.
    assert logged_calls(tmp_path)[-1]["call"] == "stop"
    return calls


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_the_recorder_process_is_a_clean_stop(tmp_path: Path, sig: int) -> None:
    proc = _start_cli_recorder(tmp_path, "rec-signal")
    try:
        _calls_until(
            tmp_path,
            lambda calls: sum(c["call"] == "add_segment" for c in calls) >= 2,
            20,
            "two segments",
            proc,
        )
        time.sleep(0.5)  # mid-segment
        proc.send_signal(sig)
        out, errors = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, errors
    calls = _check_cli_recording(tmp_path, "rec-signal")
    assert sum(c["call"] == "add_segment" for c in calls) >= 4


def test_pause_resume_stop_from_a_second_invocation(tmp_path: Path) -> None:
    env = recording_env(tmp_path)
    proc = _start_cli_recorder(tmp_path, "rec-control")
    try:
        _calls_until(
            tmp_path, lambda c: any(x["call"] == "add_segment" for x in c), 20, "a segment", proc
        )
        paused = run(fake_cli("pause"), env)
        assert paused.returncode == 0 and "paused" in paused.stdout, paused.stderr
        again = run(fake_cli("pause"), env)  # already paused: says so, changes nothing
        assert again.returncode == 0
        time.sleep(1.0)
        resumed = run(fake_cli("resume", "--session", "rec-control"), env)
        assert resumed.returncode == 0 and "recording again" in resumed.stdout, resumed.stderr
        time.sleep(1.5)
        stopped = run(fake_cli("stop"), env)
        assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stderr
        # stop returns once the session has ended, i.e. the last segment is with the agent.
        names = [c["call"] for c in _recording_calls(tmp_path)]
        assert "end_session" in names
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    calls = _check_cli_recording(tmp_path, "rec-control")
    names = [c["call"] for c in calls]
    assert names.count("pause") == 1 and names.count("resume") == 1
    nothing = run(fake_cli("stop"), env)
    assert nothing.returncode == 2 and "no recorder is running" in nothing.stderr


def test_control_commands_need_a_running_recorder(tmp_path: Path) -> None:
    env = recording_env(tmp_path)
    result = run(fake_cli("pause", "--session", "../evil"), env)
    assert result.returncode == 2 and "invalid session id" in result.stderr
    # A control file left by a dead recorder is not signalled; it stays for recovery.
    state = tmp_path / "state"
    control.write_info(
        state,
        control.RecorderInfo(
            pid=2**22 + 12345,
            session_id="ghost",
            name="",
            folder="",
            state="recording",
            started_at="",
        ),
    )
    result = run(fake_cli("stop"), env)
    assert result.returncode == 2 and "no recorder is running" in result.stderr
    assert control.dead_recorders(state) == [control.read_info(state, "ghost")]


def test_record_refuses_duration_without_synthetic(tmp_path: Path) -> None:
    result = run(
        fake_cli("record", "--session-name", "x", "--duration", "3"), recording_env(tmp_path)
    )
    assert result.returncode == 2 and "--duration" in result.stderr
