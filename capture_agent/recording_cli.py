"""``capture-agent record|watch|pause|resume|stop``: the recording half of the agent's CLI.

``capture_agent/cli.py`` adds this module's typer :data:`app` to its own. The commands create the
:class:`~capture_agent.agent.Agent` lazily (through :func:`make_agent`, which tests replace)
so ``pause``/``resume``/``stop`` only need the state folder, never the broker or storage.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console

from capture_agent import control
from capture_agent.ffmpeg_cmd import AVFoundationSource, Source
from capture_agent.record import SIGNAL_REQUESTS, SessionSink
from shared.clock import utcnow
from shared.options import SessionOptions, parse_enrich_list
from shared.routing import Priority, parse_priority
from synthetic.lavfi import SyntheticSource

if TYPE_CHECKING:
    from capture_agent.settings import AgentSettings

console = Console()
err = Console(stderr=True)

#: How long ``record``/``watch`` wait at exit for the outbox to empty, in seconds; what is
#: left ships the next time the agent runs.
DEFAULT_DRAIN_TIMEOUT_S = 60.0
#: How long ``pause``/``resume`` wait for the recorder to acknowledge, in seconds.
DEFAULT_ACK_TIMEOUT_S = 30.0
#: ``stop`` waits for ffmpeg to finish its last segment and the session to end, in seconds.
DEFAULT_STOP_TIMEOUT_S = 60.0
SessionOption = Annotated[
    str | None, typer.Option("--session", help="Session id (needed if several run).")
]
#: ``--audio-device`` value that records no sound.
NO_AUDIO_DEVICE = "none"
#: What ``pause``/``resume``/``stop`` print once the recorder acknowledged.
CONTROL_DONE: dict[control.Action, str] = {
    "pause": "paused",
    "resume": "recording again",
    "stop": "stopped",
}
MACOS_PERMISSION_HINT = (
    "macOS: allow Screen Recording and Microphone for the app running the agent (your "
    "terminal, or the launcher) in System Settings > Privacy & Security, then start it again"
)


def agent_settings() -> AgentSettings:
    from capture_agent.settings import AgentSettings

    return AgentSettings()


def make_agent(settings: AgentSettings) -> Any:
    """The durable outbox/uploader; replaced by tests with a fake of the same interface."""
    from capture_agent.agent import Agent

    return Agent(settings)


def session_id_for(name: str, at: datetime | None = None) -> str:
    """A safe, unique-enough id from a human name: ``Stand-up-20261121T100000Z``."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-_")[:80] or "session"
    return f"{slug}-{(at or utcnow()).strftime('%Y%m%dT%H%M%SZ')}"


@contextmanager
def running_agent(settings: AgentSettings, drain_timeout: float) -> Iterator[SessionSink]:
    """Start the agent, and at the end give it ``drain_timeout`` seconds to ship."""
    agent = make_agent(settings)
    agent.start()
    recover = getattr(agent, "recover_recordings", None)  # test fakes have no outbox
    for recovered in recover() if recover is not None else ():
        console.print(
            f"recording {recovered.session_id} lost its recorder: ended at "
            f"{recovered.ended_at.isoformat()}, {len(recovered.added)} more segments"
        )
    try:
        yield agent
    finally:
        console.print(f"shipping what is left (up to {drain_timeout:g} s)...")
        try:
            drained = agent.stop(drain=True, timeout=drain_timeout)
        except KeyboardInterrupt:
            drained = agent.stop(drain=False)
        close = getattr(agent, "close", None)
        if close is not None:
            close()
        if drained:
            console.print("outbox empty: everything shipped")
        else:
            console.print(
                "[yellow]outbox not empty yet:[/yellow] the rest ships the next time the agent "
                "runs (`capture-agent status` shows it)"
            )


