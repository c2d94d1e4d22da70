"""Shared storage confined to one root directory.

Every path handed out is resolved inside the root and checked again after resolution, so
symlinks or crafted names cannot reach outside it; a symlink inside the root is refused too
(nothing here makes one), so one session's key never reads or overwrites another's file.
Files appear under their final name only when complete: written to a temporary name,
fsynced, then renamed (shared.atomicfile).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from shared import atomicfile
from shared.atomicfile import LEGACY_PART_SUFFIX, TEMP_MARK
from shared.diagnostics import quoted
from shared.ids import MAX_PATH_DEPTH, validate_relative_path, validate_session_id

COPY_CHUNK_BYTES = 1024 * 1024
SESSIONS_DIR = "sessions"
SEGMENTS_DIR = "segments"
DERIVED_DIR = "derived"
#: Characters of a storage key: the database's segments.storage_key and jobs.output_key.
MAX_KEY_LENGTH = 2048
#: Components of a key: ``sessions/<id>/segments/`` and a segment path of MAX_PATH_DEPTH.
MAX_KEY_DEPTH = MAX_PATH_DEPTH + 3
#: A file being written is a hidden sibling of its final name, ``.<name>.tmp-<pid>``
#: (shared.atomicfile); ``.<name>.<random>.part`` is what earlier versions left.
PART_SUFFIX = LEGACY_PART_SUFFIX
__all__ = [
    "PART_SUFFIX",
    "TEMP_MARK",
    "Storage",
    "StorageError",
    "StoredFile",
    "segment_key",
    "sha256_file",
    "validate_key",
]


class StorageError(Exception):
    """A storage path outside the root, or a stored file that does not match its checksum."""


@dataclass(frozen=True)
class StoredFile:
    key: str  # path relative to the storage root
    size: int
    sha256: str


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(COPY_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def validate_key(key: object) -> str:
    """A storage key (a relative path under the root, of key length and depth), normalised."""
    return validate_relative_path(
        key, what="storage key", max_length=MAX_KEY_LENGTH, max_depth=MAX_KEY_DEPTH
    )


def segment_key(session_id: str, file: str) -> str:
    """Storage key of a session's segment: ``sessions/<id>/segments/<file>``."""
    validate_session_id(session_id)
    return f"{SESSIONS_DIR}/{session_id}/{SEGMENTS_DIR}/{validate_relative_path(file)}"


class Storage:
    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().absolute()

    # -- keys ---------------------------------------------------------------------------
    def segment_key(self, session_id: str, file: str) -> str:
        return segment_key(session_id, file)

    def derived_key(self, session_id: str, name: str) -> str:
        validate_session_id(session_id)
        rel = validate_relative_path(name, what="output name")
        return f"{SESSIONS_DIR}/{session_id}/{DERIVED_DIR}/{rel}"

    def path(self, key: str, *, folders: dict[str, Path] | None = None) -> Path:
        """Local path of a key, refusing anything that resolves outside the root, or through
        a symlink inside it (the root itself may be reached through one).

        ``folders``: for a caller that looks up many keys at once (every segment of a
        session, on every pass while it records), a memo of the folders checked so far in
        this call (folder key -> its path): each folder is then resolved and checked once,
        and each key's last component only tested for being a symlink (one ``lstat``), not
        resolved again component by component. Pass a new dict per call, never keep one."""
        rel = validate_key(key)
        if folders is not None:
            return self._path_in_checked_folder(key, rel, folders)
        root = self.root.resolve()
        candidate = (root / rel).resolve()
        if candidate != root and root not in candidate.parents:
            raise StorageError(f"storage key {quoted(key)} resolves outside the storage root")
        if candidate != root / rel:
            raise StorageError(
                f"storage key {quoted(key)} leads through a symlink inside the storage root"
            )
        return candidate

    def _path_in_checked_folder(self, key: str, rel: str, folders: dict[str, Path]) -> Path:
        head, _, name = rel.rpartition("/")
        folder = folders.get(head)
        if folder is None:
            folder = folders[head] = self.path(head) if head else self.root.resolve()
        candidate = folder / name
        try:
            mode = os.lstat(candidate).st_mode
        except FileNotFoundError:
            return candidate  # as resolve() does for a name that does not exist yet
        if stat.S_ISLNK(mode):
            return self.path(key)  # the whole check, which refuses it
        return candidate

    # -- writing ------------------------------------------------------------------------
    def output_path(self, key: str) -> Path:
        """Path for a tool that writes ``key`` itself (to a temporary name, then renames).

        Temporary files that an earlier writer of ``key`` left beside it are removed: that
        writer was killed mid-way (a clean failure removes its own), and the caller holds
        the job that writes ``key``, so no live writer shares them.
        """
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in atomicfile.stale_temps(path):
            stale.unlink(missing_ok=True)
        return path

    @contextmanager
    def atomic_path(self, key: str) -> Iterator[Path]:
        """Yield a temporary path beside ``key``'s final place; rename into place on success."""
        with atomicfile.atomic_path(self.path(key)) as tmp:
            yield tmp

    def put_file(self, source: Path, key: str, *, expected_sha256: str | None = None) -> StoredFile:
        """Copy ``source`` to ``key``, verifying size and checksum at the destination."""
        size = source.stat().st_size
        with self.atomic_path(key) as tmp:
            with source.open("rb") as src, tmp.open("wb") as dst:
                shutil.copyfileobj(src, dst, COPY_CHUNK_BYTES)
            written = sha256_file(tmp)
            if tmp.stat().st_size != size:
                raise StorageError(f"size mismatch copying {source} to {key}")
            if expected_sha256 is not None and written != expected_sha256:
                raise StorageError(f"checksum mismatch copying {source} to {key}")
        return StoredFile(key=key, size=size, sha256=written)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def verify(self, key: str, sha256: str) -> bool:
        path = self.path(key)
        return path.is_file() and sha256_file(path) == sha256

