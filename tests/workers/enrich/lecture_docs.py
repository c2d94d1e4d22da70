"""The demo lecture as enrichment documents: a transcript of its narration (each line a
segment of a few seconds) and one chapter per slide whose screen text is the slide's."""

from __future__ import annotations

from synthetic.lecture import DEMO_LECTURE, Lecture
from workers.enrich.documents import Chapter, Transcript, TranscriptSegment

SECONDS_PER_LINE = 3.0


def lecture_transcript(lecture: Lecture = DEMO_LECTURE) -> Transcript:
    segments = tuple(
        TranscriptSegment(line.start, line.start + SECONDS_PER_LINE, line.text)
        for line in lecture.narration
    )
    return Transcript(language="en", segments=segments, duration=lecture.duration)


def lecture_chapters(lecture: Lecture = DEMO_LECTURE) -> list[Chapter]:
    ends = [slide.start for slide in lecture.slides[1:]] + [lecture.duration]
    return [
        Chapter(
            start=slide.start,
            end=end,
            title=slide.title,
            title_source="screen",
            screen_text="\n".join((slide.title, *slide.lines)),
        )
        for slide, end in zip(lecture.slides, ends, strict=True)
    ]
