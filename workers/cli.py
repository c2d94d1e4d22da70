"""``sessionpipe``: the workers' commands: database, status, jobs, retention.

The commands that drive the capture agent and the workers together on one machine (`demo`,
`process`) live in ``sessionpipe.local``; ``sessionpipe.cli`` puts both under one command.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from shared.clock import as_utc
from shared.diagnostics import redact
from shared.ids import validate_session_id
from shared.settings import Settings, get_settings, reset_settings
from workers.render import (
    console,
    err,
    print_doctor,
    print_enrichment,
    print_hits,
    print_purge,
    print_report,
    print_requeued,
    progress_table,
)

DEFAULT_WAIT_S = 1800.0  # how long `process` and `jobs retry` wait for a session
POLL_INTERVAL_S = 0.1  # how often `process` and `jobs retry` look at the session's state

cli = typer.Typer(
    help="sessionpipe: recorded work sessions to finished media.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_cli = typer.Typer(help="Database schema (alembic).", no_args_is_help=True)
jobs_cli = typer.Typer(
    help="Operate on jobs: list, inspect, cancel, retry, requeue.", no_args_is_help=True
)
cli.add_typer(db_cli, name="db")
cli.add_typer(jobs_cli, name="jobs")

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


@db_cli.command("upgrade")
def db_upgrade(revision: str = "head", home: HomeOption = None) -> None:
    """Create or upgrade the schema."""
    from shared.migrate import upgrade

    settings = settings_for(home)
    upgrade(settings.database_url, revision)
    console.print(f"database at revision {revision}: {redact(settings.database_url)}")


@db_cli.command("downgrade")
def db_downgrade(revision: str = "base", home: HomeOption = None) -> None:
    """Downgrade the schema (default: drop everything sessionpipe created)."""
    from shared.migrate import downgrade

    downgrade(settings_for(home).database_url, revision)


@cli.command()
def status(
    session_id: str,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Live progress bars until it completes or fails.")
    ] = False,
    home: HomeOption = None,
) -> None:
    """Show a session's stages: status, attempts, progress, error and outputs."""
    settings = settings_for(home)
    report = _status_or_exit(settings, session_id)
    if watch:
        report = _watch(settings, session_id, report)
    if as_json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        print_report(report)


@cli.command()
def show(
    session_id: str,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object, transcript included.")
    ] = False,
    home: HomeOption = None,
) -> None:
    """Show a session's chapters, keywords and summary (its enrichment)."""
    from shared.ids import InvalidNameError
    from workers.enrichment import enrichment_document
    from workers.status import UnknownSessionError

    try:
        document = enrichment_document(settings_for(home).database_url, session_id)
    except (UnknownSessionError, InvalidNameError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    if as_json:
        sys.stdout.write(json.dumps(document) + "\n")
    else:
        print_enrichment(document)


@cli.command()
def search(
    query: Annotated[
        str, typer.Argument(metavar="QUERY", help='Words, "a phrase", or a prefix*.')
    ],
    session_id: Annotated[
        str | None, typer.Option("--session", help="Only this session's moments.")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only sessions created at or after this ISO 8601 time.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=200, help="Most hits shown.")] = 20,
    as_json: Annotated[
        bool, typer.Option("--json", help='{"query", "hits": [{"session_id", "start", ...}]}')
    ] = False,
    home: HomeOption = None,
) -> None:
    """Find the moments where something was said or shown, best first (workers.search)."""
    from shared.ids import InvalidNameError
    from workers.search import QueryError, parse_query
    from workers.search import search as run_search

    try:
        parsed = parse_query(query)
        if session_id is not None:
            validate_session_id(session_id)
        when = _since_or_error(since)
    except (QueryError, InvalidNameError, ValueError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    url = settings_for(home).database_url
    hits = [h.to_json() for h in run_search(url, parsed, session_id=session_id, since=when,
                                            limit=limit)]  # fmt: skip
    if as_json:
        sys.stdout.write(json.dumps({"query": query, "hits": hits}) + "\n")
    else:
        print_hits(query, hits)


def _since_or_error(since: str | None) -> datetime | None:
    """``--since`` as an aware time (ValueError naming it)."""
    if since is None:
        return None
    try:
        return as_utc(datetime.fromisoformat(since))
    except ValueError:
        raise ValueError(f"--since {since!r} is not an ISO 8601 time") from None


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
    sys.stdout.write(json.dumps(_status_or_exit(settings_for(home), session_id), indent=2) + "\n")


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
    as_json: Annotated[
        bool, typer.Option("--json", help="Bulk: one JSON object per job.")
    ] = False,
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
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per session.")
    ] = False,
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


