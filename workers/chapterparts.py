r"""Chapter samples made while the session records, one video segment at a time.

Finding chapters starts by sampling the whole playable MP4 (a small grayscale picture every
keyframe or second, :mod:`workers.enrich.frames`): decoding that grows with the session (in
full where keyframes are sparse, as a Mac recorder writes them). Instead, each stored video
segment of a session still recording asks for its *samples* (``TASK_CHAPTER_SAMPLES``,
enrich queue, one priority step after its session's stages): the segment sampled on its own
at the chapters' rate and kept as a part (``workers.parts``, kind ``"scenes"``, one per
segment; a compressed ``.npz`` of its sample times and pictures in ``chapter-samples/``). After
the end the ``chapters`` stage maps every segment's samples onto the output timeline (as the
playable MP4 places the segment: its kept pieces, pause cuts dropped), which is the sample
stream of the playable MP4 itself, and runs the rest as before on it: the changes are found
across segment boundaries as anywhere else, placed to the frame and titled by OCR from the
MP4.

Comparing the samples is the other part of the work that grows with the session, so it is
done while recording too: a segment's samples are scored against each other, and against
those of the video segment before and after it (by index) as soon as both are sampled (by
whichever is sampled second), for every pair at most ``PAIR_SPAN_S`` apart: every pair
``detect_changes`` compares. A score is a pure function of the two pictures, so the stage
looks them up by (segment, sample number) and gets the very decisions the whole path makes;
a pair not scored before (after a blip, or two neighbours sampled at the same moment) is
scored then (``scores_computed`` in the result).

Rules:

- A part is used only if made from the segment's current content (``source_sha256``) at the
  current sample rate (in its result), its file present, and all samples of one size.
- The stage makes the samples of a segment nobody made (claiming the part) and waits for those
  another worker is making (``workers.parts.collect``).
- The stage samples the MP4 itself, saying why (``samples_fallback``), when chapter samples
  are turned off, none was made while recording (a session shipped at once), a segment's
  samples cannot be made, or segments differ in picture size.
- Samples are scratch: the chapters stage deletes them once it is done (a retry samples
  again), ``parts.discard_all`` when the session fails.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
from sqlalchemy import select

from shared import models
from shared.clock import as_utc
from shared.db import session_scope
from shared.options import SessionOptions, resolve
from shared.settings import Settings
from shared.storage import Storage
from workers import parts
from workers.enrich.chaptering import Sampled
from workers.enrich.documents import EnrichError
from workers.enrich.frames import open_video
from workers.enrich.scenes import COMPARED_SPAN_S, Sample, change_score
from workers.media import Cancelled, MediaError
from workers.media.timeline import Timeline

log = logging.getLogger(__name__)

KIND_SCENES: Final = "scenes"
STAGE: Final = "chapters"
SAMPLES_SUFFIX: Final = "-scenes.npz"
CROSS_SUFFIX: Final = "-scores.npz"
#: Pairs of samples at most this far apart (seconds) are scored while recording: every pair
#: ``detect_changes`` compares, with a second of margin for clocks.
PAIR_SPAN_S: Final = COMPARED_SPAN_S + 1.0


class SamplesFailed(EnrichError):
    """A segment's samples could not be made (bad input); the reason names it."""


def samples_key(storage: Storage, session_id: str, segment_file: str) -> str:
    """Where a segment's samples are stored (with the session's other parts)."""
    stem = Path(segment_file).stem
    return storage.derived_key(session_id, f"{parts.SAMPLES_DIR}/{stem}{SAMPLES_SUFFIX}")


def discard(storage: Storage, session_id: str) -> None:
    """Delete the session's samples: the chapters stage is done with them."""
    shutil.rmtree(storage.path(storage.derived_key(session_id, parts.SAMPLES_DIR)),
                  ignore_errors=True)  # fmt: skip


def _atomic_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write ``arrays`` to ``path`` (compressed): a temporary name, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez_compressed(handle, allow_pickle=False, **arrays)
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def pair_scores(
    earlier: list[Sample], later: list[Sample], offset: float, *, same: bool
) -> np.ndarray:
    """``change_score`` of every pair (``earlier[i]``, ``later[j]``) whose times (``later``'s
    moved by ``offset`` seconds) are at most ``PAIR_SPAN_S`` apart, as rows (i, j, score);
    ``same``: both are one segment's (only i < j)."""
    rows: list[tuple[float, float, float]] = []
    for i, (ta, fa) in enumerate(earlier):
        for j, (tb, fb) in enumerate(later):
            if (same and j <= i) or abs(tb + offset - ta) > PAIR_SPAN_S:
                continue
            rows.append((i, j, change_score(fa, fb) if fa.shape == fb.shape else 1.0))
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


