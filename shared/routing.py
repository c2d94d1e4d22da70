"""Task names, queues and priorities: the contract between the capture agent and the workers.

The agent sends events by task *name* through the broker, so it never imports ``workers``;
both sides read the names and routes from here.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

QUEUE_MEDIA: Final = "media"  # heavy video decode/encode, one task per worker process
# Audio: AAC chunks encoded while a session records, and the join at its end; the live
# view's passes; and the playable MP4 (merge), which is assembled by the chunk passes while
# the session records and only finished at its end. Seconds of work each (stream copies),
# and the playable MP4 is promised within seconds of the session's end, so they have their
# own queue and worker instead of waiting behind a video transcode: a merge on the media
# queue waited for the compressed part in progress (seconds at 1080p) before it started.
# A merge that cannot copy (a source neither H.264 nor HEVC) transcodes here too.
QUEUE_AUDIO: Final = "audio"
# Transcripts, chapters, summaries, the search index: never waits behind a transcode.
QUEUE_ENRICH: Final = "enrich"
QUEUE_DEFAULT: Final = "default"  # event ingest and bookkeeping
QUEUES: Final = (QUEUE_MEDIA, QUEUE_AUDIO, QUEUE_ENRICH, QUEUE_DEFAULT)
# CPU priority (Unix niceness) of a worker by the queues it consumes (workers.cpupriority):
# where the workers share a machine's cores and the recording brings more work than they
# can do (a long session replayed fast, several sessions at once), the kernel gives the CPU
# to what the user waits for first. The playable MP4, the live view and the bookkeeping
# (audio, default) keep the normal priority; the compressed copy (media) yields to them;
# enrichment, which no one waits for at the end of a recording, yields to all. Linux
# weighs a process at niceness 5 about a third, at 10 about a tenth, of one at 0, so an idle
# core still goes to whoever wants it: this orders work under contention, it never idles
# a core. A worker of several queues takes the most urgent one's.
QUEUE_NICENESS: Final = {QUEUE_MEDIA: 5, QUEUE_AUDIO: 0, QUEUE_ENRICH: 10, QUEUE_DEFAULT: 0}

TASK_INGEST_EVENT: Final = "sessionpipe.ingest_event"
TASK_CONCAT_AUDIO: Final = "sessionpipe.concat_audio"
TASK_MERGE: Final = "sessionpipe.merge"
TASK_COMPRESS: Final = "sessionpipe.compress"
TASK_FINALIZE: Final = "sessionpipe.finalize"
TASK_AUDIO_CHUNKS: Final = "sessionpipe.audio_chunks"  # incremental audio while recording
TASK_TRANSCRIPT: Final = "sessionpipe.transcript"
TASK_CHAPTERS: Final = "sessionpipe.chapters"
TASK_SUMMARY: Final = "sessionpipe.summary"
TASK_INDEX: Final = "sessionpipe.index"  # the search index of a session (workers.search)
TASK_WEBHOOK: Final = "sessionpipe.webhook"  # completion webhooks (workers/webhook.py)
# The compressed copy's part of one video segment, made while the session records
# (workers/parts.py); background work: one priority step below its session's stages.
TASK_COMPRESS_PART: Final = "sessionpipe.compress_part"
# The transcript pieces whose audio has settled, transcribed while the session records
# (workers/transcriptparts.py); background work like the parts, on the enrich queue.
TASK_TRANSCRIPT_PIECES: Final = "sessionpipe.transcript_pieces"
# A video segment sampled for chapters while the session records (workers/chapterparts.py).
TASK_CHAPTER_SAMPLES: Final = "sessionpipe.chapter_samples"
# A live pass: the live view's fragments that are due (workers/live.py), asked for by every
# stored segment (args: session id, segment file) and the end of recording (session id,
# None). Remuxes of well under a second, never an encode, on the audio queue beside the
# audio chunks so they never wait behind a transcode.
TASK_LIVE_FRAGMENT: Final = "sessionpipe.live_fragment"

TASK_ROUTES: Final[dict[str, dict[str, str]]] = {
    TASK_INGEST_EVENT: {"queue": QUEUE_DEFAULT},
    TASK_CONCAT_AUDIO: {"queue": QUEUE_AUDIO},
    TASK_MERGE: {"queue": QUEUE_AUDIO},
    TASK_COMPRESS: {"queue": QUEUE_MEDIA},
    TASK_AUDIO_CHUNKS: {"queue": QUEUE_AUDIO},
    TASK_FINALIZE: {"queue": QUEUE_DEFAULT},
    TASK_TRANSCRIPT: {"queue": QUEUE_ENRICH},
    TASK_CHAPTERS: {"queue": QUEUE_ENRICH},
    TASK_SUMMARY: {"queue": QUEUE_ENRICH},
    TASK_INDEX: {"queue": QUEUE_ENRICH},
    TASK_WEBHOOK: {"queue": QUEUE_DEFAULT},
    TASK_COMPRESS_PART: {"queue": QUEUE_MEDIA},
    TASK_TRANSCRIPT_PIECES: {"queue": QUEUE_ENRICH},
    TASK_CHAPTER_SAMPLES: {"queue": QUEUE_ENRICH},
    TASK_LIVE_FRAGMENT: {"queue": QUEUE_AUDIO},
}


class Priority(StrEnum):
    """How soon a session's work is served; the value is what events and the database say."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


# Redis transport: 0 is served first. Numbers are the kombu priority steps used below.
PRIORITY_VALUES: Final[dict[str, int]] = {Priority.HIGH: 0, Priority.NORMAL: 3, Priority.LOW: 6}
PRIORITY_STEPS: Final = [0, 3, 6, 9]


def parse_priority(name: str) -> Priority:
    """``name`` as a :class:`Priority`; ValueError naming the choices otherwise."""
    try:
        return Priority(name)
    except ValueError:
        choices = ", ".join(Priority)
        raise ValueError(f"unknown priority {name!r}: use one of {choices}") from None


def priority_value(name: str) -> int:
    """The broker's priority number for ``name`` (a Priority or its value)."""
    return PRIORITY_VALUES[parse_priority(name)]


def background_priority(name: str) -> int:
    """The broker's priority number for background work of a session of priority ``name``
    (its parts): one step after the session's own stages, so a playable MP4 never waits
    behind the parts of a session of the same priority."""
    steps = PRIORITY_STEPS
    return steps[min(steps.index(priority_value(name)) + 1, len(steps) - 1)]
