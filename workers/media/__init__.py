"""Pure media engine: plan a session timeline, render its audio, merge the final MP4.

No Celery, database or storage code lives here, so every stage can be tested with local files.
"""

from .audio import AudioResult, ProgressCallback, concat_audio
from .errors import Cancelled, MediaError
from .merge import MergeResult, merge
from .probe import MediaInfo, probe
from .timeline import Kind, Piece, PlacedSegment, SegmentInput, Timeline, plan_timeline

__all__ = [
    "AudioResult",
    "Cancelled",
    "Kind",
    "MediaError",
    "MediaInfo",
    "MergeResult",
    "Piece",
    "PlacedSegment",
    "ProgressCallback",
    "SegmentInput",
    "Timeline",
    "concat_audio",
    "merge",
    "plan_timeline",
    "probe",
]
