"""``sessionpipe jobs``: list, inspect, cancel, retry, requeue (one or in bulk), purge."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated, Any

import typer
from rich.table import Table

from shared.settings import Settings
from workers.clicommon import (
    DEFAULT_WAIT_S,
    POLL_INTERVAL_S,
    HomeOption,
    settings_for,
    status_or_exit,
    wait_and_report,
)
from workers.render import console, err, print_purge, print_requeued

jobs_cli = typer.Typer(
    help="Operate on jobs: list, inspect, cancel, retry, requeue, purge.", no_args_is_help=True
)


@jobs_cli.command("list")
def jobs_list(
    status_filter: Annotated[str | None, typer.Option("--status", help="e.g. failed")] = None,
    stage: Annotated[str | None, typer.Option(help="e.g. transcript")] = None,
    session_id: Annotated[str | None, typer.Option("--session")] = None,
    since: Annotated[
        str | None, typer.Option(help="Changed at or after this ISO 8601 time.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    home: HomeOption = None,
) -> None:
    """List jobs, most recently changed first."""
    from workers.joblist import JobFilter, list_jobs

    try:
        query = JobFilter.parse(status=status_filter, stage=stage, session=session_id, since=since)
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    rows = list_jobs(settings_for(home).database_url, query, limit=limit)
    if as_json:
        sys.stdout.writelines(json.dumps(row) + "\n" for row in rows)
        return
    table = Table("session", "stage", "status", "attempts", "progress", "updated", "error")
    for row in rows:
        table.add_row(
            row["session_id"],
            row["stage"],
            row["status"],
            str(row["attempts"]),
            f"{row['progress']:.0%}",
            row["updated_at"][:19],
            (row["error"] or "")[:60],
        )
    console.print(table)


@jobs_cli.command("cancel")
def jobs_cancel(
    session_id: str, stage: Annotated[str | None, typer.Option()] = None, home: HomeOption = None
) -> None:
    """Cancel a session's pending or running jobs (a running stage stops at its next report)."""
    from shared.db import session_scope
    from workers.jobs import cancel

    with session_scope(settings_for(home).database_url) as db:
        count = cancel(db, session_id, stage)
    console.print(f"cancelled {count} job(s)")


@jobs_cli.command("inspect")
def jobs_inspect(session_id: str, home: HomeOption = None) -> None:
    """Everything about one session's jobs, as JSON (results, errors, timings)."""
    sys.stdout.write(json.dumps(status_or_exit(settings_for(home), session_id), indent=2) + "\n")


@jobs_cli.command("retry")
def jobs_retry(session_id: str, stage: str, home: HomeOption = None) -> None:
    """Run a failed or cancelled stage again (the stages after it follow)."""
    from workers.jobs import JobStatus

    _requeue(settings_for(home), session_id, stage, (JobStatus.FAILED, JobStatus.CANCELLED))


@jobs_cli.command("requeue")
def jobs_requeue(
    session_id: Annotated[
        str | None, typer.Argument(metavar="SESSION", help="One job: its session.")
    ] = None,
    stage: Annotated[
        str | None, typer.Argument(metavar="STAGE", help="One job: its stage.")
    ] = None,
    force: Annotated[
        bool, typer.Option(help="One job: also re-run a succeeded or running (stuck) job.")
    ] = False,
    stage_filter: Annotated[
        str | None, typer.Option("--stage", help="Bulk: jobs of this stage.")
    ] = None,
    status_filter: Annotated[
        str | None,
        typer.Option("--status", help="Bulk: jobs in this status (default failed)."),
    ] = None,
    session_filter: Annotated[
        str | None, typer.Option("--session", help="Bulk: jobs of this session.")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Bulk: changed at or after this ISO 8601 time.")
    ] = None,
    priority: Annotated[
        str | None,
        typer.Option(help="Bulk: the sessions' new priority (high, normal, low)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Bulk: only list what would be requeued.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Bulk: one JSON object per job.")] = False,
    home: HomeOption = None,
) -> None:
    """Send a stage's task again: one job (SESSION STAGE: a pending job whose message was
    lost, or with --force any job), or in bulk the jobs the filters select (--stage,
    --session, --since; --status default failed), optionally at a new --priority."""
    from workers.jobs import JobStatus

    bulk = {
        "--stage": stage_filter, "--status": status_filter, "--session": session_filter,
        "--since": since, "--priority": priority, "--dry-run": dry_run or None,
        "--json": as_json or None,
    }  # fmt: skip
    bulk_given = [name for name, value in bulk.items() if value is not None]
    if session_id is not None and stage is not None and not bulk_given:
        statuses: tuple[JobStatus, ...] = tuple(JobStatus) if force else (JobStatus.PENDING,)
        _requeue(settings_for(home), session_id, stage, statuses)
        return
    if session_id is None and stage is None and not force:
        _bulk_requeue(
            settings_for(home),
            stage=stage_filter, status=status_filter, session=session_filter, since=since,
            priority=priority, dry_run=dry_run, as_json=as_json,
        )  # fmt: skip
        return
    if session_id is not None and stage is None:
        problem = "one job needs both SESSION and STAGE"
    elif session_id is None:
        problem = "--force is for one job (SESSION STAGE), not a bulk requeue"
    else:
        problem = f"give SESSION STAGE (one job) or {', '.join(bulk_given)} (bulk), not both"
    err.print(
        f"[red]error:[/red] {problem}: `jobs requeue SESSION STAGE [--force]` or "
        "`jobs requeue --stage X [--status S] [--since T] [--priority P] [--dry-run] [--json]`"
    )
    raise typer.Exit(2)


