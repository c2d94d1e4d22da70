"""A worker's CPU priority follows the queues it consumes (workers/cpupriority.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from shared.routing import QUEUE_AUDIO, QUEUE_DEFAULT, QUEUE_ENRICH, QUEUE_MEDIA, QUEUES
from tests.support.services import WorkerProcess, service_env
from workers.cpupriority import (
    autogroup_niceness,
    lower_autogroup_priority,
    lower_priority,
    niceness_for,
)

POOL_START_TIMEOUT_S = 30.0


def test_the_most_urgent_queue_sets_the_niceness() -> None:
    assert niceness_for([QUEUE_AUDIO]) == 0
    assert niceness_for([QUEUE_DEFAULT]) == 0
    assert niceness_for([QUEUE_MEDIA]) == 5
    assert niceness_for([QUEUE_ENRICH]) == 10
    # the compressed copy yields to the playable MP4, enrichment to both
    assert niceness_for([QUEUE_AUDIO]) < niceness_for([QUEUE_MEDIA]) < niceness_for([QUEUE_ENRICH])
    assert niceness_for([QUEUE_MEDIA, QUEUE_ENRICH]) == 5
    assert niceness_for([QUEUE_ENRICH, QUEUE_AUDIO]) == 0
    assert niceness_for(QUEUES) == 0  # the embedded default's worker: the user's own priority
    assert niceness_for(["someone-elses-queue"]) == 0
    assert niceness_for([]) == 0


def test_niceness_only_rises() -> None:
    pid = os.fork()
    if pid == 0:  # the child changes its own priority, not the test run's
        code = 0
        try:
            start = os.nice(0)
            if lower_priority(start + 3) != start + 3 or os.nice(0) != start + 3:
                code = 1
            elif lower_priority(start) != start + 3:  # never back up
                code = 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def _autogroup(pid: int) -> int | None:
    return autogroup_niceness(Path(f"/proc/{pid}/autogroup"))


def test_a_session_leader_sets_its_autogroups_niceness_and_no_one_else(tmp_path: Path) -> None:
    group = tmp_path / "autogroup"
    group.write_text("/autogroup-7 nice 0\n")
    assert lower_autogroup_priority(5, group) is None  # pytest shares its session
    assert group.read_text() == "/autogroup-7 nice 0\n"
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.setsid()  # now the group would hold this process only
            written: list[str] = []

            class Group(type(group)):  # type: ignore[misc]
                def write_text(self, data: str, *args: object, **kwargs: object) -> int:
                    written.append(data)  # as the kernel shows a written niceness
                    return super().write_text(f"/autogroup-7 nice {data}\n")

            fake = Group(group)
            if lower_autogroup_priority(5, fake) != 5 or written != ["5"]:
                code = 1
            elif lower_autogroup_priority(3, fake) != 5 or written != ["5"]:  # never back up
                code = 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def _niceness(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[16])  # field 19 of proc(5): nice


def _children(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children]


def _pool(worker: WorkerProcess) -> list[int]:
    deadline = time.monotonic() + POOL_START_TIMEOUT_S
    while not (children := _children(worker.proc.pid)):
        assert time.monotonic() < deadline, f"no pool process:\n{worker.log()}"
        time.sleep(0.1)
    return children


@pytest.mark.integration
def test_a_worker_and_its_pool_run_at_their_queues_niceness(
    tmp_path: Path, pg_url: str, redis_url: str
) -> None:
    env = service_env(home=tmp_path / "home", database_url=pg_url, broker_url=redis_url)
    base = os.nice(0)
    workers = {
        QUEUE_MEDIA: WorkerProcess(env, tmp_path / "media.log", queues=QUEUE_MEDIA, concurrency=1),
        f"{QUEUE_ENRICH},{QUEUE_AUDIO}": WorkerProcess(
            env, tmp_path / "mixed.log", queues=f"{QUEUE_ENRICH},{QUEUE_AUDIO}", concurrency=1
        ),
        QUEUE_ENRICH: WorkerProcess(
            env, tmp_path / "enrich.log", queues=QUEUE_ENRICH, concurrency=1
        ),
    }
    off = WorkerProcess(
        {**env, "SESSIONPIPE_WORKER_NICENESS": "false"},
        tmp_path / "off.log",
        queues=QUEUE_MEDIA,
        concurrency=1,
    )
    try:
        expected = {QUEUE_MEDIA: 5, f"{QUEUE_ENRICH},{QUEUE_AUDIO}": 0, QUEUE_ENRICH: 10}
        for queues, worker in workers.items():
            pids = [worker.proc.pid, *_pool(worker)]
            # niceness only rises: a run under `nice` keeps its own where it is higher
            wanted = max(base, expected[queues])
            assert [_niceness(pid) for pid in pids] == [wanted] * len(pids), queues
            # each worker leads a session of its own (start_new_session): where Linux groups
            # a session's processes (autogroup), the group's niceness is set too, or the
            # niceness would not count against the other workers
            if _autogroup(worker.proc.pid) is not None:
                assert _autogroup(worker.proc.pid) == expected[queues], queues
        assert f"runs at niceness {max(base, 5)}" in workers[QUEUE_MEDIA].log()
        assert [_niceness(pid) for pid in [off.proc.pid, *_pool(off)]] == [base, base]
    finally:
        for worker in [*workers.values(), off]:
            worker.discard()
