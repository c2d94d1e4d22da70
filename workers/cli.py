"""``sessionpipe``: set up the database, process sessions, and look after jobs."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from shared.settings import Settings, get_settings, reset_settings

DEFAULT_WAIT_S = 1800.0
SHIP_TIMEOUT_S = 600.0  # uploads of one session before `process`/`demo` give up waiting
POLL_INTERVAL_S = 0.5

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


def _settings(home: Path | None) -> Settings:
    if home is not None:
        os.environ["SESSIONPIPE_HOME"] = str(home)
        reset_settings()
    return get_settings()


@db_cli.command("upgrade")
def db_upgrade(revision: str = "head", home: HomeOption = None) -> None:
    """Create or upgrade the schema."""
    from shared.migrate import upgrade

    settings = _settings(home)
    upgrade(settings.database_url, revision)
    console.print(f"database at revision {revision}: {_redact(settings.database_url)}")


@db_cli.command("downgrade")
def db_downgrade(revision: str = "base", home: HomeOption = None) -> None:
    """Downgrade the schema (default: drop everything sessionpipe created)."""
    from shared.migrate import downgrade

    downgrade(_settings(home).database_url, revision)


@cli.command()
def demo(
    home: HomeOption = None,
    duration: Annotated[float, typer.Option(help="Session length in seconds.")] = 60.0,
    hole: Annotated[float, typer.Option(help="Seconds the microphone records nothing.")] = 10.0,
) -> None:
    """Record a synthetic session through the capture agent and process it on this machine."""
    from synthetic.plan import SyntheticSpec

    settings = _settings(home)
    _require_embedded(settings, "demo")
    start = max(0.0, duration / 2 - hole / 2)
    spec = SyntheticSpec(
        duration=duration, audio_holes=((start, start + hole),) if hole > 0 else ()
    )
    session_id = "demo-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    recordings = settings.home / "recordings" / session_id
    console.print(
        f"recording a {duration:.0f} s synthetic session ({hole:.0f} s without "
        f"microphone) into {recordings}"
    )
    _run_embedded(
        settings, lambda: _record_and_ship(settings, recordings, session_id, spec), session_id
    )


@cli.command()
def process(
    session_dir: Annotated[Path, typer.Argument(help="Folder with session.json.")],
    home: HomeOption = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = DEFAULT_WAIT_S,
) -> None:
    """Ship a session folder to storage, process it, and wait for the result."""
    from shared.sessiondir import ManifestError, load_manifest

    settings = _settings(home)
    try:
        manifest = load_manifest(session_dir)
    except ManifestError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    if settings.embedded_broker:
        _run_embedded(
            settings, lambda: _ship_dir(settings, session_dir), manifest.id, timeout=timeout
        )
    else:
        _ship_dir(settings, session_dir)
        _wait_and_report(settings, manifest.id, timeout)


@cli.command()
def status(
    session_id: str,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    home: HomeOption = None,
) -> None:
    """Show a session's stages: status, attempts, progress, error and outputs."""
    report = _status_or_exit(_settings(home), session_id)
    if as_json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        _print_report(report)


@jobs_cli.command("list")
def jobs_list(
    status_filter: Annotated[str | None, typer.Option("--status")] = None,
    limit: int = 50,
    home: HomeOption = None,
) -> None:
    """List recent jobs, newest first."""
    from sqlalchemy import select

    from shared.db import session_scope
    from shared.models import Job

    settings = _settings(home)
    with session_scope(settings.database_url) as db:
        query = select(Job).order_by(Job.updated_at.desc(), Job.id.desc()).limit(limit)
        if status_filter:
            query = query.where(Job.status == status_filter)
        rows = db.execute(query).scalars().all()
        table = Table("session", "stage", "status", "attempts", "progress", "error")
        for job in rows:
            table.add_row(
                job.session_id,
                job.stage,
                job.status,
                str(job.attempts),
                f"{job.progress:.0%}",
                (job.error or "")[:60],
            )
    console.print(table)


@jobs_cli.command("cancel")
def jobs_cancel(
    session_id: str, stage: Annotated[str | None, typer.Option()] = None, home: HomeOption = None
) -> None:
    """Cancel a session's pending or running jobs (a running stage stops at its next report)."""
    from shared.db import session_scope
    from workers.jobs import cancel

    with session_scope(_settings(home).database_url) as db:
        count = cancel(db, session_id, stage)
    console.print(f"cancelled {count} job(s)")


@jobs_cli.command("inspect")
def jobs_inspect(session_id: str, home: HomeOption = None) -> None:
    """Everything about one session's jobs, as JSON (results, errors, timings)."""
    sys.stdout.write(json.dumps(_status_or_exit(_settings(home), session_id), indent=2) + "\n")


@jobs_cli.command("retry")
def jobs_retry(session_id: str, stage: str, home: HomeOption = None) -> None:
    """Run a failed or cancelled stage again (the stages after it follow)."""
    from workers.jobs import JobStatus

    _requeue(_settings(home), session_id, stage, (JobStatus.FAILED, JobStatus.CANCELLED))


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
    _requeue(_settings(home), session_id, stage, statuses)


