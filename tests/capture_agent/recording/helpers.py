"""Test doubles and helpers for the recorder and watcher tests."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import av

from shared.segments import SegmentSpec
from tests.conftest import ROOT


@dataclass
class Call:
    name: str
    session_id: str
    kwargs: dict[str, Any]
    monotonic: float
    sha256: str | None = None  # content of the segment file when it was handed over


@dataclass
class FakeAgent:
    """Records the calls the real Agent would get, with a hash of each handed-over file."""

    calls: list[Call] = field(default_factory=list)
    fail_files: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    def begin_session(
        self, session_id: str, *, name: str, started_at: datetime, priority: str = "normal"
    ) -> None:
        self._record(
            Call(
                "begin_session",
                session_id,
                {"name": name, "started_at": started_at, "priority": priority},
                time.monotonic(),
            )
        )

    def add_segment(
        self,
        session_id: str,
        path: Path,
        segment: SegmentSpec,
    ) -> None:
        kind, file = segment.kind.value, segment.file
        started_at, duration = segment.started_at, segment.duration
        if file in self.fail_files:
            raise ValueError(f"{file} refused by the fake agent")
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        self._record(
            Call(
                "add_segment",
                session_id,
                {
                    "path": Path(path),
                    "kind": kind,
                    "file": file,
                    "started_at": started_at,
                    "duration": duration,
                },
                time.monotonic(),
                digest,
            )
        )

    def pause(self, session_id: str, *, at: datetime) -> None:
        self._record(Call("pause", session_id, {"at": at}, time.monotonic()))

    def resume(self, session_id: str, *, at: datetime) -> None:
        self._record(Call("resume", session_id, {"at": at}, time.monotonic()))

    def end_session(self, session_id: str, *, ended_at: datetime | None = None) -> None:
        self._record(Call("end_session", session_id, {"ended_at": ended_at}, time.monotonic()))

    def start(self) -> None:
        pass

    def stop(self, *, drain: bool = True, timeout: float | None = None) -> bool:
        return True

    def names(self) -> list[str]:
        with self._lock:
            return [c.name for c in self.calls]

    def segments(self, session_id: str | None = None) -> list[Call]:
        with self._lock:
            return [
                c
                for c in self.calls
                if c.name == "add_segment" and (session_id is None or c.session_id == session_id)
            ]

    def files(self, session_id: str | None = None) -> list[str]:
        return [c.kwargs["file"] for c in self.segments(session_id)]


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@dataclass(frozen=True)
class Decoded:
    codec: str
    frames: int
    seconds: float


def decode(path: Path) -> Decoded:
    """Decode every frame of a segment's first stream (raises if the file is corrupt)."""
    with av.open(str(path)) as container:
        stream = container.streams[0]
        frames = 0
        first: float | None = None
        last = 0.0
        for frame in container.decode(stream):
            assert isinstance(frame, av.AudioFrame | av.VideoFrame) and frame.time is not None
            frames += 1
            first = frame.time if first is None else min(first, frame.time)
            if isinstance(frame, av.AudioFrame):
                last = max(last, frame.time + frame.samples / frame.sample_rate)
            else:
                rate = stream.average_rate or stream.guessed_rate
                last = max(last, frame.time + (1 / float(rate) if rate else 0.0))
        name = stream.codec_context.name
    return Decoded(codec=name, frames=frames, seconds=last - (first or 0.0))


def agent_cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONPIPE_")}
    env.update(
        SESSIONPIPE_HOME=str(tmp_path / "home"),
        SESSIONPIPE_AGENT_STATE_DIR=str(tmp_path / "state"),
        FAKE_AGENT_LOG=str(tmp_path / "agent-calls.jsonl"),
        PYTHONPATH=str(ROOT),
        COLUMNS="200",
    )
    env.update(extra)
    return env


def fake_cli(*args: str) -> list[str]:
    """argv running the recording commands with a file-logging fake agent."""
    return [sys.executable, "-m", "tests.capture_agent.recording.fake_agent_cli", *args]


def real_cli(*args: str) -> list[str]:
    """argv of the real ``capture-agent`` entry point (the venv's console script)."""
    script = Path(sys.executable).parent / "capture-agent"
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-c", "from capture_agent.cli import main; main()", *args]


def run(
    argv: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def logged_calls(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "agent-calls.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