@cli.command()
def doctor(
    fix: Annotated[
        bool,
        typer.Option("--fix", help="Re-send stranded jobs, requeue stale ones, fix statuses, "
                     "delete dead temporary files."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    home: HomeOption = None,
) -> None:
    """Check the pipeline's invariants on this system; exit 1 if something is wrong."""
    from workers import doctor as checks
    from workers.app import app

    settings = settings_for(home)
    report = checks.check(settings)
    if fix:
        if settings.embedded_broker:
            # No separate workers on the embedded default: run one here while it catches up.
            from workers.embedded import embedded_worker

            with embedded_worker(app):
                report = checks.fix(app, settings, report)
                for session_id in sorted({f.session_id for f in report.findings if f.session_id}):
                    wait_and_report(settings, session_id, DEFAULT_WAIT_S)
            report = checks.check(settings) if report.findings else report
        else:
            report = checks.fix(app, settings, report)
    if as_json:
        print(json.dumps(report.as_dict(), indent=2, sort_keys=True))
    else:
        print_doctor(report)
    raise typer.Exit(0 if report.healthy else 1)


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
    result = requeue.requeue(
        settings.database_url, query, priority=new_priority, dry_run=dry_run
    )
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


@cli.command()
def api(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8000,
    home: HomeOption = None,
) -> None:
    """Serve the status API (sessions, enrichment, media, metrics) over HTTP until Ctrl-C.

    Requests need SESSIONPIPE_API_TOKEN as a bearer token; without one it only starts bound
    to 127.0.0.1 on the embedded default, and then asks for none.
    """
    from workers.api.app import create_app
    from workers.api.auth import StartRefusedError, check_start
    from workers.api.server import PortUnavailableError, serve

    settings = settings_for(home)
    try:
        check_start(settings, host)
    except StartRefusedError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if settings.database_url.startswith("sqlite"):  # one machine: the file may be new
        from shared.migrate import upgrade

        upgrade(settings.database_url)

    def announce() -> None:
        if settings.api_token:
            err.print(f"status API on http://{host}:{port}/ (bearer token required)")
            err.print(f"web page: http://{host}:{port}/ui/?token=<SESSIONPIPE_API_TOKEN>")
        else:
            err.print(f"status API on http://{host}:{port}/ (no token: local only)")
            err.print(f"web page: http://{host}:{port}/ui/")

    try:
        serve(create_app(settings), host, port, on_listening=announce)
    except PortUnavailableError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


retention_cli = typer.Typer(help="Retention of original segments.", no_args_is_help=True)
cli.add_typer(retention_cli, name="retention")


@retention_cli.command("apply")
def retention_apply(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would go.")] = False,
    home: HomeOption = None,
) -> None:
    """Delete originals of sessions whose compressed copy is older than the retention."""
    from shared.storage import Storage
    from workers.retention import apply_retention

    settings = settings_for(home)
    if settings.keep_originals_days is None:
        console.print("retention is off: originals are kept (set SESSIONPIPE_KEEP_ORIGINALS_DAYS)")
        return
    actions = apply_retention(
        settings.database_url,
        Storage(settings.storage),
        keep_days=settings.keep_originals_days,
        dry_run=dry_run,
    )
    verb = "would delete" if dry_run else "deleted"
    for action in actions:
        console.print(
            f"{action.session_id}: {verb} {action.deleted_files} segment file(s), "
            f"{action.deleted_bytes} bytes"
        )
    console.print(f"{len(actions)} session(s)")


# -- helpers ----------------------------------------------------------------------------------
def _status_or_exit(settings: Settings, session_id: str) -> dict[str, Any]:
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


WATCH_REFRESH_S = 0.5  # how often `status --watch` reads the session again


def _watch(settings: Settings, session_id: str, report: dict[str, Any]) -> dict[str, Any]:
    """Redraw the session's progress bars until its outcome is known (Ctrl-C stops). They go
    to stderr, so ``--watch --json`` leaves stdout to the final JSON."""
    from rich.live import Live

    with Live(progress_table(report), console=err, auto_refresh=False) as live:
        while report["outcome"] is None:
            time.sleep(WATCH_REFRESH_S)
            report = _status_or_exit(settings, session_id)
            live.update(progress_table(report), refresh=True)
    return report
