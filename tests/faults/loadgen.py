"""Load for the fault suite's system (scenario 8) and ``bench/bench_load.py``: many very short
sessions, shipped by several real ``capture-agent watch`` processes at once, and what the
database says about how long each took.

One tiny session is recorded once (:data:`TINY`: 2 s, 1-second segments, 128x72, the
smallest screen the synthetic recorder draws); every load session is a copy of its folder
with its own id (``session.json`` rewritten through :mod:`shared.sessiondir`, marked
``"complete": true`` so the watcher ends it once its segments are queued). Recording each
would cost about 0.25 s of CPU apiece; a copy costs a few milliseconds.

Each agent is a ``capture-agent watch DIR`` process with its own state folder (outbox) and
its own watched folder, holding its share of the sessions. They are placed before the agents
start, or fed at a rate (``feed``), each moved in with one rename so the watcher never sees
half a folder.

The figures come from the database alone: a session's latency is from the arrival of its
``session.ended`` event (``events.received_at``) to its last job's ``finished_at``.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from shared import models
from shared.db import session_scope
from shared.sessiondir import MANIFEST_NAME, load_manifest, write_manifest
from synthetic.plan import SyntheticSpec
from synthetic.session import record_synthetic_session
from tests.faults.harness import FaultSystem
from tests.support import ROOT
from tests.support.cli import capture_agent

#: A very short session: two 1-second segments per track, the smallest screen allowed.
TINY = SyntheticSpec(
    duration=2.0, segment_seconds=1.0, audio_holes=(), width=128, height=72, fps=10
)
TEMPLATE_ID = "load-template"
STAGING_DIR = ".staging"  # hidden: the watcher skips names starting with a dot
AGENT_STOP_TIMEOUT_S = 120.0
#: How long a watcher waits for its outbox to empty when stopped (it is empty by then).
AGENT_DRAIN_TIMEOUT_S = 60.0


def session_ids(count: int, prefix: str = "load") -> list[str]:
    width = max(4, len(str(count - 1)))
    return [f"{prefix}-{i:0{width}d}" for i in range(count)]


def template_name(spec: SyntheticSpec) -> str:
    return (
        f"load-template-{spec.width}x{spec.height}-{spec.fps}fps-"
        f"{spec.duration:g}s-{spec.segment_seconds:g}s"
    )


def ensure_template(cache: Path, spec: SyntheticSpec = TINY) -> Path:
    """The recorded session every load session copies (recorded once per cache folder)."""
    folder = cache / template_name(spec)
    if (folder / MANIFEST_NAME).is_file():
        return folder
    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    record_synthetic_session(
        partial,
        session_id=TEMPLATE_ID,
        name=TEMPLATE_ID,
        spec=spec,
        started_at=datetime(2026, 12, 1, 9, 0, tzinfo=UTC),
    )
    os.replace(partial, folder)
    return folder


def materialize(template: Path, dest: Path, session_id: str) -> Path:
    """A copy of ``template`` at ``dest`` as session ``session_id``, marked complete.

    Files keep the template's mtime (``copy2``), so the watcher finds them settled at once.
    """
    shutil.copytree(template, dest, copy_function=shutil.copy2)
    manifest = load_manifest(dest).model_copy(
        update={"id": session_id, "name": session_id, "complete": True}
    )
    write_manifest(dest, manifest)
    return dest


@dataclass
class WatchingAgent:
    """A real ``capture-agent watch`` process shipping what appears in ``folder``."""

    name: str
    folder: Path
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = AGENT_STOP_TIMEOUT_S) -> int:
        """SIGTERM (the watcher stops, ships what is left); its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
            raise AssertionError(f"agent {self.name} did not stop:\n{self.log()[-3000:]}") from None


