"""The Procfile (``make up``) and docker-compose.yml cannot drift apart: the Procfile runs
exactly compose's long-running services of our image, each command parses against the real
entry points (as ``tests/test_compose.py`` checks compose's), every worker's command is
compose's word for word, the API and Flower differ only in listening on 127.0.0.1 (and
their ports, which ``make up`` may move), and Flower cannot start without its basic auth.

The Procfile is read by honcho's own parser; its shell expansions (``${NAME:-default}``,
``${NAME:?message}``) are expanded here as ``sh`` would, with a marker for a required value.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from typing import Any, Final

import pytest
from honcho.environ import parse_procfile

from tests.support import ROOT
from tests.test_compose import parse, services

PROCFILE: Final = ROOT / "Procfile"
LOOPBACK: Final = "127.0.0.1"
#: Options that may differ between a container (listening on every interface of its own
#: network, published on 127.0.0.1 by compose) and this machine (listening on 127.0.0.1).
LOCAL_ONLY_PARAMS: Final = frozenset({"host", "port"})
_EXPANSION = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")
EXEC: Final = "exec"


def processes() -> dict[str, str]:
    found: dict[str, str] = parse_procfile(PROCFILE.read_text()).processes
    return dict(found)


def expand(command: str) -> str:
    """``command`` with ``${NAME:-default}`` as its default and ``${NAME:?...}`` (required)
    as ``<NAME>``, as the shell would see them with nothing set."""

    def one(match: re.Match[str]) -> str:
        name, op, word = match.groups()
        return word if op == "-" else f"<{name}>"

    return _EXPANSION.sub(one, command)


def argv(name: str) -> list[str]:
    """A process's command as the program it runs receives it (``exec`` is the shell's)."""
    words = shlex.split(expand(processes()[name]))
    return words[1:] if words[0] == EXEC else words


def long_running_services() -> dict[str, dict[str, Any]]:
    """Compose's services of our image that run until stopped (not ``migrate``)."""
    return {
        name: service
        for name, service in services().items()
        if service.get("image") == "sessionpipe:latest" and service.get("restart") != "no"
    }


def test_the_procfile_runs_composes_long_running_services() -> None:
    assert set(processes()) == set(long_running_services())


@pytest.mark.parametrize("name", sorted(processes()), ids=lambda n: n)
def test_every_process_parses_against_the_real_entry_point(name: str) -> None:
    assert processes()[name].startswith(f"{EXEC} "), "exec: signals reach the program itself"
    parse(argv(name))


@pytest.mark.parametrize(
    "name", sorted(n for n in processes() if n.startswith("worker-")), ids=lambda n: n
)
def test_each_worker_is_composes_word_for_word(name: str) -> None:
    assert argv(name) == long_running_services()[name]["command"]


def test_the_api_differs_only_in_listening_on_loopback() -> None:
    local, compose = parse(argv("api")).params, parse(long_running_services()["api"]["command"])
    assert local["host"] == LOOPBACK
    assert {k: v for k, v in local.items() if k not in LOCAL_ONLY_PARAMS} == {
        k: v for k, v in compose.params.items() if k not in LOCAL_ONLY_PARAMS
    }


def _flower_options(command: list[str]) -> dict[str, str]:
    tornado_argv: tuple[str, ...] = parse(command).params["tornado_argv"]
    return dict(arg.split("=", 1) for arg in tornado_argv)


def test_flower_listens_on_loopback_behind_the_same_auth() -> None:
    local = _flower_options(argv("flower"))
    compose = _flower_options(expand(" ".join(long_running_services()["flower"]["command"]))
                              .split())  # fmt: skip
    assert local.pop("--address") == LOOPBACK
    assert local["--basic-auth"] == compose["--basic-auth"] == "<FLOWER_USER>:<FLOWER_PASSWORD>"
    assert local.keys() == compose.keys()


@pytest.mark.parametrize("unset", ["FLOWER_USER", "FLOWER_PASSWORD"])
def test_flower_never_starts_without_credentials(unset: str) -> None:
    """The Procfile's own shell refuses: with a credential unset, nothing is executed."""
    command = processes()["flower"].replace(f"{EXEC} ", f"{EXEC} echo ", 1)  # never flower
    env = {"PATH": "/usr/bin:/bin", "FLOWER_USER": "someone", "FLOWER_PASSWORD": "something"}
    del env[unset]
    refused = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True)
    assert refused.returncode != 0
    assert f"set {unset}" in refused.stderr and refused.stdout == ""
    env[unset] = "given"
    allowed = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True)
    assert allowed.returncode == 0 and "--basic-auth=" in allowed.stdout


def test_no_secret_is_written_in_the_procfile() -> None:
    """Credentials are only ever the environment's: outside ``${...}`` no line names one."""
    for line in PROCFILE.read_text().splitlines():
        bare = _EXPANSION.sub("", line)
        assert not re.search(r"(PASSWORD|SECRET|TOKEN|KEY)\w*[:=]", bare, re.I), line
        assert "--basic-auth=" not in bare or "--basic-auth=${" in line, line
