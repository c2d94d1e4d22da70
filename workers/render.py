"""What the commands show people: rich tables and bars from plain dicts (no database, no
Celery). ``workers.cli`` reads the state and calls these."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()
err = Console(stderr=True)


def print_doctor(report: Any) -> None:
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
        if state["status"] == "skipped" and stage in ("transcript", "chapters", "summary", "index"):
            console.print(f"{stage} skipped: {state['skipped']}", soft_wrap=True)


def progress_table(report: dict[str, Any]) -> Table:
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


def print_report(report: dict[str, Any]) -> None:
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
    for warning in report.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {warning}", soft_wrap=True)
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


def print_requeued(rows: list[dict[str, Any]], *, dry_run: bool) -> None:
    """A bulk requeue's jobs (``workers.requeue.Requeued.as_dict``)."""
    verb = "would requeue" if dry_run else "requeued"
    if not rows:
        console.print("nothing to requeue: no job matches")
        return
    table = Table("session", "stage", "was", "priority", "changed", title=verb)
    for row in rows:
        table.add_row(
            row["session_id"],
            row["stage"],
            row["previous_status"],
            row["priority"],
            row["updated_at"][:19],
        )
    console.print(table)
    sessions = len({row["session_id"] for row in rows})
    console.print(f"{verb} {len(rows)} job(s) of {sessions} session(s)")


def print_purge(rows: list[dict[str, Any]], cutoff: str) -> None:
    """A purge's sessions (``workers.purge.PurgeAction.as_dict``)."""
    if not rows:
        console.print(f"nothing to purge: no session is over and unchanged since {cutoff[:19]}")
        return
    table = Table("session", "status", "last change", "jobs", "action", "reason")
    for row in rows:
        table.add_row(
            row["session_id"],
            row["status"],
            row["last_change"][:19],
            str(row["jobs"]),
            row["action"],
            row["reason"] or "",
        )
    console.print(table)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["action"]] = counts.get(row["action"], 0) + 1
    console.print(", ".join(f"{action} {n} session(s)" for action, n in sorted(counts.items())))


def print_hits(query: str, hits: list[dict[str, Any]]) -> None:
    """``sessionpipe search``: one row per moment, matched words in bold."""
    from workers.search.highlight import HIGHLIGHT_END, HIGHLIGHT_START

    if not hits:
        console.print(f"no moment matches {escape(query)!r}")
        return
    table = Table("session", "at", "kind", "text", "score")
    for hit in hits:
        text = escape(hit["text"]).replace(HIGHLIGHT_START, "[bold]")
        table.add_row(
            escape(hit["session_id"]),
            _clock(hit["start"]),
            hit["kind"],
            text.replace(HIGHLIGHT_END, "[/bold]"),
            f"{hit['score']:.3f}",
        )
    console.print(table)
