"""A/V sync through the real recorder: every flash and its beep land together in the MP4.

The recorder records the synthetic source with sync markers (a white frame and the audio
onset marker at the same media time, half a period into each run and then every
``SYNC_PERIOD_S``) in one-second segments, so every segment holds a marker, and in two runs
(a pause between them); the workers' own stages then build the audio track
(``concat_audio``) and the playable MP4 (``merge``) from the recording's ``session.json``,
exactly as they would after shipping. Decoding the MP4 and pairing each flash with the
nearest audio onset measures the whole chain's audio-vs-video error at every segment.

Resolution of the measurement: audio onsets are sample-exact (1/48000 s, 0.02 ms) and the
detector fires ``ONSET_LATENCY_S`` (0.1 ms) into the marker (its threshold crossing); flash times
are the frames' presentation timestamps, exact in the MP4's time base. So a perfect chain
reads about 0 ms; before the fix every pair read +21.3 ms (the AAC encoder delay of 1024
samples, played as audio at the start of each run's first segment and shifting that run's
later segments in ffmpeg's segment list).
"""

from __future__ import annotations

import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from capture_agent.ffmpeg_cmd import (
    ENCODER_X264,
    audio_encoder_args,
    segment_muxer_args,
    video_encoder_args,
)
from capture_agent.record import Recorder, RecordingResult, RecordOptions
from capture_agent.runfiles import RunFiles
from shared.segments import SegmentKind
from shared.sessiondir import load_manifest
from shared.settings import Settings
from shared.storage import Storage, segment_key, sha256_file
from synthetic.decode import file_flash_onsets, file_marker_onsets
from synthetic.ffmpeg_session import ffmpeg_exe
from synthetic.lavfi import SyntheticSource, speech_source
from synthetic.markers import MARKER_THRESHOLD, marker_tone
from tests.capture_agent.recording.helpers import FakeAgent
from tests.support.waiting import wait_for
from workers.stages.audio import build_audio
from workers.stages.context import SegmentRef, SessionSnapshot, StageContext, build_timeline
from workers.stages.playable import build_playable

pytestmark = pytest.mark.integration

RATE_HZ = 48_000
FPS = 15
#: A marker pair every second of each run (the first 7/15 s in), one-second segments: every
#: segment holds one marker, so a segment placed at a wrong start shows.
SYNC_PERIOD_S = 1.0
SEGMENT_S = 1.0
#: Media recorded before the pause and after the resume (wall-clock seconds).
FIRST_RUN_S = 3.6
SECOND_RUN_S = 2.6
PAUSE_S = 1.0
#: Where the onset detector fires inside a marker: its first sample over the threshold.
ONSET_LATENCY_S = int(np.argmax(np.abs(marker_tone(RATE_HZ)) > MARKER_THRESHOLD)) / RATE_HZ
SAMPLE_S = 1 / RATE_HZ
#: Allowed |audio - video| per marker pair: well under the 21.3 ms of an unsignalled priming.
SYNC_TOLERANCE_S = 0.005
#: A flash and an onset further apart than this are not the same marker.
PAIRING_WINDOW_S = 0.25
#: Markers this close to a run's end may have been cut from one track only (the two segment
#: streams of a run stop a few frames apart).
END_SLACK_S = 0.3
#: Marker pairs expected at least: three in the first run (3+ s), two in the second (2+ s).
MIN_PAIRS = 5


def record(tmp_path: Path) -> tuple[RecordingResult, FakeAgent]:
    agent = FakeAgent()
    recorder = Recorder(
        RecordOptions(
            session_id="sync-1",
            name="sync markers",
            folder=tmp_path / "sync-1",
            source=SyntheticSource(width=320, height=180, fps=FPS, sync_period_s=SYNC_PERIOD_S),
            segment_seconds=SEGMENT_S,
            state_dir=tmp_path / "state",
        ),
        agent,
    )
    results: list[RecordingResult] = []
    thread = threading.Thread(target=lambda: results.append(recorder.run()), daemon=True)
    thread.start()
    wait_for(lambda: recorder.ffmpeg_pid is not None, 20, "the first run")
    time.sleep(FIRST_RUN_S)
    recorder.request("pause")
    wait_for(lambda: recorder.ffmpeg_pid is None, 30, "the pause")
    time.sleep(PAUSE_S)
    recorder.request("resume")
    wait_for(lambda: recorder.ffmpeg_pid is not None, 20, "the second run")
    time.sleep(SECOND_RUN_S)
    recorder.request("stop")
    thread.join(60)
    assert not thread.is_alive() and results, "the recorder did not finish"
    assert results[0].error is None, results[0].error
    return results[0], agent


def snapshot_of(result: RecordingResult, agent: FakeAgent, storage: Storage) -> SessionSnapshot:
    """What the workers read after the agent shipped the recording: its manifest, stored."""
    manifest = load_manifest(result.folder)
    refs = []
    for segment in manifest.segments:
        key = segment_key(manifest.id, segment.file)
        storage.put_file(result.folder / segment.file, key)
        refs.append(
            SegmentRef(
                kind=segment.kind.value,
                file=segment.file,
                storage_key=key,
                sha256=sha256_file(result.folder / segment.file),
                started_at=segment.started_at,
                duration=segment.duration,
            )
        )
    at = {c.name: c.kwargs["at"] for c in agent.calls if c.name in ("pause", "resume")}
    pause: tuple[datetime, datetime] = (at["pause"], at["resume"])
    return SessionSnapshot(
        id=manifest.id, started_at=manifest.started_at, segments=tuple(refs), pauses=(pause,)
    )


