from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from capture_agent.agent import Agent
from capture_agent.settings import AgentSettings
from shared.events import Event
from shared.sessiondir import MAX_MANIFEST_BYTES, MAX_SEGMENTS, ManifestError, load_manifest
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
        ({"id": "a" * 10_000}, "10000 characters"),
        ({"id": "bell\x07"}, "control character"),
        ({"id": "nul\x00"}, "NUL"),
        ({"segments": [{"kind": "audio", "file": "a" * 10_000 + ".m4a"}]}, "10004 characters"),
        ({"segments": [{"kind": "audio", "file": "seg\x00.m4a"}]}, "NUL"),
        ({"segments": [{"kind": "audio", "file": "seg\n.m4a"}]}, "control character"),
        ({"segments": [{"kind": "audio", "file": "a.m4a", "duration": "ten"}]}, "duration"),
        ({"segments": [{"kind": "audio", "file": "a.m4a", "duration": "10"}]}, "duration"),
        ({"segments": [{"kind": "audio", "file": "a.m4a", "duration": True}]}, "duration"),
        ({"segments": [{"kind": "audio", "file": "a.m4a", "duration": [1]}]}, "duration"),
        ({"segments": [{"kind": "audio", "file": 7}]}, "file"),
        ({"segments": {"kind": "audio", "file": "a.m4a"}}, "segments"),
        ({"segments": 1_000_000_000}, "segments"),
        ({"name": "n" * 513}, "name"),
        ({"name": "a\x00b"}, "name"),
        ({"priority": "urgent"}, "priority"),
        ({"complete": "yes"}, "complete"),
        # Where segments sit: not before the session (beyond clock skew), not years after it.
        (
            {
                "segments": [
                    {"kind": "audio", "file": "a.m4a", "started_at": "2026-11-21T09:00:00Z"}
                ]
            },
            "'a.m4a'",
        ),
        (
            {
                "segments": [
                    {"kind": "audio", "file": "a.m4a", "started_at": "9999-01-01T00:00:00Z"}
                ]
            },
            "'a.m4a'",
        ),
        ({"ended_at": "2026-11-20T10:00:00Z"}, "ended_at"),
        ({"ended_at": "9999-01-01T00:00:00Z"}, "ended_at"),
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


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            '{"id": "s1", "started_at": "2026-11-21T10:00:00Z", "segments": [{"kind": "audio", '
            '"file": "a.m4a", "duration": NaN}]}',
            "duration",
        ),
        (
            '{"id": "s1", "started_at": "2026-11-21T10:00:00Z", "segments": [{"kind": "audio", '
            '"file": "a.m4a", "duration": Infinity}]}',
            "duration",
        ),
        (
            '{"id": "s1", "started_at": "2026-11-21T10:00:00Z", "segments": [{"kind": "audio", '
            '"file": "a.m4a", "duration": -Infinity}]}',
            "duration",
        ),
        (
            '{"id": "s1", "started_at": "2026-11-21T10:00:00Z", "segments": [{"kind": "audio", '
            '"file": "a.m4a", "duration": 1e999}]}',
            "duration",
        ),
        ('{"id": "s1", "segments": [], "started_at": ' + "9" * 5000 + "}", "cannot be read"),
        ("[" * 100_000 + "]" * 100_000, "cannot be read"),
        ('{"id": "s1", "segments": [], "started_at": "2026-11-21T10:00:00Z"', "cannot be read"),
        ("\xff\xfe not utf-8", "cannot be read"),
        ("[]", "invalid"),
    ],
    ids=["nan", "inf", "-inf", "1e999", "huge-int", "deep", "truncated", "not-utf8", "list"],
)
def test_hostile_manifest_text_is_refused(tmp_path: Path, text: str, needle: str) -> None:
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "session.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(ManifestError) as info:
        load_manifest(folder)
    assert needle in str(info.value) and "session.json" in str(info.value)
    assert len(str(info.value)) < 2000


def test_a_manifest_claiming_too_many_segments_is_refused(tmp_path: Path) -> None:
    entries = [{"kind": "audio", "file": f"a{i}.m4a"} for i in range(MAX_SEGMENTS + 1)]
    folder = write(tmp_path / "s", {**BASE, "segments": entries})
    with pytest.raises(ManifestError, match=f"at most {MAX_SEGMENTS}"):
        load_manifest(folder)


def test_an_oversized_manifest_is_refused_without_being_parsed(tmp_path: Path) -> None:
    folder = write(tmp_path / "s", {**BASE, "segments": [], "pad": "x" * MAX_MANIFEST_BYTES})
    with pytest.raises(ManifestError, match=f"larger than {MAX_MANIFEST_BYTES} bytes"):
        load_manifest(folder)


def test_a_session_json_symlink_leading_outside_is_not_read(tmp_path: Path) -> None:
    outside = write(tmp_path / "elsewhere", {**BASE, "segments": []}) / "session.json"
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "session.json").symlink_to(outside)
    with pytest.raises(ManifestError, match="outside"):
        load_manifest(folder)


def test_a_session_json_symlink_inside_the_folder_is_read(tmp_path: Path) -> None:
    folder = write(tmp_path / "s", {**BASE, "segments": []})
    (folder / "session.json").rename(folder / "real.json")
    (folder / "session.json").symlink_to("real.json")
    assert load_manifest(folder).id == "s1"


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_a_session_json_that_is_not_a_regular_file_is_refused_without_blocking(
    tmp_path: Path, kind: str
) -> None:
    folder = tmp_path / "s"
    folder.mkdir()
    manifest = folder / "session.json"
    if kind == "fifo":
        os.mkfifo(manifest)  # opening it for reading would block until a writer came
    elif kind == "directory":
        manifest.mkdir()
    else:
        folder.rmdir()
        folder.mkdir()
        link = tmp_path / "dev"
        link.mkdir()
        (link / "session.json").symlink_to("/dev/zero")
        folder = link
    with pytest.raises(ManifestError, match="regular file|outside"):
        load_manifest(folder)


def test_segment_offsets_within_the_clock_skew_are_accepted(tmp_path: Path) -> None:
    early = "2026-11-21T09:59:59.500Z"
    folder = write(
        tmp_path / "s",
        {**BASE, "segments": [{"kind": "audio", "file": "a.m4a", "started_at": early}]},
    )
    assert load_manifest(folder).segments[0].started_at is not None


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


def test_a_listed_segment_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    folder = write(tmp_path / "s", {**BASE, "segments": [{"kind": "audio", "file": "a.m4a"}]})
    os.mkfifo(folder / "a.m4a")  # hashing it would block the agent for ever
    agent = agent_for(tmp_path, RecordingEmitter())
    with pytest.raises(ManifestError, match="'a.m4a'.*not a regular file"):
        agent.enqueue_session_dir(folder)
    assert agent.outbox.pending_count() == 0
    agent.close()


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
