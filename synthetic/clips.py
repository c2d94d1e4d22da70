"""Tiny standalone media files for media-engine tests, and ways to damage them.

Content is chosen so placement can be measured after a round trip through lossy codecs:

* audio clips are a quiet ``TONE_HZ`` tone at ``TONE_AMPLITUDE`` that starts with the onset
  marker (:mod:`synthetic.markers`), unless asked not to;
* video clips show their frame index as a grid of ``GRID_COLS`` x ``GRID_ROWS`` black/white
  blocks (most significant bit first), read back by :func:`read_index`.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from synthetic.markers import with_marker

__all__ = [
    "GRID_COLS",
    "GRID_ROWS",
    "TONE_AMPLITUDE",
    "TONE_HZ",
    "index_image",
    "read_index",
    "tone",
    "truncate",
    "write_random_bytes",
    "write_tone_segment",
    "write_video_segment",
]

#: Peak amplitude of the steady tone between markers (full scale 1.0).
TONE_AMPLITUDE = 0.1  # at most BACKGROUND_MAX_AMPLITUDE, so markers stand out
#: Frequency of the steady tone, in Hz.
TONE_HZ = 440.0
#: The block grid of video clips: 4 x 3 = 12 bits of frame index.
GRID_COLS, GRID_ROWS = 4, 3
#: Gray level (0-255) above which a block reads as a 1.
_BIT_THRESHOLD = 128
#: libx264 quality of video clips (low CRF: the grid must survive).
_CLIP_CRF = "18"

_AUDIO_FORMATS = {"aac": "mp4", "pcm_s16le": "wav", "libopus": "ogg"}
_ENCODER_FORMATS = {"aac": "fltp", "pcm_s16le": "s16", "libopus": "flt"}
_INT16_FULL_SCALE = 32767


def tone(seconds: float, rate: int, *, marker: bool = True) -> np.ndarray:
    """Mono float32 signal: the onset marker at t=0 (optional), then the quiet tone."""
    n = round(seconds * rate)
    t = np.arange(n) / rate
    signal = (TONE_AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)
    return with_marker(signal, rate) if marker else signal


def write_tone_segment(
    path: Path,
    seconds: float,
    rate: int = 48000,
    channels: int = 2,
    codec: str = "aac",
    marker: bool = True,
    faststart: bool = False,
) -> Path:
    """Write an audio-only segment of :func:`tone` (aac: MP4, pcm_s16le: WAV, libopus: Ogg).

    ``faststart`` puts the MP4 index first, so a truncated copy still opens (and fails later).
    """
    layout = "mono" if channels == 1 else "stereo"
    mono = tone(seconds, rate, marker=marker)
    options = {"movflags": "+faststart"} if faststart else None
    with av.open(str(path), "w", format=_AUDIO_FORMATS[codec], container_options=options) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        assert isinstance(stream, av.AudioStream)
        fmt = _ENCODER_FORMATS[codec]
        frame_size = stream.codec_context.frame_size or 1024
        pts = 0
        for i in range(0, len(mono), frame_size):
            chunk = mono[i : i + frame_size]
            planes = np.tile(chunk, (channels, 1))
            if fmt == "s16":
                data = (planes.T.reshape(1, -1) * _INT16_FULL_SCALE).astype(np.int16)
            elif fmt == "flt":
                data = planes.T.reshape(1, -1).astype(np.float32)
            else:
                data = planes.astype(np.float32)
            frame = av.AudioFrame.from_ndarray(data, format=fmt, layout=layout)
            frame.sample_rate = rate
            frame.pts = pts
            frame.time_base = Fraction(1, rate)
            pts += len(chunk)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def _block(bit: int, width: int, height: int) -> tuple[int, int, int, int]:
    """Pixel rectangle (y0, y1, x0, x1) of grid bit ``bit``."""
    row, col = divmod(bit, GRID_COLS)
    y0, y1 = row * height // GRID_ROWS, (row + 1) * height // GRID_ROWS
    x0, x1 = col * width // GRID_COLS, (col + 1) * width // GRID_COLS
    return y0, y1, x0, x1


def index_image(index: int, size: tuple[int, int]) -> np.ndarray:
    """RGB image (``size`` = width, height) whose block grid spells ``index`` in binary."""
    width, height = size
    img = np.zeros((height, width, 3), dtype=np.uint8)
    bits = GRID_COLS * GRID_ROWS
    for bit in range(bits):
        if index >> (bits - 1 - bit) & 1:
            y0, y1, x0, x1 = _block(bit, width, height)
            img[y0:y1, x0:x1] = 255
    return img


def read_index(frame: av.VideoFrame) -> int:
    """Inverse of :func:`index_image` for a decoded frame (any size)."""
    gray = frame.to_ndarray(format="gray").astype(np.float32)
    height, width = gray.shape
    value = 0
    for bit in range(GRID_COLS * GRID_ROWS):
        y0, y1, x0, x1 = _block(bit, width, height)
        # sample the middle of the block so chroma/scaling bleed at the edges does not matter
        dy, dx = (y1 - y0) // 4, (x1 - x0) // 4
        block = gray[y0 + dy : y1 - dy, x0 + dx : x1 - dx]
        value = value << 1 | int(block.mean() > _BIT_THRESHOLD)
    return value


def write_video_segment(
    path: Path,
    seconds: float,
    fps: int = 10,
    size: tuple[int, int] = (160, 120),
    codec: str = "libx264",
    first_index: int = 0,
    faststart: bool = False,
) -> Path:
    """Write a video-only MP4 whose frame ``i`` shows ``first_index + i`` as a block grid."""
    options = {"movflags": "+faststart"} if faststart else None
    with av.open(str(path), "w", format="mp4", container_options=options) as out:
        stream = out.add_stream(codec, rate=fps)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "crf": _CLIP_CRF}
        for i in range(round(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(index_image(first_index + i, size), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def write_random_bytes(path: Path, size: int = 4096, seed: int = 1234) -> Path:
    """A file that is not media at all (``size`` bytes)."""
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


def truncate(path: Path, fraction: float = 0.5) -> Path:
    """Cut a file short, as an interrupted upload would."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path
