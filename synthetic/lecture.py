"""What the demo and the enrichment tests say and show: slides with titles, narration lines.

A *lecture* is a short screen recording with real content: each slide has a title and a few
lines of text, shown from its start time until the next slide's, and narration lines are
spoken at known times. The enrichment tests assert against it (words spoken at their times,
chapters at the slide changes with the slides' titles, keywords naming the topics), the demo
shows it. Pure data: ``synthetic.slides`` draws the slides, ``synthetic.speech`` speaks the
lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Slide:
    start: float  # session seconds; shown until the next slide's start (or the end)
    title: str
    lines: tuple[str, ...]
    # Screen activity inside the slide that must not make a chapter: "typing" (a line typed
    # character by character), "clock" (a ticking clock in a corner), "scroll" (the body
    # scrolls up by a few lines), "pointer" (the mouse pointer wanders). A pointer is
    # drawn on every slide.
    activity: tuple[str, ...] = ()


@dataclass(frozen=True)
class Line:
    start: float  # session seconds when the voice starts the sentence
    text: str


@dataclass(frozen=True)
class Lecture:
    duration: float  # seconds
    slides: tuple[Slide, ...]
    narration: tuple[Line, ...]

    def slide_at(self, t: float) -> Slide:
        current = self.slides[0]
        for slide in self.slides:
            if slide.start <= t:
                current = slide
        return current

    @property
    def changes(self) -> tuple[float, ...]:
        """Session seconds where the picture really changes (every slide after the first)."""
        return tuple(slide.start for slide in self.slides[1:])


#: The demo session (60 s; the microphone records nothing from 25 s to 35 s, so no line is
#: spoken there) and the default of the enrichment tests.
DEMO_LECTURE: Final = Lecture(
    duration=60.0,
    slides=(
        Slide(
            0.0,
            "Database Migrations",
            ("Alembic revisions", "Review every migration", "Never edit a landed one"),
            activity=("typing",),
        ),
        Slide(
            16.0,
            "Celery Workers",
            ("Queues for media and audio", "Retries with backoff", "Late acknowledgement"),
            activity=("clock",),
        ),
        Slide(
            36.0,
            "Search Index",
            ("Transcripts and screen text", "Ranked full text search", "Jump to the moment"),
            activity=("scroll",),
        ),
    ),
    narration=(
        Line(1.0, "Today we review the database migrations."),
        Line(6.0, "Every alembic revision is reviewed by hand."),
        Line(11.0, "A migration that has landed is never edited."),
        Line(17.0, "Next, the celery workers and their queues."),
        Line(21.0, "Failed tasks are retried with backoff."),
        Line(37.0, "Finally, the search index."),
        Line(41.0, "Transcripts and screen text are indexed together."),
        Line(47.0, "A search jumps straight to the moment it was said."),
        Line(53.0, "That is the whole pipeline."),
    ),
)
