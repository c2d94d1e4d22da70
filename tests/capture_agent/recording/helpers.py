"""Test doubles and helpers for the recorder and watcher tests."""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from shared.options import SessionOptions
from shared.segments import SegmentSpec
from tests.support.cli import agent_env


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
        self,
        session_id: str,
        *,
        name: str,
        started_at: datetime,
        priority: str = "normal",
        options: SessionOptions | None = None,
    ) -> None:
        self._record(
            Call(
                "begin_session",
                session_id,
                {"name": name, "started_at": started_at, "priority": priority, "options": options},
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


def recording_env(tmp_path: Path) -> dict[str, str]:
    """Environment of a recording command under ``tmp_path``: home, state and fake agent log."""
    env = agent_env(tmp_path / "home", state_dir=str(tmp_path / "state"))
    env["FAKE_AGENT_LOG"] = str(tmp_path / "agent-calls.jsonl")
    return env


def fake_cli(*args: str) -> list[str]:
    """argv running the recording commands with a file-logging fake agent."""
    return [sys.executable, "-m", "tests.capture_agent.recording.fake_agent_cli", *args]


def logged_calls(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "agent-calls.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
