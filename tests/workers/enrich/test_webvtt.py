"""WebVTT of a transcript: header, cue timing format, escaping, order."""

from __future__ import annotations

from workers.enrich.documents import Transcript, TranscriptSegment
from workers.enrich.webvtt import format_timestamp, to_webvtt


def test_timestamps_are_hours_minutes_seconds_millis() -> None:
    assert format_timestamp(0.0) == "00:00:00.000"
    assert format_timestamp(61.2345) == "00:01:01.234"
    assert format_timestamp(3 * 3600 + 59.9996) == "03:01:00.000"
    assert format_timestamp(-0.5) == "00:00:00.000"
    assert format_timestamp(float("nan")) == "00:00:00.000"


def test_cues_are_escaped_one_line_and_in_order() -> None:
    transcript = Transcript(
        language="en",
        segments=(
            TranscriptSegment(4.0, 5.5, "a <b> & c --> d"),
            TranscriptSegment(1.0, 2.0, "first\n\nline"),
            TranscriptSegment(6.0, 6.0, "   "),
        ),
    )
    assert to_webvtt(transcript) == (
        "WEBVTT\n\n"
        "00:00:01.000 --> 00:00:02.000\nfirst line\n\n"
        "00:00:04.000 --> 00:00:05.500\na &lt;b&gt; &amp; c --&gt; d\n"
    )


def test_an_empty_transcript_is_just_the_header() -> None:
    assert to_webvtt(Transcript(language="en", segments=())) == "WEBVTT\n"
