"""Measure what an output contains: where the audio markers landed, and video quality.

Markers are found by decoding the first audio stream with PyAV and counting samples from the
first decoded one, which is how a player lays audio out; the onset of each marker is found by
:mod:`synthetic.markers` (the one definition every generator and test uses).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthetic.decode import file_marker_onsets
from synthetic.ffmpeg_session import AUDIO_RATE_HZ, FPS, ffmpeg_exe

__all__ = ["Drift", "Quality", "find_markers", "marker_drift", "video_quality"]


@dataclass(frozen=True)
class Drift:
    """Marker positions against where the session says each segment starts."""

    found: int
    expected: int
    last_join_ms: float | None  # last segment's marker: measured - expected
    max_abs_ms: float | None  # worst marker over the whole file

    @property
    def markers(self) -> str:
        return f"{self.found}/{self.expected}"


@dataclass(frozen=True)
class Quality:
    """SSIM (all planes) and PSNR (average) of a re-encode against its source."""

    ssim: float | None
    psnr_db: float | None
    frames_compared: int | None


def find_markers(path: Path, rate: int = AUDIO_RATE_HZ) -> list[int]:
    """Sample indices of every marker onset in the first audio stream of ``path``."""
    return file_marker_onsets(path, rate)


def marker_drift(
    path: Path, expected_s: list[float], *, onset_s: float = 0.0, rate: int = AUDIO_RATE_HZ
) -> Drift:
    """Match every expected marker time to the nearest found onset and report the error.

    ``onset_s`` is where the detector finds the marker inside its own segment file (a fraction
    of a millisecond after the tone starts); it is subtracted so a perfect placement reads 0.
    """
    onsets = np.asarray(find_markers(path, rate), dtype=np.int64)
    if onsets.size == 0:
        return Drift(0, len(expected_s), None, None)
    wanted = np.asarray([round((t + onset_s) * rate) for t in expected_s], dtype=np.int64)
    if onsets.size == wanted.size:  # pair in order: drift may exceed half a segment
        matched = onsets
    else:  # a marker is missing or extra: fall back to the nearest onset
        matched = np.asarray([onsets[np.argmin(np.abs(onsets - w))] for w in wanted])
    errors_ms = [(int(m) - int(w)) * 1000.0 / rate for m, w in zip(matched, wanted, strict=True)]
    return Drift(
        found=int(onsets.size),
        expected=len(expected_s),
        last_join_ms=errors_ms[-1],
        max_abs_ms=max(abs(e) for e in errors_ms),
    )


_SSIM_RE = re.compile(r"SSIM Y:.*All:([0-9.]+)")
_PSNR_RE = re.compile(r"PSNR y:.*average:([0-9.]+|inf)")
_FRAMES_RE = re.compile(r"n:(\d+) ")


def video_quality(distorted: Path, reference: Path, *, stride: int) -> Quality:
    """SSIM and PSNR of ``distorted`` against ``reference``, one frame in ``stride``.

    The distorted file may be variable-frame-rate (decimated): it is brought back to FPS by
    repeating frames, exactly as a player shows it, before comparing frame by frame.
    """
    pick = f"select='not(mod(n\\,{stride}))'" if stride > 1 else "null"
    graph = (
        f"[0:v]fps={FPS},setpts=PTS-STARTPTS,{pick},split[d0][d1];"
        f"[1:v]setpts=PTS-STARTPTS,{pick},split[r0][r1];"
        "[d0][r0]ssim=stats_file=-[s];[d1][r1]psnr[p]"
    )
    argv = [
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "info",
        "-i", str(distorted), "-i", str(reference), "-filter_complex", graph,
        "-map", "[s]", "-f", "null", "-", "-map", "[p]", "-f", "null", "-",
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"quality measurement failed: {proc.stderr.strip()[-1500:]}")
    ssim = _SSIM_RE.findall(proc.stderr)
    psnr = _PSNR_RE.findall(proc.stderr)
    frames = _FRAMES_RE.findall(proc.stdout)
    return Quality(
        ssim=float(ssim[-1]) if ssim else None,
        psnr_db=float(psnr[-1]) if psnr else None,
        frames_compared=int(frames[-1]) if frames else None,
    )
