from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from shared.ids import (
    MAX_PATH_DEPTH,
    InvalidNameError,
    validate_relative_path,
    validate_session_id,
)
from shared.storage import PART_SUFFIX, TEMP_MARK, Storage, StorageError

HOSTILE_IDS = [
    "../x",
    "..",
    "/etc/passwd",
    "a/b",
    "",
    ".hidden",
    "a\x00b",
    "a" * 200,
    "x..y",
    "C:\\evil",
    " space",
    "a" * 10_000,
    "bell\x07",
    "tab\tid",
    "new\nline",
    "del\x7f",
    "esc\x1b[31m",
    "ok\n",
    "\u202eevil",
]
HOSTILE_PATHS = [
    "../x.mp4",
    "/abs.mp4",
    "a/../../b.mp4",
    ".",
    "a/b/..",
    "",
    "a\\b.mp4",
    ".hidden.mp4",
    "nul\x00.mp4",
    "/".join(["d"] * 20),
    "a" * 10_000 + ".mp4",
    "/".join(["d" * 200] * 8),  # every part and the depth fit, the whole is too long
    "seg\x07.mp4",
    "seg\n.mp4",
    "seg\r.mp4",
    "seg\x1b.mp4",
    "seg\x7f.mp4",
    "seg.mp4\n",
    "seg.mp4 ",
    "//etc/passwd",
    "file:seg.mp4",
    "http://example.com/seg.mp4",
]


@pytest.mark.parametrize("session_id", HOSTILE_IDS)
def test_hostile_session_ids_are_refused_with_the_id_in_the_message(session_id: str) -> None:
    with pytest.raises(InvalidNameError) as info:
        validate_session_id(session_id)
    assert repr(session_id)[:40] in str(info.value)


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_hostile_segment_paths_are_refused(path: str) -> None:
    with pytest.raises(InvalidNameError) as info:
        validate_relative_path(path)
    assert repr(path)[:40] in str(info.value)


@pytest.mark.parametrize("value", ["a" * 10_000, "b" * 10_000 + ".mp4", "c\x00" * 5_000])
def test_messages_name_a_long_value_without_repeating_all_of_it(value: str) -> None:
    for check in (validate_session_id, validate_relative_path):
        with pytest.raises(InvalidNameError) as info:
            check(value)
        message = str(info.value)
        assert repr(value)[:40] in message and f"{len(value)} characters" in message
        assert len(message) < 400, message


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("a\x00b", "NUL"),
        ("a\x07b", "control character"),
        ("a" * 129, "longer than 128"),
        ("../x", "'..'"),
    ],
)
def test_session_id_messages_say_why(value: str, reason: str) -> None:
    with pytest.raises(InvalidNameError, match=reason):
        validate_session_id(value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("a\x00.mp4", "NUL"),
        ("a\n.mp4", "control character"),
        ("x" * 1025, "longer than 1024"),
        ("/etc/passwd", "absolute"),
        ("a/../../b.mp4", "'..'"),
    ],
)
def test_path_messages_say_why(value: str, reason: str) -> None:
    with pytest.raises(InvalidNameError, match=reason):
        validate_relative_path(value)


def test_non_strings_are_refused() -> None:
    for value in (None, 3, ["a"], b"a.mp4"):
        with pytest.raises(InvalidNameError):
            validate_session_id(value)
        with pytest.raises(InvalidNameError):
            validate_relative_path(value)


def test_ordinary_names_pass() -> None:
    assert validate_session_id("demo-20261121T101500Z") == "demo-20261121T101500Z"
    assert validate_relative_path("screen/screen-0001.mp4") == "screen/screen-0001.mp4"


