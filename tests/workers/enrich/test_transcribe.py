"""The transcript engine on real speech: espeak-ng's lecture through faster-whisper tiny.en.

The lecture is spoken at known times and written like the pipeline's audio track (48 kHz
stereo AAC, a marker at the start of every microphone segment, digital silence in the
microphone gap), then transcribed with the defaults. Measured on this test's audio (seed 11,
beam 5): word recall 0.917 (55 of 60 words: tiny.en hears "alembic", "review", "reviewed",
"backoff" and "jumps" as other words), a word's middle at most 0.22 s outside its line's
spoken extent, its start at most 0.48 s before it and its end at most 0.84 s after it. Over
4 other noise seeds and both beam sizes: 0.25 s, 0.83 s and 1.04 s (Whisper lets a line's
first and last word absorb the silence next to them), hence the tolerances below.
"""

from __future__ import annotations

import re
import shutil
import socket
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import av
import pytest

from synthetic.lecture import DEMO_LECTURE, Lecture
from synthetic.plan import SyntheticSpec
from synthetic.speech import LineSpan, Narration, session_track, write_track
from workers.enrich.documents import EnrichError, EnrichUnavailable, Transcript
from workers.enrich.transcribe import transcribe
from workers.enrich.webvtt import to_webvtt
from workers.enrich.whispermodel import (
    DEFAULT_MODEL_NAME,
    DEFAULT_MODEL_SHA256,
    MODEL_FILE,
    SpeechModel,
    check_model_dir,
    clear_model_cache,
    default_model_dir,
    load_model,
)

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="needs espeak-ng (apt-get install espeak-ng)"
)

RATE = 48_000  # the pipeline's audio track
SEED = 11
#: Share of the narration's words the transcript must contain (measured 0.917: one word of
#: margin; the same audio and model give the same words run after run).
MIN_RECALL = 0.9
#: How far outside its line's spoken extent a word's middle may lie (measured at most 0.25 s
#: over 4 noise seeds and both beam sizes; 0.40 s on the Opus fixture).
MIDDLE_TOLERANCE_S = 0.5
#: How far a word's start may precede, or its end follow, its line (measured at most 1.04 s).
EDGE_TOLERANCE_S = 1.25

_WORD = re.compile(r"[a-z0-9']+")


def words_of(text: str) -> list[str]:
    """Lower case, punctuation dropped ("back-off" is "backoff")."""
    return _WORD.findall(text.lower().replace("-", ""))


def recall(transcript: Transcript, spans: list[LineSpan]) -> float:
    said = Counter(w for _, _, text in spans for w in words_of(text))
    heard = Counter(w for seg in transcript.segments for w in words_of(seg.text))
    return sum((said & heard).values()) / sum(said.values())


@pytest.fixture(scope="module")
def model() -> SpeechModel:
    return load_model()


@pytest.fixture(scope="module")
def lecture_audio(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[LineSpan]]:
    narration = Narration(DEMO_LECTURE, RATE, seed=SEED)
    track = session_track(narration, SyntheticSpec(video=False, sample_rate=RATE))
    path = write_track(tmp_path_factory.mktemp("speech") / "audio.m4a", track, RATE)
    return path, narration.spans


#: Seconds of the lecture the checks that need speech but not the whole lecture transcribe
#: (the concurrency and no-network checks): a third of it, cut in a pause between lines.
CLIP_S = 20.0


@pytest.fixture(scope="module")
def lecture_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lecture's audio track up to the first pause between lines after CLIP_S."""
    narration = Narration(DEMO_LECTURE, RATE, seed=SEED)
    track = session_track(narration, SyntheticSpec(video=False, sample_rate=RATE))
    spans = narration.spans
    cut = next(
        (end + following[0]) / 2
        for (_, end, _), following in zip(spans, spans[1:], strict=False)
        if end >= CLIP_S
    )
    path = tmp_path_factory.mktemp("clip") / "clip.m4a"
    return write_track(path, track[: round(cut * RATE)], RATE)


@pytest.fixture(scope="module")
def lecture_run(
    lecture_audio: tuple[Path, list[LineSpan]], model: SpeechModel
) -> tuple[Transcript, list[float]]:
    reports: list[float] = []
    transcript = transcribe(lecture_audio[0], model=model, progress=reports.append)
    return transcript, reports


def test_the_default_model_is_the_pinned_tiny_en(model: SpeechModel) -> None:
    assert model.name == DEFAULT_MODEL_NAME
    assert not model.multilingual
    assert load_model() is model  # loaded once per process
    check_model_dir(default_model_dir())


