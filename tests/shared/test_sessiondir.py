from __future__ import annotations

import json
from pathlib import Path

import pytest

from capture_agent.agent import Agent
from capture_agent.settings import AgentSettings
from shared.events import Event
from shared.sessiondir import ManifestError, load_manifest
from shared.settings import Settings
from shared.storage import Storage


class RecordingEmitter:
    """Stands in for the broker only: storage and the outbox are the real ones."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event, *, priority: str = "normal", retry: bool = True) -> None:
        self.events.append(event)


def agent_for(tmp_path: Path, emitter: RecordingEmitter) -> Agent:
    settings = AgentSettings(state_dir=tmp_path / "state", storage=str(tmp_path / "storage"))
    return Agent(settings, shared=Settings(home=tmp_path / "home"), publisher=emitter)


def write(folder: Path, manifest: dict[str, object]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "session.json").write_text(json.dumps(manifest))
    return folder


BASE = {"id": "s1", "name": "n", "started_at": "2026-11-21T10:00:00Z"}


def test_valid_manifest_parses_with_optional_fields(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "s",
        {
            **BASE,
            "segments": [
                {
                    "kind": "video",
                    "file": "v/0.mp4",
                    "started_at": "2026-11-21T10:00:05+00:00",
                    "duration": 10,
                },
                {"kind": "audio", "file": "a.m4a"},
            ],
        },
    )
    manifest = load_manifest(folder)
    assert manifest.id == "s1"
    assert manifest.segments[0].duration == 10
    assert manifest.segments[1].started_at is None


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"id": "../x"}, "invalid session id"),
        ({"segments": [{"kind": "audio", "file": "../../etc/passwd"}]}, "../../etc/passwd"),
        ({"segments": [{"kind": "audio", "file": "/etc/passwd"}]}, "absolute"),
        ({"segments": [{"kind": "subtitles", "file": "a.srt"}]}, "kind"),
        ({"segments": [{"kind": "audio", "file": "a.m4a", "duration": 1e12}]}, "duration"),
        ({"segments": [{"kind": "audio", "file": "a.m4a", "duration": -1}]}, "duration"),
        ({"started_at": "yesterday"}, "started_at"),
        ({"started_at": "2026-11-21T10:00:00"}, "time zone"),
    ],
)
def test_hostile_manifest_is_refused_with_a_clear_message(
    tmp_path: Path, change: dict[str, object], needle: str
) -> None:
    folder = write(tmp_path / "s", {**BASE, "segments": [], **change})
    with pytest.raises(ManifestError) as info:
        load_manifest(folder)
    assert needle in str(info.value)
    assert "session.json" in str(info.value)


def test_missing_manifest_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="session.json: not found"):
        load_manifest(tmp_path)


def test_hostile_session_is_refused_before_storage_is_touched(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "s",
        {
            **BASE,
            "segments": [
                {"kind": "audio", "file": "ok.m4a"},
                {"kind": "audio", "file": "../escape.m4a"},
            ],
        },
    )
    (folder / "ok.m4a").write_bytes(b"x")
    emitter = RecordingEmitter()
    agent = agent_for(tmp_path, emitter)
    with pytest.raises(ManifestError):
        agent.enqueue_session_dir(folder)
    assert agent.outbox.pending_count() == 0
    agent.close()
    assert not (tmp_path / "storage").exists()
    assert emitter.events == []


def test_symlinked_segment_escaping_the_folder_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.m4a"
    secret.write_bytes(b"secret")
    folder = write(tmp_path / "s", {**BASE, "segments": [{"kind": "audio", "file": "a.m4a"}]})
    (folder / "a.m4a").symlink_to(secret)
    agent = agent_for(tmp_path, RecordingEmitter())
    with pytest.raises(ManifestError, match="outside"):
        agent.enqueue_session_dir(folder)
    assert agent.outbox.pending_count() == 0
    agent.close()
    assert not (tmp_path / "storage").exists()


def test_agent_ships_a_session_folder_in_order_once(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "s",
        {
            **BASE,
            "segments": [{"kind": "audio", "file": "a.m4a"}, {"kind": "video", "file": "v.mp4"}],
        },
    )
    (folder / "a.m4a").write_bytes(b"aaa")
    (folder / "v.mp4").write_bytes(b"vvvv")
    emitter = RecordingEmitter()
    (tmp_path / "storage").mkdir()
    storage = Storage(tmp_path / "storage")
    agent = agent_for(tmp_path, emitter)
    agent.enqueue_session_dir(folder)
    agent.enqueue_session_dir(folder)  # again (a restart): nothing is added twice
    agent.start()
    assert agent.stop(drain=True, timeout=60)
    agent.close()
    assert [(e.type, e.seq) for e in emitter.events] == [
        ("session.started", 0),
        ("segment.stored", 1),
        ("segment.stored", 2),
        ("session.ended", 3),
    ]
    assert emitter.events[-1].payload["segment_count"] == 2
    stored = emitter.events[2].segment()
    assert storage.path(stored.key).read_bytes() == b"vvvv"
    assert stored.size == 4
