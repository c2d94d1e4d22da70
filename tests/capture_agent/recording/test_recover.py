"""A recording whose recorder died is finished from its files: real recorder, real ffmpeg."""

from __future__ import annotations

import os
import signal
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from capture_agent import control
from capture_agent.agent import Agent
from capture_agent.ffmpeg_cmd import segment_number
from capture_agent.runfiles import probe_duration
from capture_agent.settings import AgentSettings
from shared.segments import SegmentKind
from shared.sessiondir import load_manifest
from shared.settings import Settings
from tests.capture_agent.recording.helpers import recording_env
from tests.support import ROOT
from tests.support.cli import capture_agent, run
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

SEGMENT_S = 1.0
SEGMENTS_BEFORE_CRASH = 3  # finished video segments on disk when the recorder is killed
START_TIMEOUT_S = 60.0
JOIN_TOLERANCE_S = 0.002
SEGMENT_PATTERNS = ("screen-*.mp4", "mic-*.m4a")


def start_recording(tmp_path: Path, session_id: str) -> tuple[subprocess.Popen[bytes], Path]:
    argv = capture_agent(
        "record",
        "--synthetic",
        "--session-name",
        "crash test",
        "--session-id",
        session_id,
        "--segment-seconds",
        str(SEGMENT_S),
        "--out",
        str(tmp_path / "recordings"),
    )
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=recording_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, tmp_path / "recordings" / session_id


def local_agent(tmp_path: Path) -> Agent:
    """The agent of the next `capture-agent run`, on the same state folder (not started)."""
    settings = AgentSettings(state_dir=tmp_path / "state")
    return Agent(settings, shared=Settings(home=tmp_path / "home"))


def crash_recorder(tmp_path: Path, session_id: str, *, kill_ffmpeg: bool) -> control.RecorderInfo:
    proc, folder = start_recording(tmp_path, session_id)
    state = tmp_path / "state"
    try:

        def recording_for_a_while() -> bool:
            info = control.read_info(state, session_id)
            videos = list(folder.glob("screen-*.mp4"))
            return info is not None and info.run >= 1 and len(videos) > SEGMENTS_BEFORE_CRASH

        wait_for(recording_for_a_while, START_TIMEOUT_S, "the recorder to start")
        info = control.read_info(state, session_id)
        assert info is not None and info.ffmpeg_pid is not None
        proc.kill()  # SIGKILL: no handler, no clean stop, like a crash
        proc.wait(timeout=10)
        # ffmpeg outlives the recorder (own process group). Let it finish the segment of each
        # kind it was writing when the recorder died: the muxer opens the next file only after
        # closing that one, so a readable segment the recorder never handed over now exists
        # whatever the timing (a segment is one fragment, so the one being written may not be
        # readable yet, and the recorder may have handed over everything finished before).
        at_death = set(folder.iterdir())
        wait_for(
            lambda: all(set(folder.glob(pattern)) - at_death for pattern in SEGMENT_PATTERNS),
            START_TIMEOUT_S,
            "ffmpeg to go on to a new segment after the recorder died",
        )
        if kill_ffmpeg:  # a power cut takes ffmpeg down too
            os.kill(info.ffmpeg_pid, signal.SIGKILL)
            wait_for(
                lambda: not control.pid_alive(info.ffmpeg_pid or 0),
                10,
                "the recorder's ffmpeg to die",
            )
    finally:
        if proc.poll() is None:
            proc.kill()
    return info


@pytest.mark.parametrize("kill_ffmpeg", [True, False], ids=["power-cut", "recorder-crash"])
def test_a_dead_recording_is_ended_with_every_readable_segment(
    tmp_path: Path, kill_ffmpeg: bool
) -> None:
    session_id = f"crash-{'all' if kill_ffmpeg else 'recorder'}"
    info = crash_recorder(tmp_path, session_id, kill_ffmpeg=kill_ffmpeg)
    folder = Path(info.folder)
    agent = local_agent(tmp_path)
    try:
        assert agent.session_state(session_id) == "open"
        handed_over = {s.file for s in agent.recorded_segments(session_id)}

        recovered = agent.recover_recordings()

        assert [r.session_id for r in recovered] == [session_id]
        assert info.ffmpeg_pid is not None and not control.pid_alive(info.ffmpeg_pid)
        assert control.read_info(tmp_path / "state", session_id) is None
        assert agent.session_state(session_id) == "ended"
        segments = agent.recorded_segments(session_id)
        files = {s.file for s in segments}
        assert handed_over < files  # the dead recorder's last segments were added
        readable = {
            p.name
            for pattern in SEGMENT_PATTERNS
            for p in folder.glob(pattern)
            if (probe_duration(p) or 0) > 0
        }
        assert files == readable, "every readable segment is in the session, nothing else"
        for kind in (SegmentKind.VIDEO, SegmentKind.AUDIO):
            mine = sorted(
                (s for s in segments if s.kind == kind),
                key=lambda s: segment_number(kind, s.file) or 0,
            )
            assert len(mine) >= 2, [(s.file, s.started_at) for s in segments]  # a join at least
            for before, after in zip(mine, mine[1:], strict=False):
                assert before.started_at is not None and after.started_at is not None
                gap = after.started_at - (
                    before.started_at + timedelta(seconds=before.duration or 0)
                )
                assert abs(gap.total_seconds()) <= JOIN_TOLERANCE_S, (before, after)
        last_end = max(
            s.started_at + timedelta(seconds=s.duration or 0)
            for s in segments
            if s.started_at is not None
        )
        # where the media ends, not "now"
        assert recovered[0].ended_at == last_end, [(s.file, s.started_at) for s in segments]
        manifest = load_manifest(folder)
        assert manifest.complete and manifest.ended_at == last_end
        assert {s.file for s in manifest.segments} == files

        assert agent.recover_recordings() == []  # nothing left to do the second time
    finally:
        agent.close()


def test_a_live_process_that_is_not_the_recorders_ffmpeg_is_never_signalled(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    folder = tmp_path / "recordings" / "ghost"
    folder.mkdir(parents=True)
    # a dead recorder whose ffmpeg pid now belongs to someone else (pids are reused)
    control.write_info(
        state,
        control.RecorderInfo(
            pid=2**22 + 4321,
            session_id="ghost",
            name="ghost",
            folder=str(folder),
            state="recording",
            started_at=datetime(2026, 11, 21, 9, 0).astimezone().isoformat(),
            run=1,
            run_anchor=datetime(2026, 11, 21, 9, 0).astimezone().isoformat(),
            run_start_numbers={"video": 0, "audio": 0},
            run_kinds=("video", "audio"),
            ffmpeg_pid=os.getpid(),  # this test process
        ),
    )
    agent = local_agent(tmp_path)
    try:
        assert agent.recover_recordings() == []  # nothing was recorded: nothing to end
    finally:
        agent.close()
    assert control.pid_alive(os.getpid())  # still here, so never signalled
    assert control.read_info(state, "ghost") is None


def test_capture_agent_run_finishes_and_ships_a_dead_recording(tmp_path: Path) -> None:
    crash_recorder(tmp_path, "crash-then-run", kill_ffmpeg=True)
    result = run(capture_agent("run", "--timeout", "120"), recording_env(tmp_path), timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "recording crash-then-run lost its recorder" in result.stdout
    assert "outbox empty" in result.stdout
    agent = local_agent(tmp_path)
    try:
        assert agent.session_state("crash-then-run") == "ended"
        assert agent.outbox.pending_count() == 0  # every segment and session.ended shipped
    finally:
        agent.close()
