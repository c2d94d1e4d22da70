"""The espeak-ng narration: lines at their times, under the marker's level, and its fixture."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from synthetic.lecture import DEMO_LECTURE, Lecture, Line
from synthetic.markers import BACKGROUND_MAX_AMPLITUDE, MARKER_THRESHOLD, find_onsets, marker_tone
from synthetic.plan import SyntheticSpec, plan_segments
from synthetic.speech import (
    DEMO_FIXTURE,
    MIN_LINE_GAP_SECONDS,
    NOISE_FLOOR,
    SPEECH_PEAK,
    Narration,
    SpeechUnavailable,
    decode_mono,
    demo_narration,
    line_spans,
    parse_wav,
    session_track,
    speak,
    write_track,
)

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="needs espeak-ng (apt-get install espeak-ng)"
)

RATE = 16_000
#: The fixture is lossy (Opus): its spans may differ from espeak-ng's by a few ms.
FIXTURE_SPAN_TOLERANCE_S = 0.02
#: The fixture stays small enough to commit.
FIXTURE_MAX_BYTES = 120_000


@pytest.fixture(scope="module")
def narration() -> Narration:
    return Narration(DEMO_LECTURE, RATE)


def test_lines_start_at_their_times_and_end_before_the_next(narration: Narration) -> None:
    spans = narration.spans
    assert [text for _, _, text in spans] == [line.text for line in DEMO_LECTURE.narration]
    nexts = [line.start for line in DEMO_LECTURE.narration[1:]] + [DEMO_LECTURE.duration]
    for (start, end, text), line, next_start in zip(
        spans, DEMO_LECTURE.narration, nexts, strict=True
    ):
        assert start == pytest.approx(line.start, abs=0.002), text
        assert 1.0 < end - start < 5.0, text  # a sentence, not a click or a run-on
        assert end <= next_start - MIN_LINE_GAP_SECONDS, text
    assert spans == line_spans(DEMO_LECTURE, RATE)


def test_pauses_hold_only_the_noise_floor_never_digital_silence(narration: Narration) -> None:
    pause = narration.render(30.0, 2 * RATE, index=7)  # the microphone gap, nothing spoken
    assert 0.5 * NOISE_FLOOR < float(np.std(pause)) < 2 * NOISE_FLOOR
    assert np.count_nonzero(pause) > 0.99 * pause.size
    spoken = narration.render(1.0, 2 * RATE, index=7)
    assert float(np.max(np.abs(spoken))) > 0.3 * SPEECH_PEAK


def test_render_is_deterministic_and_seeded_per_piece(narration: Narration) -> None:
    a = narration.render(5.5, 3000, index=1)
    assert a.dtype == np.float32 and a.shape == (3000,)
    assert np.array_equal(a, narration.render(5.5, 3000, index=1))
    assert not np.array_equal(a, narration.render(5.5, 3000, index=2))
    # Before 0 and past the end only noise.
    assert float(np.max(np.abs(narration.render(-1.0, RATE, 0)))) < 10 * NOISE_FLOOR
    assert float(np.max(np.abs(narration.render(59.5, RATE, 0)))) < 10 * NOISE_FLOOR


@pytest.mark.parametrize("rate", [16_000, 48_000])
def test_level_stays_under_the_marker_background_bound(rate: int) -> None:
    narration = Narration(DEMO_LECTURE, rate, seed=3)
    whole = narration.render(0.0, round(DEMO_LECTURE.duration * rate), index=0)
    assert float(np.max(np.abs(whole))) <= BACKGROUND_MAX_AMPLITUDE
    assert float(np.max(np.abs(whole))) == pytest.approx(SPEECH_PEAK, abs=0.02)
    # With a marker on every segment the detector finds exactly the segment starts.
    spec = SyntheticSpec(video=False, sample_rate=rate)
    track = session_track(narration, spec)
    first_loud = int(np.argmax(np.abs(marker_tone(rate)) > MARKER_THRESHOLD))
    starts = [round(p.start * rate) + first_loud for p in plan_segments(spec) if p.kind == "audio"]
    assert find_onsets(track, rate) == starts


def test_a_line_that_runs_into_the_next_is_refused() -> None:
    crowded = Lecture(
        duration=10.0,
        slides=DEMO_LECTURE.slides[:1],
        narration=(Line(1.0, "Every alembic revision is reviewed by hand."), Line(2.0, "Next.")),
    )
    with pytest.raises(ValueError, match=r"line at 1 s .* before 2 s"):
        Narration(crowded, RATE)


def test_speak_resamples_to_the_rate_asked() -> None:
    low, high = speak("Celery workers.", 16_000), speak("Celery workers.", 48_000)
    assert low.dtype == high.dtype == np.float32
    assert high.size == pytest.approx(3 * low.size, rel=0.01)
    assert 0.5 < low.size / 16_000 < 3.0
    with pytest.raises(ValueError):
        speak("  ", RATE)


def test_missing_espeak_names_the_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SpeechUnavailable, match="apt-get install espeak-ng"):
        speak("A sentence nobody has asked for before.", RATE)


def test_parse_wav_rejects_other_files() -> None:
    with pytest.raises(ValueError, match="not a WAV"):
        parse_wav(b"OggS" + bytes(40))


def test_fixture_is_small_decodes_and_speaks_the_demo_lines(narration: Narration) -> None:
    assert DEMO_FIXTURE.stat().st_size < FIXTURE_MAX_BYTES
    _, tags = decode_mono(DEMO_FIXTURE, RATE)
    assert "alembic" in tags["sessionpipe_narration"]
    for rate in (RATE, 48_000):
        decoded = demo_narration(rate)
        whole = decoded.render(0.0, round(DEMO_LECTURE.duration * rate), index=0)
        assert float(np.max(np.abs(whole))) <= BACKGROUND_MAX_AMPLITUDE
        for got, want in zip(decoded.spans, narration.spans, strict=True):
            assert got[2] == want[2]
            assert got[0] == pytest.approx(want[0], abs=FIXTURE_SPAN_TOLERANCE_S), want[2]
            assert got[1] == pytest.approx(want[1], abs=FIXTURE_SPAN_TOLERANCE_S), want[2]


def test_a_fixture_of_other_lines_is_refused() -> None:
    other = Lecture(duration=60.0, slides=DEMO_LECTURE.slides, narration=DEMO_LECTURE.narration[:2])
    with pytest.raises(ValueError, match="--write-fixture"):
        Narration.from_fixture(DEMO_FIXTURE, lecture=other)


def test_write_aac_round_trips_the_track(tmp_path: Path, narration: Narration) -> None:
    mono = narration.render(0.0, 3 * RATE, index=0)
    path = write_track(tmp_path / "a.m4a", mono, RATE)
    decoded, _ = decode_mono(path, RATE)
    assert abs(decoded.size - mono.size) < 2048  # AAC priming and padding, at most 2 frames
