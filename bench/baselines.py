"""The plain ffmpeg commands a person would write for the pipeline's results.

Each builder returns the argv (and writes any concat list it needs) without running it, so the
harness times every command the same way and can print exactly what ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from synthetic.ffmpeg_session import SegmentFile, ffmpeg_exe

__all__ = [
    "PlainCommand",
    "audio_exact",
    "audio_naive",
    "compressed",
    "decode_only",
    "playable_mp4",
]

_COMMON = ("-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", "-y")

# What the pipeline writes, so the "exact" audio is the same product (shared/settings.py).
OUTPUT_AUDIO_RATE_HZ = 48_000
OUTPUT_AUDIO_CHANNELS = 2
OUTPUT_AUDIO_BITRATE = "128k"

# A person's screen-content compression: drop duplicate frames, encode for still images.
COMPRESS_PRESET = "veryfast"
COMPRESS_CRF = 28


@dataclass(frozen=True)
class PlainCommand:
    """One ffmpeg invocation and the file it produces."""

    argv: list[str]
    output: Path

    @property
    def shell(self) -> str:
        """The command as a person would type it (binary shortened, logging flags dropped)."""
        rest = self.argv[1:]
        if tuple(rest[: len(_COMMON)]) == _COMMON:
            rest = rest[len(_COMMON) :]
        return " ".join(_quote(p) for p in ["ffmpeg", "-y", *rest])


def _quote(arg: str) -> str:
    if arg and all(c.isalnum() or c in "-_.,:/+=[]%" for c in arg):
        return arg
    return "'" + arg.replace("'", "'\\''") + "'"


def _concat_list(files: list[Path], list_path: Path) -> Path:
    lines = [f"file '{f.as_posix()}'" for f in files]
    list_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return list_path


def audio_naive(segments: tuple[SegmentFile, ...], out_dir: Path) -> PlainCommand:
    """Concat demuxer, stream copy: fast, but every join adds the next file's priming."""
    listing = _concat_list([s.path for s in segments], out_dir / "audio-list.txt")
    output = out_dir / "plain-audio-naive.m4a"
    argv = [ffmpeg_exe(), *_COMMON, "-f", "concat", "-safe", "0", "-i", str(listing),
            "-c", "copy", str(output)]  # fmt: skip
    return PlainCommand(argv, output)


def audio_exact(segments: tuple[SegmentFile, ...], out_dir: Path) -> PlainCommand:
    """Decode every segment, pad/trim it to the sample where the next one starts, re-encode.

    ``apad`` + ``atrim`` make each segment exactly as long as its slot (a gap before the next
    segment becomes silence), then ``concat`` joins them and AAC is encoded once.
    """
    rate = OUTPUT_AUDIO_RATE_HZ
    inputs: list[str] = []
    chains: list[str] = []
    for i, seg in enumerate(segments):
        start = round(seg.start_s * rate)
        end_s = segments[i + 1].start_s if i + 1 < len(segments) else seg.start_s + seg.duration_s
        length = round(end_s * rate) - start
        inputs += ["-i", str(seg.path)]
        chains.append(
            f"[{i}:a]aresample={rate},apad=whole_len={length},atrim=end_sample={length},"
            f"asetpts=N/SR/TB[a{i}]"
        )
    labels = "".join(f"[a{i}]" for i in range(len(segments)))
    graph = ";".join([*chains, f"{labels}concat=n={len(segments)}:v=0:a=1[out]"])
    output = out_dir / "plain-audio-exact.m4a"
    argv = [ffmpeg_exe(), *_COMMON, *inputs, "-filter_complex", graph, "-map", "[out]",
            "-ac", str(OUTPUT_AUDIO_CHANNELS), "-c:a", "aac", "-b:a", OUTPUT_AUDIO_BITRATE,
            str(output)]  # fmt: skip
    return PlainCommand(argv, output)


def playable_mp4(video: tuple[SegmentFile, ...], audio: Path, out_dir: Path) -> PlainCommand:
    """Concat demuxer stream copy of the video segments plus the exact audio, fast start."""
    listing = _concat_list([s.path for s in video], out_dir / "video-list.txt")
    output = out_dir / "plain-playable.mp4"
    argv = [ffmpeg_exe(), *_COMMON, "-f", "concat", "-safe", "0", "-i", str(listing),
            "-i", str(audio), "-map", "0:v:0", "-map", "1:a:0", "-c", "copy",
            "-movflags", "+faststart", str(output)]  # fmt: skip
    return PlainCommand(argv, output)


def decode_only(source: Path) -> PlainCommand:
    """Decode the video and discard it: the floor for any re-encode of the same file."""
    argv = [ffmpeg_exe(), *_COMMON, "-i", str(source), "-map", "0:v:0", "-f", "null", "-"]
    return PlainCommand(argv, Path("/dev/null"))


def compressed(source: Path, out_dir: Path) -> PlainCommand:
    """What a person writes for a small copy of screen content."""
    output = out_dir / "plain-compressed.mp4"
    argv = [ffmpeg_exe(), *_COMMON, "-i", str(source), "-vf", "mpdecimate",
            "-fps_mode", "vfr", "-c:v", "libx264", "-preset", COMPRESS_PRESET,
            "-tune", "stillimage", "-crf", str(COMPRESS_CRF), "-c:a", "copy",
            "-movflags", "+faststart", str(output)]  # fmt: skip
    return PlainCommand(argv, output)