# -- options --------------------------------------------------------------------------------
SessionNameOption = Annotated[
    str | None, typer.Option("--session-name", help="Human name of the session.")
]
ScreenOption = Annotated[
    str, typer.Option(help="Screen number (0 = main display) or an avfoundation device name.")
]
AudioDeviceOption = Annotated[
    str, typer.Option("--audio-device", help="avfoundation audio index or name; 'none'.")
]
SegmentSecondsOption = Annotated[
    float, typer.Option("--segment-seconds", min=0.5, help="Segment length in seconds.")
]
SyntheticOption = Annotated[
    bool, typer.Option(help="Generated screen and speech instead of avfoundation.")
]
DurationOption = Annotated[
    float | None, typer.Option(min=0.1, help="Synthetic only: stop after this many seconds.")
]
OutOption = Annotated[
    Path | None, typer.Option(help="Folder for recordings (default <state_dir>/recordings).")
]
SessionIdOption = Annotated[str | None, typer.Option("--session-id", help="Explicit session id.")]
PriorityOption = Annotated[str, typer.Option(help="high, normal or low.")]
EnrichOption = Annotated[
    str | None,
    typer.Option(
        help="Enrichment stages for this session: transcript,chapters,summary, all or none "
        "(default: the workers' SESSIONPIPE_ENRICH)."
    ),
]
LanguageOption = Annotated[
    str | None, typer.Option(help="Spoken language, an ISO 639 code (default: the workers').")
]
LlmOption = Annotated[
    bool | None,
    typer.Option(
        "--llm/--no-llm", help="Use the workers' LLM provider, if one is configured (default: yes)."
    ),
]
FfmpegOption = Annotated[
    str | None,
    typer.Option(help="ffmpeg binary (default: PATH's on a Mac, else imageio-ffmpeg's)."),
]
EncoderOption = Annotated[
    str | None, typer.Option(help="h264_videotoolbox or libx264 (default: auto).")
]
ListDevicesOption = Annotated[
    bool, typer.Option("--list-devices", help="Print avfoundation devices and exit.")
]
DrainTimeoutOption = Annotated[
    float, typer.Option("--drain-timeout", help="Seconds to wait for uploads at exit.")
]
WatchDirArgument = Annotated[Path, typer.Argument(help="Folder of session folders, or one.")]
StableSecondsOption = Annotated[
    float, typer.Option("--stable-seconds", min=0.1, help="Unchanged this long = complete.")
]
RescanSecondsOption = Annotated[
    float, typer.Option("--rescan-seconds", min=0.1, help="Full rescan interval.")
]
AckTimeoutOption = Annotated[float, typer.Option(help="Seconds to wait.")]

#: ``record``, ``watch``, ``pause``, ``resume`` and ``stop``; capture_agent.cli adds them to
#: its own app (``cli.add_typer(app)``: no group name, so they are top-level commands).
app = typer.Typer(pretty_exceptions_enable=False)


@app.command()
def record(
    session_name: SessionNameOption = None,
    screen: ScreenOption = "0",
    audio_device: AudioDeviceOption = "0",
    segment_seconds: SegmentSecondsOption = 10.0,
    synthetic: SyntheticOption = False,
    duration: DurationOption = None,
    out: OutOption = None,
    session_id: SessionIdOption = None,
    priority: PriorityOption = Priority.NORMAL.value,
    ffmpeg: FfmpegOption = None,
    encoder: EncoderOption = None,
    list_devices: ListDevicesOption = False,
    drain_timeout: DrainTimeoutOption = DEFAULT_DRAIN_TIMEOUT_S,
    enrich: EnrichOption = None,
    language: LanguageOption = None,
    llm: LlmOption = None,
) -> None:
    """Record screen + microphone in segments, shipping each as soon as it is finished.

    Control it from another terminal with `capture-agent pause|resume|stop`, or with
    signals: SIGUSR1 pause, SIGUSR2 resume, SIGINT/SIGTERM stop.
    """
    from capture_agent.ffmpeg_cmd import list_devices_command
    from capture_agent.record import Recorder, RecordOptions, default_ffmpeg, signals_to
    from shared.ids import InvalidNameError, validate_session_id

    binary = ffmpeg or default_ffmpeg()
    if list_devices:
        listing = subprocess.run(
            list_devices_command(binary), capture_output=True, text=True, check=False
        )
        console.print(listing.stderr or listing.stdout, markup=False)
        return
    if not session_name:
        _fail("--session-name is required")
    if duration is not None and not synthetic:
        _fail("--duration is for --synthetic recordings; stop a real one with `capture-agent stop`")
    try:
        chosen_priority = parse_priority(priority)
    except ValueError:
        _fail(f"invalid priority {priority!r}: use high, normal or low")
    try:
        enrichment = SessionOptions(
            enrich=parse_enrich_list(enrich) if enrich is not None else None,
            language=language,
            llm=llm,
        )
    except ValueError as exc:  # pydantic's ValidationError is one
        _fail(f"invalid enrichment option: {exc}")
    if not synthetic and sys.platform != "darwin":
        _fail("screen recording needs macOS (avfoundation); use --synthetic elsewhere")
    try:
        sid = validate_session_id(session_id) if session_id else session_id_for(session_name)
    except InvalidNameError as exc:
        _fail(str(exc))
    settings = agent_settings()
    assert settings.state_dir is not None
    folder = (out or settings.state_dir / "recordings").expanduser().absolute() / sid
    options = RecordOptions(
        session_id=sid,
        name=session_name,
        folder=folder,
        source=_source(synthetic=synthetic, screen=screen, audio_device=audio_device),
        segment_seconds=segment_seconds,
        ffmpeg=binary,
        encoder=encoder,
        duration=duration,
        priority=chosen_priority,
        state_dir=settings.state_dir,
        enrichment=enrichment,
    )
    console.print(f"session [bold]{sid}[/bold] recording into {folder}")
    console.print("stop with Ctrl-C or `capture-agent stop`; pause with `capture-agent pause`")
    try:
        with running_agent(settings, drain_timeout) as agent:
            recorder = Recorder(options, agent, notify=console.print)
            with signals_to(recorder):
                result = recorder.run()
    except (FileExistsError, ValueError) as exc:
        _fail(str(exc))
    if result.error:
        err.print("[red]error:[/red] recording stopped: ", end="")
        err.print(result.error, markup=False, highlight=False)
        if sys.platform == "darwin" and not synthetic:
            err.print(MACOS_PERMISSION_HINT)
        raise typer.Exit(1)
    console.print(
        f"session {sid}: {len(result.segments)} segments, {result.pauses} pauses; "
        f"session.json in {folder}"
    )


