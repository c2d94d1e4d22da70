"""Controlling a running recorder from a second invocation: pidfile + POSIX signals.

A recorder registers itself as ``<state_dir>/recorders/<session_id>.json`` (pid, session,
folder, ``state`` = ``recording`` | ``paused`` | ``stopping``) and removes the file when it
exits. ``capture-agent pause|resume|stop`` finds it there and signals the pid:

* ``SIGUSR1`` = pause, ``SIGUSR2`` = resume, ``SIGTERM`` (or ``SIGINT``, ``SIGHUP``) = stop.

Signals need no socket, work from ``kill`` or launchd too, and a handler only queues a
request, so the recorder acts on it in its own loop. The sender then waits for the
recorder's acknowledgement: the control file's ``state`` changing, or the file (and process)
going away for ``stop``.

The file also names the current ffmpeg run. If the recorder dies without removing it, the
file stays: ``capture_agent.recover`` finishes that recording from its files and removes it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from shared.atomicfile import atomic_write_text
from shared.ids import validate_session_id

Action = Literal["pause", "resume", "stop"]
State = Literal["recording", "paused", "stopping"]

CONTROL_DIR_NAME = "recorders"
SIGNAL_FOR: dict[Action, signal.Signals] = {
    "pause": signal.SIGUSR1,
    "resume": signal.SIGUSR2,
    "stop": signal.SIGTERM,
}
#: What the control file says once the recorder has carried out an action.
ACK_STATE: dict[Action, State] = {"pause": "paused", "resume": "recording", "stop": "stopping"}
#: How often a waiting sender re-reads the control file, in seconds.
ACK_POLL_S = 0.1


class ControlError(RuntimeError):
    """No recorder to control, several and none chosen, or no acknowledgement in time."""


@dataclass(frozen=True)
class RecorderInfo:
    pid: int
    session_id: str
    name: str
    folder: str
    state: State
    started_at: str  # ISO 8601
    priority: str = "normal"
    # The current ffmpeg run, so that a recording whose recorder died can be finished from
    # its files (capture_agent.recover): run number, where it starts on the session clock,
    # its first segment numbers, the kinds it records and the ffmpeg process.
    run: int = 0
    run_anchor: str = ""  # ISO 8601
    run_start_numbers: dict[str, int] = field(default_factory=dict)
    run_kinds: tuple[str, ...] = ()
    ffmpeg_pid: int | None = None


def control_dir(state_dir: Path) -> Path:
    return state_dir / CONTROL_DIR_NAME


def control_path(state_dir: Path, session_id: str) -> Path:
    return control_dir(state_dir) / f"{validate_session_id(session_id)}.json"


def write_info(state_dir: Path, info: RecorderInfo) -> Path:
    """Create or update a recorder's control file (atomically: readers never see half)."""
    return atomic_write_text(control_path(state_dir, info.session_id), json.dumps(asdict(info)))


def remove_info(state_dir: Path, session_id: str, *, pid: int | None = None) -> None:
    """Remove a control file (only if it still belongs to ``pid`` when given)."""
    path = control_path(state_dir, session_id)
    if pid is not None:
        current = _read(path)
        if current is not None and current.pid != pid:
            return
    path.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (an unreaped zombie has)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    # Linux only: elsewhere (macOS) launchd reaps orphans at once, so kill(pid, 0) suffices
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    # "pid (comm) state ...": comm may hold spaces or parentheses, the state follows the last ")"
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def _recorders(state_dir: Path) -> list[RecorderInfo]:
    folder = control_dir(state_dir)
    if not folder.is_dir():
        return []
    found = (_read(path) for path in sorted(folder.glob("*.json")))
    return [info for info in found if info is not None]


def running_recorders(state_dir: Path) -> list[RecorderInfo]:
    """Recorders whose process is alive."""
    return [info for info in _recorders(state_dir) if pid_alive(info.pid)]


def dead_recorders(state_dir: Path) -> list[RecorderInfo]:
    """Recorders that died without finishing (their control file is left for recovery)."""
    return [info for info in _recorders(state_dir) if not pid_alive(info.pid)]


def select_recorder(state_dir: Path, session_id: str | None = None) -> RecorderInfo:
    """The recorder to act on: the one named, or the only one running."""
    recorders = running_recorders(state_dir)
    if session_id is not None:
        validate_session_id(session_id)
        for info in recorders:
            if info.session_id == session_id:
                return info
        raise ControlError(f"no recorder is running session {session_id!r}")
    if not recorders:
        raise ControlError(f"no recorder is running (looked in {control_dir(state_dir)})")
    if len(recorders) > 1:
        names = ", ".join(info.session_id for info in recorders)
        raise ControlError(f"several recorders are running ({names}); choose one with --session")
    return recorders[0]


def send(
    state_dir: Path, action: Action, *, session_id: str | None = None, timeout: float = 30.0
) -> RecorderInfo:
    """Signal the recorder and wait until it acknowledges (``timeout`` seconds).

    For ``stop`` the acknowledgement is the recorder exiting: by then its last segment has
    been handed to the agent and the session ended. Returns the recorder's final info.
    """
    info = select_recorder(state_dir, session_id)
    if action != "stop" and info.state == ACK_STATE[action]:
        return info
    os.kill(info.pid, SIGNAL_FOR[action])
    path = control_path(state_dir, info.session_id)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = _read(path)
        if action == "stop":
            if current is None or current.pid != info.pid or not pid_alive(info.pid):
                return info
        elif current is None or not pid_alive(info.pid):
            raise ControlError(f"recorder of {info.session_id!r} exited before it could {action}")
        elif current.state == ACK_STATE[action]:
            return current
        time.sleep(ACK_POLL_S)
    raise ControlError(
        f"recorder of {info.session_id!r} (pid {info.pid}) did not {action} within {timeout:g} s"
    )


def read_info(state_dir: Path, session_id: str) -> RecorderInfo | None:
    """A recorder's control file, or None when there is none (or it is unreadable)."""
    return _read(control_path(state_dir, session_id))


def _read(path: Path) -> RecorderInfo | None:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return RecorderInfo(
            pid=int(raw["pid"]),
            session_id=str(raw["session_id"]),
            name=str(raw.get("name", "")),
            folder=str(raw.get("folder", "")),
            state=raw.get("state", "recording"),
            started_at=str(raw.get("started_at", "")),
            priority=str(raw.get("priority", "normal")),
            run=int(raw.get("run", 0)),
            run_anchor=str(raw.get("run_anchor", "")),
            run_start_numbers={str(k): int(v) for k, v in raw.get("run_start_numbers", {}).items()},
            run_kinds=tuple(str(k) for k in raw.get("run_kinds", ())),
            ffmpeg_pid=int(raw["ffmpeg_pid"]) if raw.get("ffmpeg_pid") is not None else None,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
