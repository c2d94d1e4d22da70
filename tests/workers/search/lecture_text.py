"""A short talk as enrichment would have written it (text only, no media), with words
spoken and shown at known times, for the search tests.

The speech recogniser misheard "Kubernetes" ("cooper netties"); the screen shows it.
"""

from __future__ import annotations

from typing import Any, Final

SESSION: Final = "search-lecture"
DURATION_S: Final = 24.0
#: When a word was said (seconds on the output timeline).
SAID: Final = {"migrations": 3.2, "revision": 7.0, "queues": 16.4}
#: When a screen text appeared: the first chapter's slide, a scrolled editor in it, the
#: second chapter's slide.
SHOWN: Final = {"alembic": 0.0, "user_accounts": 8.0, "kubernetes": 12.0}


def _segment(start: float, end: float, words: list[tuple[float, str]]) -> dict[str, Any]:
    timed = [
        {"start": t, "end": words[k + 1][0] if k + 1 < len(words) else end, "word": w}
        for k, (t, w) in enumerate(words)
    ]
    return {"start": start, "end": end, "text": " ".join(w for _, w in words), "words": timed}


def documents() -> dict[str, dict[str, Any]]:
    """The transcript, chapters and summary documents of the talk."""
    transcript = {
        "language": "en",
        "duration": DURATION_S,
        "segments": [
            _segment(1.0, 6.0, [(1.0, "Today"), (1.5, "we"), (1.8, "review"), (2.4, "the"),
                                (2.6, "database"), (3.2, "migrations.")]),
            _segment(6.0, 11.0, [(6.0, "Every"), (7.0, "revision"), (7.6, "is"),
                                 (7.9, "reviewed"), (8.5, "by"), (8.8, "hand.")]),
            _segment(13.0, 18.0, [(13.0, "Next,"), (13.4, "the"), (13.7, "workers"),
                                  (14.5, "on"), (14.8, "cooper"), (15.3, "netties"),
                                  (16.0, "and"), (16.4, "queues.")]),
        ],
    }  # fmt: skip
    chapters = {
        "chapters": [
            {
                "start": 0.0, "end": 12.0, "title": "Database Migrations",
                "title_source": "screen",
                "screen_text": "Database Migrations\nAlembic revisions\nReview every migration",
                "screens": [{"start": 8.0, "end": 12.0,
                             "text": "alembic upgrade head\nALTER TABLE user_accounts"}],
                "keywords": ["database migrations", "alembic"],
            },
            {
                "start": 12.0, "end": 24.0, "title": "Celery Workers",
                "title_source": "screen",
                "screen_text": "Celery Workers\nKubernetes cluster\nRetries with backoff",
                "keywords": ["celery workers"],
            },
        ]
    }  # fmt: skip
    summary = {
        "summary": "The database migrations are reviewed by hand; workers take tasks off queues.",
        "keywords": ["database migrations", "workers", "queues"],
        "provider": "offline",
    }
    return {"transcript": transcript, "chapters": chapters, "summary": summary}
