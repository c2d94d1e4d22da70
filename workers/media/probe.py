"""Inspect a media file: streams, codecs and a duration that can be trusted.

Container headers lie about truncated uploads (a fast-start MP4 keeps its full index even when
the data behind it is missing), so the duration is checked against the packets that are really
at the end of the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import av
import av.container

from .errors import MediaError, failure_reason

__all__ = [
    "ALLOWED_DEMUXERS",
    "MediaInfo",
    "demux_checked",
    "is_flush",
    "local_path",
    "open_input",
    "playlist_kind",
    "probe",
]

#: Demuxers an input may be read with: media containers that never open another file.
#: Playlist-style demuxers (``hls``, ``concat``, ``dash``, ``image2``, ``sdp``...) are left
#: out: a segment that is really a playlist would make FFmpeg read the files (or, through
#: other protocols, the URLs) it lists. ``mov`` covers mp4/m4a/mov.
ALLOWED_DEMUXERS = ("mov", "matroska", "wav", "ogg", "mp3", "aac", "flac", "caf", "mpegts", "avi")
#: How a playlist starts (after an optional byte-order mark and white space) and its name.
PLAYLIST_SIGNATURES = {
    b"#EXTM3U": "an HLS playlist",
    b"ffconcat version": "an ffconcat playlist",
    b"<?xml": "an XML document (a DASH manifest?)",
    b"<MPD": "a DASH manifest",
}
_SNIFF_BYTES = 64
# Seconds before the declared end where the tail check starts reading packets.
_TAIL_SECONDS = 3.0
# A file whose last packet ends this much earlier than its header says is truncated.
_TRUNCATION_TOLERANCE = 1.0
_TRUNCATION_FRACTION = 0.05


@dataclass(frozen=True)
class MediaInfo:
    """What the pipeline needs to know about one recorded file."""

    path: Path
    duration: float  # seconds
    has_audio: bool
    has_video: bool
    video_codec: str | None
    audio_codec: str | None
    width: int | None
    height: int | None
    fps: float | None
    sample_rate: int | None
    channels: int | None


def local_path(path: str | os.PathLike[str]) -> str:
    """Return the absolute path to open, refusing anything that looks like a URL.

    FFmpeg would happily fetch ``http://`` or read ``pipe:`` names; recorded segments are
    always local files, so anything else is an input error rather than something to follow.
    """
    text = os.fspath(path)
    if "://" in text:
        raise MediaError(f"only local files are accepted, got URL {text!r}", path=text)
    if not text:
        raise MediaError("empty path", path=text)
    return os.path.abspath(text)


def playlist_kind(path: str) -> str | None:
    """What kind of playlist the file at ``path`` is, from its first bytes; None for media."""
    with open(path, "rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    head = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    for signature, kind in PLAYLIST_SIGNATURES.items():
        if head.startswith(signature):
            return kind
    return None


def open_input(
    path: str | os.PathLike[str], *, options: dict[str, str] | None = None
) -> av.container.InputContainer:
    """Open a local media file for reading, never anything it refers to.

    The explicit ``file:`` prefix stops FFmpeg from reading ``name:rest`` as a protocol; the
    protocol whitelist stops it from opening anything but local files, and the demuxer
    whitelist (``ALLOWED_DEMUXERS``) from opening even those on a playlist's behalf. A
    playlist is named as such before FFmpeg sees it. ``options`` adds demuxer options (never
    a way to lift either whitelist).
    """
    text = local_path(path)
    if not os.path.isfile(text):
        raise MediaError(f"file not found: {text}", path=text)
    try:
        playlist = playlist_kind(text)
    except OSError as exc:
        raise MediaError(f"cannot open {text}: {exc}", path=text) from exc
    if playlist is not None:
        raise MediaError(
            f"{text} is {playlist}, not a media file (playlists are refused, and what they "
            "list is never opened)",
            path=text,
        )
    try:
        return av.open(
            "file:" + text,
            "r",
            options={
                **(options or {}),
                "protocol_whitelist": "file",
                "format_whitelist": ",".join(ALLOWED_DEMUXERS),
            },
            metadata_errors="replace",
        )
    except av.error.ArgumentError as exc:  # what a demuxer off the whitelist gives
        raise MediaError(
            f"cannot open {text}: {failure_reason(exc)} (not a media container this pipeline "
            f"reads: {', '.join(ALLOWED_DEMUXERS)})",
            path=text,
        ) from exc
    except av.error.FFmpegError as exc:
        raise MediaError(f"cannot open {text}: {failure_reason(exc)}", path=text) from exc
    except OSError as exc:
        raise MediaError(f"cannot open {text}: {exc}", path=text) from exc


def is_flush(packet: av.Packet) -> bool:
    """The empty packet demux ends each stream with (it flushes that stream's decoder)."""
    return packet.dts is None and packet.pts is None and packet.size == 0


def demux_checked(
    container: av.container.InputContainer,
    streams: av.stream.Stream | Sequence[av.stream.Stream],
    path: str,
) -> Iterator[av.Packet]:
    """Packets of the streams (each ending with its decoder-flush packet), refusing truncation.

    A cut-off file with its index first demuxes "successfully" up to the cut, and threaded
    decoders hide the error on the partial packet, so truncation is caught here instead: a
    partial (corrupt) packet, or fewer packets than the container's index lists.
    """
    wanted = [streams] if isinstance(streams, av.stream.Stream) else list(streams)
    counts = dict.fromkeys((s.index for s in wanted), 0)
    for packet in container.demux(wanted):
        stream = packet.stream
        if is_flush(packet):
            if stream.frames and counts[stream.index] < stream.frames:
                raise MediaError(
                    f"{path} is truncated: its index lists {stream.frames} packets of stream "
                    f"{stream.index} but only {counts[stream.index]} are present",
                    path=path,
                )
        elif packet.is_corrupt:
            raise MediaError(f"{path} is truncated or corrupt (damaged packet)", path=path)
        else:
            counts[stream.index] += 1
        yield packet


def probe(path: Path) -> MediaInfo:
    """Describe a media file; MediaError (naming the file) if it is missing or unreadable."""
    text = local_path(path)
    with open_input(text) as container:
        try:
            return _probe_open(container, Path(text))
        except MediaError:
            raise
        except (av.error.FFmpegError, OSError, EOFError) as exc:
            raise MediaError(f"cannot read {text}: {failure_reason(exc)}", path=text) from exc


def _probe_open(container: av.container.InputContainer, path: Path) -> MediaInfo:
    video = container.streams.video[0] if container.streams.video else None
    audio = container.streams.audio[0] if container.streams.audio else None
    if video is None and audio is None:
        raise MediaError(f"no audio or video stream in {path}", path=str(path))
    streams = [s for s in (video, audio) if s is not None]

    declared = _declared_duration(container, streams)
    measured = _measure_end(container, streams, declared, str(path))
    if declared is not None and measured is not None:
        tolerance = max(_TRUNCATION_TOLERANCE, _TRUNCATION_FRACTION * declared)
        if measured < declared - tolerance:
            raise MediaError(
                f"{path} is truncated: header says {declared:.3f} s but media data ends at "
                f"{measured:.3f} s",
                path=str(path),
            )
    if declared is not None:
        duration = declared
    elif measured is not None:
        duration = measured
    else:
        duration = 0.0

    info = MediaInfo(
        path=path,
        duration=max(0.0, duration),
        has_audio=audio is not None,
        has_video=video is not None,
        video_codec=None,
        audio_codec=None,
        width=None,
        height=None,
        fps=None,
        sample_rate=None,
        channels=None,
    )
    if video is not None:
        rate = video.average_rate or video.guessed_rate
        info = replace(
            info,
            video_codec=video.codec_context.name,
            width=video.codec_context.width or None,
            height=video.codec_context.height or None,
            fps=float(rate) if rate else None,
        )
    if audio is not None:
        info = replace(
            info,
            audio_codec=audio.codec_context.name,
            sample_rate=audio.codec_context.sample_rate or None,
            channels=audio.codec_context.channels or None,
        )
    return info


def _stream_start(stream: av.stream.Stream) -> float:
    if stream.start_time is not None and stream.time_base is not None:
        return float(stream.start_time * stream.time_base)
    return 0.0


def _declared_duration(
    container: av.container.InputContainer, streams: Sequence[av.stream.Stream]
) -> float | None:
    """Duration from the headers: the container's, else the longest stream's."""
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    durations = [
        float(s.duration * s.time_base)
        for s in streams
        if s.duration is not None and s.duration > 0 and s.time_base is not None
    ]
    return max(durations) if durations else None


def _measure_end(
    container: av.container.InputContainer,
    streams: Sequence[av.stream.Stream],
    declared: float | None,
    name: str,
) -> float | None:
    """End of the last packet, relative to each stream's start.

    With a declared duration only the tail is read (seek, then decode the last packets, which
    also proves the data there is intact); short files are decoded completely; without any
    declared duration every packet is demuxed, undecoded. Only audio is decoded: decoding
    seconds of high-resolution video per file would make planning a long session take
    seconds, while demuxing already finds the missing or damaged packets of a cut-off file
    (the stage that reads the video decodes it all and reports what is left).
    """
    if declared is not None and declared > _TAIL_SECONDS:
        target = int((declared - _TAIL_SECONDS) * av.time_base) + (container.start_time or 0)
        try:
            container.seek(target, backward=True, any_frame=False)
        except av.error.FFmpegError:
            with open_input(name) as fresh:
                fresh_streams = [fresh.streams[s.index] for s in streams]
                return _scan(fresh, fresh_streams, name, decode=False, from_start=True)
        return _scan(container, streams, name, decode=True, from_start=False)
    return _scan(container, streams, name, decode=declared is not None, from_start=True)


def _scan(
    container: av.container.InputContainer,
    streams: Sequence[av.stream.Stream],
    name: str,
    *,
    decode: bool,
    from_start: bool,
) -> float | None:
    starts = {s.index: _stream_start(s) for s in streams}
    counts = dict.fromkeys(starts, 0)
    end: float | None = None
    for packet in container.demux(list(streams)):
        if packet.is_corrupt:
            raise MediaError(f"{name} is truncated or corrupt (damaged packet)", path=name)
        if decode and packet.stream.type == "audio":
            packet.decode()  # raises on undecodable packets
        ts = packet.pts if packet.pts is not None else packet.dts
        if ts is None or packet.time_base is None:
            continue
        counts[packet.stream.index] += 1
        packet_end = float((ts + (packet.duration or 0)) * packet.time_base)
        packet_end -= starts[packet.stream.index]
        end = packet_end if end is None else max(end, packet_end)
    if from_start:
        for s in streams:
            if s.frames and counts[s.index] < s.frames:
                raise MediaError(
                    f"{name} is truncated: its index lists {s.frames} packets but only "
                    f"{counts[s.index]} are present",
                    path=name,
                )
    return end
