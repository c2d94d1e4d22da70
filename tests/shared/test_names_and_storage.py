from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from shared.ids import InvalidNameError, validate_relative_path, validate_session_id
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
]


@pytest.mark.parametrize("session_id", HOSTILE_IDS)
def test_hostile_session_ids_are_refused_with_the_id_in_the_message(session_id: str) -> None:
    with pytest.raises(InvalidNameError) as info:
        validate_session_id(session_id)
    assert repr(session_id)[:40] in str(info.value)


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_hostile_segment_paths_are_refused(path: str) -> None:
    with pytest.raises(InvalidNameError):
        validate_relative_path(path)


def test_ordinary_names_pass() -> None:
    assert validate_session_id("demo-20261121T101500Z") == "demo-20261121T101500Z"
    assert validate_relative_path("screen/screen-0001.mp4") == "screen/screen-0001.mp4"


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
