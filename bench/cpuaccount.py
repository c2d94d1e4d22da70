"""Where a benchmark's CPU went: every process on the machine, by role, from ``/proc``.

A live replay at 5x on two cores is bounded by the CPU the whole system needs per
recorded second (the workers, the agent, PostgreSQL, Redis, the replay itself), so the
live bench accounts for all of it: :class:`CpuAccount` samples every process's user and
system time (``/proc/<pid>/stat``) every ``SAMPLE_S`` while the replay runs, keeps each
process's last reading (so a process that exits mid-run keeps what it used), and sums the
growth per role. Roles come from the command line (a celery worker by the queues it
consumes); what matches none is ``other``: work of the machine's other users, reported so
that a figure taken beside it says so.

Linux only (``/proc``); elsewhere the account is empty.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

PROC = Path("/proc")
SAMPLE_S = 1.0  # how often every process is read; a process shorter than this may be missed
_CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
#: ``/proc/<pid>/stat`` fields after the command's closing parenthesis: utime is the 12th,
#: stime the 13th (0-based 11 and 12 of the fields following ``(comm)``).
_UTIME_FIELD, _STIME_FIELD = 11, 12


def role_of(cmdline: list[str]) -> str:
    """The part of the system a process plays, from its command line."""
    text = " ".join(cmdline)
    if not cmdline:
        return "kernel"
    if "celery" in text and " worker" in text:
        queues = cmdline[cmdline.index("-Q") + 1] if "-Q" in cmdline else "all"
        return f"worker {queues}"
    if "capture-agent" in text or "capture_agent" in text:
        return "agent"
    if cmdline[0].startswith("postgres") or "postgres:" in text:
        return "postgresql"
    if "redis-server" in text:
        return "redis"
    return "other"


def _read(pid: int) -> tuple[str, float] | None:
    """(role, CPU seconds so far) of one process, or None if it is gone or unreadable."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = int(fields[_UTIME_FIELD]) + int(fields[_STIME_FIELD])
    cmdline = [part.decode(errors="replace") for part in raw.split(b"\0") if part]
    return role_of(cmdline), ticks / _CLOCK_TICKS_PER_S


@dataclass
class CpuAccount:
    """CPU seconds used per role between :meth:`start` and :meth:`stop`."""

    own_pid: int = field(default_factory=os.getpid)
    _first: dict[int, float] = field(default_factory=dict)
    _last: dict[int, tuple[str, float]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _sample(self, *, first: bool = False) -> None:
        if not PROC.is_dir():
            return
        for entry in PROC.iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            reading = _read(pid)
            if reading is None:
                continue
            role, seconds = reading
            if pid == self.own_pid:
                role = "bench (replay, watcher)"
            if first:
                self._first[pid] = seconds
            else:
                # a process born during the run started from nothing
                self._first.setdefault(pid, 0.0)
            self._last[pid] = (role, seconds)

    def start(self) -> CpuAccount:
        self._sample(first=True)
        self._thread = threading.Thread(target=self._run, name="cpu-account", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self._sample()

    def stop(self) -> dict[str, float]:
        """CPU seconds per role, largest first."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        used: dict[str, float] = {}
        for pid, (role, seconds) in self._last.items():
            grown = seconds - self._first.get(pid, 0.0)
            if grown > 0:
                used[role] = used.get(role, 0.0) + grown
        return dict(sorted(used.items(), key=lambda item: -item[1]))
