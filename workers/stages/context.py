"""What every stage is given, and the timeline it plans from it.

A stage function takes a :class:`StageContext` (the session's snapshot read from the
database, storage, settings, a progress callback, the outputs of earlier stages) and returns
a :class:`StageOutput`. No Celery and no database here: ``workers.runner`` builds the context
and records the result.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from shared.clock import as_utc
from shared.diagnostics import quoted
from shared.events import MAX_SESSION_SECONDS
from shared.ids import InvalidNameError
from shared.options import ResolvedOptions, SessionOptions, resolve
from shared.segments import SegmentKind
from shared.settings import Settings
from shared.storage import Storage, StorageError
from workers.media import MediaError, ProgressCallback, SegmentInput, Timeline, probe
from workers.media import plan_timeline as plan
from workers.search.moments import Moment

#: Why an enrichment stage the session did not ask for (shared.options) did nothing.
NOT_ASKED = "not asked for by this session"
PROBE_CACHE_ENTRIES = 4096  # probed files remembered per process (chunk passes re-plan often)


@dataclass(frozen=True)
class SegmentRef:
    """A stored segment as the database knows it."""

    kind: str
    file: str
    storage_key: str
    sha256: str
    started_at: datetime | None
    duration: float | None
    probed_duration: float | None = None  # remembered from an earlier probe of the file


@dataclass(frozen=True)
class SessionSnapshot:
    """A session's segments and pauses, read in one transaction."""

    id: str
    started_at: datetime | None
    segments: tuple[SegmentRef, ...]
    pauses: tuple[tuple[datetime, datetime], ...] = ()
    options: SessionOptions = SessionOptions()  # what the recorder asked for


@dataclass
class StageOutput:
    """What a stage made: its main output's storage key (None when skipped) and details."""

    output_key: str | None
    result: dict[str, Any] = field(default_factory=dict)
    # Enrichment documents (kind -> JSON) the runner stores with the stage's success, in
    # the same transaction (workers.enrichment).
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The session's search moments (workers.search), which the runner writes in place of
    # the ones indexed before, in the same transaction; None: the index is not touched.
    moments: list[Moment] | None = None

    @classmethod
    def skipped(cls, reason: str) -> StageOutput:
        """Nothing to do, and that is no failure (a disabled or inapplicable stage)."""
        return cls(output_key=None, result={"skipped": reason})


@dataclass
class StageContext:
    snapshot: SessionSnapshot
    storage: Storage
    settings: Settings
    progress: ProgressCallback
    # Output key of every earlier stage that has one, by stage name.
    outputs: Mapping[str, str | None] = field(default_factory=dict)
    # What every earlier stage recorded (its job's result), by stage name.
    results: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # The session's enrichment documents (kind -> JSON, workers.enrichment) as stored, for
    # a stage whose spec reads them (workers.pipeline.StageSpec.reads_documents).
    documents: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Durations measured while planning (storage key -> seconds): the runner stores them so
    # later stages need not probe those files again.
    probed: dict[str, float] = field(default_factory=dict)
    # Blocks until nobody else writes this stage's scratch files (the audio chunk passes of
    # the session); call it before deleting them.
    wait_for_writers: Callable[[], None] = field(default=lambda: None)
    # No retry follows if this execution fails transiently (a stage that can fall back, like
    # the LLM summary, does so now instead of waiting for a retry that will not come).
    last_try: bool = True

    @property
    def options(self) -> ResolvedOptions:
        """The session's options, defaults filled in from the settings."""
        return resolve(
            self.snapshot.options,
            enrich=self.settings.enrich_stages,
            language=self.settings.language,
            llm_configured=self.settings.llm_provider != "none",
        )

    def write_text(self, name: str, text: str) -> str:
        """Write a derived file of the session (temporary name, then rename); its key."""
        key = self.storage.derived_key(self.snapshot.id, name)
        with self.storage.atomic_path(key) as tmp:
            Path(tmp).write_text(text, encoding="utf-8")
        return key

    def read_json(self, key: str) -> Any:
        """A JSON file an earlier stage wrote (its output key)."""
        return json.loads(self.storage.path(key).read_text(encoding="utf-8"))

    def output_of(self, stage: str, *, needed_by: str) -> str:
        """An earlier stage's output key, or the MediaError that explains its absence."""
        key = self.outputs.get(stage)
        if key is None:
            raise MediaError(f"session {self.snapshot.id!r} has no {stage} output to {needed_by}")
        return key