@jobs_cli.command("reap")
def jobs_reap(
    lease: Annotated[
        float | None, typer.Option(help="Seconds without progress (default JOB_LEASE_S).")
    ] = None,
    home: HomeOption = None,
) -> None:
    """Send again the running jobs whose worker died (what `celery beat` does every minute)."""
    from datetime import timedelta

    from workers.app import app
    from workers.pipeline import requeue_stale_jobs

    settings = _settings(home)
    window = timedelta(seconds=lease if lease is not None else settings.job_lease_s)
    if settings.embedded_broker:
        from workers.embedded import embedded_worker

        with embedded_worker(app):
            reset = requeue_stale_jobs(app, settings.database_url, lease=window)
            for session_id in sorted({sid for sid, _ in reset}):
                _wait_and_report(settings, session_id, DEFAULT_WAIT_S)
    else:
        reset = requeue_stale_jobs(app, settings.database_url, lease=window)
    for session_id, stage in reset:
        console.print(f"requeued {stage} of {session_id}")
    console.print(f"{len(reset)} stale job(s)")


def _requeue(settings: Settings, session_id: str, stage: str, statuses: tuple[Any, ...]) -> None:
    from shared import models
    from shared.db import session_scope
    from shared.ids import InvalidNameError, validate_session_id
    from workers.app import app
    from workers.jobs import reset_for_retry
    from workers.pipeline import Stage, send

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
        if not reset_for_retry(db, session_id, stage, from_statuses=statuses):
            wanted = "/".join(s.value for s in statuses)
            err.print(f"[red]error:[/red] no {wanted} {stage} job for session {session_id!r}")
            raise typer.Exit(1)
        session = db.get(models.Session, session_id)
        assert session is not None  # the job's foreign key guarantees it
        session.status = "processing"
    if settings.embedded_broker:
        # No separate workers on the embedded default: run one here until the session settles.
        from workers.embedded import embedded_worker

        with embedded_worker(app):
            send(app, session, stage_enum)
            console.print(f"requeued {stage} for {session_id}")
            _wait_and_report(settings, session_id, DEFAULT_WAIT_S)
        return
    send(app, session, stage_enum)
    console.print(f"requeued {stage} for {session_id}")


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

    settings = _settings(home)
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
def _require_embedded(settings: Settings, command: str) -> None:
    if not settings.embedded_broker:
        err.print(
            f"[red]error:[/red] `{command}` runs on the embedded default; unset "
            "SESSIONPIPE_BROKER_URL or use `sessionpipe process` with running workers"
        )
        raise typer.Exit(2)


def _agent(settings: Settings) -> Any:
    """The capture agent itself (outbox, verified uploads), configured for this home."""
    from capture_agent.agent import Agent
    from capture_agent.settings import AgentSettings

    agent = Agent(AgentSettings(), shared=settings)
    agent.start()
    return agent


def _drain(agent: Any, what: str) -> None:
    """Wait for the agent to ship and announce everything, or exit with what is pending."""
    try:
        if not agent.stop(drain=True, timeout=SHIP_TIMEOUT_S):
            status = agent.status()
            err.print(
                f"[red]error:[/red] {what} is not fully shipped after {SHIP_TIMEOUT_S:.0f} s "
                f"(last error: {status.get('last_error')}); `capture-agent run` resumes it"
            )
            raise typer.Exit(1)
    finally:
        agent.close()


def _record_and_ship(settings: Settings, recordings: Path, session_id: str, spec: Any) -> None:
    from synthetic.session import RecordedSegment, record_synthetic_session

    agent = _agent(settings)
    started_at = datetime.now(UTC)
    agent.begin_session(session_id, name="Synthetic demo session", started_at=started_at)

    def on_segment(segment: RecordedSegment) -> None:
        agent.add_segment(
            session_id,
            segment.path,
            kind=segment.kind,
            file=segment.file,
            started_at=segment.started_at,
            duration=segment.duration,
        )

    record_synthetic_session(
        recordings,
        session_id=session_id,
        name="Synthetic demo session",
        spec=spec,
        started_at=started_at,
        on_segment=on_segment,
    )
    agent.end_session(session_id)
    _drain(agent, f"session {session_id}")


def _ship_dir(settings: Settings, session_dir: Path) -> None:
    agent = _agent(settings)
    try:
        agent.enqueue_session_dir(session_dir)
    except (OSError, ValueError) as exc:
        agent.close()
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    _drain(agent, str(session_dir))


def _run_embedded(
    settings: Settings, produce: Any, session_id: str, timeout: float = DEFAULT_WAIT_S
) -> None:
    from shared.migrate import upgrade
    from workers.app import app
    from workers.embedded import embedded_worker

    upgrade(settings.database_url)
    with embedded_worker(app):
        produce()
        _wait_and_report(settings, session_id, timeout)


def _status_or_exit(settings: Settings, session_id: str) -> dict[str, Any]:
    from shared.ids import InvalidNameError
    from shared.storage import Storage
    from workers.status import UnknownSessionError, session_status

    try:
        return session_status(settings.database_url, Storage(settings.storage), session_id)
    except (UnknownSessionError, InvalidNameError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


def _wait_and_report(settings: Settings, session_id: str, timeout: float) -> None:
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
    if report["outcome"] != "completed":
        failed = [s for s in report["stages"] if s["status"] in ("failed", "cancelled")]
        reason = (
            f"{failed[0]['stage']} {failed[0]['status']}: {failed[0]['error']}"
            if failed
            else f"timed out after {timeout:.0f} s"
        )
        err.print(f"[red]session {session_id} did not complete:[/red] {reason}")
        raise typer.Exit(1)


def _print_report(report: dict[str, Any]) -> None:
    table = Table(title=f"session {report['session_id']} ({report['status']})")
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


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
