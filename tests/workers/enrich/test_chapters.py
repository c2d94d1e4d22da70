"""Chapters of real H.264 files of slides (PyAV, tesseract): boundaries within a second of the
true slide changes and nowhere else (typing, a clock, scrolling and a pointer are on screen),
titles read from the slides, the transcript's words where the screen has none, and a clear
error naming a file that cannot be read.

Also the two halves on their own: sampling (keyframes where dense, else a fixed rate; a
frame grabbed at an exact time) and OCR (the title is the large top line; junk is dropped).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from synthetic.lecture import DEMO_LECTURE, Lecture, Slide
from synthetic.slides import (
    SCROLL_DELAY_S,
    SCROLL_DURATION_S,
    SlideScene,
    random_lecture,
    write_lecture_video,
)
from synthetic.timecode import (
    TIMECODE_BLOCK_PX,
    TIMECODE_STRIP_WIDTH_PX,
    read_timecode,
    timecode_strip,
)
from workers.enrich.chaptering import detect_chapters, transcript_title
from workers.enrich.documents import (
    EnrichError,
    EnrichUnavailable,
    Transcript,
    TranscriptSegment,
)
from workers.enrich.frames import MAX_KEYFRAME_GAP_S, SAMPLE_WIDTH_PX, open_video
from workers.enrich.ocr import check_ocr, lines_from_data, pick_title, read_screen

W, H, FPS = 640, 360, 15
TOLERANCE_S = 1.0


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chapters")


@pytest.fixture(scope="module")
def demo_video(media: Path) -> Path:
    """DEMO_LECTURE as our recorder writes it: a keyframe every 2 s."""
    return write_lecture_video(media / "demo.mp4", DEMO_LECTURE, width=W, height=H, fps=FPS)


@pytest.fixture(scope="module")
def sparse_video(media: Path) -> Path:
    """The same lecture as a sparser recorder writes it: a keyframe every 10 s, fragmented
    MP4, and slides that cross-fade in over a second."""
    return write_lecture_video(
        media / "sparse.mp4",
        DEMO_LECTURE,
        width=W,
        height=H,
        fps=FPS,
        seed=9,
        keyframe_interval_s=10.0,
        fragmented=True,
        transition_s=1.0,
    )


def boundaries(chapters: list) -> list[float]:
    return [c.start for c in chapters[1:]]


def assert_chapters_match(chapters: list, lecture: Lecture, fade_s: float = 0.0) -> None:
    assert len(chapters) == len(lecture.slides), [(c.start, c.title) for c in chapters]
    for found, true in zip(boundaries(chapters), lecture.changes, strict=True):
        # a cut is placed on its first frame, a cross-fade in its middle
        assert abs(found - (true + fade_s / 2)) <= TOLERANCE_S, (found, true)
    assert chapters[0].start == 0.0
    assert chapters[-1].end == pytest.approx(lecture.duration, abs=1 / FPS)
    assert all(a.end == b.start for a, b in zip(chapters, chapters[1:], strict=False))
    for chapter, slide in zip(chapters, lecture.slides, strict=True):
        assert chapter.title == slide.title
        assert chapter.title_source == "screen"
        assert slide.lines[0] in chapter.screen_text


def test_demo_lecture_chapters_at_the_slide_changes(demo_video: Path) -> None:
    seen: list[float] = []
    chapters = detect_chapters(demo_video, progress=seen.append)
    assert_chapters_match(chapters, DEMO_LECTURE)
    assert seen[0] == 0.0 and seen[-1] == pytest.approx(1.0)
    assert seen == sorted(seen)
    # the scrolled slide is read again once its body has scrolled: lines that came into
    # view only then are screen text from then on; the typed and the clock slides are not
    *still, scrolled = chapters
    assert all(c.screens == () for c in still)
    [later] = scrolled.screens
    first_scroll_end = scrolled.start + SCROLL_DELAY_S + SCROLL_DURATION_S
    assert first_scroll_end <= later.start <= first_scroll_end + 2 * MAX_KEYFRAME_GAP_S
    assert later.end == scrolled.end
    assert "Write the test first" in later.text and "Write the test" not in scrolled.screen_text


def test_frames_are_read_side_by_side_with_the_answers_of_one_at_a_time(
    demo_video: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tesseract takes about a second per frame, one process per frame: the chapters'
    frames are read several at once (``ocr_threads``), with the chapters of reading them one
    after another."""
    from workers.enrich import chaptering

    lock = threading.Lock()
    running, most = 0, 0

    def counted(rgb: np.ndarray) -> Any:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            return read_screen(rgb)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(chaptering, "read_screen", counted)
    one = detect_chapters(demo_video, ocr_threads=1)
    assert most == 1
    side_by_side = detect_chapters(demo_video, ocr_threads=3)
    assert most >= 2  # at least two tesseracts were running at once
    assert side_by_side == one
    assert_chapters_match(side_by_side, DEMO_LECTURE)


