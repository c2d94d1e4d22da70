"""Running the commands as subprocesses: their environment and argv."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT

#: Tests of the media path, the agent and the faults run the enrichment stages as skipped
#: ("not asked for"): the graph and its hand-ons are exercised, seconds of speech
#: recognition per session are not spent. The enrichment tests ask for it
#: (SESSIONPIPE_ENRICH=all, or enrich="all").
MEDIA_TESTS_ENV: dict[str, str] = {"SESSIONPIPE_ENRICH": "none"}


def clean_env(**values: str) -> dict[str, str]:
    """This process's environment without any ``SESSIONPIPE_*``/``AWS_*`` setting, plus ``values``.

    The subprocess imports this checkout (``PYTHONPATH``) and prints wide tables.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SESSIONPIPE_") and not k.startswith("AWS_")
    }
    env.update(PYTHONPATH=str(ROOT), COLUMNS="200", **MEDIA_TESTS_ENV)
    env.update(values)
    return env


def agent_env(home: Path, *, broker_url: str | None = None, **agent: str) -> dict[str, str]:
    """Environment for a ``capture-agent`` subprocess.

    ``agent`` are the agent's own settings: ``state_dir="..."`` becomes
    ``SESSIONPIPE_AGENT_STATE_DIR``.
    """
    env = clean_env(SESSIONPIPE_HOME=str(home))
    if broker_url is not None:
        env["SESSIONPIPE_BROKER_URL"] = broker_url
    env.update({f"SESSIONPIPE_AGENT_{k.upper()}": v for k, v in agent.items()})
    return env


def capture_agent(*args: str) -> list[str]:
    """argv of the real ``capture-agent`` entry point (the venv's console script)."""
    script = Path(sys.executable).parent / "capture-agent"
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-c", "from capture_agent.cli import main; main()", *args]


def run(
    argv: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run a command from the checkout's root, capturing its output as text."""
    return subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