def _save(path: Path, samples: list[Sample]) -> None:
    times = np.array([t for t, _ in samples], dtype=np.float64)
    frames = (
        np.stack([f for _, f in samples]) if samples else np.zeros((0, 0, 0), dtype=np.uint8)
    )
    _atomic_npz(path, times=times, frames=frames, pairs=pair_scores(samples, samples, 0.0,
                                                                      same=True))  # fmt: skip


def load_samples(path: Path) -> list[Sample]:
    with np.load(path) as data:
        times, frames = data["times"], data["frames"]
        return [(float(t), frames[k]) for k, t in enumerate(times)]


def _load_pairs(path: Path) -> np.ndarray:
    try:
        with np.load(path) as data:
            return np.asarray(data["pairs"])
    except (OSError, KeyError, ValueError):
        return np.zeros((0, 3))


def cross_key(
    storage: Storage, session_id: str, earlier: _Neighbour, later: _Neighbour, sample_fps: float
) -> str:
    """Where the scores between two consecutive segments' samples are stored: named by both
    segments' content and the sample rate, so scores of other pictures are never used."""
    name = (f"{Path(earlier.file).stem}.{earlier.sha256[:16]}--{Path(later.file).stem}."
            f"{later.sha256[:16]}-{sample_fps:g}fps{CROSS_SUFFIX}")  # fmt: skip
    return storage.derived_key(session_id, f"{parts.SAMPLES_DIR}/{name}")


@dataclass(frozen=True)
class _Neighbour:
    file: str
    sha256: str
    started_at: datetime | None = None
    duration: float | None = None


def _neighbours(
    database_url: str, session_id: str, file: str
) -> tuple[_Neighbour | None, _Neighbour | None, _Neighbour | None]:
    """The video segment before ``file`` (by index), ``file``'s own row, the one after."""
    with session_scope(database_url) as db:
        rows = db.execute(
            select(models.Segment.file, models.Segment.sha256, models.Segment.started_at,
                   models.Segment.duration)
            .where(models.Segment.session_id == session_id, models.Segment.kind == "video")
            .order_by(models.Segment.index)
        ).all()  # fmt: skip
    found = [_Neighbour(f, sha, at, d) for f, sha, at, d in rows]
    k = next((n for n, row in enumerate(found) if row.file == file), None)
    if k is None:
        return None, None, None
    return (found[k - 1] if k > 0 else None, found[k],
            found[k + 1] if k + 1 < len(found) else None)  # fmt: skip


def _offset(earlier: _Neighbour, later: _Neighbour) -> float | None:
    """Seconds from the earlier segment's start to the later one's, on the recorder's clock."""
    if earlier.started_at is not None and later.started_at is not None:
        return (as_utc(later.started_at) - as_utc(earlier.started_at)).total_seconds()
    return earlier.duration


def _score_neighbours(settings: Settings, storage: Storage, source: parts.SegmentSource) -> int:
    """Score the segment's samples against those of its neighbours already sampled (the
    second of two neighbours to be sampled does it); how many pairs of segments."""
    before, me, after = _neighbours(settings.database_url, source.session_id, source.file)
    if me is None:
        return 0
    done = 0
    for earlier, later in ((before, me), (me, after)):
        if earlier is None or later is None:
            continue
        paths = [storage.path(samples_key(storage, source.session_id, n.file))
                 for n in (earlier, later)]  # fmt: skip
        offset = _offset(earlier, later)
        if offset is None or not all(p.is_file() for p in paths):
            continue
        try:  # the neighbour's file may be mid-replacement: the stage scores what is missing
            first, second = load_samples(paths[0]), load_samples(paths[1])
        except (OSError, ValueError, KeyError):
            continue
        scores = pair_scores(first, second, offset, same=False)
        key = cross_key(storage, source.session_id, earlier, later, settings.chapter_sample_fps)
        _atomic_npz(storage.output_path(key), pairs=scores)
        done += 1
    return done


