"""Controlling a running recorder from a second invocation: pidfile + POSIX signals.

A recorder registers itself as ``<state_dir>/recorders/<session_id>.json`` (pid, session,
folder, ``state`` = ``recording`` | ``paused`` | ``stopping``) and removes the file when it
exits. ``capture-agent pause|resume|stop`` finds it there and signals the pid:

* ``SIGUSR1`` = pause, ``SIGUSR2`` = resume, ``SIGTERM`` (or ``SIGINT``, ``SIGHUP``) = stop.

Signals need no socket, work from ``kill`` or launchd too, and a handler only queues a
request, so the recorder acts on it in its own loop. The sender then waits for the
recorder's acknowledgement: the control file's ``state`` changing, or the file (and process)
going away for ``stop``.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

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


def control_dir(state_dir: Path) -> Path:
    return state_dir / CONTROL_DIR_NAME


def control_path(state_dir: Path, session_id: str) -> Path:
    return control_dir(state_dir) / f"{validate_session_id(session_id)}.json"


def write_info(state_dir: Path, info: RecorderInfo) -> Path:
    """Create or update a recorder's control file (atomically: readers never see half)."""
    path = control_path(state_dir, info.session_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(info)), encoding="utf-8")
    tmp.replace(path)
    return path


def remove_info(state_dir: Path, session_id: str, *, pid: int | None = None) -> None:
    """Remove a control file (only if it still belongs to ``pid`` when given)."""
    path = control_path(state_dir, session_id)
    if pid is not None:
        current = _read(path)
        if current is not None and current.pid != pid:
            return
    path.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def running_recorders(state_dir: Path) -> list[RecorderInfo]:
    """Recorders whose process is alive; control files of dead ones are removed."""
    folder = control_dir(state_dir)
    if not folder.is_dir():
        return []
    alive = []
    for path in sorted(folder.glob("*.json")):
        info = _read(path)
        if info is None:
            continue
        if pid_alive(info.pid):
            alive.append(info)
        else:
            path.unlink(missing_ok=True)
    return alive


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
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
