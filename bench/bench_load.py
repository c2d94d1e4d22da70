"""Load (the fault suite's scenario 8, full size): N very short sessions from K real agents.

A private deployment like the fault suite's (``tests/faults/harness.py``): a redis-server of
its own on a free port (``--appendonly yes --appendfsync always``, as docker-compose runs it),
a fresh PostgreSQL database on 127.0.0.1:5432 (migrated, dropped afterwards), shared storage
in a temporary folder, and real celery worker processes: one for ``media`` and one for
``audio,default,enrich`` (concurrency 2), as docker-compose and the fault suite run them.

K ``capture-agent watch`` processes, each with its own outbox and watched folder, ship their
share of the sessions (``tests/faults/loadgen.py``: 2 s sessions, 1-second segments, 128x72,
copies of one recording). By default every session is in place when the agents start (a
burst: the figures are the pipeline's capacity, and latency is mostly time in the queue);
``--rate`` feeds them in at so many sessions a minute instead.

Measured from the database: throughput (sessions completed per minute, from the agents'
start to the last job's finish, and over the middle 80 % of completions), and per session
the latency from the arrival of its ``session.ended`` event (``events.received_at``) to its
last job's ``finished_at``. At the end the fault suite's invariants are checked
(``FaultSystem.assert_nothing_lost``: every session completed, no job pending or running,
one job per (session, stage), each stage's output and nothing else, queues empty).

    .venv/bin/python bench/bench_load.py --sessions 1000 --agents 4   # = make bench-load
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from shared import models  # noqa: E402
from shared.clock import utcnow  # noqa: E402
from shared.db import session_scope  # noqa: E402
from shared.routing import PRIORITY_STEPS, QUEUES  # noqa: E402
from tests.faults.harness import VISIBILITY_TIMEOUT_S, FaultSystem  # noqa: E402
from tests.faults.loadgen import (  # noqa: E402
    TINY,
    LoadRun,
    SessionTiming,
    ensure_template,
    percentile,
    session_ids,
    timings,
)
from tests.support.services import (  # noqa: E402
    FAST_RECOVERY_ENV,
    create_database,
    drop_database,
    free_port,
)
from tests.support.waiting import wait_for  # noqa: E402

DEFAULT_SESSIONS = 1000
DEFAULT_AGENTS = 4
PROGRESS_EVERY_S = 15.0
POLL_S = 1.0
#: Give up when no session has completed for this long (something is stuck).
STALL_TIMEOUT_S = 600.0
REDIS_START_TIMEOUT_S = 20.0
REDIS_STOP_TIMEOUT_S = 30.0
#: Worker log lines of the recovery machinery (workers/dispatch.py), counted in the report.
LOG_MARKS = {
    "sweeper re-sent a job": b"had no message out: sent",
    "sweeper requeued a job (lease)": b"lost its worker: made pending again",
    "task retried": b"Retry in",
    "task raised": b"raised unexpected",
}


class DurableRedis:
    """A private redis-server on a free port, every write fsynced before it answers."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        log = (workdir / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(workdir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for(self._ping, REDIS_START_TIMEOUT_S, f"redis-server on port {self.port}", 0.1)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, db=0, socket_connect_timeout=2)

    def _ping(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited: {(self.workdir / 'redis.log').read_text()}")
        try:
            return bool(self.client().ping())
        except redis.ConnectionError:
            return False

    def backlog(self) -> dict[str, int]:
        """Messages waiting per queue (every priority list), as ``sessionpipe doctor`` counts."""
        client = self.client()
        counts: dict[str, int] = {}
        for queue in QUEUES:
            names = [queue] + [f"{queue}:{step}" for step in PRIORITY_STEPS[1:]]
            counts[queue] = sum(int(client.llen(name)) for name in names)
        return counts

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(REDIS_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Progress:
    """What the run looked like while it ran: completions and the deepest queues."""

    max_backlog: Counter[str] = field(default_factory=Counter)
    lines: list[str] = field(default_factory=list)


def _statuses(database_url: str) -> dict[str, int]:
    with session_scope(database_url) as db:
        rows = db.execute(
            select(models.Session.status, func.count()).group_by(models.Session.status)
        ).all()
    return {status: count for status, count in rows}


def wait_all_settled(
    system: FaultSystem, broker: DurableRedis, load: LoadRun, total: int, began: float
) -> Progress:
    """Poll until every session is completed or failed, printing progress as it goes."""
    progress = Progress()
    last_print = 0.0
    last_done = -1
    last_change = time.monotonic()
    while True:
        statuses = _statuses(system.database_url)
        done = statuses.get("completed", 0) + statuses.get("failed", 0)
        for queue, depth in broker.backlog().items():
            progress.max_backlog[queue] = max(progress.max_backlog[queue], depth)
        now = time.monotonic()
        if done != last_done:
            last_done, last_change = done, now
        if done >= total or now - last_print >= PROGRESS_EVERY_S:
            elapsed = now - began
            rate = done / elapsed * 60 if elapsed > 0 else 0.0
            line = (
                f"  {elapsed:7.0f} s: {done:5d}/{total} settled ({rate:6.1f}/min), "
                f"sessions {dict(sorted(statuses.items()))}, queues {broker.backlog()}"
            )
            print(line, flush=True)
            progress.lines.append(line)
            last_print = now
        if done >= total:
            return progress
        load.assert_agents_alive()
        if now - last_change > STALL_TIMEOUT_S:
            raise AssertionError(
                f"no session settled for {STALL_TIMEOUT_S:g} s: {done}/{total}, {statuses}"
            )
        time.sleep(POLL_S)


def log_counts(root: Path) -> dict[str, int]:
    counts = dict.fromkeys(LOG_MARKS, 0)
    for log in root.glob("worker-*.log"):
        text = log.read_bytes()
        for label, mark in LOG_MARKS.items():
            counts[label] += text.count(mark)
    return counts


def stage_figures(database_url: str) -> dict[str, dict[str, float]]:
    """Per stage: mean and p99 run time, and how many jobs ran more than once."""
    with session_scope(database_url) as db:
        rows = db.execute(
            select(
                models.Job.stage, models.Job.started_at, models.Job.finished_at, models.Job.attempts
            )
        ).all()
    by_stage: dict[str, list[tuple[float, int]]] = {}
    for stage, started, finished, attempts in rows:
        if started is None or finished is None:
            continue
        by_stage.setdefault(stage, []).append(((finished - started).total_seconds(), attempts))
    figures: dict[str, dict[str, float]] = {}
    for stage, values in sorted(by_stage.items()):
        runs = [v for v, _ in values]
        figures[stage] = {
            "jobs": len(values),
            "mean_s": sum(runs) / len(runs),
            "p99_s": percentile(runs, 99),
            "rerun": sum(1 for _, a in values if a > 1),
        }
    return figures


def summarize(measured: list[SessionTiming], began: datetime, total: int) -> dict[str, float | int]:
    latencies = [t.latency_s for t in measured]
    from_agent = [t.from_agent_s for t in measured]
    service = [(t.finished - t.first_started).total_seconds() for t in measured]
    wall = max((t.finished - began).total_seconds() for t in measured)
    return {
        "sessions": total,
        "measured": len(measured),
        "wall_s": wall,
        "last_ended_emitted_s": max((t.ended_emitted - began).total_seconds() for t in measured),
        "last_ended_received_s": max((t.ended_received - began).total_seconds() for t in measured),
        "throughput_per_min": len(measured) / wall * 60,
        "latency_p50_s": percentile(latencies, 50),
        "latency_p90_s": percentile(latencies, 90),
        "latency_p99_s": percentile(latencies, 99),
        "latency_max_s": max(latencies),
        "latency_min_s": min(latencies),
        "from_agent_p50_s": percentile(from_agent, 50),
        "from_agent_p99_s": percentile(from_agent, 99),
        "service_p50_s": percentile(service, 50),
        "service_p99_s": percentile(service, 99),
    }


def event_figures(database_url: str) -> dict[str, float | int]:
    """Events ingested (every type) and their rate, from the first arrival to the last."""
    with session_scope(database_url) as db:
        count, first, last = db.execute(
            select(
                func.count(models.Event.id),
                func.min(models.Event.received_at),
                func.max(models.Event.received_at),
            )
        ).one()
        heartbeats = db.execute(
            select(func.count(models.Event.id)).where(models.Event.type == "heartbeat")
        ).scalar_one()
    span = (last - first).total_seconds() if first is not None and last is not None else 0.0
    return {
        "events": count,
        "heartbeats": heartbeats,
        "per_s": count / span if span > 0 else float("nan"),
    }


TASK_DONE = re.compile(rb"Task (\S+)\[[^\]]+\] succeeded in ([0-9.]+)s")


def task_seconds(root: Path) -> dict[str, dict[str, float]]:
    """Per worker log: tasks run and the seconds they took, by task name."""
    figures: dict[str, dict[str, float]] = {}
    for log in sorted(root.glob("worker-*.log")):
        per_task: dict[str, float] = {}
        for name, seconds in TASK_DONE.findall(log.read_bytes()):
            key = name.decode().removeprefix("sessionpipe.")
            per_task[key] = per_task.get(key, 0.0) + float(seconds)
        figures[log.stem.removeprefix("worker-")] = per_task
    return figures


def _machine() -> dict[str, Any]:
    redis_version = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout.split()
    return {
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "redis": next((w[2:] for w in redis_version if w.startswith("v=")), "?"),
    }


def print_table(
    summary: dict[str, float | int],
    stages: dict[str, dict[str, float]],
    events: dict[str, float | int],
) -> None:
    rows = [
        ("sessions completed", f"{summary['measured']}/{summary['sessions']}"),
        ("agents start to last job finished", f"{summary['wall_s']:.1f} s"),
        ("throughput", f"{summary['throughput_per_min']:.1f} sessions/min"),
        (
            "agents start to last session ended in an outbox",
            f"{summary['last_ended_emitted_s']:.1f} s",
        ),
        (
            "agents start to last session.ended arrived",
            f"{summary['last_ended_received_s']:.1f} s",
        ),
        (
            "events ingested",
            f"{events['events']} ({events['heartbeats']} heartbeats), {events['per_s']:.1f}/s",
        ),
        ("session.ended arrived -> finished, p50", f"{summary['latency_p50_s']:.1f} s"),
        ("session.ended arrived -> finished, p90", f"{summary['latency_p90_s']:.1f} s"),
        ("session.ended arrived -> finished, p99", f"{summary['latency_p99_s']:.1f} s"),
        (
            "session.ended arrived -> finished, min / max",
            f"{summary['latency_min_s']:.1f} / {summary['latency_max_s']:.1f} s",
        ),
        (
            "agent ended the session -> finished, p50 / p99",
            f"{summary['from_agent_p50_s']:.1f} / {summary['from_agent_p99_s']:.1f} s",
        ),
        (
            "first job started -> finished, p50 / p99",
            f"{summary['service_p50_s']:.2f} / {summary['service_p99_s']:.2f} s",
        ),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    print(f"  {'stage':<14} {'jobs':>5} {'mean s':>8} {'p99 s':>8} {'rerun':>6}")
    for stage, fig in stages.items():
        print(
            f"  {stage:<14} {int(fig['jobs']):>5} {fig['mean_s']:>8.2f} {fig['p99_s']:>8.2f} "
            f"{int(fig['rerun']):>6}"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, default=DEFAULT_SESSIONS)
    p.add_argument("--agents", type=int, default=DEFAULT_AGENTS)
    p.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="feed sessions at this many a minute (default 0: all there at the start)",
    )
    p.add_argument(
        "--fault-suite-timing",
        action="store_true",
        help="the fault suite's short leases, sweeps and redispatch (default: the settings' "
        "defaults, as deployed)",
    )
    p.add_argument("--cache", type=Path, default=ROOT / "bench" / "cache")
    p.add_argument("--json", type=Path, metavar="PATH", help="write the figures as JSON")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, storage)")
    args = p.parse_args(argv)
    if args.sessions < 1 or args.agents < 1:
        p.error("--sessions and --agents must be positive")

    template = ensure_template(args.cache, TINY)
    work = Path(tempfile.mkdtemp(prefix="sessionpipe-load-"))
    machine_before = _machine()
    print(f"load: {args.sessions} sessions from {args.agents} agents; work folder {work}")
    broker = DurableRedis(work / "redis")
    database_url = create_database()
    system: FaultSystem | None = None
    load: LoadRun | None = None
    feeder: threading.Thread | None = None
    stop_feeding = threading.Event()
    failure: str | None = None
    try:
        system = FaultSystem(root=work, database_url=database_url, broker_url=broker.url)
        if not args.fault_suite_timing:  # the deployed defaults, not the fault suite's
            for key in [*FAST_RECOVERY_ENV, "SESSIONPIPE_BROKER_VISIBILITY_TIMEOUT_S"]:
                system.env.pop(key, None)
        system.start_workers()
        load = LoadRun(
            system,
            template,
            session_ids(args.sessions),
            agents=args.agents,
            staged=args.rate > 0,
        )
        copied = time.monotonic()
        load.prepare()
        print(f"  {args.sessions} session folders copied in {time.monotonic() - copied:.1f} s")
        began_wall = utcnow()
        began = time.monotonic()
        load.start_agents()
        if args.rate > 0:
            feeder = threading.Thread(
                target=load.feed, args=(args.rate, stop_feeding), name="feeder", daemon=True
            )
            feeder.start()
        progress = wait_all_settled(system, broker, load, args.sessions, began)
        codes = load.stop_agents()
        if any(codes.values()):
            failure = f"agents exited with {codes}"
        try:
            system.assert_nothing_lost()
        except AssertionError as error:
            failure = f"invariants: {str(error)[:4000]}"
        measured = timings(database_url, load.ids)
        summary = summarize(measured, began_wall, args.sessions)
        stages = stage_figures(database_url)
        events = event_figures(database_url)
        counts = log_counts(work)
        busy = task_seconds(work)
        machine_after = _machine()
        feeding = f"fed at {args.rate:g}/min" if args.rate else "all there at the start"
        print(
            f"sessions: {TINY.duration:g} s, {TINY.segment_seconds:g}-second segments "
            f"({TINY.width}x{TINY.height} {TINY.fps} fps), 4 segments each; "
            f"{args.agents} `capture-agent watch` processes; "
            f"{feeding}; "
            f"timing settings: {'fault suite' if args.fault_suite_timing else 'defaults'}"
        )
        print(
            f"machine: {machine_before['cpus']} CPUs, load {machine_before['loadavg']} before / "
            f"{machine_after['loadavg']} after, Python {machine_before['python']}, "
            f"redis {machine_before['redis']} (appendfsync always)"
        )
        print_table(summary, stages, events)
        print(f"  deepest queues: {dict(progress.max_backlog)}")
        for worker, per_task in busy.items():
            tasks = ", ".join(f"{name} {secs:.0f}" for name, secs in sorted(per_task.items()))
            print(
                f"  task seconds, {worker} worker: {sum(per_task.values()):.0f} of "
                f"{summary['wall_s']:.0f} s wall ({tasks})"
            )
        print(f"  worker log: {counts}")
        print(f"invariants (tests/faults/harness.py): {'ok' if failure is None else 'FAILED'}")
        if failure is not None:
            print(failure)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            figures = {
                "sessions": args.sessions,
                "agents": args.agents,
                "rate_per_min": args.rate,
                "fault_suite_timing": args.fault_suite_timing,
                "visibility_timeout_s": VISIBILITY_TIMEOUT_S if args.fault_suite_timing else None,
                "summary": summary,
                "stages": stages,
                "events": events,
                "task_seconds": busy,
                "max_backlog": dict(progress.max_backlog),
                "worker_log": counts,
                "machine": {"before": machine_before, "after": machine_after},
                "invariants_ok": failure is None,
                "failure": failure,
            }
            args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    finally:
        stop_feeding.set()
        if feeder is not None:
            feeder.join(10)
        if load is not None and load.watchers is not None:
            for watcher in load.watchers:
                if watcher.proc.poll() is None:
                    watcher.proc.kill()
                    watcher.proc.wait(30)
        if system is not None:
            system.stop_all()
        broker.stop()
        drop_database(database_url)
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if failure is None else 1


if __name__ == "__main__":
    raise SystemExit(main())