def test_the_longest_and_deepest_valid_segment_path_has_a_usable_storage_key(
    tmp_path: Path,
) -> None:
    """What validation lets through must fit the database (1024) and make a valid key."""
    deep = "/".join(["d"] * (MAX_PATH_DEPTH - 1) + ["seg.mp4"])
    long = "/".join(["e" * 200] * 5) + "/" + "f" * 15
    assert len(long) == 1020
    storage = Storage(tmp_path / "root")
    for file in (deep, long, "a" * 255):
        assert validate_relative_path(file) == file
        key = storage.segment_key("s" * 128, file)
        assert storage.path(key) == storage.root.resolve() / key


def test_storage_refuses_hostile_keys_before_touching_the_filesystem(tmp_path: Path) -> None:
    root = tmp_path / "root"
    storage = Storage(root)
    with pytest.raises(InvalidNameError):
        storage.segment_key("../x", "a.mp4")
    with pytest.raises(InvalidNameError):
        storage.segment_key("ok", "../../a.mp4")
    assert not root.exists()


def test_storage_refuses_symlink_escape(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sessions").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "sessions" / "evil").symlink_to(outside)
    storage = Storage(root)
    with pytest.raises(StorageError):
        storage.path("sessions/evil/segments/a.mp4")


def test_storage_refuses_a_symlinked_file_leading_outside(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    storage = Storage(tmp_path / "root")
    key = storage.segment_key("s1", "a.mp4")
    link = storage.root / key
    link.parent.mkdir(parents=True)
    link.symlink_to(secret)
    with pytest.raises(StorageError, match="a.mp4"):
        storage.path(key)
    with pytest.raises(StorageError):
        storage.verify(key, "0" * 64)
    source = tmp_path / "new.mp4"
    source.write_bytes(b"new")
    with pytest.raises(StorageError):
        storage.put_file(source, key)
    assert secret.read_text() == "secret" and link.is_symlink()


def test_storage_refuses_a_symlink_to_another_sessions_file(tmp_path: Path) -> None:
    """A link inside the root must not let one session read or overwrite another's files."""
    storage = Storage(tmp_path / "root")
    victim = storage.root / storage.segment_key("victim", "a.mp4")
    victim.parent.mkdir(parents=True)
    victim.write_bytes(b"victim")
    link = storage.root / storage.segment_key("evil", "a.mp4")
    link.parent.mkdir(parents=True)
    link.symlink_to(victim)
    source = tmp_path / "new.mp4"
    source.write_bytes(b"evil")
    with pytest.raises(StorageError, match="symlink"):
        storage.put_file(source, storage.segment_key("evil", "a.mp4"))
    assert victim.read_bytes() == b"victim"


def test_a_storage_root_reached_through_a_symlink_is_fine(tmp_path: Path) -> None:
    real = tmp_path / "real-root"
    real.mkdir()
    (tmp_path / "mounted").symlink_to(real)
    source = tmp_path / "seg.bin"
    source.write_bytes(b"abc")
    storage = Storage(tmp_path / "mounted")
    stored = storage.put_file(source, storage.segment_key("s1", "seg.bin"))
    assert (real / stored.key).read_bytes() == b"abc"


def test_put_file_is_atomic_and_checksummed(tmp_path: Path) -> None:
    source = tmp_path / "seg.bin"
    data = b"segment-bytes" * 1000
    source.write_bytes(data)
    storage = Storage(tmp_path / "root")
    key = storage.segment_key("s1", "seg.bin")
    stored = storage.put_file(source, key)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert storage.path(key).read_bytes() == data
    assert storage.verify(key, stored.sha256)
    leftovers = [p.name for p in storage.path(key).parent.iterdir() if p.name != "seg.bin"]
    assert leftovers == []


def test_put_file_with_wrong_expected_checksum_leaves_nothing(tmp_path: Path) -> None:
    source = tmp_path / "seg.bin"
    source.write_bytes(b"abc")
    storage = Storage(tmp_path / "root")
    key = storage.segment_key("s1", "seg.bin")
    with pytest.raises(StorageError, match="checksum mismatch"):
        storage.put_file(source, key, expected_sha256="0" * 64)
    assert list(storage.path(key).parent.iterdir()) == []


def test_output_path_removes_what_a_killed_writer_left_beside_it(tmp_path: Path) -> None:
    from workers.media.output import temp_path

    storage = Storage(tmp_path / "root")
    key = "sessions/s1/derived/s1.mp4"
    final = storage.path(key)
    final.parent.mkdir(parents=True)
    # what a worker killed mid-transcode leaves: the engine's temp name and an atomic part
    killed = final.with_name(f".s1.mp4{TEMP_MARK}4242")
    assert temp_path(final).name.startswith(f".{final.name}{TEMP_MARK}")  # same convention
    part = final.with_name(f".s1.mp4.k3j2{PART_SUFFIX}")
    other = final.with_name(f".s1-compressed.mp4{TEMP_MARK}4242")  # another output's writer
    for path in (killed, part, other):
        path.write_bytes(b"half")
    final.write_bytes(b"previous good output")

    assert storage.output_path(key) == final
    assert not killed.exists() and not part.exists()
    assert other.exists() and final.read_bytes() == b"previous good output"


def test_a_temporary_file_is_live_while_fresh_and_its_writer_runs(tmp_path: Path) -> None:
    """Two agents may ship one folder at once: neither may delete the other's copy in
    flight, while a dead writer's leftover is cleaned up at once."""
    import os
    import time

    from shared.atomicfile import may_be_live

    final = tmp_path / "screen-0001.mp4"
    mine = final.with_name(f".{final.name}{TEMP_MARK}{os.getpid()}")
    mine.write_bytes(b"x")
    assert may_be_live(mine, untouched_s=300)
    no_such_pid = 2**31 - 2  # beyond any pid_max: no process has it
    gone = final.with_name(f".{final.name}{TEMP_MARK}{no_such_pid}")
    gone.write_bytes(b"x")
    assert not may_be_live(gone, untouched_s=300)
    old = time.time() - 600
    os.utime(mine, (old, old))
    assert not may_be_live(mine, untouched_s=300)  # untouched this long: its writer is stuck
    assert not may_be_live(tmp_path / "vanished", untouched_s=300)


def test_paths_looked_up_together_are_those_looked_up_alone_and_as_safe(tmp_path: Path) -> None:
    """``path(key, folders=...)`` (every segment of a session on every pass while it
    records) checks each folder once and each file with one lstat, with the same answers:
    the same paths, and the same refusals of symlinks leading out or across sessions."""
    real = tmp_path / "real-root"
    real.mkdir()
    (tmp_path / "mounted").symlink_to(real)  # a root reached through a symlink is fine
    storage = Storage(tmp_path / "mounted")
    keys = [storage.segment_key("s1", f"screen-{i:04d}.mp4") for i in range(3)]
    for key in keys[:2]:
        (storage.root / key).parent.mkdir(parents=True, exist_ok=True)
        (storage.root / key).write_bytes(b"x")
    keys.append(storage.derived_key("s1", "s1.mp4"))  # another folder, not made yet
    folders: dict[str, Path] = {}
    assert [storage.path(key, folders=folders) for key in keys] == [
        storage.path(key) for key in keys
    ]
    assert storage.path(keys[0], folders=folders) == real / keys[0]
    assert sorted(folders) == ["sessions/s1/derived", "sessions/s1/segments"]

    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    (storage.root / storage.segment_key("s1", "leak.mp4")).symlink_to(secret)
    (storage.root / storage.segment_key("s1", "other.mp4")).symlink_to(storage.root / keys[0])
    (real / "sessions" / "evil").symlink_to(real / "sessions" / "s1")
    for key in (
        storage.segment_key("s1", "leak.mp4"),
        storage.segment_key("s1", "other.mp4"),
        storage.segment_key("evil", "screen-0000.mp4"),
    ):
        with pytest.raises(StorageError, match="symlink|outside"):
            storage.path(key)
        with pytest.raises(StorageError, match="symlink|outside"):
            storage.path(key, folders=folders)
