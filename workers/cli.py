"""``sessionpipe``: the workers' commands: database, status, jobs, retention.

The commands that drive the capture agent and the workers together on one machine (`demo`,
`process`) live in ``sessionpipe.local``; ``sessionpipe.cli`` puts both under one command.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from shared.diagnostics import redact
from shared.settings import Settings, get_settings, reset_settings

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
console = Console()
err = Console(stderr=True)

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
        _print_report(report)


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
    session_id: str,
    stage: str,
    force: Annotated[
        bool, typer.Option(help="Also re-run a succeeded or running (stuck) job.")
    ] = False,
    home: HomeOption = None,
) -> None:
    """Send a stage's task again: a pending job whose message was lost, or with --force any job."""
    from workers.jobs import JobStatus

    statuses: tuple[JobStatus, ...] = tuple(JobStatus) if force else (JobStatus.PENDING,)
    _requeue(settings_for(home), session_id, stage, statuses)


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
        _print_doctor(report)
    raise typer.Exit(0 if report.healthy else 1)


def _print_doctor(report: Any) -> None:
    for line in report.fixed:
        console.print(f"[green]fixed[/green] {line}")
    jobs = ", ".join(f"{k} {v}" for k, v in sorted(report.jobs.items())) or "none"
    sessions = ", ".join(f"{k} {v}" for k, v in sorted(report.sessions.items())) or "none"
    console.print(f"jobs: {jobs}\nsessions: {sessions}")
    queues = ", ".join(f"{k} {v}" for k, v in report.queues.items()) or "unknown"
    unacked = "unknown" if report.unacked is None else str(report.unacked)
    console.print(f"broker: waiting {queues}; unacknowledged {unacked}")
    if report.oldest_pending_s is not None:
        console.print(f"oldest pending job: {report.oldest_pending_s:.0f} s")
    if report.duplicate_jobs:
        console.print(f"[red]{report.duplicate_jobs} (session, stage) with several job rows")
    for f in report.findings:
        where = " ".join(x for x in (f.session_id, f.stage, f.path) if x)
        console.print(f"[red]{f.kind}[/red] {where}: {f.detail}")
    console.print("healthy" if report.healthy else f"{len(report.findings)} problem(s)")


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
    import uvicorn

    from workers.api.app import create_app
    from workers.api.auth import StartRefusedError, check_start

    settings = settings_for(home)
    try:
        check_start(settings, host)
    except StartRefusedError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    auth = "bearer token required" if settings.api_token else "no token (local only)"
    err.print(f"status API on http://{host}:{port}/ ({auth})")
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


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
    _print_report(report)
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


def _clock(seconds: float) -> str:
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def print_enrichment(document: dict[str, Any], *, excerpt_segments: int = 0) -> None:
    """Chapters, keywords and summary (and the transcript's first segments) for people."""
    session_id = document["session_id"]
    chapters = document["chapters"]
    if chapters:
        table = Table("start", "chapter", "keywords", title=f"chapters of {session_id}")
        for chapter in chapters:
            table.add_row(
                _clock(chapter["start"]), chapter["title"], ", ".join(chapter["keywords"])
            )
        console.print(table)
    else:
        console.print(f"{session_id}: no chapters")
    segments = document["transcript"]["segments"]
    if excerpt_segments and segments:
        console.print("[bold]transcript[/bold] (excerpt):")
        for segment in segments[:excerpt_segments]:
            console.print(f"  [{_clock(segment['start'])}] {segment['text']}", soft_wrap=True)
        if len(segments) > excerpt_segments:
            console.print(f"  ... {len(segments) - excerpt_segments} more segments")
    keywords = ", ".join(document["keywords"]) or "(none)"
    console.print(f"[bold]keywords:[/bold] {keywords}", soft_wrap=True)
    console.print(f"[bold]summary:[/bold] {document['summary'] or '(none)'}", soft_wrap=True)
    for warning in document["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {warning}", soft_wrap=True)
    for stage, state in document["stages"].items():
        if state["status"] == "skipped" and stage in ("transcript", "chapters", "summary"):
            console.print(f"{stage} skipped: {state['skipped']}", soft_wrap=True)


WATCH_REFRESH_S = 0.5  # how often `status --watch` reads the session again


def _progress_table(report: dict[str, Any]) -> Table:
    from rich.progress_bar import ProgressBar

    state = report["status"] + (", playable" if report["playable"] else "")
    table = Table("stage", "status", "progress", "", title=f"{report['session_id']} ({state})")
    for stage in report["stages"]:
        done = 1.0 if stage["status"] in ("succeeded", "skipped") else stage["progress"]
        table.add_row(
            stage["stage"],
            stage["status"],
            ProgressBar(total=1.0, completed=done, width=30),
            f"{done:.0%}",
        )
    return table


def _watch(settings: Settings, session_id: str, report: dict[str, Any]) -> dict[str, Any]:
    """Redraw the session's progress bars until its outcome is known (Ctrl-C stops). They go
    to stderr, so ``--watch --json`` leaves stdout to the final JSON."""
    from rich.live import Live

    with Live(_progress_table(report), console=err, auto_refresh=False) as live:
        while report["outcome"] is None:
            time.sleep(WATCH_REFRESH_S)
            report = _status_or_exit(settings, session_id)
            live.update(_progress_table(report), refresh=True)
    return report


def _print_report(report: dict[str, Any]) -> None:
    state = report["status"]
    if report["playable"] and not report["complete"]:
        state += ", playable"
    table = Table(title=f"session {report['session_id']} ({state})")
    for column in ("stage", "status", "attempts", "progress", "duration", "output / error"):
        table.add_column(column)
    for stage in report["stages"]:
        took = f"{stage['duration_s']:.2f} s" if stage["duration_s"] is not None else ""
        output = Path(stage["output_path"]).name if stage["output_path"] else ""
        detail = stage["error"] or output or (stage["result"] or {}).get("skipped", "")
        table.add_row(
            stage["stage"],
            stage["status"],
            str(stage["attempts"]),
            f"{stage['progress']:.0%}",
            took,
            str(detail),
        )
    console.print(table)
    for stage in report["stages"]:
        if stage["output_path"] and stage["stage"] != "finalize":
            console.print(f"{stage['stage']} output: {stage['output_path']}", soft_wrap=True)
    finished = [
        s["output_path"]
        for s in report["stages"]
        if s["stage"] == "finalize" and s["status"] == "succeeded"
    ]
    if finished:
        console.print(f"[green]finished MP4:[/green] {finished[0]}", soft_wrap=True)