def pairs(
    flashes: list[float], onsets: list[float], run_ends: list[float]
) -> list[tuple[float, float]]:
    """(flash, onset) of every marker; a marker seen in one track only fails, unless it is
    at the very end of a run (output times ``run_ends``)."""

    def at_an_end(t: float) -> bool:
        return any(end - END_SLACK_S < t <= end for end in run_ends)

    matched = []
    for flash in flashes:
        near = [o for o in onsets if abs(o - flash) <= PAIRING_WINDOW_S]
        if near:
            matched.append((flash, min(near, key=lambda o: abs(o - flash))))
        else:
            assert at_an_end(flash), f"flash at {flash:.3f} s has no beep: {onsets}"
    for onset in onsets:
        if all(abs(onset - f) > PAIRING_WINDOW_S for f in flashes):
            assert at_an_end(onset), f"beep at {onset:.3f} s has no flash: {flashes}"
    return matched


def test_every_flash_and_its_beep_stay_together_through_recorder_and_workers(
    tmp_path: Path,
) -> None:
    result, agent = record(tmp_path)
    assert result.pauses == 1
    kinds = [s.spec.kind.value for s in result.segments]
    assert kinds.count("audio") >= 5 and kinds.count("video") >= 5  # two runs of 2+ s

    storage = Storage(tmp_path / "storage")
    settings = Settings(storage_root=storage.root, home=tmp_path / "home")
    context = StageContext(
        snapshot=snapshot_of(result, agent, storage),
        storage=storage,
        settings=settings,
        progress=lambda _fraction: None,
    )
    audio = build_audio(context)
    assert audio.output_key is not None
    context.outputs = {"concat_audio": audio.output_key}
    merged = build_playable(context)
    assert merged.output_key is not None
    mp4 = storage.path(merged.output_key)
    timeline = build_timeline(context.snapshot, storage, cut_pauses=settings.cut_pauses)
    assert len(timeline.cuts) == 1, timeline.cuts  # the pause
    run_ends = [timeline.to_output(start) for start, _ in timeline.cuts] + [timeline.duration]

    flashes = file_flash_onsets(mp4)
    onsets = [n / RATE_HZ - ONSET_LATENCY_S for n in file_marker_onsets(mp4, RATE_HZ)]
    matched = pairs(flashes, onsets, run_ends)
    offsets_ms = [round((onset - flash) * 1000, 2) for flash, onset in matched]
    print(f"audio - video per marker pair, ms: {offsets_ms}")  # shown with pytest -s
    assert len(matched) >= MIN_PAIRS, (flashes, onsets)
    assert all(abs(o) <= SYNC_TOLERANCE_S * 1000 for o in offsets_ms), f"{offsets_ms} ms"


#: How much later than the screen an avfoundation microphone may start (simulated), seconds.
MIC_LATE_S = 0.1
#: AAC encoder delay of ffmpeg's ``aac`` (samples), before the first real sample.
PRIMING_SAMPLES = 1024


def test_a_run_whose_microphone_starts_late_says_so_in_its_first_segment(tmp_path: Path) -> None:
    """avfoundation's one input can start its audio after its video: the run's first audio
    segment then starts where its first presented sample lies, not at the run's start."""
    graph = (
        f"testsrc2=size=160x90:rate={FPS}[out0];"
        f"{speech_source(RATE_HZ)},asetpts=PTS+{MIC_LATE_S}/TB[out1]"
    )
    limit = ["-t", "2.5"]
    argv = [
        ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", graph,
        "-map", "0:v:0", *video_encoder_args(ENCODER_X264, fps=FPS, segment_seconds=SEGMENT_S),
        *limit, *segment_muxer_args(SegmentKind.VIDEO, segment_seconds=SEGMENT_S,
                                    start_number=0, run=1),
        "-map", "0:a:0", *audio_encoder_args(), *limit,
        *segment_muxer_args(SegmentKind.AUDIO, segment_seconds=SEGMENT_S, start_number=0, run=1),
    ]  # fmt: skip
    subprocess.run(argv, cwd=tmp_path, check=True)
    anchor = datetime(2026, 1, 1, tzinfo=UTC)
    files = RunFiles(
        tmp_path,
        number=1,
        kinds=[SegmentKind.VIDEO, SegmentKind.AUDIO],
        start_numbers=dict.fromkeys(SegmentKind, 0),
        anchor=anchor,
    )
    first = {s.spec.kind: s for s in reversed(files.collect(final=True))}
    video, audio = first[SegmentKind.VIDEO].spec, first[SegmentKind.AUDIO].spec
    assert video.started_at == anchor
    assert audio.started_at is not None
    # The file presents the priming (unhidden: its timestamps are not before 0) and then the
    # microphone's first sample, which carries the onset marker, at MIC_LATE_S.
    starts = (audio.started_at - anchor).total_seconds()
    assert starts == pytest.approx(MIC_LATE_S - PRIMING_SAMPLES / RATE_HZ, abs=1e-6)
    (onset,) = file_marker_onsets(tmp_path / audio.file, RATE_HZ)
    placed = starts + onset / RATE_HZ - ONSET_LATENCY_S
    assert placed == pytest.approx(MIC_LATE_S, abs=SAMPLE_S)
