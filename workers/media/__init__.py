"""The media engine: plan a session's timeline, render its audio, mux and compress its video.

No Celery, database or storage code lives here, so every function is tested with local files.
This is the front door: the stages (``workers.stages``) call only what is exported here.

- :func:`plan_timeline` places every segment on the output clock (holes filled, pauses cut).
- :func:`concat_audio_chunked` renders the audio track in 1024-sample-aligned AAC chunks,
  reusing those :func:`encode_settled_chunks` stored in a :class:`ChunkStore` while the
  session recorded; :func:`render_audio` is the single-pass reference it must equal.
- :func:`mux_playable` writes the playable MP4, :func:`compress_video` the compressed copy.
- :func:`probe` reads a file's streams and true duration.
"""

from .aacchunk import (
    ChunkedAudioResult,
    ChunkStore,
    IncrementalResult,
    concat_audio_chunked,
    encode_settled_chunks,
)
from .audio import AudioResult, render_audio
from .compress import CompressResult, compress_video
from .errors import Cancelled, MediaError
from .merge import MergeResult, mux_playable
from .output import ProgressCallback
from .probe import MediaInfo, probe
from .timeline import Piece, PlacedSegment, SegmentInput, Timeline, plan_timeline

__all__ = [
    "AudioResult",
    "Cancelled",
    "ChunkStore",
    "ChunkedAudioResult",
    "CompressResult",
    "IncrementalResult",
    "MediaError",
    "MediaInfo",
    "MergeResult",
    "Piece",
    "PlacedSegment",
    "ProgressCallback",
    "SegmentInput",
    "Timeline",
    "compress_video",
    "concat_audio_chunked",
    "encode_settled_chunks",
    "mux_playable",
    "plan_timeline",
    "probe",
    "render_audio",
]