def make_samples(
    settings: Settings,
    storage: Storage,
    source: parts.SegmentSource,
    part_id: int,
    owner: str,
) -> str:
    """Sample a claimed segment (``owner`` holds its part) and record it; the file's key.
    SamplesFailed on bad input (the part failed with the reason); Cancelled when the claim
    was lost; any other error releases the part and propagates."""
    key = samples_key(storage, source.session_id, source.file)
    with parts.making(settings, part_id, owner, name=f"chapter samples of {source.file}",
                      bad_input=(MediaError, EnrichError),
                      failure=lambda reason, _: SamplesFailed(reason)) as maker:  # fmt: skip
        with open_video(storage.path(source.storage_key)) as clip:
            samples = list(clip.samples(settings.chapter_sample_fps, progress=maker.report))
            index = clip.index
        _save(storage.output_path(key), samples)
        _score_neighbours(settings, storage, source)
        maker.finish(key, {
            "samples": len(samples),
            "sample_fps": settings.chapter_sample_fps,
            "shape": list(samples[0][1].shape) if samples else None,
            "width": index.width,
            "height": index.height,
            "duration": index.duration,
        })  # fmt: skip
    return key


def _usable(settings: Settings, storage: Storage) -> Any:
    def usable(part: parts.PartState) -> tuple[str, dict[str, Any]] | None:
        result = part.result or {}
        if part.output_key is None or result.get("sample_fps") != settings.chapter_sample_fps:
            return None
        if not storage.path(part.output_key).is_file():
            return None
        return part.output_key, result

    return usable


def _collect(
    settings: Settings,
    storage: Storage,
    sources: list[parts.SegmentSource],
    *,
    owner: str,
    wait: bool,
    heartbeat: Any = lambda _: None,
) -> parts.Collected:
    def make(k: int, part_id: int) -> tuple[str, dict[str, Any]]:
        key = make_samples(settings, storage, sources[k], part_id, owner)
        state = parts.state(settings.database_url, sources[k].session_id, sources[k].file,
                            kind=KIND_SCENES)  # fmt: skip
        return key, (state.result if state is not None else None) or {}

    wanted = [parts.Wanted(s.file, s.sha256) for s in sources]
    session_id = sources[0].session_id if sources else ""
    return parts.collect(
        settings, session_id, KIND_SCENES, wanted, owner=owner,
        usable=_usable(settings, storage), make=make, wait=wait, heartbeat=heartbeat,
    )  # fmt: skip


# -- while recording --------------------------------------------------------------------------
def wanted(settings: Settings, options: SessionOptions) -> bool:
    """Whether a session with ``options`` gets chapter samples while it records."""
    resolved = resolve(
        options,
        enrich=settings.enrich_stages,
        language=settings.language,
        llm_configured=settings.llm_provider != "none",
    )
    return settings.chapter_samples and resolved.runs(STAGE)


def sample_while_recording(
    settings: Settings, session_id: str, segment_file: str, *, owner: str
) -> str:
    """What a samples task does: sample the segment unless it is done, held, or the session's
    chapters stage has started (it has every segment then). A short outcome for the log."""
    with session_scope(settings.database_url) as db:
        session = db.get(models.Session, session_id)
        if session is None:
            return f"skipped: unknown session {session_id!r}"
        if session.status == models.SessionStatus.FAILED.value:
            return "skipped: the session failed"
        stage = parts.stage_moved_on(db, session_id, STAGE)
        if stage is not None:
            return f"skipped: the chapters stage is {stage}"
        if not wanted(settings, SessionOptions.from_json(session.options)):
            return "skipped: no chapter samples for this session"
        source = parts.stored_segment(db, session_id, segment_file)
        if source is None:
            return f"skipped: no segment {segment_file!r} in session {session_id!r}"
    storage = Storage(settings.storage)
    try:
        got = _collect(settings, storage, [source], owner=owner, wait=False)
    except (SamplesFailed, Cancelled) as exc:  # the stage reports a bad segment
        return f"stopped: {exc}"
    if got.failed:
        return f"failed: {next(iter(got.failed.values()))}"
    return "made" if got.made else ("done already" if got.values else "held by another worker")


