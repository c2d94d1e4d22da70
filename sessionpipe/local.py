"""``sessionpipe demo`` and ``sessionpipe process``: ship a session and process it, one machine.

Both ship through the capture agent itself (durable outbox, verified uploads, events), so
the path a session takes is the one it takes from a Mac. On the embedded default a real
Celery worker runs inside this process (``workers.embedded``); with a broker URL set,
``process`` ships and waits for the workers elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from capture_agent.agent import Agent
from capture_agent.settings import AgentSettings
from shared.clock import utcnow
from shared.settings import Settings
from synthetic.lecture import DEMO_LECTURE
from synthetic.plan import SyntheticSpec
from synthetic.session import RecordedSegment, record_synthetic_session
from workers.clicommon import DEFAULT_WAIT_S, HomeOption, settings_for, wait_and_report
from workers.enrichment import enrichment_document
from workers.render import console, err, print_enrichment

SHIP_TIMEOUT_S = 600.0  # uploads of one session before `process`/`demo` give up waiting
DEMO_EXCERPT_SEGMENTS = 4  # transcript segments the demo prints
DEMO_NAME = "Demo talk: migrations, workers and search"
DEMO_TOKEN_BYTES = 24  # the one-time token of `demo --serve` (192 bits, URL-safe)
LOOPBACK = "127.0.0.1"  # `demo --serve` is for this machine's browser only


def demo(
    home: HomeOption = None,
    duration: Annotated[float, typer.Option(help="Session length in seconds.")] = 60.0,
    hole: Annotated[float, typer.Option(help="Seconds the microphone records nothing.")] = 10.0,
    serve: Annotated[
        bool, typer.Option("--serve", help="Then serve the web page for it until Ctrl-C.")
    ] = False,
    port: Annotated[int, typer.Option(help="The web page's port (with --serve).")] = 8000,
) -> None:
    """Record a short synthetic talk (slides and narration) through the capture agent, then
    process and enrich it on this machine; with --serve, show it in the browser."""
    settings = settings_for(home)
    _require_embedded(settings, "demo")
    start = max(0.0, duration / 2 - hole / 2)
    spec = SyntheticSpec(
        duration=duration,
        audio_holes=((start, start + hole),) if hole > 0 else (),
        lecture=DEMO_LECTURE,
    )
    session_id = "demo-" + utcnow().strftime("%Y%m%dT%H%M%SZ")
    recordings = settings.home / "recordings" / session_id
    console.print(
        f"recording a {duration:.0f} s synthetic session ({hole:.0f} s without "
        f"microphone) into {recordings}"
    )
    _run_embedded(
        settings, lambda: _record_and_ship(settings, recordings, session_id, spec), session_id
    )
    document = enrichment_document(settings.database_url, session_id)
    print_enrichment(document, excerpt_segments=DEMO_EXCERPT_SEGMENTS)
    if serve:
        serve_page(settings, session_id, port)


def serve_page(settings: Settings, session_id: str, port: int) -> None:
    """Serve the status API and web page on 127.0.0.1 with a token made for this run, and
    print the page's URL with it (opening it once logs the browser in) until Ctrl-C."""
    import secrets

    from pydantic import SecretStr

    from workers.api.app import create_app
    from workers.api.server import PortUnavailableError, serve

    token = secrets.token_urlsafe(DEMO_TOKEN_BYTES)
    served = settings.model_copy(update={"api_token": SecretStr(token)})
    url = f"http://{LOOPBACK}:{port}/ui/sessions/{session_id}?token={token}"

    def announce() -> None:
        console.print("\nOpen this page (Ctrl-C stops the server):")
        print(f"  {url}\n", flush=True)  # plain: a wrapped URL would not open

    try:
        serve(create_app(served), LOOPBACK, port, log_level="warning", on_listening=announce)
    except PortUnavailableError as exc:
        err.print(f"[red]error:[/red] {exc} (choose another with --port)")
        raise typer.Exit(2) from None


def process(
    session_dir: Annotated[Path, typer.Argument(help="Folder with session.json.")],
    home: HomeOption = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = DEFAULT_WAIT_S,
) -> None:
    """Ship a session folder to storage, process it, and wait for the result."""
    from shared.sessiondir import ManifestError, listed_files, load_manifest

    settings = settings_for(home)
    try:  # the whole folder is checked before anything starts
        manifest = load_manifest(session_dir)
        listed_files(session_dir, manifest)
    except (ManifestError, OSError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    if settings.embedded_broker:
        _run_embedded(
            settings, lambda: _ship_dir(settings, session_dir), manifest.id, timeout=timeout
        )
    else:
        _ship_dir(settings, session_dir)
        wait_and_report(settings, manifest.id, timeout)


def _require_embedded(settings: Settings, command: str) -> None:
    if not settings.embedded_broker:
        err.print(
            f"[red]error:[/red] `{command}` runs on the embedded default; unset "
            "SESSIONPIPE_BROKER_URL or use `sessionpipe process` with running workers"
        )
        raise typer.Exit(2)


def _agent(settings: Settings) -> Agent:
    """The capture agent itself (outbox, verified uploads), configured for this home."""
    agent = Agent(AgentSettings(), shared=settings)
    agent.start()
    return agent


def _drain(agent: Agent, what: str) -> None:
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


def _record_and_ship(
    settings: Settings, recordings: Path, session_id: str, spec: SyntheticSpec
) -> None:
    from shared.segments import SegmentKind, SegmentSpec

    agent = _agent(settings)
    started_at = utcnow()
    agent.begin_session(session_id, name=DEMO_NAME, started_at=started_at)

    def on_segment(segment: RecordedSegment) -> None:
        agent.add_segment(
            session_id,
            segment.path,
            SegmentSpec(
                SegmentKind(segment.kind), segment.file, segment.started_at, segment.duration
            ),
        )

    record_synthetic_session(
        recordings,
        session_id=session_id,
        name=DEMO_NAME,
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
    settings: Settings,
    produce: Callable[[], None],
    session_id: str,
    timeout: float = DEFAULT_WAIT_S,
) -> None:
    from shared.migrate import upgrade
    from workers.app import app
    from workers.embedded import embedded_worker

    upgrade(settings.database_url)
    with embedded_worker(app):
        produce()
        wait_and_report(settings, session_id, timeout)
