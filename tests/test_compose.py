"""docker-compose.yml, checked without Docker (none on this machine): every service's
command parses against the real entry points (celery's own CLI with our app, the
``sessionpipe`` command), the workers consume every queue, each worker may finish its task
on shutdown and reports its health, and nothing secret is written in the file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from celery.bin.base import CLIContext
from celery.bin.celery import celery

from shared.routing import QUEUES
from tests.support import ROOT
from workers.app import app
from workers.cli import cli

COMPOSE = ROOT / "docker-compose.yml"
#: Seconds a worker of each queue may take to finish its task when asked to stop.
MIN_GRACE_S = {"media": 600, "audio": 60, "enrich": 300, "default": 30}


def services() -> dict[str, dict[str, Any]]:
    loaded: dict[str, Any] = yaml.safe_load(Path(COMPOSE).read_text())
    return loaded["services"]


def seconds(duration: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([smh])", duration))


def parse(command: list[str]) -> Any:
    """The command parsed by the program it runs, as that program would (nothing runs)."""
    program, *args = command
    if program == "celery":
        assert args[:2] == ["-A", "workers.app"], command
        sub, rest = args[2], args[3:]
        obj = CLIContext(app=app, no_color=True, workdir=None, quiet=True)
        return celery.commands[sub].make_context(sub, rest, obj=obj)
    assert program == "sessionpipe", command
    group: Any = typer.main.get_command(cli)  # typer's own click classes: duck-typed
    ctx = group.make_context("sessionpipe", list(args))
    name, sub_cmd, rest = group.resolve_command(ctx, list(args))
    assert sub_cmd is not None, command
    if hasattr(sub_cmd, "resolve_command"):  # a group: db, jobs, retention
        inner = sub_cmd.make_context(name or "", rest, parent=ctx)
        _, leaf, leaf_args = sub_cmd.resolve_command(inner, rest)
        assert leaf is not None, command
        return leaf.make_context(leaf.name or "", leaf_args, parent=inner)
    return sub_cmd.make_context(name or "", rest, parent=ctx)


@pytest.mark.parametrize(
    "name", [n for n, s in services().items() if s.get("command")], ids=lambda n: n
)
def test_every_command_parses_against_the_real_entry_point(name: str) -> None:
    command = services()[name]["command"]
    if command[0] in ("celery", "sessionpipe"):
        parse(command)
    else:
        assert command[0] == "redis-server", command


def test_the_workers_consume_every_queue_and_stop_gracefully() -> None:
    consumed: set[str] = set()
    for name, service in services().items():
        command = service.get("command") or []
        if command[:4] != ["celery", "-A", "workers.app", "worker"]:
            continue
        queues = parse(command).params["queues"]
        assert set(queues) <= set(QUEUES), (name, queues)
        consumed |= set(queues)
        grace = seconds(service["stop_grace_period"])
        assert grace >= max(MIN_GRACE_S[q] for q in queues), (name, grace)
        assert "inspect ping" in " ".join(service["healthcheck"]["test"]), name
    assert consumed == set(QUEUES)


def test_flower_is_locked_and_nothing_secret_is_written_down() -> None:
    flower = services()["flower"]
    assert any(arg.startswith("--basic-auth=${") for arg in flower["command"])
    assert all(port.startswith("127.0.0.1:") for port in flower["ports"])
    text = COMPOSE.read_text()
    for line in text.splitlines():
        if re.search(r"(PASSWORD|SECRET|TOKEN|KEY)\w*[:=]", line, re.I):
            assert "${" in line, f"a secret written in docker-compose.yml: {line.strip()}"
