r"""Transcript pieces: the transcript made while the session records, a minute at a time.

Transcribing a session after it ends takes about 1 s per 25 s of speech on 2 CPUs (tiny.en),
so the wait after the end grew with the session. Instead, each stored audio segment of a
session still recording asks for a *piece pass* (``TASK_TRANSCRIPT_PIECES``, enrich queue,
one priority step after its session's stages, like compressed parts): every transcript piece
whose window has settled (:mod:`workers.enrich.pieces`) and is not done yet is transcribed and
kept as a part (``workers.parts``, kind ``"transcript"``, ``segment_file`` the piece's name,
its transcript in the part's result). After ``session.ended`` the ``transcript`` stage plans
the same pieces over the finished timeline, uses every piece whose signature is unchanged,
transcribes the rest (the last one, usually) and stitches: at most one piece of work plus a
stitch of milliseconds, whatever the session's length.

Rules:

- A piece's audio is the output timeline's (pauses cut, holes silent) rendered straight from
  the stored segments (``render_range`` of the audio plan, mono, resampled to Whisper's
  16 kHz as faster-whisper resamples a file): the same samples the finished ``audio.m4a``
  holds, before AAC coding. Times are shifted onto the output timeline.
- Its *signature* (the part's ``source_sha256``) is the sha256 of what its words depend on:
  the window, the placements of segment audio inside it (segment sha256, offsets, counts, as
  the AAC chunk signatures), the model and the decoding settings. A piece is used only with
  the signature the final plan computes: a late segment or a pause that changes a window's
  audio makes that piece again; pieces elsewhere stay valid.
- Claims, leases and take-over are the parts' (``workers.parts.collect``). A pass does
  nothing once the session's transcript stage has started (it has every piece then), and
  leaves a piece another worker holds to it; the stage waits for a piece another worker is
  transcribing (its claim live) and makes the unclaimed ones.
- The stage falls back to transcribing ``audio.m4a`` whole, saying why in its result
  (``pieces_fallback``), when pieces are turned off, when no piece was made while recording
  (a session shipped at once: one run over the file is cheaper than overlapping pieces), or
  when a piece cannot be made (its reason).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import av
import numpy as np

from shared import models
from shared.db import session_scope
from shared.options import ResolvedOptions, SessionOptions, resolve
from shared.settings import Settings
from shared.storage import Storage
from workers import parts
from workers.enrich.documents import EnrichError, Transcript
from workers.enrich.pieces import Stitched, Window, plan_windows, shift, stitch
from workers.enrich.transcribe import WHISPER_SAMPLE_RATE, transcribe_samples
from workers.enrich.whispermodel import SpeechModel
from workers.media import Cancelled, MediaError
from workers.media.aacchunk import render_range
from workers.media.aacplan import AudioPlan, plan_audio, settled_sample
from workers.stages.audio import AUDIO_ONLY, segment_identities
from workers.stages.context import SessionSnapshot, build_timeline

log = logging.getLogger(__name__)

KIND_TRANSCRIPT: Final = "transcript"
STAGE: Final = "transcript"
#: Bump when what a piece's words depend on changes beyond its signature's fields.
PIECE_FORMAT_VERSION: Final = 1
#: Samples per block fed to the resampler (a second at 48 kHz).
RESAMPLE_BLOCK: Final = 48_000
#: Whisper's input is mono.
PIECE_LAYOUT: Final = "mono"
#: Int16 full scale: faster-whisper's decoder turns its s16 samples into floats by this.
S16_SCALE: Final = 32768.0


class PieceFailed(EnrichError):
    """A piece could not be made (bad input); the reason names it."""


@dataclass(frozen=True)
class Recognizer:
    """The model and decoding settings a piece's words depend on, besides its audio."""

    model: SpeechModel
    language: str | None
    beam_size: int
    model_sha256: str | None = None

    def identity(self) -> list[Any]:
        return [self.model.name, self.model_sha256, self.language, self.beam_size, True, False]


@dataclass(frozen=True)
class PiecePlan:
    """The pieces of a session's audio as planned now, with their signatures."""

    audio: AudioPlan
    windows: tuple[Window, ...]
    signatures: tuple[str, ...]

    @property
    def duration(self) -> float:
        return self.audio.total / self.audio.rate


def piece_name(window: Window) -> str:
    """The piece's row name (``parts.segment_file``)."""
    return f"transcript-{window.index:06d}"


