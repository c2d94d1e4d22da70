"""The recording commands with a fake agent that logs each call to ``$FAKE_AGENT_LOG``.

Run as ``python -m tests.capture_agent.recording.fake_agent_cli record|pause|...`` so a real process
receives real signals while the test reads back exactly what the agent was told.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from capture_agent import recording_cli
from shared.options import SessionOptions
from shared.segments import SegmentSpec


class FileLoggingAgent:
    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path

    def _log(self, call: str, session_id: str, /, **fields: Any) -> None:
        doc = {"call": call, "session_id": session_id}
        for key, value in fields.items():
            doc[key] = value.isoformat() if isinstance(value, datetime) else value
        with self.log_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(doc, default=str) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def start(self) -> None:
        self._log("start", "-")

    def stop(self, *, drain: bool = True, timeout: float | None = None) -> bool:
        self._log("stop", "-", drain=drain)
        return True

    def begin_session(
        self,
        session_id: str,
        *,
        name: str,
        started_at: datetime,
        priority: str = "normal",
        options: SessionOptions | None = None,
    ) -> None:
        self._log("begin_session", session_id, name=name, started_at=started_at)

    def add_segment(
        self,
        session_id: str,
        path: Path,
        segment: SegmentSpec,
    ) -> None:
        kind, file = segment.kind.value, segment.file
        started_at, duration = segment.started_at, segment.duration
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        self._log(
            "add_segment",
            session_id,
            path=str(path),
            kind=kind,
            file=file,
            started_at=started_at,
            duration=duration,
            sha256=digest,
        )

    def pause(self, session_id: str, *, at: datetime) -> None:
        self._log("pause", session_id, at=at)

    def resume(self, session_id: str, *, at: datetime) -> None:
        self._log("resume", session_id, at=at)

    def end_session(self, session_id: str, *, ended_at: datetime | None = None) -> None:
        self._log("end_session", session_id, ended_at=ended_at)


def _make_agent(settings: Any) -> FileLoggingAgent:
    return FileLoggingAgent(Path(os.environ["FAKE_AGENT_LOG"]))


recording_cli.make_agent = _make_agent
app = typer.Typer(pretty_exceptions_enable=False)
app.add_typer(recording_cli.app)

if __name__ == "__main__":
    app()