def test_most_words_are_recognised(
    lecture_run: tuple[Transcript, list[float]], lecture_audio: tuple[Path, list[LineSpan]]
) -> None:
    transcript, _ = lecture_run
    assert transcript.language == "en"
    assert transcript.model == DEFAULT_MODEL_NAME
    assert transcript.duration == pytest.approx(DEMO_LECTURE.duration, abs=0.1)
    assert recall(transcript, lecture_audio[1]) >= MIN_RECALL, transcript.text


def test_every_word_lies_within_its_line(
    lecture_run: tuple[Transcript, list[float]], lecture_audio: tuple[Path, list[LineSpan]]
) -> None:
    transcript, _ = lecture_run
    spans = lecture_audio[1]
    words = [w for seg in transcript.segments for w in seg.words]
    assert len(words) >= MIN_RECALL * sum(len(words_of(t)) for _, _, t in spans)
    previous_start = 0.0
    for seg in transcript.segments:
        assert seg.text and seg.text == seg.text.strip()
        assert seg.start <= seg.end
        for w in seg.words:
            assert w.word and w.word == w.word.strip()
            assert seg.start <= w.start <= w.end <= seg.end
            assert w.start >= previous_start
            previous_start = w.start
            middle = (w.start + w.end) / 2
            start, end, text = min(spans, key=lambda s: max(s[0] - middle, middle - s[1], 0.0))
            where = f"{w.word!r} {w.start}-{w.end} for line {start:.2f}-{end:.2f} {text!r}"
            assert start - MIDDLE_TOLERANCE_S <= middle <= end + MIDDLE_TOLERANCE_S, where
            assert w.start >= start - EDGE_TOLERANCE_S and w.end <= end + EDGE_TOLERANCE_S, where


def test_progress_rises_to_one(lecture_run: tuple[Transcript, list[float]]) -> None:
    _, reports = lecture_run
    assert len(reports) >= 2
    assert reports == sorted(reports)
    assert reports[-1] == 1.0 and all(0.0 <= r <= 1.0 for r in reports)


def test_webvtt_of_the_lecture_parses(lecture_run: tuple[Transcript, list[float]]) -> None:
    transcript, _ = lecture_run
    text = to_webvtt(transcript)
    blocks = text.strip("\n").split("\n\n")
    assert blocks[0] == "WEBVTT"
    cue_time = re.compile(
        r"^(\d{2}):(\d{2}):(\d{2})\.(\d{3}) --> (\d{2}):(\d{2}):(\d{2})\.(\d{3})$"
    )
    starts = []
    for block in blocks[1:]:
        timing, *body = block.split("\n")
        m = cue_time.match(timing)
        assert m, timing
        h1, m1, s1, ms1, h2, m2, s2, ms2 = (int(g) for g in m.groups())
        start = h1 * 3600 + m1 * 60 + s1 + ms1 / 1000
        end = h2 * 3600 + m2 * 60 + s2 + ms2 / 1000
        assert start <= end and len(body) == 1 and body[0]
        starts.append(start)
    assert len(starts) == len(transcript.segments) and starts == sorted(starts)


def test_threads_share_one_model(lecture_clip: Path, model: SpeechModel) -> None:
    """The embedded worker runs tasks in threads: concurrent calls give the sequential result."""
    alone = transcribe(lecture_clip, model=model, beam_size=1)
    assert alone.segments  # speech to compare, not silence
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [
            pool.submit(lambda: transcribe(lecture_clip, model=load_model(), beam_size=1))
            for _ in range(2)
        ]
        results = [f.result() for f in futures]
    assert all(r == alone for r in results)


def test_silence_gives_no_segments(tmp_path: Path, model: SpeechModel) -> None:
    """A microphone that recorded only its noise floor and the segment markers."""
    quiet = Lecture(duration=30.0, slides=DEMO_LECTURE.slides[:1], narration=())
    spec = SyntheticSpec(duration=30.0, audio_holes=(), video=False, sample_rate=RATE)
    path = write_track(tmp_path / "quiet.m4a", session_track(Narration(quiet, RATE), spec), RATE)
    transcript = transcribe(path, model=model)
    assert transcript.segments == ()
    assert transcript.duration == pytest.approx(30.0, abs=0.1)


