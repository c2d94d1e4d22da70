"""The fault suite's system: real workers, the real capture agent, and the checks afterwards.

A :class:`FaultSystem` is one deployment in a temporary folder: a database, a Redis the test
owns (so it can be killed and its queues counted), shared storage, celery worker processes
that can be killed whole, in part (a pool child) or warm-stopped, and capture-agent processes
that ship synthetic sessions. :meth:`FaultSystem.settle` waits until every submitted session
is completed or failed; :meth:`FaultSystem.assert_nothing_lost` then checks, from the
database, storage, the broker and the workers' logs, what the issue promises:

- every session completed, or failed with a reason (only the ones the test expects to fail);
- no job pending or running, exactly one job row per (session, stage);
- each succeeded stage's output in storage, nothing else in ``derived/``, no temporary file;
- the broker's queues and its unacknowledged set empty;
- every execution of a stage (a worker log line per claim) counted in the job's attempts.

Most of it through ``sessionpipe doctor --json``, the operators' tool, so every scenario
tests it too.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from shared import models
from shared.atomicfile import LEGACY_PART_SUFFIX, TEMP_MARK
from shared.db import session_scope
from shared.migrate import upgrade
from shared.sessiondir import MANIFEST_NAME, load_manifest, write_manifest
from shared.storage import DERIVED_DIR, SESSIONS_DIR, Storage
from synthetic.plan import SyntheticSpec
from synthetic.session import record_synthetic_session
from tests.support import ROOT
from tests.support.cli import capture_agent, run
from tests.support.services import service_env, settings_for
from tests.support.waiting import wait_for

WORKER_START_TIMEOUT_S = 60.0
WORKER_STOP_TIMEOUT_S = 60.0
SETTLE_TIMEOUT_S = 300.0
#: Small, quick sessions: two segments per track.
QUICK = SyntheticSpec(
    duration=8.0, segment_seconds=4.0, audio_holes=(), width=160, height=90, fps=10
)
#: A session whose compressed copy takes a few seconds here: long enough to kill mid-way.
SLOW_COMPRESS = SyntheticSpec(
    duration=40.0, segment_seconds=10.0, audio_holes=(), width=960, height=540, fps=30
)
#: ``make test`` runs each scenario small; ``make test-faults`` sets a larger scale.
SCALE = max(1, int(os.environ.get("SESSIONPIPE_FAULTS_SCALE", "1")))
VISIBILITY_TIMEOUT_S = 15
#: Redis restores unacknowledged messages past the visibility timeout in scans about every
#: 100 s (kombu: every 10th 10-second tick); allow two.
IDLE_TIMEOUT_S = VISIBILITY_TIMEOUT_S + 220
ATTEMPT_LINE = re.compile(rb"\b(\w+) of (\S+): attempt (\d+) \(")
MEDIA_QUEUES = "media"
OTHER_QUEUES = "audio,default,enrich"
#: Result fields that name a stage's files besides its output (finalize, transcript).
OTHER_OUTPUTS = ("manifest", "subtitles")


def _record(dest: Path, session_id: str, spec: SyntheticSpec) -> Path:
    return record_synthetic_session(
        dest,
        session_id=session_id,
        name=session_id,
        spec=spec,
        started_at=datetime(2026, 12, 1, 9, 0, tzinfo=UTC),
    )


def _template_name(spec: SyntheticSpec) -> str:
    """A folder name for ``spec`` (its fields, hashed: a spec may hold a whole lecture)."""
    return "spec-" + hashlib.sha256(repr(spec).encode()).hexdigest()[:16]


class Worker:
    """A real ``celery -A workers.app worker``, in its own process group so it can be
    killed whole (as a crashed machine or ``docker kill``) or in part (a pool child)."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        *,
        queues: str,
        concurrency: int = 1,
        wait: bool = True,
    ) -> None:
        """Start the worker; with ``wait`` (the default) return once it is ready, else
        call :meth:`wait_ready` (workers started together get ready together)."""
        self.log_path = log_path
        self.name = f"{log_path.stem}-{uuid.uuid4().hex[:6]}@faults"
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "celery", "-A", "workers.app", "worker",
                    "-Q", queues, "-c", str(concurrency), "--loglevel", "INFO",
                    "--without-mingle", "--without-gossip", "-n", self.name,
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        wait_for(self._ready, WORKER_START_TIMEOUT_S, f"worker {self.name} to be ready", 0.2)

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"worker {self.name} exited early:\n{self.log()[-4000:]}")
        return f"{self.name} ready.".encode() in self.log_path.read_bytes()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def pool_children(self) -> list[int]:
        """The prefork pool's processes (children of the worker's main process)."""
        out = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False
        )
        return [int(pid) for pid in out.stdout.split()]

    def kill(self) -> None:
        """SIGKILL the whole worker: main process and pool children at once."""
        if self.alive:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(WORKER_STOP_TIMEOUT_S)

    def terminate(self, timeout: float = WORKER_STOP_TIMEOUT_S) -> int:
        """SIGTERM (Celery's warm shutdown: finish running tasks, take no new ones)."""
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if not self.alive:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(WORKER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()

    def discard(self) -> None:
        """Kill the whole worker and reap it (the scenario is over: nothing to finish)."""
        if self.alive:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(WORKER_STOP_TIMEOUT_S)


@dataclass
class FaultSystem:
    root: Path
    database_url: str
    broker_url: str
    #: Where recordings of the larger specs are kept, made once and copied for each session
    #: (None: every session is recorded afresh).
    templates: Path | None = None
    env: dict[str, str] = field(init=False)
    workers: list[Worker] = field(default_factory=list)
    agents: list[subprocess.Popen[str]] = field(default_factory=list)
    submitted: list[str] = field(default_factory=list)
    _agents: int = 0

    def __post_init__(self) -> None:
        self.home = self.root / "home"
        self.env = {
            **service_env(
                home=self.home, database_url=self.database_url, broker_url=self.broker_url
            ),
            # A killed worker's unacknowledged message goes back to the queue this soon, so
            # the checks can see the broker empty; the sweeper has re-run its job by then.
            "SESSIONPIPE_BROKER_VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S),
            # Enough tries (about a minute of backoff) to outlast a server that blinks.
            "SESSIONPIPE_TASK_MAX_RETRIES": "6",
            # The scenarios break a stage in the middle of its work after the session
            # ended; made while it records (compressed parts, transcript pieces) that work
            # would be done before the fault. Scenario 11 turns parts back on to break one.
            "SESSIONPIPE_COMPRESS_PARTS": "false",
            "SESSIONPIPE_TRANSCRIPT_PIECES": "false",
        }
        self.settings = settings_for(
            home=self.home, database_url=self.database_url, broker_url=self.broker_url
        )
        self.storage = Storage(self.settings.storage)
        upgrade(self.database_url)

    # -- processes ------------------------------------------------------------------------
    def start_worker(
        self, name: str, *, queues: str, concurrency: int = 1, wait: bool = True
    ) -> Worker:
        worker = Worker(
            self.env,
            self.root / f"worker-{name}.log",
            queues=queues,
            concurrency=concurrency,
            wait=wait,
        )
        self.workers.append(worker)
        return worker

    def start_workers(self) -> tuple[Worker, Worker]:
        """A media worker and one for everything else, as in docker-compose (started at
        once; returned when both are ready)."""
        media = self.start_worker("media", queues=MEDIA_QUEUES, wait=False)
        other = self.start_worker("other", queues=OTHER_QUEUES, concurrency=2, wait=False)
        media.wait_ready()
        other.wait_ready()
        return media, other

    def stop_all(self) -> None:
        """Stop every agent and worker: the scenario's checks are done, so they are killed
        (a warm shutdown would only wait for work nobody looks at any more; scenario 7
        tests the warm shutdown itself)."""
        for agent in self.agents:
            if agent.poll() is None:
                agent.kill()
                agent.communicate()
        for worker in self.workers:
            worker.discard()

    def record(self, session_id: str, spec: SyntheticSpec = QUICK) -> Path:
        """A recorded session folder ``session_id`` of ``spec``, ready to ship.

        QUICK sessions are recorded each (a fraction of a second, content of their own).
        Larger ones (SLOW_COMPRESS takes seconds to draw and encode, and most scenarios
        need one) are recorded once into ``templates`` and copied under the session's id:
        what a worker sees is the same, only the pictures do not depend on the id.
        """
        dest = self.root / "sessions" / session_id
        if spec == QUICK or self.templates is None:
            return _record(dest, session_id, spec)
        template = self.templates / _template_name(spec)
        if not (template / MANIFEST_NAME).is_file():
            partial = template.with_name(f".{template.name}.partial")
            shutil.rmtree(partial, ignore_errors=True)
            _record(partial, "template", spec)
            os.replace(partial, template)
        shutil.copytree(template, dest, copy_function=shutil.copy2)
        manifest = load_manifest(dest).model_copy(update={"id": session_id, "name": session_id})
        write_manifest(dest, manifest)
        return dest

    def agent_env(self, agent: str) -> dict[str, str]:
        return {
            **self.env,
            "SESSIONPIPE_AGENT_STATE_DIR": str(self.root / f"agent-{agent}"),
            "SESSIONPIPE_AGENT_RETRY_BASE_S": "0.2",
            "SESSIONPIPE_AGENT_RETRY_CAP_S": "1",
        }

    def ship(self, folder: Path, *, agent: str = "a", timeout: float = 120) -> None:
        """Ship a session folder with the real ``capture-agent ship`` and wait for it."""
        self.submitted.append(folder.name)
        done = run(capture_agent("ship", str(folder)), self.agent_env(agent), timeout=timeout)
        assert done.returncode == 0, f"capture-agent ship failed:\n{done.stdout}{done.stderr}"

    def ship_async(self, folder: Path, *, agent: str = "a") -> subprocess.Popen[str]:
        """Start shipping; the caller waits (it survives a broker that is down a while)."""
        if folder.name not in self.submitted:
            self.submitted.append(folder.name)
        proc = subprocess.Popen(
            capture_agent("ship", str(folder)),
            cwd=ROOT,
            env=self.agent_env(agent),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.agents.append(proc)
        return proc

    # -- waiting --------------------------------------------------------------------------
    def jobs(self, session_id: str | None = None) -> list[models.Job]:
        with session_scope(self.database_url) as db:
            stmt = select(models.Job)
            if session_id is not None:
                stmt = stmt.where(models.Job.session_id == session_id)
            return list(db.execute(stmt).scalars())

    def job(self, session_id: str, stage: str) -> models.Job | None:
        return next((j for j in self.jobs(session_id) if j.stage == stage), None)

    def wait_mid(self, session_id: str, stage: str = "compress", timeout: float = 180) -> None:
        """Wait until the session's stage is under way (running, progress reported)."""

        def working() -> bool:
            job = self.job(session_id, stage)
            return job is not None and job.status == "running" and job.progress > 0

        self._wait(working, timeout, f"{stage} of {session_id} to be under way")

    def settle(self, timeout: float = SETTLE_TIMEOUT_S) -> dict[str, str]:
        """Wait until every submitted session is completed or failed; their statuses."""

        def settled() -> dict[str, str] | None:
            with session_scope(self.database_url) as db:
                rows = dict(
                    db.execute(
                        select(models.Session.id, models.Session.status).where(
                            models.Session.id.in_(self.submitted)
                        )
                    ).all()
                )
            done = all(rows.get(s) in ("completed", "failed") for s in self.submitted)
            return rows if done else None

        return self._wait(settled, timeout, f"sessions {self.submitted} to settle")

    def _wait(self, predicate: Any, timeout: float, what: str) -> Any:
        try:
            return wait_for(predicate, timeout, what, poll=0.25)
        except AssertionError as error:
            logs = "\n".join(f"--- {w.name}\n{w.log()[-3000:]}" for w in self.workers)
            raise AssertionError(f"{error}\njobs: {self._jobs_table()}\n{logs}") from None

    def _jobs_table(self) -> str:
        return "; ".join(
            f"{j.session_id}/{j.stage}={j.status}#{j.attempts} {j.error or ''}".strip()
            for j in self.jobs()
        )

    # -- the checks -----------------------------------------------------------------------
    def doctor(self, *args: str) -> dict[str, Any]:
        """``sessionpipe doctor --json`` on this system, as an operator runs it."""
        script = Path(sys.executable).parent / "sessionpipe"
        argv = [str(script)] if script.exists() else [sys.executable, "-m", "sessionpipe.cli"]
        done = run([*argv, "doctor", "--json", *args], self.env, timeout=120)
        assert done.returncode in (0, 1), f"doctor crashed:\n{done.stdout}{done.stderr}"
        report: dict[str, Any] = json.loads(done.stdout)
        assert report["healthy"] == (done.returncode == 0)
        return report

    def executions(self) -> Counter[tuple[str, str]]:
        """Stage executions per (session, stage), from every worker's log (one line each)."""
        counts: Counter[tuple[str, str]] = Counter()
        for log in self.root.glob("worker-*.log"):
            for stage, session_id, _ in ATTEMPT_LINE.findall(log.read_bytes()):
                counts[(session_id.decode(), stage.decode())] += 1
        return counts

    def assert_nothing_lost(self, *, failed: dict[str, str] | None = None) -> dict[str, Any]:
        """Every promise of the module docstring; ``failed`` maps the sessions expected to
        fail to a text their failure reason must contain. Returns doctor's report."""
        from workers.pipeline import STAGES

        failed = failed or {}
        statuses = self.settle()
        for session_id in self.submitted:
            want = "failed" if session_id in failed else "completed"
            assert statuses[session_id] == want, (
                f"{session_id} is {statuses[session_id]}: {self._jobs_table()}"
            )
        # Idle first: a killed worker's unacknowledged message returns to its queue after
        # the visibility timeout, at Redis's next restore scan, and is then dropped by the
        # claim; a sweep may still be re-sending a message nobody needs.
        last: list[dict[str, Any]] = []

        def idle() -> dict[str, Any] | None:
            last[:] = [self.doctor()]
            return last[0] if last[0]["idle"] else None

        try:
            report = wait_for(idle, IDLE_TIMEOUT_S, "the broker and the jobs to be idle", 1.0)
        except AssertionError as error:
            raise AssertionError(f"{error}: {last}") from None
        assert report["healthy"], report["findings"]
        assert report["duplicate_jobs"] == 0
        jobs = self.jobs()
        assert not [j for j in jobs if j.status in ("pending", "running")]
        per_session: dict[str, list[models.Job]] = {}
        for job in jobs:
            per_session.setdefault(job.session_id, []).append(job)
        executions = self.executions()
        for session_id in self.submitted:
            rows = per_session.get(session_id, [])
            stages = [j.stage for j in rows]
            assert len(stages) == len(set(stages)), f"{session_id}: {stages}"
            if session_id in failed:
                reasons = [j.error or "" for j in rows if j.status == "failed"]
                assert any(failed[session_id] in r for r in reasons), (session_id, reasons)
            else:
                assert sorted(stages) == sorted(s.value for s in STAGES)
                self._assert_outputs(session_id, rows)
            for job in rows:
                ran = executions[(session_id, job.stage)]
                assert ran == job.attempts, (
                    f"{job.stage} of {session_id} ran {ran} times, attempts says {job.attempts}"
                )
        self._assert_no_temp_files()
        self._record(statuses, jobs, executions)
        return report

    def _record(
        self,
        statuses: dict[str, str],
        jobs: list[models.Job],
        executions: Counter[tuple[str, str]],
    ) -> None:
        """Append what this scenario saw to ``$SESSIONPIPE_FAULTS_REPORT`` (JSON lines), the
        counts tests/faults/README.md reports."""
        path = os.environ.get("SESSIONPIPE_FAULTS_REPORT")
        if not path:
            return
        summary = {
            "scenario": os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0],
            "sessions": len(self.submitted),
            "completed": sum(1 for s in self.submitted if statuses[s] == "completed"),
            "failed": sum(1 for s in self.submitted if statuses[s] == "failed"),
            "jobs": len(jobs),
            "executions": sum(executions.values()),
            "re_executions": sum(max(0, j.attempts - 1) for j in jobs),
            "workers": len(self.workers),
            # What the recovery did, from the workers' logs.
            "sends_refused": self._log_count(b"could not send "),
            "sweeper_sent": self._log_count(b"had no message out"),
            "sweeper_requeued": self._log_count(b"lost its worker"),
            "task_retries": self._log_count(b"] retry: "),
        }
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(summary) + "\n")

    def _log_count(self, text: bytes) -> int:
        return sum(log.read_bytes().count(text) for log in self.root.glob("worker-*.log"))

    def _assert_outputs(self, session_id: str, rows: list[models.Job]) -> None:
        derived = self.storage.path(f"{SESSIONS_DIR}/{session_id}/{DERIVED_DIR}")
        present = sorted(p.name for p in derived.iterdir())
        expected = {Path(j.output_key).name for j in rows if j.output_key}
        for job in rows:  # a stage's further files are named in its result
            result = job.result or {}
            expected |= {Path(result[name]).name for name in OTHER_OUTPUTS if result.get(name)}
        assert present == sorted(expected), f"{session_id}: {present} != {sorted(expected)}"
        for name in present:
            assert (derived / name).stat().st_size > 0

    def _assert_no_temp_files(self) -> None:
        temps = [
            p
            for p in self.storage.path(SESSIONS_DIR).rglob(".*")
            if TEMP_MARK in p.name or p.name.endswith(LEGACY_PART_SUFFIX)
        ]
        assert temps == [], temps
