"""Transcript pieces' rules (``workers.enrich.pieces``), pure: the windows tile the track and
those ready while recording are the final plan's; the stitch takes every word once, with its
times, wherever the pieces' overlaps hold a pause."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.settings import Settings
from workers.enrich.documents import Transcript, TranscriptSegment, Word
from workers.enrich.pieces import (
    DEFAULT_OVERLAP_S,
    DEFAULT_PIECE_S,
    EDGE_MARGIN_S,
    plan_windows,
    stitch,
)
from workers.enrich.whispermodel import SpeechModel
from workers.media.aacplan import AudioPlan, Placement
from workers.transcriptparts import Recognizer, piece_signature

RATE = 100  # samples per second: windows in centiseconds keep the examples readable


@given(
    total=st.integers(0, 50_000),
    piece=st.integers(500, 9_000),
    overlap=st.integers(0, 3_000),
    settled=st.integers(0, 60_000),
)
def test_windows_tile_the_track_and_the_ready_ones_are_the_final_ones(
    total: int, piece: int, overlap: int, settled: int
) -> None:
    final = plan_windows(total, piece, overlap)
    edges = [0, *(w.core_end for w in final)]
    assert [w.core_start for w in final] == edges[:-1] and edges[-1] == total
    for w in final:
        assert w.start == max(0, w.core_start - overlap)
        assert w.end == min(total, w.core_end + overlap)
        assert w.last == (w is final[-1])
    ready = plan_windows(total, piece, overlap, settled=min(settled, total))
    assert ready == final[: len(ready)]  # a piece made while recording is never replanned
    assert all(not w.last and w.end <= settled for w in ready)


def _piece(words: list[Word], lo: float, hi: float, jitter: float) -> Transcript:
    """What a piece transcribed over [lo, hi]: the words wholly inside, its times moved a
    little (two runs never place a word identically), in sentences of up to 5 words."""
    heard = [Word(w.start + jitter, w.end + jitter, w.word) for w in words
             if lo <= w.start and w.end <= hi]  # fmt: skip
    groups = [heard[i : i + 5] for i in range(0, len(heard), 5)]
    segments = tuple(
        TranscriptSegment(g[0].start, g[-1].end, " ".join(w.word for w in g), tuple(g))
        for g in groups
    )
    return Transcript(language="en", segments=segments)


@st.composite
def speech(draw: st.DrawFn) -> list[Word]:
    """Words with gaps; at least one 0.6 s pause in every 6 s of speech."""
    words: list[Word] = []
    t = draw(st.floats(0.0, 3.0))
    since_pause = 0.0
    for n in range(draw(st.integers(0, 120))):
        length = draw(st.floats(0.1, 0.8))
        gap = draw(st.floats(0.02, 0.3))
        if since_pause + length + gap > 5.0:
            gap, since_pause = 0.6, 0.0
        words.append(Word(round(t, 3), round(t + length, 3), f"w{n}"))
        t += length + gap
        since_pause += length + gap
    return words


@settings(max_examples=200, deadline=None)
@given(
    words=speech(),
    piece_s=st.integers(10, 30),
    overlap_s=st.integers(4, 8),
    jitter=st.floats(-0.05, 0.05),
)
def test_every_word_is_stitched_once_with_its_times(
    words: list[Word], piece_s: int, overlap_s: int, jitter: float
) -> None:
    total = round(((words[-1].end if words else 0.0) + 1.0) * RATE)
    windows = plan_windows(total, piece_s * RATE, overlap_s * RATE)
    pieces = [
        (w, _piece(words, w.start / RATE, w.end / RATE, jitter if w.index % 2 else 0.0))
        for w in windows
    ]
    stitched = stitch(pieces, rate=RATE, duration=total / RATE)
    got = [w for s in stitched.transcript.segments for w in s.words]
    assert [w.word for w in got] == [w.word for w in words]
    for heard, said in zip(got, words, strict=True):
        assert abs(heard.start - said.start) <= 0.051 and abs(heard.end - said.end) <= 0.051
    assert stitched.cuts_in_speech == 0
    for segment in stitched.transcript.segments:  # a cut segment's text is its words
        assert segment.text == " ".join(w.word for w in segment.words)


def test_the_cut_is_in_a_pause_of_the_overlap_away_from_its_edges() -> None:
    """Speech throughout the overlap but for a long pause at the right piece's first second
    (where its words may be cut off) and a short one near the boundary: the cut takes the
    short one."""
    said = [Word(0.0, 8.0, "a"), Word(8.9, 10.6, "b"), Word(10.8, 16.0, "c")]
    windows = plan_windows(16 * RATE, 10 * RATE, 2 * RATE)
    assert windows[1].start == 8 * RATE and EDGE_MARGIN_S == 1.0
    left = Transcript("en", (TranscriptSegment(0.0, 10.6, "a b", tuple(said[:2])),))
    right = Transcript("en", (TranscriptSegment(8.9, 16.0, "b c", tuple(said[1:])),))
    stitched = stitch(list(zip(windows, (left, right), strict=True)), rate=RATE, duration=16.0)
    assert stitched.cuts == (10.7,) and stitched.pauses == (0.2,)
    assert [w.word for s in stitched.transcript.segments for w in s.words] == ["a", "b", "c"]
    assert stitched.transcript.text == "a b c"


def test_speech_without_a_pause_is_cut_at_the_boundary_and_counted() -> None:
    said = [Word(0.0, 9.5, "a"), Word(9.5, 16.0, "b")]
    windows = plan_windows(16 * RATE, 10 * RATE, 2 * RATE)
    both = Transcript("en", (TranscriptSegment(0.0, 16.0, "a b", tuple(said)),))
    stitched = stitch([(windows[0], both), (windows[1], both)], rate=RATE, duration=16.0)
    assert stitched.cuts == (10.0,) and stitched.cuts_in_speech == 1
    assert [w.word for s in stitched.transcript.segments for w in s.words] == ["a", "b"]


def test_the_settings_default_to_the_documented_piece_and_overlap() -> None:
    defaults = Settings()
    assert (defaults.transcript_piece_s, defaults.transcript_overlap_s) == (
        DEFAULT_PIECE_S, DEFAULT_OVERLAP_S,
    )  # fmt: skip


def _plan(shas: list[str], seconds: int) -> AudioPlan:
    """Segments of ``seconds`` each, back to back, at RATE."""
    size = seconds * RATE
    placements = tuple(
        Placement(path=f"a{k}.m4a", identity=sha, source_start=0, out_start=k * size, count=size)
        for k, sha in enumerate(shas)
    )
    return AudioPlan(rate=RATE, total=len(shas) * size, placements=placements)


def test_a_piece_is_made_again_only_when_audio_in_its_window_changed() -> None:
    """Signatures: audio arriving later leaves the ready pieces' unchanged; a segment stored
    again with other content changes those of the windows it reaches into, no other."""
    model = SpeechModel(name="tiny.en", path=Path("/m"), multilingual=False, cpu_threads=1,
                        whisper=None)  # fmt: skip
    recognizer = Recognizer(model=model, language="en", beam_size=5)
    piece, overlap = 20 * RATE, 5 * RATE

    def signatures(plan: AudioPlan, settled: int | None = None) -> list[str]:
        windows = plan_windows(plan.total, piece, overlap, settled=settled)
        return [piece_signature(plan, w, recognizer) for w in windows]

    recording = _plan(["s0", "s1", "s2", "s3", "s4"], 10)  # 50 s stored so far
    ready = signatures(recording, settled=recording.total)
    assert len(ready) == 2  # [0, 25] and [15, 45] s have settled; [35, 50] is the last yet
    final = signatures(_plan(["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7"], 10))
    assert final[: len(ready)] == ready
    redone = signatures(_plan(["s0", "s1", "s2", "S3", "s4", "s5", "s6", "s7"], 10))
    # s3 is [30, 40) s: windows [15, 45] and [35, 65] hear it, [0, 25] does not
    assert [a == b for a, b in zip(final, redone, strict=True)] == [True, False, False, True]
    other = Recognizer(model=model, language="en", beam_size=1)
    assert piece_signature(_plan(["s0"], 10), plan_windows(10 * RATE, piece, overlap)[0],
                           other) != signatures(_plan(["s0"], 10))[0]  # fmt: skip