# -- at the end -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Gathered:
    sampled: Sampled
    segments: int
    made: int
    scores: _Scores


def _on_output(
    timeline: Timeline, path: str, samples: list[Sample]
) -> Iterator[tuple[float, int, np.ndarray]]:
    """A segment's samples (its own clock) on the output timeline, where the playable MP4
    shows them (each kept piece of the segment, what pause cuts removed dropped), with their
    number in the segment."""
    segment = next(s for s in timeline.segments if s.path == path)
    pieces = timeline.kept_parts(segment)
    for n, (t, frame) in enumerate(samples):
        for piece in pieces:
            if piece.source_offset - 1e-6 <= t < piece.source_offset + piece.duration:
                yield piece.out_start + (t - piece.source_offset), n, frame
                break


def gather(
    settings: Settings,
    storage: Storage,
    session_id: str,
    timeline: Timeline,
    segments: list[tuple[str, parts.SegmentSource]],
    *,
    duration: float,
    owner: str,
    heartbeat: Any = lambda _: None,
) -> Gathered | str:
    """The stage's samples from the segments' (``segments``: each video segment's path in
    ``timeline`` and its source), or why they cannot serve. SamplesFailed when a segment's
    samples failed."""
    if not settings.chapter_samples:
        return "chapter samples are turned off"
    if not segments:
        return "the session has no video segments"
    sources = [source for _, source in segments]
    states = [
        parts.state(settings.database_url, session_id, s.file, kind=KIND_SCENES) for s in sources
    ]
    if not any(s is not None and (s.live or s.status == parts.SUCCEEDED) for s in states):
        return "no segment was sampled while the session recorded"
    try:
        got = _collect(settings, storage, sources, owner=owner, wait=True, heartbeat=heartbeat)
    except parts.PartFailed as exc:
        raise SamplesFailed(str(exc)) from exc
    results = [got.values[k][1] for k in range(len(sources))]
    shapes = {tuple(r["shape"]) for r in results if r.get("shape")}
    sizes = {(r["width"], r["height"]) for r in results}
    if len(shapes) > 1 or len(sizes) > 1:
        return f"the segments differ in picture size ({sorted(sizes)})"
    width, height = next(iter(sizes))
    order = sorted(range(len(segments)), key=lambda k: _out_start(timeline, segments[k][0]))
    scores = _Scores()

    def stream() -> Iterator[Sample]:
        last = -1.0
        previous: _Neighbour | None = None
        for k in order:
            file, path = sources[k].file, storage.path(got.values[k][0])
            scores.add(file, file, _load_pairs(path))
            me = _Neighbour(file, sources[k].sha256)
            if previous is not None:
                key = cross_key(storage, session_id, previous, me, settings.chapter_sample_fps)
                scores.add(previous.file, file, _load_pairs(storage.path(key)))
            previous = me
            for t, n, frame in _on_output(timeline, segments[k][0], load_samples(path)):
                if t > last:  # overlapping segments: the later one starts where it is kept
                    last = t
                    scores.keys[t] = (file, n)
                    yield t, frame

    return Gathered(
        sampled=Sampled(samples=stream(), duration=duration, width=width, height=height,
                        scorer=scores.score),  # fmt: skip
        segments=len(sources),
        made=got.made,
        scores=scores,
    )


class _Scores:
    """Change scores computed while recording, by (segment, sample number) pairs; what is
    missing (a blip's long comparison, a pair of segments sampled at once) computed now."""

    def __init__(self) -> None:
        self.keys: dict[float, tuple[str, int]] = {}  # output time -> (segment, sample)
        self.known: dict[tuple[tuple[str, int], tuple[str, int]], float] = {}
        self.reused = 0
        self.computed = 0

    def add(self, earlier: str, later: str, rows: np.ndarray) -> None:
        for i, j, value in rows:
            self.known[(earlier, int(i)), (later, int(j))] = float(value)

    def score(self, a: Sample, b: Sample) -> float:
        ka, kb = self.keys.get(a[0]), self.keys.get(b[0])
        value = self.known.get((ka, kb)) if ka is not None and kb is not None else None
        if value is None:
            self.computed += 1
            return change_score(a[1], b[1])
        self.reused += 1
        return value


def _out_start(timeline: Timeline, path: str) -> float:
    return next(s.out_start for s in timeline.segments if s.path == path)
