"""Files that appear under their final name only when complete: temp name, fsync, rename.

One temporary-name scheme for the whole project: a hidden sibling of the final file,
``.<name>.tmp-<pid>``, in the same folder (so ``os.replace`` is atomic) and named after the
writing process (so writers in different processes never share one; within a process, one
writer per final path at a time, which every caller ensures: it holds the job, the drain
lock or the session). A writer killed mid-way leaves its temporary file behind;
:func:`stale_temps` finds those (and the ``.<name>.<random>.part`` names earlier versions
used) so whoever writes that path next can remove them.

    temp_path(final)  --write-->  temp  --fsync, os.replace-->  final
                                    \\--(exception)-->  unlinked
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

#: Marks a temporary file: ``.<name>.tmp-<pid>``.
TEMP_MARK: Final = ".tmp-"
#: Suffix of the temporary files earlier versions wrote (``.<name>.<random>.part``); only
#: looked for, to clean up what they left.
LEGACY_PART_SUFFIX: Final = ".part"


def temp_path(final: Path) -> Path:
    """The temporary name this process writes ``final`` under."""
    return final.with_name(f".{final.name}{TEMP_MARK}{os.getpid()}")


def may_be_live(temp: Path, *, untouched_s: float) -> bool:
    """Whether another process may still be writing ``temp``: it was written to in the last
    ``untouched_s`` seconds and the process its name ends with is alive here (another
    machine's process counts as alive while the file is fresh). A name without a pid is an
    older version's leftover: never live."""
    try:
        if time.time() - temp.stat().st_mtime >= untouched_s:
            return False
    except FileNotFoundError:
        return False
    _, mark, pid = temp.name.rpartition(TEMP_MARK)
    if not mark or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def stale_temps(final: Path) -> list[Path]:
    """Temporary files of ``final`` left by writers that were killed (any process)."""
    if not final.parent.is_dir():
        return []
    patterns = (f".{final.name}{TEMP_MARK}*", f".{final.name}.*{LEGACY_PART_SUFFIX}")
    return [p for pattern in patterns for p in final.parent.glob(pattern) if p.is_file()]


@contextmanager
def atomic_path(final: Path, *, durable: bool = True) -> Iterator[Path]:
    """Yield the temporary path to write ``final`` at; rename it into place when the block
    ends, remove it when the block raises: ``final`` is whole (old or new) or absent.

    The block must create the file (a writer that writes nothing fails the rename). With
    ``durable`` the data and the rename are fsynced, so a power cut cannot leave an empty
    or half-written file under the final name; tools writing large media may skip it.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    tmp.unlink(missing_ok=True)  # this pid's leftover from before a reboot
    try:
        yield tmp
        if durable:
            _fsync(tmp)
        os.replace(tmp, final)
        if durable:
            _fsync_dir(final.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(final: Path, data: bytes, *, durable: bool = True) -> Path:
    """Write ``data`` to ``final`` atomically (see :func:`atomic_path`); returns ``final``."""
    with atomic_path(final, durable=durable) as tmp:
        tmp.write_bytes(data)
    return final


def atomic_write_text(
    final: Path, text: str, *, encoding: str = "utf-8", durable: bool = True
) -> Path:
    """Write ``text`` to ``final`` atomically (see :func:`atomic_path`); returns ``final``."""
    return atomic_write_bytes(final, text.encode(encoding), durable=durable)


def _fsync(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # some filesystems (SMB shares) cannot open a folder; the rename still holds
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