@lru_cache(maxsize=PROBE_CACHE_ENTRIES)
def _probed_duration(path: str, size: int, mtime_ns: int) -> float:
    """Probe once per file version: chunk passes re-plan the session for every segment."""
    return probe(Path(path)).duration


def probe_duration(path: Path) -> float:
    """Duration of a stored segment, from the per-process cache when the file is unchanged."""
    try:
        stat = path.stat()
    except OSError:
        return probe(path).duration  # raises the MediaError naming the file
    return _probed_duration(str(path), stat.st_size, stat.st_mtime_ns)


def build_timeline(
    snapshot: SessionSnapshot,
    storage: Storage,
    *,
    cut_pauses: bool,
    needed: frozenset[str] = frozenset({"audio", "video"}),
    probed: dict[str, float] | None = None,
) -> Timeline:
    """Resolve and probe every segment, then plan where it goes on the output timeline.

    Segments of a kind the stage does not read (``needed``) only shape the timeline (where
    pauses are): a broken one there falls back to its declared duration, so the stage that
    reads it is the one that fails and names it. A segment probed before (its
    ``probed_duration``) is not probed again: probing every video file after the session
    ends would take seconds. New probe results are added to ``probed`` (storage key ->
    seconds) for the caller to remember; the stage that reads a file still checks it whole.
    """
    origin = as_utc(snapshot.started_at) if snapshot.started_at else None
    inputs: list[SegmentInput] = []
    folders: dict[str, Path] = {}  # each folder checked once: this runs on every pass
    for ref in snapshot.segments:
        name = f"segment {quoted(ref.file)} of session {quoted(snapshot.id)}"
        try:
            path = storage.path(ref.storage_key, folders=folders)
        except (StorageError, InvalidNameError) as exc:
            raise StorageError(f"{name}: {exc}") from exc
        if not path.is_file():
            raise MediaError(f"{name} is missing from storage ({ref.storage_key})", path=ref.file)
        measured = ref.probed_duration
        if measured is None:
            try:
                measured = probe_duration(path)
            except MediaError as exc:
                if ref.kind in needed or ref.duration is None:
                    raise MediaError(f"{name}: {exc}", path=exc.path) from exc
                measured = ref.duration
            else:
                if probed is not None:
                    probed[ref.storage_key] = measured
        duration = measured if ref.duration is None else min(ref.duration, measured)
        offset: float | None = None
        if ref.started_at is not None and origin is not None:
            offset = max(0.0, (as_utc(ref.started_at) - origin).total_seconds())
            if offset > MAX_SESSION_SECONDS:
                raise MediaError(
                    f"{name} starts {offset:.0f} s after the session's start, more than "
                    f"{MAX_SESSION_SECONDS:.0f} s",
                    path=ref.file,
                )
        inputs.append(
            SegmentInput(
                kind=SegmentKind(ref.kind),
                path=str(path),
                started_at=offset,
                duration=max(0.0, duration),
            )
        )
    pauses = []
    if origin is not None:
        # Clock skew must not fail a session: clip to its start, drop inverted intervals.
        for a, b in snapshot.pauses:
            start = max(0.0, (as_utc(a) - origin).total_seconds())
            end = max(0.0, (as_utc(b) - origin).total_seconds())
            if end > start:
                pauses.append((start, end))
    return plan(inputs, cut_pauses=cut_pauses, pauses=pauses)


def plan_context(ctx: StageContext, *, needed: frozenset[str] | None = None) -> Timeline:
    """The context's timeline (probes remembered in ``ctx.probed``)."""
    return build_timeline(
        ctx.snapshot,
        ctx.storage,
        cut_pauses=ctx.settings.cut_pauses,
        needed=needed if needed is not None else frozenset({"audio", "video"}),
        probed=ctx.probed,
    )
