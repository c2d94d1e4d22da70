"""The one marker definition: every generator's audio carries it, the detector finds it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from synthetic.clips import TONE_AMPLITUDE, tone, write_tone_segment
from synthetic.decode import decode_audio, file_flash_onsets, file_marker_onsets
from synthetic.ffmpeg_session import ffmpeg_exe
from synthetic.lavfi import SyntheticSource, recorder_inputs, speech_source
from synthetic.markers import (
    BACKGROUND_MAX_AMPLITUDE,
    FLASH_MIN_LUMA,
    MARKER_AMPLITUDE,
    MARKER_SECONDS,
    MARKER_THRESHOLD,
    OnsetDetector,
    find_onsets,
    flash_onsets,
    marker_samples,
    marker_tone,
    with_marker,
)
from synthetic.voice import Voice

RATE = 48000
# Where the detector finds a clean marker inside it: the first sample above the threshold.
FIRST_LOUD = int(np.argmax(np.abs(marker_tone(RATE)) > MARKER_THRESHOLD))


def test_threshold_separates_marker_from_background() -> None:
    assert BACKGROUND_MAX_AMPLITUDE < MARKER_THRESHOLD < MARKER_AMPLITUDE / np.sqrt(2)
    assert TONE_AMPLITUDE <= BACKGROUND_MAX_AMPLITUDE
    assert marker_samples(RATE) == round(MARKER_SECONDS * RATE) == 1440
    assert 0 < FIRST_LOUD < 10


def test_detector_finds_a_few_ms_of_drift_to_the_sample() -> None:
    quiet = tone(4.0, RATE, marker=False)
    planned = [0, RATE, 2 * RATE, 3 * RATE]
    drift = [0, 48, 144, -96]  # 0, 1, 3, -2 ms
    signal = quiet.copy()
    for start, shift in zip(planned, drift, strict=True):
        at = start + shift if start else 0
        signal[at:] = with_marker(signal[at:], RATE)
    found = find_onsets(signal, RATE)
    assert [f - FIRST_LOUD for f in found] == [p + d for p, d in zip(planned, drift, strict=True)]


def test_block_by_block_equals_whole_and_stereo_takes_the_loudest_channel() -> None:
    signal = np.concatenate([tone(0.5, RATE) for _ in range(6)])
    whole = find_onsets(signal, RATE)
    detector = OnsetDetector(RATE)
    for i in range(0, len(signal), 1000):  # blocks that cut markers in two
        detector.feed(signal[i : i + 1000])
    assert detector.onsets == whole == [FIRST_LOUD + round(0.5 * RATE * i) for i in range(6)]
    stereo = np.stack([np.zeros_like(signal), signal])
    assert find_onsets(stereo, RATE) == whole


def test_voice_stays_under_the_background_level() -> None:
    voice = Voice(RATE, 10.0, seed=7)
    speech = voice.render(0.0, 10 * RATE, index=0)
    assert np.abs(speech).max() <= BACKGROUND_MAX_AMPLITUDE
    assert np.sqrt(np.mean(speech**2)) > 0.01  # it does speak
    assert find_onsets(speech, RATE) == []
    assert find_onsets(voice.segment(0.0, RATE, index=0), RATE) == [FIRST_LOUD]


def test_markers_survive_aac(tmp_path: Path) -> None:
    path = write_tone_segment(tmp_path / "t.m4a", 1.0, rate=RATE, channels=1)
    samples, rate = decode_audio(path)
    assert rate == RATE
    (onset,) = find_onsets(samples, rate)
    assert abs(onset - FIRST_LOUD) <= 16


def test_ffmpeg_speech_source_has_the_marker_and_stays_under_the_background(
    tmp_path: Path,
) -> None:
    out = tmp_path / "speech.m4a"
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", speech_source(RATE, 3.0), "-c:a", "aac", "-b:a", "64k", str(out)],
        check=True,
    )  # fmt: skip
    samples, _ = decode_audio(out)
    (onset,) = find_onsets(samples, RATE)
    assert abs(onset - FIRST_LOUD) <= 16
    assert file_marker_onsets(out, RATE) == [onset]
    after = samples[0, marker_samples(RATE) + 2048 :]
    assert np.abs(after).max() < MARKER_THRESHOLD * 0.6


@pytest.mark.parametrize("rate", [16000, 44100])
def test_marker_at_other_rates(rate: int) -> None:
    assert find_onsets(tone(0.5, rate), rate) == [
        int(np.argmax(np.abs(marker_tone(rate)) > MARKER_THRESHOLD))
    ]


def test_flash_onsets_are_the_first_bright_frames() -> None:
    times = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    dark, bright = FLASH_MIN_LUMA - 80, FLASH_MIN_LUMA + 20
    assert flash_onsets(times, [bright, bright, dark, dark, bright, dark]) == [0.0, 0.4]
    with pytest.raises(ValueError):
        flash_onsets(times, [dark])


def test_sync_period_must_be_whole_frames_and_samples() -> None:
    for period in (0.55, 0.1, 0.0):  # 8.25 frames at 15 fps; under 2 frames; none
        with pytest.raises(ValueError):
            recorder_inputs(SyntheticSource(fps=15, sync_period_s=period))
    with pytest.raises(ValueError):  # 44100 / 16 samples per frame is no whole number
        recorder_inputs(SyntheticSource(fps=16, sample_rate=44100, sync_period_s=1.0))
    video, audio = recorder_inputs(SyntheticSource(fps=15))
    assert "drawbox" not in video and audio is not None and "mod(n" not in audio


def test_recorder_sync_markers_flash_and_beep_together(tmp_path: Path) -> None:
    """Half a period into the run (rounded down to a frame), then every period: both tracks."""
    source = SyntheticSource(width=160, height=90, fps=15, sync_period_s=1.0)
    video, audio = recorder_inputs(source)
    assert audio is not None
    out = tmp_path / "sync.mkv"
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", video.removesuffix(",realtime"),
         "-f", "lavfi", "-i", audio.removesuffix(",arealtime"),
         "-t", "3.6", "-c:v", "ffv1", "-c:a", "pcm_s16le", str(out)],
        check=True,
    )  # fmt: skip
    first = 7 / 15  # 7 frames: half of the 15-frame period, rounded down
    times = [first + k for k in range(4)]
    assert file_flash_onsets(out) == pytest.approx(times, abs=1e-3)
    assert file_marker_onsets(out, RATE) == [round(t * RATE) + FIRST_LOUD for t in times]
