r"""Transcript pieces: where a session's audio is cut for transcription while it records, and
how the pieces' transcripts are stitched into one.

**Windows.** The output timeline's audio (samples at the plan's rate) is tiled by *cores* of
``piece`` samples, ``[k * piece, (k + 1) * piece)``; the last core ends at the track's end
and may be shorter. Piece ``k`` is transcribed over its *window*: its core widened by
``overlap`` samples on each side, clipped to ``[0, total]``::

      window k-1 ─────────────────────────┐
      │        core k-1        │  overlap │
                     │ overlap │        core k        │ overlap │
                     └──────────────── window k ──────────────────┘

While the session records, a piece is *ready* when it is not the track's last and its window
ends by the settled sample (``settled``: audio before it can no longer change), so its
window is the one the final plan will draw, whatever arrives later; its signature (the
inputs of the window, :mod:`workers.transcriptparts`) then matches too.

**Stitching.** Two consecutive pieces both transcribed the ``2 * overlap`` seconds around
their core boundary ``c``. The stitch cuts there at a *pause*: in ``[c - overlap + margin,
c + overlap - margin]`` (the right window's start and the left one's end, each ``margin``
inside: a word at a window's edge may be cut or misheard; just ``c`` when the left window is
clipped at the track's end), the longest stretch that no word of either piece covers (ties:
the one nearest ``c``), cut in its middle ``t``. The left piece gives every word whose
middle is before ``t``, the right piece every word whose middle is at or after ``t``; so
each word spoken in the overlap is taken once, from one transcript, with that transcript's
times. Where the overlap holds no pause at all (speech for ``2 * (overlap - margin)``
seconds without a break) the cut is at ``c`` and counted in ``cuts_in_speech``: a word
across it may then appear twice or not at all. A segment that straddles a cut keeps only
its side's words (its text rebuilt from them); the others are kept whole. Everything here
is pure and works on seconds on the output timeline (the pieces' transcripts already
shifted there).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from workers.enrich.documents import Transcript, TranscriptSegment, Word

__all__ = [
    "DEFAULT_OVERLAP_S",
    "DEFAULT_PIECE_S",
    "EDGE_MARGIN_S",
    "Stitched",
    "Window",
    "plan_windows",
    "shift",
    "stitch",
]

#: Seconds of audio per piece (its core): 60 s is two Whisper windows, so a piece costs what
#: the same minute costs in one whole-session run, and after the session ends at most the last
#: minute (and a half) is left to transcribe.
DEFAULT_PIECE_S: Final = 60.0
#: Seconds each piece reaches into its neighbours: the stitch needs a pause in there. Spoken
#: sentences rarely run 2 * (8 - 1) = 14 s without one; the cost is 2 * 8 / 60 = 27 % more
#: audio transcribed while recording, none after the end.
DEFAULT_OVERLAP_S: Final = 8.0
#: Seconds at each window's edge where a word may be cut off or misheard: no cut there.
EDGE_MARGIN_S: Final = 1.0


@dataclass(frozen=True)
class Window:
    """A piece's stretch of the output audio, in samples: its core and what is transcribed."""

    index: int
    core_start: int
    core_end: int
    start: int  # core_start - overlap, clipped at 0
    end: int  # core_end + overlap, clipped at the total
    last: bool  # the track's last piece


def plan_windows(
    total: int, piece: int, overlap: int, *, settled: int | None = None
) -> tuple[Window, ...]:
    """The pieces of a track of ``total`` samples (``piece``, ``overlap`` in samples); with
    ``settled`` only those ready while the session records (module docstring)."""
    if piece <= 0 or overlap < 0 or total < 0:
        raise ValueError(f"need piece > 0, overlap >= 0, total >= 0: {piece}, {overlap}, {total}")
    windows: list[Window] = []
    for index, core_start in enumerate(range(0, total, piece)):
        core_end = min(core_start + piece, total)
        last = core_end >= total
        if settled is not None and (last or core_end + overlap > settled):
            break
        windows.append(
            Window(
                index=index,
                core_start=core_start,
                core_end=core_end,
                start=max(0, core_start - overlap),
                end=min(total, core_end + overlap),
                last=last,
            )
        )
    return tuple(windows)


