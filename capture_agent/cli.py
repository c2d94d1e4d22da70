"""``capture-agent``: record (synthetic on Linux for now) or ship a session folder."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from shared.settings import get_settings

cli = typer.Typer(
    help="sessionpipe capture agent: record sessions and ship their segments.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)


def _session_id_for(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:80] or "session"
    return f"{slug}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"


@cli.command()
def record(
    session_name: Annotated[str, typer.Option("--session-name")],
    synthetic: Annotated[bool, typer.Option(help="Generated source (Linux, tests).")] = False,
    duration: Annotated[float, typer.Option(help="Synthetic session seconds.")] = 60.0,
    segment_seconds: Annotated[float, typer.Option("--segment-seconds")] = 10.0,
    out: Annotated[Path | None, typer.Option(help="Where segments are recorded.")] = None,
) -> None:
    """Record a session, shipping each segment as soon as it is finished."""
    from capture_agent.emit import EventEmitter
    from capture_agent.ship import SessionShipper
    from capture_agent.synthetic import RecordedSegment, SyntheticSpec, record_synthetic_session
    from shared.storage import Storage

    if not synthetic:
        err.print("[red]error:[/red] only --synthetic recording is available in this version")
        raise typer.Exit(2)
    settings = get_settings()
    session_id = _session_id_for(session_name)
    folder = (out or settings.home / "recordings") / session_id
    emitter = EventEmitter(settings)
    shipper = SessionShipper(Storage(settings.storage), emitter, session_id)
    started_at = datetime.now(UTC)
    shipper.start(name=session_name, started_at=started_at)

    def on_segment(segment: RecordedSegment) -> None:
        stored = shipper.ship_segment(
            segment.path,
            kind=segment.kind,
            file=segment.file,
            started_at=segment.started_at,
            duration=segment.duration,
        )
        console.print(f"shipped {stored.file} ({stored.size} bytes, sha256 {stored.sha256[:12]})")

    spec = SyntheticSpec(duration=duration, segment_seconds=segment_seconds)
    record_synthetic_session(
        folder,
        session_id=session_id,
        name=session_name,
        spec=spec,
        started_at=started_at,
        on_segment=on_segment,
        realtime=False,
    )
    shipper.end()
    emitter.close()
    console.print(f"session {session_id}: {len(shipper.shipped)} segments shipped")


@cli.command()
def ship(session_dir: Path) -> None:
    """Ship an existing session folder (session.json + segments) and announce it."""
    from capture_agent.emit import EventEmitter
    from capture_agent.ship import ship_session_dir
    from shared.storage import Storage

    settings = get_settings()
    emitter = EventEmitter(settings)
    try:
        manifest = ship_session_dir(session_dir, Storage(settings.storage), emitter)
    except (OSError, ValueError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    finally:
        emitter.close()
    console.print(f"session {manifest.id}: {len(manifest.segments)} segments shipped")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