@app.command()
def watch(
    directory: WatchDirArgument,
    stable_seconds: StableSecondsOption = 5.0,
    rescan_seconds: RescanSecondsOption = 5.0,
    drain_timeout: DrainTimeoutOption = DEFAULT_DRAIN_TIMEOUT_S,
) -> None:
    """Ship sessions another recorder writes into DIR, segment by segment, as they finish.

    Runs until Ctrl-C/SIGTERM. A session ends once all its listed segments are shipped
    and its session.json has "ended_at" or "complete": true.
    """
    from capture_agent.watch import SessionWatcher

    folder = directory.expanduser().absolute()
    if not folder.is_dir():
        _fail(f"{folder} is not a folder")
    settings = agent_settings()
    assert settings.state_dir is not None
    stop = threading.Event()
    with running_agent(settings, drain_timeout) as agent:
        watcher = SessionWatcher(
            folder,
            agent,
            state_dir=settings.state_dir,
            stable_seconds=stable_seconds,
            rescan_seconds=rescan_seconds,
            notify=console.print,
        )
        console.print(f"watching {folder} (Ctrl-C to stop)")
        with _signals_set(stop, watcher.wake):
            watcher.run(stop)
    console.print("watcher stopped")


@app.command()
def pause(session: SessionOption = None, timeout: AckTimeoutOption = DEFAULT_ACK_TIMEOUT_S) -> None:
    """Pause the running recorder: its current segment is finished and shipped."""
    _control("pause", session, timeout)


@app.command()
def resume(
    session: SessionOption = None, timeout: AckTimeoutOption = DEFAULT_ACK_TIMEOUT_S
) -> None:
    """Resume a paused recorder (segment numbers continue)."""
    _control("resume", session, timeout)


@app.command()
def stop(session: SessionOption = None, timeout: AckTimeoutOption = DEFAULT_STOP_TIMEOUT_S) -> None:
    """Stop the running recorder; returns once its last segment is queued and it ended."""
    _control("stop", session, timeout)


def _source(*, synthetic: bool, screen: str, audio_device: str) -> Source:
    """What ``record`` captures: generated media, or a Mac's screen and microphone."""
    microphone = None if audio_device.lower() == NO_AUDIO_DEVICE else audio_device
    if synthetic:
        return SyntheticSource(audio=microphone is not None)
    return AVFoundationSource(screen=screen, audio_device=microphone)


def _control(action: control.Action, session: str | None, timeout: float) -> None:
    settings = agent_settings()
    assert settings.state_dir is not None
    try:
        info = control.send(settings.state_dir, action, session_id=session, timeout=timeout)
    except (control.ControlError, ValueError) as exc:
        _fail(str(exc))
    console.print(f"session {info.session_id}: {CONTROL_DONE[action]}")


@contextmanager
def _signals_set(stop: threading.Event, wake: Callable[[], None]) -> Iterator[None]:
    """SIGINT/SIGTERM/SIGHUP set ``stop`` and ``wake`` the loop, which then exits cleanly."""
    import signal

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()
        wake()

    stopping = [sig for sig, action in SIGNAL_REQUESTS.items() if action == "stop"]
    previous = {sig: signal.signal(sig, handler) for sig in stopping}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _fail(message: str) -> NoReturn:
    err.print("[red]error:[/red] ", end="")
    err.print(message, markup=False, highlight=False)
    raise typer.Exit(2)