def test_sparse_keyframes_and_fades_give_the_same_chapters(sparse_video: Path) -> None:
    chapters = detect_chapters(sparse_video)
    assert_chapters_match(chapters, DEMO_LECTURE, fade_s=1.0)


def test_a_longer_lecture_with_varied_activity(media: Path) -> None:
    lecture = random_lecture(150.0, 21, mean_slide_s=22.0)
    assert {a for s in lecture.slides for a in s.activity} >= {"typing", "clock", "scroll"}
    video = write_lecture_video(
        media / "long.mp4", lecture, width=W, height=H, fps=FPS, seed=4, transition_s=0.4
    )
    assert_chapters_match(detect_chapters(video), lecture, fade_s=0.4)


def test_short_chapters_merge_into_a_neighbour(demo_video: Path) -> None:
    chapters = detect_chapters(demo_video, min_chapter_s=17.0, ocr=False)
    assert [c.start for c in chapters] == [0.0, pytest.approx(36.0, abs=TOLERANCE_S)]
    assert [c.title for c in chapters] == ["Chapter 1", "Chapter 2"]
    assert {c.title_source for c in chapters} == {"none"}


class _Colours:
    """A screen without text: a flat colour per slide, a pointer-free desktop."""

    def __init__(self, lecture: Lecture) -> None:
        self.lecture = lecture
        self.palette = [(40, 90, 160), (200, 120, 40), (60, 150, 80), (120, 60, 140)]
        self.buf = np.empty((H, W, 3), np.uint8)

    def render(self, t: float) -> np.ndarray:
        k = sum(1 for s in self.lecture.slides if s.start <= t) - 1
        self.buf[:] = self.palette[k % len(self.palette)]
        strip = timecode_strip(t)[None, :, None]
        self.buf[:TIMECODE_BLOCK_PX, :TIMECODE_STRIP_WIDTH_PX] = strip
        return self.buf


def test_a_screen_without_text_is_titled_from_the_transcript(media: Path) -> None:
    lecture = Lecture(36.0, tuple(Slide(t, "", ()) for t in (0.0, 12.0, 24.0)), narration=())
    video = write_lecture_video(
        media / "colours.mp4", lecture, width=W, height=H, fps=FPS, scene=_Colours(lecture)
    )
    transcript = Transcript(
        language="en",
        segments=(
            TranscriptSegment(1.0, 4.0, "Welcome to the quarterly review of our storage costs."),
            TranscriptSegment(4.5, 9.0, "It went up."),
            TranscriptSegment(13.0, 16.0, "Next the backup strategy! We keep three copies."),
            # nothing is said in the third chapter
        ),
    )
    chapters = detect_chapters(video, transcript=transcript)
    assert [round(c.start) for c in chapters] == [0, 12, 24]
    assert [(c.title, c.title_source) for c in chapters] == [
        ("Welcome to the quarterly review of our storage", "transcript"),
        ("Next the backup strategy", "transcript"),
        ("Chapter 3", "none"),
    ]
    assert all(c.screen_text == "" for c in chapters)
    assert [c.title_source for c in detect_chapters(video)] == ["none"] * 3


def test_transcript_title_is_the_first_sentence_cut_short() -> None:
    transcript = Transcript(
        "en", (TranscriptSegment(0.0, 2.0, "  Hello there, world.  Second one."),)
    )
    assert transcript_title(transcript, 0.0, 10.0) == "Hello there, world"
    assert transcript_title(transcript, 0.0, 10.0, words=1) == "Hello"
    assert transcript_title(transcript, 5.0, 10.0) == ""


