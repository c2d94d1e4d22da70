"""Tiny synthetic media for the media-engine tests.

Content is chosen so placement can be measured after a round trip through lossy codecs: audio
segments start with a loud 1 kHz marker over a quiet tone, video frames carry their index as a
grid of black/white blocks.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

MARKER_SECONDS = 0.05
MARKER_AMPLITUDE = 0.8
TONE_AMPLITUDE = 0.1
GRID_COLS, GRID_ROWS = 4, 3  # 12 bits of frame index

_AUDIO_FORMATS = {"aac": "mp4", "pcm_s16le": "wav", "libopus": "ogg"}
_ENCODER_FORMATS = {"aac": "fltp", "pcm_s16le": "s16", "libopus": "flt"}


def tone(seconds: float, rate: int, *, marker: bool = True) -> np.ndarray:
    """Mono float signal: a loud marker burst at t=0 (optional), quiet 440 Hz elsewhere."""
    n = round(seconds * rate)
    t = np.arange(n) / rate
    signal = TONE_AMPLITUDE * np.sin(2 * np.pi * 440 * t)
    if marker:
        m = min(n, round(MARKER_SECONDS * rate))
        signal[:m] = MARKER_AMPLITUDE * np.sin(2 * np.pi * 1000 * t[:m])
    return signal.astype(np.float32)


def write_tone_segment(
    path: Path,
    seconds: float,
    rate: int = 48000,
    channels: int = 2,
    codec: str = "aac",
    marker: bool = True,
    faststart: bool = False,
) -> Path:
    """Write an audio-only segment (aac → MP4, pcm_s16le → WAV, libopus → Ogg).

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
                data = (planes.T.reshape(1, -1) * 32767).astype(np.int16)
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


def index_image(index: int, size: tuple[int, int]) -> np.ndarray:
    """RGB image whose block grid spells ``index`` in binary (most significant bit first)."""
    width, height = size
    img = np.zeros((height, width, 3), dtype=np.uint8)
    for bit in range(GRID_COLS * GRID_ROWS):
        if index >> (GRID_COLS * GRID_ROWS - 1 - bit) & 1:
            row, col = divmod(bit, GRID_COLS)
            y0, y1 = row * height // GRID_ROWS, (row + 1) * height // GRID_ROWS
            x0, x1 = col * width // GRID_COLS, (col + 1) * width // GRID_COLS
            img[y0:y1, x0:x1] = 255
    return img


def read_index(frame: av.VideoFrame) -> int:
    """Inverse of :func:`index_image` for a decoded frame (any size)."""
    gray = frame.to_ndarray(format="gray").astype(np.float32)
    height, width = gray.shape
    value = 0
    for bit in range(GRID_COLS * GRID_ROWS):
        row, col = divmod(bit, GRID_COLS)
        y0, y1 = row * height // GRID_ROWS, (row + 1) * height // GRID_ROWS
        x0, x1 = col * width // GRID_COLS, (col + 1) * width // GRID_COLS
        # sample the middle of the block so chroma/scaling bleed at the edges does not matter
        dy, dx = (y1 - y0) // 4, (x1 - x0) // 4
        value = value << 1 | int(gray[y0 + dy : y1 - dy, x0 + dx : x1 - dx].mean() > 128)
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
            stream.options = {"preset": "ultrafast", "crf": "18"}
        for i in range(round(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(index_image(first_index + i, size), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def decode_audio(path: Path) -> tuple[np.ndarray, int]:
    """Decode the first audio stream to float32 (channels, samples) and its rate."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        resampler = av.AudioResampler(format="fltp", rate=rate)
        chunks = []
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray())
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray())
    return np.concatenate(chunks, axis=1), rate


def decode_video(path: Path) -> tuple[list[int], list[float]]:
    """Decode the first video stream to (frame indices read from the grid, frame times)."""
    indices: list[int] = []
    times: list[float] = []
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.video[0]):
            indices.append(read_index(frame))
            times.append(float(frame.time or 0.0))
    return indices, times


def write_random_bytes(path: Path, size: int = 4096, seed: int = 1234) -> Path:
    """A file that is not media at all."""
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


def truncate(path: Path, fraction: float = 0.5) -> Path:
    """Cut a file short, as an interrupted upload would."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path
