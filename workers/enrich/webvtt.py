"""A transcript as WebVTT subtitles: one cue per segment, next to the playable MP4.

WebVTT (W3C): the ``WEBVTT`` header, a blank line, then cues of ``HH:MM:SS.mmm --> HH:MM:SS.mmm``
and their text, separated by blank lines. Cue text is HTML-like, so ``&``, ``<`` and ``>`` are
escaped (which also keeps ``-->`` out of it), and a cue is kept on one line (a blank line
would end it). Cues are in
start order and never end before they start (players drop such cues). Pure function.
"""

from __future__ import annotations

import math
from typing import Final

from workers.enrich.documents import Transcript

__all__ = ["escape_cue_text", "format_timestamp", "to_webvtt"]

HEADER: Final = "WEBVTT"
#: Milliseconds in an hour, minute, second.
_MS_HOUR, _MS_MINUTE, _MS_SECOND = 3_600_000, 60_000, 1_000


def format_timestamp(seconds: float) -> str:
    """``HH:MM:SS.mmm`` of ``seconds`` (clamped at 0, rounded to the millisecond)."""
    ms = round(seconds * 1000) if math.isfinite(seconds) and seconds > 0 else 0
    hours, rest = divmod(ms, _MS_HOUR)
    minutes, rest = divmod(rest, _MS_MINUTE)
    secs, millis = divmod(rest, _MS_SECOND)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d}"


def escape_cue_text(text: str) -> str:
    """Cue text safe for WebVTT: entities for ``& < >``, whitespace runs made one space."""
    one_line = " ".join(text.split())
    return one_line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_webvtt(transcript: Transcript) -> str:
    """The WebVTT document of ``transcript``'s segments (empty segments left out)."""
    lines = [HEADER, ""]
    for seg in sorted(transcript.segments, key=lambda s: (s.start, s.end)):
        text = escape_cue_text(seg.text)
        if not text:
            continue
        start, end = format_timestamp(seg.start), format_timestamp(max(seg.end, seg.start))
        lines += [f"{start} --> {end}", text, ""]
    return "\n".join(lines)