def test_unreadable_files_name_themselves(media: Path, demo_video: Path) -> None:
    garbage = media / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, np.uint8).tobytes())
    with pytest.raises(EnrichError, match="garbage.mp4"):
        detect_chapters(garbage, ocr=False)
    cut = media / "cut.mp4"
    cut.write_bytes(demo_video.read_bytes()[: demo_video.stat().st_size // 2])
    with pytest.raises(EnrichError, match="cut.mp4"):
        detect_chapters(cut, ocr=False)
    with pytest.raises(EnrichError, match="missing.mp4"):
        detect_chapters(media / "missing.mp4", ocr=False)
    with pytest.raises(EnrichError, match="URL"):
        open_video("http://example.invalid/x.mp4")


def test_missing_tesseract_makes_the_stage_unavailable(
    demo_video: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pytesseract

    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", "/nonexistent/tesseract")
    with pytest.raises(EnrichUnavailable, match="tesseract-ocr tesseract-ocr-eng"):
        detect_chapters(demo_video)
    with pytest.raises(EnrichUnavailable, match="tesseract-ocr-eng"):
        read_screen(np.zeros((40, 40, 3), np.uint8))


def test_sampling_takes_keyframes_where_dense_and_a_fixed_rate_elsewhere(
    demo_video: Path, sparse_video: Path
) -> None:
    with open_video(demo_video) as video:
        assert video.index.keyframe_only
        assert video.index.duration == pytest.approx(60.0, abs=1 / FPS)
        samples = list(video.samples())
    assert [t for t, _ in samples] == pytest.approx([2.0 * k for k in range(30)])
    assert samples[0][1].shape == (SAMPLE_WIDTH_PX * H // W, SAMPLE_WIDTH_PX)
    assert samples[0][1].dtype == np.uint8
    with open_video(sparse_video) as video:
        assert not video.index.keyframe_only
        times = [t for t, _ in video.samples(sample_fps=2.0)]
        # the first frame at or after every half second
        assert times == pytest.approx([np.ceil(7.5 * k - 1e-9) / FPS for k in range(120)])
        assert [t for t, _ in video.frames(20.0, 21.0)] == pytest.approx(
            [20.0 + k / FPS for k in range(FPS + 1)]
        )


def test_frame_at_is_the_frame_shown_then(sparse_video: Path) -> None:
    with open_video(sparse_video) as video:
        for t in (0.0, 7.3, 31.0, 12.0, 59.95):
            frame = video.frame_at(t)
            assert frame.shape == (H, W, 3)
            shown = np.floor(t * FPS + 1e-6) / FPS
            assert read_timecode(frame) == pytest.approx(shown, abs=0.011)
        assert read_timecode(video.frame_at(500.0)) == pytest.approx(59.0 + 14 / FPS, abs=0.011)


def test_ocr_reads_a_slide_title_and_drops_junk() -> None:
    check_ocr()
    scene = SlideScene(DEMO_LECTURE, 1280, 720, 0)
    text = read_screen(scene.render(20.0))
    assert text.title == "Celery Workers"
    assert "Retries with backoff" in text.text
    assert read_screen(np.full((200, 300, 3), 240, np.uint8)).title == ""


def test_ocr_lines_are_cleaned_and_the_tallest_top_line_is_the_title() -> None:
    words = [  # (text, conf, left, top, height, line)
        ("|", 90.0, 0, 0, 8, 1),
        ("=-", 95.0, 20, 0, 8, 1),
        ("Retries", 95.0, 40, 200, 14, 3),
        ("with", 95.0, 120, 200, 14, 3),
        ("backoff", 30.0, 180, 200, 14, 3),  # misread: dropped
        ("Celery", 96.0, 40, 40, 28, 2),
        ("Workers", 96.0, 140, 40, 27, 2),
        ("Go", 60.0, 40, 300, 40, 4),  # short and unsure: dropped
    ]
    data: dict[str, list] = {k: [] for k in (
        "level", "page_num", "block_num", "par_num", "line_num", "text", "conf", "left",
        "top", "height",
    )}  # fmt: skip
    for text, conf, left, top, height, line in words:
        for key, value in zip(
            data,
            (5, 1, 1, 1, line, text, conf, left, top, height),
            strict=True,
        ):
            data[key].append(value)
    lines = lines_from_data(data, scale=2.0)
    assert [line.text for line in lines] == ["Celery Workers", "Retries with"]
    assert lines[0].top == 20 and lines[0].height == pytest.approx(13.75)
    assert pick_title(lines) == "Celery Workers"
    assert pick_title([]) == ""
