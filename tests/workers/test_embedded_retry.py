"""On the embedded default a transient failure is retried by the in-process worker.

The pool's threads once ran tasks as copies bound to Celery's unconfigured default app,
whose retries (and hand-ons) went to a broker nobody reads: the session hung. This runs the
real ``sessionpipe process`` in a fresh interpreter whose merge stage fails once with a
transient error.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from synthetic.plan import SyntheticSpec
from synthetic.session import record_synthetic_session
from tests.support import ROOT
from tests.support.cli import clean_env

pytestmark = pytest.mark.integration

DRIVER = """
import sys
from workers import stages
from workers.pipeline import Stage

real = stages.WORK[Stage.MERGE]
calls = []

def flaky(ctx):
    calls.append(1)
    if len(calls) == 1:
        raise ConnectionResetError("storage blinked")
    return real(ctx)

stages.WORK[Stage.MERGE] = flaky
from sessionpipe.cli import main
sys.argv = ["sessionpipe", *sys.argv[1:]]
main()
"""


def test_a_transient_failure_is_retried_and_the_session_completes(tmp_path: Path) -> None:
    folder = record_synthetic_session(
        tmp_path / "rec",
        session_id="flaky-merge",
        name="flaky",
        spec=SyntheticSpec(
            duration=4.0, segment_seconds=2.0, audio_holes=(), width=160, height=96, fps=10
        ),
        started_at=datetime(2026, 11, 21, 9, 0, tzinfo=UTC),
    )
    env = clean_env()
    home = tmp_path / "home"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", DRIVER, *args, "--home", str(home)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    done = run("process", str(folder), "--timeout", "120")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(run("status", "flaky-merge", "--json").stdout)
    stages = {s["stage"]: s for s in report["stages"]}
    assert report["outcome"] == "completed"
    assert stages["merge"]["attempts"] == 2 and stages["merge"]["error"] is None
    # the enrichment stages are skipped (tests.support.cli.MEDIA_TESTS_ENV), no stage failed
    assert all(s["status"] in ("succeeded", "skipped") for s in stages.values())
    assert stages["merge"]["status"] == "succeeded"
    assert all(s["attempts"] == 1 for name, s in stages.items() if name != "merge")