@jobs_cli.command("purge")
def jobs_purge(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            help="A duration back from now (30d, 12h, 90m, 2w) or an ISO 8601 time.",
        ),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only list what would be purged.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per session.")] = False,
    home: HomeOption = None,
) -> None:
    """Delete the rows (jobs and all) of sessions that are over, unchanged since the cutoff,
    and whose files are gone from storage (workers/purge.py states the rule)."""
    from shared.storage import Storage
    from workers.purge import parse_cutoff, purge

    try:
        cutoff = parse_cutoff(older_than)
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    settings = settings_for(home)
    actions = purge(
        settings.database_url,
        Storage(settings.storage),
        cutoff=cutoff,
        webhook_max_attempts=settings.webhook_max_attempts,
        dry_run=dry_run,
    )
    if as_json:
        sys.stdout.writelines(json.dumps(a.as_dict()) + "\n" for a in actions)
        return
    print_purge([a.as_dict() for a in actions], cutoff.isoformat())


def _requeue(settings: Settings, session_id: str, stage: str, statuses: tuple[Any, ...]) -> None:
    from shared.db import session_scope
    from shared.ids import InvalidNameError, validate_session_id
    from workers.app import app
    from workers.dispatch import send_all
    from workers.jobs import reopen
    from workers.pipeline import Stage

    try:
        validate_session_id(session_id)
        stage_enum = Stage(stage)
    except InvalidNameError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    except ValueError:
        choices = ", ".join(s.value for s in Stage)
        err.print(f"[red]error:[/red] unknown stage {stage!r}; one of {choices}")
        raise typer.Exit(2) from None
    with session_scope(settings.database_url) as db:
        session = reopen(db, session_id, stage, from_statuses=statuses)
        if session is None:
            wanted = "/".join(s.value for s in statuses)
            err.print(f"[red]error:[/red] no {wanted} {stage} job for session {session_id!r}")
            raise typer.Exit(1)
    if settings.embedded_broker:
        # No separate workers on the embedded default: run one here until the session settles.
        from workers.embedded import embedded_worker

        with embedded_worker(app):
            send_all(app, settings.database_url, session, [stage_enum])
            console.print(f"requeued {stage} for {session_id}")
            wait_and_report(settings, session_id, DEFAULT_WAIT_S)
        return
    send_all(app, settings.database_url, session, [stage_enum])
    console.print(f"requeued {stage} for {session_id}")


def _bulk_requeue(
    settings: Settings,
    *,
    stage: str | None,
    status: str | None,
    session: str | None,
    since: str | None,
    priority: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    from shared.ids import InvalidNameError
    from workers import requeue
    from workers.app import app

    try:
        query, new_priority = requeue.parse(
            status=status, stage=stage, session=session, since=since, priority=priority
        )
    except (ValueError, InvalidNameError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    result = requeue.requeue(settings.database_url, query, priority=new_priority, dry_run=dry_run)
    unfinished: list[str] = []
    if result.sessions and settings.embedded_broker:
        # No separate workers on the embedded default: run one here until they settle.
        from workers.embedded import embedded_worker

        with embedded_worker(app):
            requeue.send(app, settings.database_url, result)
            unfinished = _wait_settled(settings, result.session_ids, DEFAULT_WAIT_S)
    elif result.sessions:
        requeue.send(app, settings.database_url, result)
    for row in result.changed:
        err.print(
            f"[yellow]left alone:[/yellow] {row.stage} of {row.session_id} changed since "
            f"it was listed ({row.previous_status} then)"
        )
    if as_json:
        sys.stdout.writelines(
            json.dumps({**row.as_dict(), "dry_run": dry_run}) + "\n" for row in result.requeued
        )
    else:
        print_requeued([row.as_dict() for row in result.requeued], dry_run=dry_run)
    if unfinished:
        err.print(f"[red]did not complete:[/red] {', '.join(unfinished)}")
        raise typer.Exit(1)


def _wait_settled(settings: Settings, session_ids: list[str], timeout: float) -> list[str]:
    """Wait until every session has an outcome; the ones that did not complete."""
    from workers.requeue import outcomes

    deadline = time.monotonic() + timeout
    found = outcomes(settings.database_url, session_ids)
    with err.status(f"processing {len(session_ids)} session(s)"):
        while time.monotonic() < deadline and any(v is None for v in found.values()):
            time.sleep(POLL_INTERVAL_S)
            found = outcomes(settings.database_url, session_ids)
    return sorted(sid for sid, outcome in found.items() if outcome != "completed")
