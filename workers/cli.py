"""``sessionpipe``: the workers' commands: database, status, search, doctor, API,
retention, and the ``jobs`` group (``workers.jobscli``).

The commands that drive the capture agent and the workers together on one machine (`demo`,
`process`) live in ``sessionpipe.local``; ``sessionpipe.cli`` puts both under one command.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated, Any

import typer

from shared.diagnostics import redact
from shared.ids import validate_session_id
from shared.settings import Settings
from workers.clicommon import (
    DEFAULT_WAIT_S,
    HomeOption,
    settings_for,
    since_or_error,
    status_or_exit,
    wait_and_report,
)
from workers.jobscli import jobs_cli
from workers.render import (
    console,
    err,
    print_doctor,
    print_enrichment,
    print_hits,
    print_report,
    progress_table,
)

cli = typer.Typer(
    help="sessionpipe: recorded work sessions to finished media.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_cli = typer.Typer(help="Database schema (alembic).", no_args_is_help=True)
cli.add_typer(db_cli, name="db")
cli.add_typer(jobs_cli, name="jobs")


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
    report = status_or_exit(settings, session_id)
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
    query: Annotated[str, typer.Argument(metavar="QUERY", help='Words, "a phrase", or a prefix*.')],
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
        when = since_or_error(since)
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


@cli.command()
def doctor(
    fix: Annotated[
        bool,
        typer.Option(
            "--fix",
            help="Re-send stranded jobs, requeue stale ones, fix statuses, "
            "delete dead temporary files.",
        ),
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


WATCH_REFRESH_S = 0.5  # how often `status --watch` reads the session again


def _watch(settings: Settings, session_id: str, report: dict[str, Any]) -> dict[str, Any]:
    """Redraw the session's progress bars until its outcome is known (Ctrl-C stops). They go
    to stderr, so ``--watch --json`` leaves stdout to the final JSON."""
    from rich.live import Live

    with Live(progress_table(report), console=err, auto_refresh=False) as live:
        while report["outcome"] is None:
            time.sleep(WATCH_REFRESH_S)
            report = status_or_exit(settings, session_id)
            live.update(progress_table(report), refresh=True)
    return report