def piece_signature(audio: AudioPlan, window: Window, recognizer: Recognizer) -> str:
    """sha256 of everything the piece's words depend on (module docstring)."""
    doc = {
        "format": PIECE_FORMAT_VERSION,
        "rate": audio.rate,
        "window": [window.start, window.end, window.core_start, window.core_end],
        "sources": [
            [p.identity, p.preroll_identity, p.source_start, p.out_start, p.count]
            for p in audio.within(window.start, window.end)
        ],
        "recognizer": recognizer.identity(),
    }
    blob = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def plan_pieces(
    snapshot: SessionSnapshot,
    storage: Storage,
    settings: Settings,
    recognizer: Recognizer,
    *,
    recording: bool,
    probed: dict[str, float] | None = None,
) -> PiecePlan:
    """The session's pieces: all of them, or (``recording``) those ready now."""
    timeline = build_timeline(
        snapshot, storage, cut_pauses=settings.cut_pauses, needed=AUDIO_ONLY, probed=probed
    )
    rate = settings.audio_sample_rate
    audio = plan_audio(timeline, rate, segment_identities(snapshot, storage))
    if not timeline.has_audio:
        return PiecePlan(audio, (), ())
    windows = plan_windows(
        audio.total,
        round(settings.transcript_piece_s * rate),
        round(settings.transcript_overlap_s * rate),
        settled=settled_sample(timeline, rate) if recording else None,
    )
    signatures = tuple(piece_signature(audio, w, recognizer) for w in windows)
    return PiecePlan(audio, windows, signatures)


def window_samples(audio: AudioPlan, window: Window) -> np.ndarray:
    """The window's output audio as Whisper takes it: mono float32 at 16 kHz, resampled as
    faster-whisper resamples a file it decodes (to s16, then scaled)."""
    pcm = render_range(audio, window.start, window.end, PIECE_LAYOUT)
    resampler = av.AudioResampler(format="s16", layout=PIECE_LAYOUT, rate=WHISPER_SAMPLE_RATE)
    out: list[np.ndarray] = []
    for offset in range(0, pcm.shape[1], RESAMPLE_BLOCK):
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm[:, offset : offset + RESAMPLE_BLOCK]),
            format="fltp",
            layout=PIECE_LAYOUT,
        )
        frame.sample_rate = audio.rate
        out.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
    out.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    if not out:
        return np.zeros(0, dtype=np.float32)
    return (np.concatenate(out).astype(np.float32) / S16_SCALE).astype(np.float32)


def _usable(part: parts.PartState) -> Transcript | None:
    """The transcript of a piece made for its wanted signature."""
    document = (part.result or {}).get("transcript")
    return Transcript.from_json(document) if isinstance(document, dict) else None


def make_piece(
    settings: Settings,
    plan: PiecePlan,
    k: int,
    part_id: int,
    owner: str,
    recognizer: Recognizer,
    *,
    progress: Callable[[float], None] | None = None,
) -> Transcript:
    """Transcribe a claimed piece (``owner`` holds it) and record it; its transcript (output
    timeline). PieceFailed on bad input (the part failed with the reason); Cancelled when the
    claim was lost; any other error releases the piece and propagates."""
    window = plan.windows[k]
    began = time.monotonic()
    with parts.making(settings, part_id, owner, name=piece_name(window),
                      bad_input=(MediaError, EnrichError),
                      failure=lambda reason, _: PieceFailed(reason),
                      progress=progress) as maker:  # fmt: skip
        samples = window_samples(plan.audio, window)
        maker.report(0.0)
        heard = transcribe_samples(
            samples, model=recognizer.model, language=recognizer.language,
            beam_size=recognizer.beam_size, progress=maker.report, name=piece_name(window),
        )  # fmt: skip
        transcript = shift(heard, window.start / plan.audio.rate)
        maker.finish(None, {
            "window": [window.start, window.end, window.core_start, window.core_end],
            "rate": plan.audio.rate,
            "seconds": round(time.monotonic() - began, 3),
            "transcript": transcript.to_json(),
        })  # fmt: skip
    return transcript


def _wanted(plan: PiecePlan) -> list[parts.Wanted]:
    return [
        parts.Wanted(piece_name(w), signature)
        for w, signature in zip(plan.windows, plan.signatures, strict=True)
    ]


def _collect(
    settings: Settings,
    session_id: str,
    plan: PiecePlan,
    recognizer: Recognizer,
    *,
    owner: str,
    wait: bool,
    progress: Callable[[float], None] = lambda _: None,
    sleep: Callable[[float], None] = time.sleep,
) -> parts.Collected:
    """The pieces of ``plan`` (``parts.collect``): made ones used, free ones transcribed."""
    count = len(plan.windows)

    def make(k: int, part_id: int) -> Transcript:
        def report(fraction: float) -> None:
            progress((k + fraction) / count)

        return make_piece(settings, plan, k, part_id, owner, recognizer, progress=report)

    return parts.collect(
        settings, session_id, KIND_TRANSCRIPT, _wanted(plan), owner=owner, usable=_usable,
        make=make, wait=wait, heartbeat=progress, sleep=sleep,
    )  # fmt: skip


# -- while recording --------------------------------------------------------------------------
def _resolved(settings: Settings, options: SessionOptions) -> ResolvedOptions:
    return resolve(
        options,
        enrich=settings.enrich_stages,
        language=settings.language,
        llm_configured=settings.llm_provider != "none",
    )