def test_an_undecodable_file_is_an_error_naming_it(tmp_path: Path, model: SpeechModel) -> None:
    broken = tmp_path / "broken-audio.m4a"
    broken.write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(range(256)) * 8)
    with pytest.raises(EnrichError, match="broken-audio.m4a"):
        transcribe(broken, model=model)
    with pytest.raises(EnrichError, match="missing.m4a"):
        transcribe(tmp_path / "missing.m4a", model=model)
    screen_only = tmp_path / "screen-only.mp4"
    with av.open(str(screen_only), "w") as out:
        stream = out.add_stream("libx264", rate=5)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for _ in range(5):
            out.mux(stream.encode(av.VideoFrame(64, 64, "yuv420p")))
        out.mux(stream.encode(None))
    with pytest.raises(EnrichError, match="screen-only.mp4: it has no audio stream"):
        transcribe(screen_only, model=model)


def test_an_english_model_refuses_another_language(
    lecture_audio: tuple[Path, list[LineSpan]], model: SpeechModel
) -> None:
    with pytest.raises(EnrichError, match=r"tiny\.en .*'de'"):
        transcribe(lecture_audio[0], model=model, language="de")


def _model_copy(tmp_path: Path, *, weights: bytes | None) -> Path:
    """A model folder linking the default model's files, with other weights when given."""
    source, folder = default_model_dir(), tmp_path / "model"
    folder.mkdir()
    for item in source.iterdir():
        if item.name == MODEL_FILE and weights is not None:
            (folder / MODEL_FILE).write_bytes(weights)
        else:
            (folder / item.name).symlink_to(item)
    return folder


def test_a_model_with_the_wrong_checksum_is_refused(tmp_path: Path) -> None:
    folder = _model_copy(tmp_path, weights=b"not the weights")
    with pytest.raises(EnrichError, match=rf"model\.bin .*expected {DEFAULT_MODEL_SHA256}"):
        load_model(folder, sha256=DEFAULT_MODEL_SHA256)


def test_a_model_folder_missing_files_names_them(tmp_path: Path) -> None:
    folder = _model_copy(tmp_path, weights=None)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(EnrichError, match="missing tokenizer.json"):
        load_model(folder)
    with pytest.raises(EnrichError, match="does not exist"):
        load_model(tmp_path / "nowhere")


def test_another_model_folder_loads_and_transcribes(
    tmp_path: Path, lecture_audio: tuple[Path, list[LineSpan]]
) -> None:
    folder = _model_copy(tmp_path, weights=None)
    other = load_model(folder, sha256=DEFAULT_MODEL_SHA256, cpu_threads=1)
    assert other.name == str(folder) and other.cpu_threads == 1
    transcript = transcribe(lecture_audio[0], model=other, beam_size=1)
    assert transcript.model == str(folder)
    assert recall(transcript, lecture_audio[1]) >= MIN_RECALL - 0.1


def test_nothing_touches_the_network(monkeypatch: pytest.MonkeyPatch, lecture_clip: Path) -> None:
    """Load (hash included) and transcribe from scratch with every connection refused."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    clear_model_cache()
    try:
        transcript = transcribe(lecture_clip, beam_size=1)
    finally:
        clear_model_cache()
    assert transcript.segments


def test_without_faster_whisper_the_stage_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faster_whisper", None)  # import fails, as if absent
    with pytest.raises(EnrichUnavailable, match=r"pip install 'sessionpipe\[enrich\]'"):
        load_model()


def test_reading_the_screen_leaves_the_process_able_to_transcribe(
    lecture_audio: tuple[Path, list[LineSpan]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The enrich worker reads screens (chapters) and transcribes in the same process.

    Tesseract runs with OMP_THREAD_LIMIT=1; it once got it through ``os.environ``, where it
    stayed, and CTranslate2 then transcribed nothing in that process and in every worker
    started from it afterwards. The limit must go to tesseract alone."""
    import os

    from synthetic.slides import SlideScene
    from workers.enrich.ocr import check_ocr, read_screen

    monkeypatch.delenv("OMP_THREAD_LIMIT", raising=False)
    check_ocr()
    assert read_screen(SlideScene(DEMO_LECTURE, 1280, 720, 0).render(20.0)).title
    assert "OMP_THREAD_LIMIT" not in os.environ
    clear_model_cache()  # a model loaded afresh, as a new worker process would
    try:
        transcript = transcribe(lecture_audio[0], beam_size=1)
    finally:
        clear_model_cache()
    assert recall(transcript, lecture_audio[1]) >= MIN_RECALL, transcript.text
