"""What the agent is doing, read straight from the outbox database.

``capture-agent status`` runs in its own process while another agent process records and
uploads; it only reads the SQLite file (WAL readers never block the writer) and probes the
drain lock, so it always answers, even when storage and broker are both down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from capture_agent.outbox import Outbox
from capture_agent.settings import AgentSettings
from capture_agent.uploader import lock_is_held
from shared.diagnostics import redact
from shared.settings import Settings


def build_status(outbox: Outbox, settings: AgentSettings, shared: Settings) -> dict[str, Any]:
    snap = outbox.snapshot()
    meta = snap.pop("meta")
    error = None
    if meta.get("last_error"):
        error = {
            "message": meta.get("last_error"),
            "at": meta.get("last_error_at"),
            "where": meta.get("last_error_where"),
        }
    if not settings.delete_after_confirm:
        snap["not_yet_confirmed"] = None  # local copies are kept; nothing waits for receipts
    return {
        "state_dir": str(settings.state_dir),
        "storage": settings.storage,
        "broker": redact(shared.broker_url),
        "uploader": {
            "running": lock_is_held(settings.lock_path),
            "pid": int(meta["uploader_pid"]) if meta.get("uploader_pid") else None,
            "since": meta.get("uploader_since"),
        },
        **snap,
        "last_error": error,
        "last_storage_contact": meta.get("last_storage_ok_at"),
        "last_broker_contact": meta.get("last_broker_ok_at"),
    }


def read_status(settings: AgentSettings, shared: Settings) -> dict[str, Any]:
    """Status from the outbox file, or an empty status when nothing was ever recorded."""
    path: Path = settings.outbox_path
    if not path.exists():
        return {
            "state_dir": str(settings.state_dir),
            "storage": settings.storage,
            "broker": redact(shared.broker_url),
            "uploader": {"running": False, "pid": None, "since": None},
            "recording": [],
            "pending": {"segments": 0, "bytes": 0, "events": 0},
            "uploaded": {"segments": 0, "bytes": 0},
            "not_yet_confirmed": None,
            "failed": [],
            "retrying": [],
            "last_error": None,
            "last_storage_contact": None,
            "last_broker_contact": None,
        }
    outbox = Outbox(path, readonly=True)
    try:
        return build_status(outbox, settings, shared)
    finally:
        outbox.close()


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def render(status: dict[str, Any], console: Console) -> None:
    up = status["uploader"]
    state = f"running (pid {up['pid']})" if up["running"] else "not running"
    console.print(f"uploader: {state}   storage: {status['storage']}   broker: {status['broker']}")
    if status["recording"]:
        table = Table("recording", "name", "started", "segments", "state")
        for s in status["recording"]:
            table.add_row(
                s["session_id"],
                s["name"],
                s["started_at"] or "",
                str(s["segments"]),
                "paused" if s["paused"] else "recording",
            )
        console.print(table)
    else:
        console.print("recording: nothing")
    pending, uploaded = status["pending"], status["uploaded"]
    console.print(
        f"pending upload: {pending['segments']} segment(s), {_size(pending['bytes'])}; "
        f"events not yet delivered: {pending['events']}"
    )
    console.print(f"uploaded: {uploaded['segments']} segment(s), {_size(uploaded['bytes'])}")
    console.print(f"last contact with storage: {status['last_storage_contact'] or 'never'}")
    console.print(f"last contact with broker:  {status['last_broker_contact'] or 'never'}")
    error = status["last_error"]
    if error:
        where = f"{error['where']}, {error['at']}"
        console.print(f"[red]last error[/red] ({where}): {error['message']}")
    for failed in status["failed"]:
        console.print(
            f"[red]not shipped:[/red] {failed['session_id']} segment {failed['index']} "
            f"({failed['path']}): {failed['error']}"
        )