def wanted(settings: Settings, options: SessionOptions) -> bool:
    """Whether a session with ``options`` gets transcript pieces while it records."""
    return settings.transcript_pieces and _resolved(settings, options).runs(STAGE)


def load_recognizer(settings: Settings, options: ResolvedOptions) -> Recognizer:
    """The stage's model and decoding settings (EnrichUnavailable without faster-whisper)."""
    from workers.enrich.whispermodel import load_model

    model = load_model(
        settings.whisper_model_dir,
        sha256=settings.whisper_model_sha256,
        cpu_threads=settings.whisper_threads,
    )
    return Recognizer(
        model=model,
        language=options.language,
        beam_size=settings.whisper_beam_size,
        model_sha256=settings.whisper_model_sha256,
    )


def transcribe_while_recording(settings: Settings, session_id: str, *, owner: str) -> str:
    """What a piece pass does: transcribe every ready piece nobody has made or holds, while
    the session's transcript stage has not started. A short outcome for the log."""
    from workers.enrich.documents import EnrichUnavailable
    from workers.snapshot import load_snapshot, remember_probes  # it imports the stages

    with session_scope(settings.database_url) as db:
        session = db.get(models.Session, session_id)
        if session is None:
            return f"skipped: unknown session {session_id!r}"
        if session.status == models.SessionStatus.FAILED.value:
            return "skipped: the session failed"
        if parts.stage_moved_on(db, session_id, STAGE) is not None:
            return "skipped: the transcript stage has started"
        snapshot = load_snapshot(db, session)
    options = _resolved(settings, snapshot.options)
    if not (settings.transcript_pieces and options.runs(STAGE)):
        return "skipped: no transcript pieces for this session"
    try:
        recognizer = load_recognizer(settings, options)
    except EnrichUnavailable as exc:
        return f"skipped: {exc}"
    storage = Storage(settings.storage)
    probed: dict[str, float] = {}
    plan = plan_pieces(snapshot, storage, settings, recognizer, recording=True, probed=probed)
    remember_probes(settings.database_url, session_id, probed)
    if not plan.windows:
        return "no piece ready"
    try:
        got = _collect(settings, session_id, plan, recognizer, owner=owner, wait=False)
    except Cancelled as exc:
        return f"stopped: {exc}"
    except PieceFailed as exc:  # the stage reports it
        return f"failed: {exc}"
    for reason in (got.failed or {}).values():
        log.warning("transcript piece of %s failed: %s", session_id, reason)
    return f"made {got.made} piece(s)"


# -- at the end -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Assembled:
    stitched: Stitched
    pieces: int
    reused: int
    made: int

    def summary(self) -> dict[str, Any]:
        return {
            "total": self.pieces,
            "reused": self.reused,
            "transcribed": self.made,
            "cuts": list(self.stitched.cuts),
            "cuts_in_speech": self.stitched.cuts_in_speech,
        }


def assemble(
    settings: Settings,
    storage: Storage,
    snapshot: SessionSnapshot,
    recognizer: Recognizer,
    *,
    owner: str,
    probed: dict[str, float] | None = None,
    progress: Callable[[float], None] = lambda _: None,
    sleep: Callable[[float], None] = time.sleep,
) -> Assembled | str:
    """The stage's way to the transcript from pieces: the stitched pieces, or why the
    pieces path does not apply (the stage then transcribes ``audio.m4a`` whole).

    Uses the pieces made with the final plan's signatures, transcribes those nobody holds
    and waits for those another worker transcribes. PieceFailed when a piece fails.
    """
    if not settings.transcript_pieces:
        return "transcript pieces are turned off"
    plan = plan_pieces(snapshot, storage, settings, recognizer, recording=False, probed=probed)
    if not plan.windows:
        return "the session has no audio to cut into pieces"
    states = [
        parts.state(settings.database_url, snapshot.id, w.name, kind=KIND_TRANSCRIPT)
        for w in _wanted(plan)
    ]
    if not any(
        s is not None and (s.live or (s.status == parts.SUCCEEDED and s.source_sha256 == sig))
        for s, sig in zip(states, plan.signatures, strict=True)
    ):
        return "no piece was transcribed while the session recorded"
    try:
        collected = _collect(settings, snapshot.id, plan, recognizer, owner=owner, wait=True,
                             progress=progress, sleep=sleep)  # fmt: skip
    except parts.PartFailed as exc:
        raise PieceFailed(str(exc)) from exc
    got: dict[int, Transcript] = collected.values
    made = collected.made
    stitched = stitch(
        [(w, got[k]) for k, w in enumerate(plan.windows)],
        rate=plan.audio.rate,
        duration=plan.duration,
    )
    return Assembled(stitched, len(plan.windows), len(plan.windows) - made, made)