@dataclass
class LoadRun:
    """``count`` sessions split over ``agents`` watched folders of ``system``.

    Call :meth:`prepare` (copies every session, into the watched folders or, when fed at a
    rate, into a hidden staging folder beside them), :meth:`start_agents`, and, when fed,
    :meth:`feed` in a thread.
    """

    system: FaultSystem
    template: Path
    ids: list[str]
    agents: int
    staged: bool = False
    watchers: list[WatchingAgent] | None = None

    def __post_init__(self) -> None:
        if self.agents < 1:
            raise ValueError("at least one agent")
        self.base = self.system.root / "watched"

    def folder(self, agent: int) -> Path:
        return self.base / f"agent-{agent}"

    def share(self, index: int) -> int:
        """The agent that ships session ``index`` (round robin)."""
        return index % self.agents

    def prepare(self) -> None:
        for agent in range(self.agents):
            (self.folder(agent) / STAGING_DIR).mkdir(parents=True, exist_ok=True)
        for index, session_id in enumerate(self.ids):
            folder = self.folder(self.share(index))
            materialize(
                self.template,
                (folder / STAGING_DIR if self.staged else folder) / session_id,
                session_id,
            )
            self.system.submitted.append(session_id)

    def start_agents(self) -> list[WatchingAgent]:
        self.watchers = []
        for agent in range(self.agents):
            name = f"w{agent}"
            log_path = self.system.root / f"agent-{name}.log"
            with log_path.open("ab") as log:
                proc = subprocess.Popen(
                    capture_agent(
                        "watch",
                        str(self.folder(agent)),
                        "--drain-timeout",
                        str(AGENT_DRAIN_TIMEOUT_S),
                    ),
                    cwd=ROOT,
                    env=self.system.agent_env(name),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            self.watchers.append(WatchingAgent(name, self.folder(agent), proc, log_path))
        return self.watchers

    def feed(self, per_minute: float, stop: threading.Event | None = None) -> None:
        """Move the staged sessions in, round robin, ``per_minute`` sessions a minute."""
        interval = 60.0 / per_minute
        began = time.monotonic()
        for index, session_id in enumerate(self.ids):
            delay = began + index * interval - time.monotonic()
            if delay > 0 and stop is not None and stop.wait(delay):
                return
            if delay > 0 and stop is None:
                time.sleep(delay)
            folder = self.folder(self.share(index))
            os.replace(folder / STAGING_DIR / session_id, folder / session_id)

    def assert_agents_alive(self) -> None:
        for watcher in self.watchers or []:
            code = watcher.proc.poll()
            assert code is None, f"agent {watcher.name} exited ({code}):\n{watcher.log()[-3000:]}"

    def stop_agents(self) -> dict[str, int]:
        """Stop every agent; their exit statuses (0: stopped cleanly, outbox empty)."""
        codes = {w.name: w.stop() for w in self.watchers or []}
        return codes


@dataclass(frozen=True)
class SessionTiming:
    session_id: str
    ended_emitted: datetime  # the agent ended the session (session.ended's emitted_at)
    ended_received: datetime  # session.ended arrived (events.received_at)
    first_started: datetime  # the first job began
    finished: datetime  # the last job finished

    @property
    def latency_s(self) -> float:
        """From the arrival of ``session.ended`` to the last job's finish."""
        return (self.finished - self.ended_received).total_seconds()

    @property
    def from_agent_s(self) -> float:
        """From the moment the agent ended the session (its outbox and the broker's queue
        included) to the last job's finish."""
        return (self.finished - self.ended_emitted).total_seconds()


def timings(database_url: str, ids: Sequence[str]) -> list[SessionTiming]:
    """Per session: ``session.ended``'s creation and arrival, its first job's start, its
    last job's finish.

    Sessions without a ``session.ended`` event or an unfinished job are left out.
    """
    with session_scope(database_url) as db:
        ended = {
            row[0]: (row[1], row[2])
            for row in db.execute(
                select(
                    models.Event.session_id,
                    func.min(models.Event.emitted_at),
                    func.min(models.Event.received_at),
                )
                .where(models.Event.type == "session.ended")
                .group_by(models.Event.session_id)
            ).all()
        }
        spans = {
            row[0]: (row[1], row[2], row[3])
            for row in db.execute(
                select(
                    models.Job.session_id,
                    func.min(models.Job.started_at),
                    func.max(models.Job.finished_at),
                    func.count(models.Job.finished_at) == func.count(models.Job.id),
                ).group_by(models.Job.session_id)
            ).all()
        }
    found = []
    for session_id in ids:
        emitted, received = ended.get(session_id, (None, None))
        first, last, all_finished = spans.get(session_id, (None, None, False))
        if None in (emitted, received, first, last) or not all_finished:
            continue
        assert emitted and received and first and last
        found.append(
            SessionTiming(session_id, _utc(emitted), _utc(received), _utc(first), _utc(last))
        )
    return found


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), nearest rank: a value that was measured."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]
