"""``capture-agent``: ship session folders, drain the outbox, and report what is pending.

Recording commands (record/watch/pause/resume/stop) live in ``recording_cli``; its app is
added to this one, so they are top-level commands too.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console

from capture_agent import recording_cli
from shared.settings import get_settings

cli = typer.Typer(
    help="sessionpipe capture agent: record sessions and ship their segments.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
cli.add_typer(recording_cli.app)  # record, watch, pause, resume, stop
console = Console()
err = Console(stderr=True)

WAIT_SLICE_S = 0.5
#: How often `capture-agent run --forever` looks for recordings whose recorder died and
#: forgets long-shipped sessions (keep_shipped_days), in seconds.
RECOVER_EVERY_S = 30.0

VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Log each upload.")]


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _stop_on_signals() -> threading.Event:
    """SIGINT/SIGTERM stop the agent cleanly; anything unshipped stays in the outbox."""
    stopping = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stopping


def _drain(timeout: float | None, *, forever: bool) -> bool:
    """Run the uploader until the outbox is empty (or forever); True if it ended empty."""
    import time

    from capture_agent.agent import Agent

    stopping = _stop_on_signals()
    agent = Agent()
    agent.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    next_recovery = 0.0
    try:
        while not stopping.is_set():
            if time.monotonic() >= next_recovery:  # recordings whose recorder died
                for recovered in agent.recover_recordings():
                    console.print(
                        f"recording {recovered.session_id} lost its recorder: ended at "
                        f"{recovered.ended_at.isoformat()}, {len(recovered.added)} more segments"
                    )
                agent.prune_outbox()
                next_recovery = time.monotonic() + RECOVER_EVERY_S
            if deadline is not None and time.monotonic() >= deadline:
                break
            if agent.wait_idle(WAIT_SLICE_S) and not forever:
                break
            stopping.wait(0.01)
    finally:
        drained = agent.stop(drain=False)
        agent.outbox.close()
    return drained


@cli.command()
def ship(
    session_dir: Path,
    timeout: Annotated[
        float | None, typer.Option(help="Give up waiting after S seconds (the outbox keeps it).")
    ] = None,
    verbose: VerboseOption = False,
) -> None:
    """Ship a session folder (session.json + segments) through the outbox and announce it."""
    from capture_agent.agent import Agent

    _logging(verbose)
    agent = Agent()
    try:
        manifest = agent.enqueue_session_dir(session_dir)
    except (OSError, ValueError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    finally:
        agent.outbox.close()
    drained = _drain(timeout, forever=False)
    from capture_agent.agentstate import read_status
    from capture_agent.settings import AgentSettings

    status = read_status(AgentSettings(), get_settings())
    failed = [f for f in status["failed"] if f["session_id"] == manifest.id]
    for item in failed:
        err.print(f"[red]not shipped:[/red] {item['file']}: {item['error']}")
    if not drained:
        err.print(
            f"[yellow]session {manifest.id}: still pending[/yellow] "
            f"({status['pending']['segments']} segment(s), {status['pending']['events']} "
            f"event(s)); last error: {(status['last_error'] or {}).get('message')}. "
            "`capture-agent run` finishes it."
        )
        raise typer.Exit(1)
    if failed:
        raise typer.Exit(1)
    console.print(f"session {manifest.id}: {len(manifest.segments)} segments shipped")


@cli.command()
def run(
    forever: Annotated[
        bool, typer.Option("--forever", help="Keep running and shipping new work.")
    ] = False,
    timeout: Annotated[float | None, typer.Option(help="Stop after S seconds.")] = None,
    verbose: VerboseOption = False,
) -> None:
    """Drain the outbox: ship every pending segment and event, retrying until it is empty."""
    _logging(verbose)
    drained = _drain(timeout, forever=forever)
    if not drained:
        err.print("outbox not empty; the next `capture-agent run` continues")
        raise typer.Exit(1)
    console.print("outbox empty")


@cli.command()
def status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """What is recording, what is pending upload, the last error and last contacts."""
    from capture_agent.agentstate import read_status, render
    from capture_agent.settings import AgentSettings

    report = read_status(AgentSettings(), get_settings())
    if as_json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        render(report, console)


def main() -> None:
    cli()
