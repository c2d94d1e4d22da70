"""What the command modules share: the ``--home`` option, the settings it selects, reading
a session's status and waiting for its outcome."""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from shared.clock import as_utc
from shared.settings import Settings, get_settings, reset_settings
from workers.render import console, err, print_report

DEFAULT_WAIT_S = 1800.0  # how long `process` and `jobs retry` wait for a session
POLL_INTERVAL_S = 0.1  # how often `process` and `jobs retry` look at the session's state

HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="Folder for the embedded default (database, storage, broker). "
        "Default: $SESSIONPIPE_HOME or ./var",
    ),
]


def settings_for(home: Path | None) -> Settings:
    """The settings, with ``--home`` (when given) as the embedded default's folder."""
    if home is not None:
        os.environ["SESSIONPIPE_HOME"] = str(home)
        reset_settings()
    return get_settings()


def since_or_error(since: str | None) -> datetime | None:
    """``--since`` as an aware time (ValueError naming it)."""
    if since is None:
        return None
    try:
        return as_utc(datetime.fromisoformat(since))
    except ValueError:
        raise ValueError(f"--since {since!r} is not an ISO 8601 time") from None


def status_or_exit(settings: Settings, session_id: str) -> dict[str, Any]:
    from shared.ids import InvalidNameError
    from shared.storage import Storage
    from workers.status import UnknownSessionError, session_status

    try:
        return session_status(settings.database_url, Storage(settings.storage), session_id)
    except (UnknownSessionError, InvalidNameError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


def wait_and_report(settings: Settings, session_id: str, timeout: float) -> None:
    from workers.status import UnknownSessionError

    deadline = time.monotonic() + timeout
    report: dict[str, Any] | None = None
    with console.status(f"processing {session_id}") as spinner:
        while time.monotonic() < deadline:
            try:
                from shared.storage import Storage
                from workers.status import session_status

                report = session_status(
                    settings.database_url, Storage(settings.storage), session_id
                )
            except UnknownSessionError:
                report = None
            if report and report["outcome"]:
                break
            if report:
                running = [s for s in report["stages"] if s["status"] == "running"]
                if running:
                    spinner.update(
                        f"{session_id}: {running[0]['stage']} {running[0]['progress']:.0%}"
                    )
            time.sleep(POLL_INTERVAL_S)
    if report is None:
        err.print(f"[red]error:[/red] session {session_id!r} never reached the workers")
        raise typer.Exit(1)
    print_report(report)
    unsuccessful = [s for s in report["stages"] if s["status"] in ("failed", "cancelled")]
    if report["outcome"] != "completed":
        failed = unsuccessful
        reason = (
            f"{failed[0]['stage']} {failed[0]['status']}: {failed[0]['error']}"
            if failed
            else f"timed out after {timeout:.0f} s"
        )
        err.print(f"[red]session {session_id} did not complete:[/red] {reason}")
        raise typer.Exit(1)
    for stage in unsuccessful:  # an enrichment stage: the media is finished regardless
        err.print(f"[yellow]warning:[/yellow] {stage['stage']} {stage['status']}: {stage['error']}")