def shift(transcript: Transcript, seconds: float, *, decimals: int = 3) -> Transcript:
    """``transcript`` with every time moved by ``seconds`` (a piece's times on the output)."""

    def at(t: float) -> float:
        return round(t + seconds, decimals)

    return Transcript(
        language=transcript.language,
        duration=transcript.duration,
        model=transcript.model,
        segments=tuple(
            TranscriptSegment(
                at(s.start),
                at(s.end),
                s.text,
                tuple(Word(at(w.start), at(w.end), w.word, w.probability) for w in s.words),
            )
            for s in transcript.segments
        ),
    )


@dataclass(frozen=True)
class Stitched:
    transcript: Transcript
    cuts: tuple[float, ...]  # seconds where consecutive pieces were joined
    pauses: tuple[float, ...]  # length of the pause each cut was made in (0: inside speech)

    @property
    def cuts_in_speech(self) -> int:
        return sum(1 for p in self.pauses if p <= 0.0)


def _words(transcript: Transcript) -> list[Word]:
    return [w for s in transcript.segments for w in s.words]


def _cut(
    left: Transcript, right: Transcript, boundary: float, lo: float, hi: float
) -> tuple[float, float]:
    """Where to cut between two pieces around ``boundary``, within ``[lo, hi]``, and the
    length of the pause it is in (0 when it is inside speech)."""
    words = _words(left) + _words(right)
    if hi <= lo:  # no room (a window clipped at the track's end): at the boundary
        if any(w.start < boundary < w.end for w in words):
            return boundary, 0.0
        before = max((w.end for w in words if w.end <= boundary), default=boundary)
        after = min((w.start for w in words if w.start >= boundary), default=boundary)
        return boundary, max(after - before, 0.0)
    spans = sorted((max(w.start, lo), min(w.end, hi)) for w in words if w.end > lo and w.start < hi)
    best: tuple[float, float, float] | None = None  # (-length, distance to boundary, middle)
    cursor = lo
    for a, b in [*spans, (hi, hi)]:
        if a > cursor:
            middle = (cursor + a) / 2
            key = (-(a - cursor), abs(middle - boundary), middle)
            if best is None or key < best:
                best = key
        cursor = max(cursor, b)
    if best is None:
        return boundary, 0.0
    return best[2], -best[0]


def _between(transcript: Transcript, lo: float, hi: float) -> list[TranscriptSegment]:
    """The segments' words whose middle is in ``[lo, hi)``; a segment cut by a bound keeps
    only those words, its text rebuilt from them."""

    def inside(t: float) -> bool:
        return lo <= t < hi

    out: list[TranscriptSegment] = []
    for seg in transcript.segments:
        if not seg.words:
            if inside((seg.start + seg.end) / 2):
                out.append(seg)
            continue
        kept = tuple(w for w in seg.words if inside((w.start + w.end) / 2))
        if len(kept) == len(seg.words):
            out.append(seg)
        elif kept:
            start = max(seg.start, kept[0].start) if inside(seg.start) else kept[0].start
            end = min(seg.end, kept[-1].end) if seg.end < hi else kept[-1].end
            text = " ".join(w.word for w in kept)
            out.append(TranscriptSegment(start, max(end, start), text, kept))
    return out


def stitch(
    pieces: Sequence[tuple[Window, Transcript]],
    *,
    rate: int,
    duration: float,
    margin_s: float = EDGE_MARGIN_S,
) -> Stitched:
    """One transcript of the whole track from its pieces' transcripts (in window order,
    times on the output timeline; ``rate``: samples per second of the windows), cut at
    pauses in their overlaps (module docstring). ``duration``: the track's, in seconds."""
    bounds = [float("-inf")]
    pauses: list[float] = []
    for (left_w, left), (right_w, right) in zip(pieces, pieces[1:], strict=False):
        boundary = left_w.core_end / rate
        lo = min(boundary, right_w.start / rate + margin_s)
        hi = max(boundary, left_w.end / rate - margin_s)
        t, pause = _cut(left, right, boundary, lo, hi)
        bounds.append(t)
        pauses.append(pause)
    bounds.append(float("inf"))
    segments: list[TranscriptSegment] = []
    for k, (_, transcript) in enumerate(pieces):
        segments.extend(_between(transcript, bounds[k], bounds[k + 1]))
    languages = Counter(t.language for _, t in pieces if t.segments)
    language = languages.most_common(1)[0][0] if languages else (
        pieces[0][1].language if pieces else ""
    )
    model = pieces[0][1].model if pieces else ""
    return Stitched(
        transcript=Transcript(
            language=language, segments=tuple(segments), duration=round(duration, 3), model=model
        ),
        cuts=tuple(round(b, 3) for b in bounds[1:-1]),
        pauses=tuple(round(p, 3) for p in pauses),
    )
