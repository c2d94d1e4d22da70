"""Synthetic session recorder for Linux: demos and tests without a Mac.

It writes a real session folder, laid out exactly as the Mac recorder lays
one out, so everything downstream (capture agent, upload, merge workers) can
be exercised end to end on a Linux box with no screen and no microphone:

* ``session.json`` - ``{"id", "name", "started_at", "segments": [{"kind",
  "file", "started_at", "duration"}]}`` (times ISO 8601 with a timezone,
  durations in seconds), written last, via a temporary name and a rename;
* ``screen-NNNN.mp4`` - H.264 in *fragmented* MP4 (crash-safe, like a real
  screen recorder), one every ``segment_seconds`` of session time;
* ``mic-NNNN.m4a`` - AAC microphone segments covering the session except the
  ``audio_holes`` (the microphone recorded nothing while the screen kept
  going); a segment boundary falls on every hole edge and the microphone's
  segment clock restarts when it resumes.

Each segment's ``started_at``/``duration`` are the intended values (its span
on the session clock).  Video frames sit at ``n / fps`` session seconds, so if
``segment_seconds`` is not a whole number of frames a segment's first frame
lies up to one frame after its start (fragmented MP4 has no edit list, so the
file reports it at 0); the timecode strip always holds the true time.

Every segment file is written under a temporary name and renamed once
complete, exactly like a recorder closing a file; ``on_segment`` is called
right after each rename so a capture agent can ship segments while the
"recording" continues.

Content is built so tests can *measure* what a pipeline did with it:

* **Timecode strip** - the top-left corner of every video frame holds
  ``TIMECODE_BITS`` (16) blocks of ``TIMECODE_BLOCK`` (8x8) pixels, black = 0,
  white = 1, encoding the frame's session time in units of 10 ms as an
  unsigned binary integer, most significant bit first (leftmost block).
  :func:`read_timecode` decodes it back to seconds, robustly after H.264
  compression.  The counter wraps after 655.36 s (65536 x 10 ms).
* **Audio onset marker** - every microphone segment *starts* with
  ``MARKER_SECONDS`` (30 ms) of a ``MARKER_HZ`` (1 kHz) tone at amplitude
  ``MARKER_AMPLITUDE`` (0.9), followed by speech-like sound (voiced harmonic
  tone, pitch 100-220 Hz, ~4 Hz syllables, pauses between words, a noise
  floor: never digital silence).  Find the beep in merged audio to check
  where a segment was placed.

Everything is deterministic for a given ``session_id`` and spec.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np
from av.video.reformatter import VideoReformatter

__all__ = [
    "MARKER_AMPLITUDE",
    "MARKER_HZ",
    "MARKER_SECONDS",
    "TIMECODE_BITS",
    "TIMECODE_BLOCK",
    "TIMECODE_UNIT",
    "RecordedSegment",
    "SyntheticSpec",
    "read_timecode",
    "record_synthetic_session",
]

#: Number of blocks in the timecode strip (bits of the counter).
TIMECODE_BITS = 16
#: Side of one timecode block in pixels; the strip is 8 px high, 128 px wide.
TIMECODE_BLOCK = 8
#: Seconds per timecode count (10 ms).
TIMECODE_UNIT = 0.01
#: Length of the 1 kHz onset marker at the start of every audio segment.
MARKER_SECONDS = 0.030
#: Frequency of the onset marker.
MARKER_HZ = 1000.0
#: Peak amplitude of the onset marker (float samples, full scale = 1.0).
MARKER_AMPLITUDE = 0.9

_MOVFLAGS = "+frag_keyframe+empty_moov+default_base_moof"
_VIDEO_TIME_BASE = Fraction(1, 90000)
_AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
_AAC_FRAME = 1024
_EPS = 1e-9


@dataclass(frozen=True)
class RecordedSegment:
    """One finished segment file, as reported to ``on_segment``."""

    kind: Literal["audio", "video"]
    path: Path  # absolute path of the finished file
    file: str  # path relative to the session dir (what goes in session.json)
    started_at: datetime  # tz-aware
    duration: float  # seconds


@dataclass(frozen=True)
class SyntheticSpec:
    """What to record; defaults mimic a one-minute session with a mic gap."""

    duration: float = 60.0  # seconds of session
    segment_seconds: float = 10.0
    # Spans (start, end) in session seconds where the microphone recorded
    # nothing while the screen kept recording.
    audio_holes: tuple[tuple[float, float], ...] = ((25.0, 35.0),)
    video: bool = True
    audio: bool = True
    width: int = 640
    height: int = 360
    fps: int = 15
    sample_rate: int = 48000
    channels: int = 1


@dataclass(frozen=True)
class _Planned:
    kind: Literal["audio", "video"]
    file: str
    start: float  # session seconds
    end: float


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def read_timecode(frame: np.ndarray) -> float:
    """Decode the burnt-in timecode strip of a frame to session seconds.

    Accepts an RGB(A) ``HxWx3``/``HxWx4`` or gray ``HxW`` array (any numeric
    dtype on a 0-255 scale).  Each bit is decided by thresholding the mean of
    its 8x8 block at 128, which survives ordinary H.264 compression.
    """
    arr = np.asarray(frame)
    if arr.ndim == 3:
        arr = arr[..., :3].mean(axis=2) if arr.shape[2] >= 3 else arr[..., 0]
    if arr.ndim != 2:
        raise ValueError(f"expected an HxW or HxWx3 frame, got shape {np.shape(frame)}")
    need_w = TIMECODE_BITS * TIMECODE_BLOCK
    if arr.shape[0] < TIMECODE_BLOCK or arr.shape[1] < need_w:
        raise ValueError(
            f"frame {arr.shape[1]}x{arr.shape[0]} is smaller than the "
            f"{need_w}x{TIMECODE_BLOCK} timecode strip"
        )
    strip = arr[:TIMECODE_BLOCK, :need_w].astype(np.float64)
    means = strip.reshape(TIMECODE_BLOCK, TIMECODE_BITS, TIMECODE_BLOCK).mean(axis=(0, 2))
    value = 0
    for bit in means >= 128.0:
        value = (value << 1) | int(bit)
    return round(value * TIMECODE_UNIT, 6)


def record_synthetic_session(
    dest: Path,
    *,
    session_id: str,
    name: str,
    spec: SyntheticSpec = SyntheticSpec(),  # frozen, so a shared default is safe
    started_at: datetime | None = None,
    on_segment: Callable[[RecordedSegment], None] | None = None,
    realtime: bool = False,
) -> Path:
    """Record a synthetic session into ``dest`` and return ``dest``.

    Segments are produced in the order a recorder would close them (by end
    time, video first on ties), each written to a hidden ``.<file>.partial``
    name and renamed when complete; ``on_segment`` runs right after each
    rename.  ``session.json`` is written last.  With ``realtime=True`` each
    segment is held back until its end time on the wall clock (measured from
    the call), so a watcher sees files appear at recording pace.
    """
    _validate(spec)
    if started_at is None:
        started_at = datetime.now().astimezone()
    elif started_at.tzinfo is None or started_at.utcoffset() is None:
        raise ValueError("started_at must be timezone-aware (e.g. datetime.now().astimezone())")
    if not session_id:
        raise ValueError("session_id must be a non-empty string")
    plan = _plan(spec)

    dest = Path(dest).absolute()
    dest.mkdir(parents=True, exist_ok=True)
    if (dest / "session.json").exists():
        raise FileExistsError(f"{dest} already holds a session (session.json exists)")

    seed = int.from_bytes(hashlib.sha256(session_id.encode()).digest()[:8], "big")
    scene = _Scene(spec, seed) if spec.video else None
    voice = _Voice(spec, seed) if spec.audio else None
    wall0 = time.monotonic()
    records: list[RecordedSegment] = []

    for item in plan:
        final = dest / item.file
        tmp = dest / f".{item.file}.partial"
        if item.kind == "video":
            assert scene is not None
            _write_video(tmp, spec, scene, item.start, item.end)
        else:
            assert voice is not None
            _write_audio(tmp, spec, voice, item.start, item.end)
        if realtime:
            delay = wall0 + item.end - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        os.replace(tmp, final)
        rec = RecordedSegment(
            kind=item.kind,
            path=final,
            file=item.file,
            started_at=started_at + timedelta(seconds=item.start),
            duration=round(item.end - item.start, 9),
        )
        records.append(rec)
        if on_segment is not None:
            on_segment(rec)

    listed = sorted(records, key=lambda r: (r.started_at, r.kind != "video", r.file))
    doc = {
        "id": session_id,
        "name": name,
        "started_at": started_at.isoformat(),
        "segments": [
            {
                "kind": r.kind,
                "file": r.file,
                "started_at": r.started_at.isoformat(),
                "duration": r.duration,
            }
            for r in listed
        ],
    }
    tmp = dest / ".session.json.partial"
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, dest / "session.json")
    return dest


# --------------------------------------------------------------------------
# Validation and planning
# --------------------------------------------------------------------------


def _validate(spec: SyntheticSpec) -> None:
    """Reject specs a recorder could never have produced, saying why."""
    if not (math.isfinite(spec.duration) and spec.duration > 0):
        raise ValueError(f"duration must be a positive number of seconds, got {spec.duration!r}")
    if not (math.isfinite(spec.segment_seconds) and spec.segment_seconds > 0):
        raise ValueError(f"segment_seconds must be positive, got {spec.segment_seconds!r}")
    if not (spec.video or spec.audio):
        raise ValueError("at least one of video or audio must be enabled")
    if spec.video:
        if not isinstance(spec.fps, int) or not 1 <= spec.fps <= 240:
            raise ValueError(f"fps must be an integer between 1 and 240, got {spec.fps!r}")
        min_w = TIMECODE_BITS * TIMECODE_BLOCK
        for label, value, lo, hi in (
            ("width", spec.width, min_w, 7680),
            ("height", spec.height, 16, 4320),
        ):
            if not isinstance(value, int) or not lo <= value <= hi:
                raise ValueError(f"{label} must be an integer in [{lo}, {hi}], got {value!r}")
            if value % 2:
                raise ValueError(f"{label} must be even for yuv420p H.264, got {value}")
    if spec.audio:
        if spec.sample_rate not in _AAC_RATES:
            raise ValueError(
                f"sample_rate {spec.sample_rate!r} is not an AAC rate; use one of {_AAC_RATES}"
            )
        if spec.channels not in (1, 2):
            raise ValueError(f"channels must be 1 or 2, got {spec.channels!r}")
    prev_end = 0.0
    for hole in spec.audio_holes if spec.audio else ():  # holes only matter with audio
        if len(hole) != 2:
            raise ValueError(f"audio hole must be a (start, end) pair, got {hole!r}")
        start, end = float(hole[0]), float(hole[1])
        if not (math.isfinite(start) and math.isfinite(end)) or start >= end:
            raise ValueError(f"audio hole {hole!r} must have start < end")
        if start < 0 or end > spec.duration:
            raise ValueError(f"audio hole {hole!r} lies outside the session [0, {spec.duration}]")
        if start < prev_end:
            raise ValueError(
                f"audio hole {hole!r} overlaps or precedes the previous hole "
                f"(holes must be sorted and not overlap)"
            )
        prev_end = end


def _cuts(start: float, end: float, step: float) -> list[tuple[float, float]]:
    """Split [start, end) every ``step`` seconds from ``start``."""
    out = []
    k = 0
    while True:
        a = start + k * step
        if a >= end - _EPS:
            break
        out.append((a, min(start + (k + 1) * step, end)))
        k += 1
    return out


def _plan(spec: SyntheticSpec) -> list[_Planned]:
    """Lay out every segment, in the order a recorder would close them."""
    items: list[_Planned] = []
    if spec.video:
        for i, (a, b) in enumerate(_cuts(0.0, spec.duration, spec.segment_seconds)):
            first, stop = _frame_range(a, b, spec.fps)
            if first >= stop:
                raise ValueError(
                    f"video segment [{a:g}, {b:g}) s holds no frame at {spec.fps} fps; "
                    f"adjust duration or segment_seconds"
                )
            items.append(_Planned("video", f"screen-{i:04d}.mp4", a, b))
    if spec.audio:
        runs: list[tuple[float, float]] = []
        pos = 0.0
        for hs, he in spec.audio_holes:
            if hs > pos:
                runs.append((pos, float(hs)))
            pos = float(he)
        if pos < spec.duration:
            runs.append((pos, spec.duration))
        n = 0
        for ra, rb in runs:
            for a, b in _cuts(ra, rb, spec.segment_seconds):
                if b - a < MARKER_SECONDS - _EPS:
                    raise ValueError(
                        f"audio segment [{a:g}, {b:g}) s is shorter than the "
                        f"{MARKER_SECONDS * 1000:g} ms onset marker; adjust audio_holes, "
                        f"duration or segment_seconds"
                    )
                items.append(_Planned("audio", f"mic-{n:04d}.m4a", a, b))
                n += 1
    items.sort(key=lambda p: (p.end, p.start, p.kind != "video"))
    return items


def _frame_range(a: float, b: float, fps: int) -> tuple[int, int]:
    """Frame numbers n with n/fps in [a, b) on the session clock."""
    return math.ceil(a * fps - 1e-6), math.ceil(b * fps - 1e-6)


# --------------------------------------------------------------------------
# Video: a screen-like scene drawn with numpy
# --------------------------------------------------------------------------


class _Typist:
    """Keystroke timing: bursts of typing separated by thinking pauses."""

    def __init__(self, rng: np.random.Generator, t0: float, fast: bool) -> None:
        self.rng = rng
        self.t = t0
        self.fast = fast
        self.left = 0

    def key(self) -> float:
        if self.left <= 0:
            self.t += float(self.rng.uniform(0.8, 3.0))
            self.left = int(self.rng.integers(12, 60))
        self.left -= 1
        lo, hi = (0.04, 0.12) if self.fast else (0.06, 0.18)
        self.t += float(self.rng.uniform(lo, hi))
        return self.t

    def wait(self, seconds: float) -> float:
        self.t += seconds
        return self.t


@dataclass
class _Page:
    start: float  # when this (cleared) page starts showing
    times: np.ndarray  # reveal time of each glyph, non-decreasing
    glyphs: list[tuple[int, int, int, int, tuple[int, int, int]]]  # y0, y1, x0, x1, color
    caret_times: np.ndarray  # time of each keystroke on the page
    carets: list[tuple[int, int]]  # (x, y) of each keystroke position


class _TextWindow:
    """A static window whose text appears over time, page after page.

    Glyphs are painted incrementally onto the scene canvas (only those that
    appeared since the previous frame), which keeps rendering cheap.
    """

    def __init__(
        self,
        kind: str,
        rect: tuple[int, int, int, int],
        cell: tuple[int, int],
        bg: tuple[int, int, int],
        palette: list[tuple[int, int, int]],
        seed: int,
    ) -> None:
        self.kind = kind
        self.x0, self.y0, self.x1, self.y1 = rect
        self.cw, self.ch = cell
        self.bg = np.array(bg, np.uint8)
        self.palette = palette
        self.seed = seed
        self.cols = max(1, (self.x1 - self.x0) // self.cw)
        self.rows = max(1, (self.y1 - self.y0) // self.ch)
        self.visible = np.ones((self.y1 - self.y0, self.x1 - self.x0), bool)
        self.reset()

    def reset(self) -> None:
        """Start over from an empty window (the canvas must be reset too)."""
        self.rng = np.random.default_rng(self.seed)
        self.typist = _Typist(self.rng, float(self.rng.uniform(0.3, 1.5)), self.kind == "editor")
        self.page: _Page | None = None
        self.page_end = 0.0
        self.shown: _Page | None = None
        self.applied = 0

    def _page_at(self, t: float) -> _Page | None:
        # Pages are generated lazily and only the current one is kept, so a
        # long session costs no more memory than a short one.
        while self.page is None or t >= self.page_end:
            self.page = self._make_page()
            self.page_end = self.typist.t  # the next page starts then
        return self.page if t >= self.page.start else None

    def _make_page(self) -> _Page:
        rng, ty = self.rng, self.typist
        start = ty.t
        times: list[float] = []
        glyphs: list[tuple[int, int, int, int, tuple[int, int, int]]] = []
        keys: list[float] = []
        carets: list[tuple[int, int]] = []
        glyph_w = max(1, self.cw - 1)
        short_top = self.ch // 3

        def put(row: int, col: int, when: float, color: tuple[int, int, int]) -> None:
            x, y = col * self.cw, row * self.ch
            top = y + (0 if rng.random() < 0.3 else short_top)
            times.append(when)
            glyphs.append((top, y + self.ch - 1, x, x + glyph_w, color))

        def key(row: int, col: int) -> float:
            when = ty.key()
            keys.append(when)
            carets.append((col * self.cw, row * self.ch))
            return when

        row = 0
        while row < self.rows:
            if self.kind == "editor":
                if rng.random() < 0.15:  # blank line
                    key(row, 0)
                    row += 1
                    continue
                col = int(rng.integers(0, 4)) * 2
                end = min(self.cols, col + int(rng.integers(6, max(8, self.cols))))
                while col < end:
                    color = self.palette[int(rng.integers(0, len(self.palette)))]
                    for _ in range(int(rng.integers(2, 9))):
                        if col >= end:
                            break
                        put(row, col, key(row, col), color)
                        col += 1
                    if col < end:
                        key(row, col)  # space
                        col += 1
                row += 1
            else:  # terminal: prompt, typed command, then its output at once
                prompt_t = ty.wait(float(rng.uniform(0.2, 0.6)))
                for col in range(min(2, self.cols)):
                    put(row, col, prompt_t, self.palette[0])
                col = 2
                end = min(self.cols, 2 + int(rng.integers(5, 25)))
                while col < end:
                    when = key(row, col)
                    if rng.random() > 0.15:
                        put(row, col, when, self.palette[1])
                    col += 1
                row += 1
                out_t = ty.wait(float(rng.uniform(0.3, 1.2)))
                for _ in range(int(rng.integers(0, 7))):
                    if row >= self.rows:
                        break
                    for col in range(int(rng.integers(3, self.cols + 1))):
                        if rng.random() > 0.2:
                            put(row, col, out_t, self.palette[2])
                    row += 1
                ty.left = 0  # think before the next command
        ty.wait(float(rng.uniform(0.5, 1.5)))  # then "clear" / open the next file
        return _Page(start, np.array(times), glyphs, np.array(keys), carets)

    def update(self, canvas: np.ndarray, t: float) -> None:
        """Paint onto ``canvas`` the text that appeared up to time ``t``."""
        page = self._page_at(t)
        region = canvas[self.y0 : self.y1, self.x0 : self.x1]
        if page is not self.shown:  # new page: clear the window
            np.copyto(region, self.bg, where=self.visible[..., None])
            self.shown, self.applied = page, 0
        if page is None:
            return
        upto = int(np.searchsorted(page.times, t, side="right"))
        for y0, y1, x0, x1, color in page.glyphs[self.applied : upto]:
            vis = self.visible[y0:y1, x0:x1]
            if vis.all():
                region[y0:y1, x0:x1] = color
            else:
                np.copyto(region[y0:y1, x0:x1], np.array(color, np.uint8), where=vis[..., None])
        self.applied = max(self.applied, upto)

    def draw_caret(self, out: np.ndarray, t: float) -> None:
        """Blinking caret at the next keystroke position."""
        page = self.shown
        if page is None or int(t * 2) % 2:
            return
        i = int(np.searchsorted(page.caret_times, t, side="right"))
        if i >= len(page.carets):
            return
        x, y = page.carets[i]
        bar = (slice(y, y + self.ch - 1), slice(x, x + max(1, self.cw // 4)))
        region = out[self.y0 : self.y1, self.x0 : self.x1]
        np.copyto(region[bar], np.uint8(230), where=self.visible[bar][..., None])


class _Cursor:
    """A mouse pointer that rests, then glides to a new spot."""

    def __init__(self, rng: np.random.Generator, width: int, height: int, duration: float):
        size = max(6, height // 24)
        r, c = np.mgrid[0:size, 0:size]
        fill = (c <= r * 0.6) & (r < size)
        grown = fill.copy()
        grown[1:, :] |= fill[:-1, :]
        grown[:-1, :] |= fill[1:, :]
        grown[:, 1:] |= fill[:, :-1]
        grown[:, :-1] |= fill[:, 1:]
        self.fill, self.outline, self.size = fill, grown & ~fill, size
        self.w, self.h = width, height
        times, xs, ys = [0.0], [rng.uniform(0.2, 0.8) * width], [rng.uniform(0.3, 0.8) * height]
        t = 0.0
        while t < duration + 1.0:
            t += float(rng.uniform(1.0, 4.0))  # rest
            times.append(t)
            xs.append(xs[-1])
            ys.append(ys[-1])
            t += float(rng.uniform(0.3, 0.8))  # glide
            times.append(t)
            xs.append(float(rng.uniform(0.05, 0.9)) * width)
            ys.append(float(rng.uniform(0.15, 0.9)) * height)
        self.times, self.xs, self.ys = np.array(times), np.array(xs), np.array(ys)

    def draw(self, out: np.ndarray, t: float) -> None:
        i = int(np.clip(np.searchsorted(self.times, t, side="right") - 1, 0, len(self.times) - 2))
        u = (t - self.times[i]) / (self.times[i + 1] - self.times[i])
        u = min(max(u, 0.0), 1.0)
        u = u * u * (3 - 2 * u)  # ease in/out
        x = int(self.xs[i] + (self.xs[i + 1] - self.xs[i]) * u)
        y = int(self.ys[i] + (self.ys[i + 1] - self.ys[i]) * u)
        s = self.size
        x1, y1 = min(x + s, self.w), min(y + s, self.h)
        if x1 <= x or y1 <= y:
            return
        region = out[y:y1, x:x1]
        np.copyto(region, np.uint8(0), where=self.outline[: y1 - y, : x1 - x, None])
        np.copyto(region, np.uint8(255), where=self.fill[: y1 - y, : x1 - x, None])


class _Scene:
    """A desktop with an editor and a terminal, a pointer and the timecode."""

    def __init__(self, spec: SyntheticSpec, seed: int) -> None:
        w, h = spec.width, spec.height
        rng = np.random.default_rng(seed)
        self.w, self.h = w, h
        # Desktop: soft diagonal gradient with a couple of low-frequency blobs.
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        u, v = xx / w, yy / h
        blob = np.exp(-(((u - 0.8) ** 2) + (v - 0.2) ** 2) * 6.0)
        base = np.empty((h, w, 3), np.float32)
        base[..., 0] = 40 + 60 * v + 80 * blob
        base[..., 1] = 60 + 40 * u + 30 * blob
        base[..., 2] = 110 + 70 * (1 - v) + 40 * blob
        base = np.clip(base, 0, 255).astype(np.uint8)
        menu_h = max(TIMECODE_BLOCK + 2, round(h / 28))
        base[:menu_h] = (236, 236, 236)
        title_h = max(3, round(h / 30))
        cell_h = max(4, round(h / 36))
        cell = (max(3, round(cell_h * 0.6)), cell_h)
        pad = max(1, cell_h // 2)

        def window(fx: float, fy: float, fw: float, fh: float) -> tuple[int, int, int, int]:
            x0 = round(fx * w)
            y0 = max(menu_h + 2, round(fy * h))
            return x0, y0, min(w - 1, x0 + round(fw * w)), min(h - 1, y0 + round(fh * h))

        self.windows: list[_TextWindow] = []
        specs = [
            (
                "editor",
                window(0.04, 0.09, 0.58, 0.80),
                (30, 33, 41),
                (60, 64, 75),
                [(200, 200, 210), (120, 180, 250), (230, 160, 90), (150, 210, 120)],
            ),
            (
                "terminal",
                window(0.50, 0.40, 0.46, 0.52),
                (12, 12, 14),
                (90, 90, 96),
                [(110, 220, 110), (225, 225, 225), (170, 170, 170)],
            ),
        ]
        for kind, (x0, y0, x1, y1), bg, title, palette in specs:
            base[y0 + 2 : y1 + 2, x0 + 2 : x1 + 2] //= 2  # drop shadow
            base[y0:y1, x0:x1] = bg
            base[y0 : y0 + title_h, x0:x1] = title
            for k, dot in enumerate([(240, 90, 80), (240, 190, 60), (90, 200, 90)]):
                dx = x0 + title_h // 2 + k * title_h
                base[y0 + title_h // 4 : y0 + title_h - title_h // 4, dx : dx + title_h // 2] = dot
            seed_win = int(rng.integers(1 << 62))
            for other in self.windows:  # later windows (and shadows) cover earlier ones
                ox0, oy0, ox1, oy1 = other.x0, other.y0, other.x1, other.y1
                cx0, cy0 = max(ox0, x0), max(oy0, y0)
                cx1, cy1 = min(ox1, x1 + 2), min(oy1, y1 + 2)
                if cx0 < cx1 and cy0 < cy1:
                    other.visible[cy0 - oy0 : cy1 - oy0, cx0 - ox0 : cx1 - ox0] = False
            content = (x0 + pad, y0 + title_h + pad, x1 - pad, y1 - pad)
            if content[2] - content[0] >= cell[0] and content[3] - content[1] >= cell[1]:
                self.windows.append(_TextWindow(kind, content, cell, bg, palette, seed_win))
            # else: frame too small for text in this window; keep just its chrome.
        self.base = base
        self.cursor = _Cursor(rng, w, h, spec.duration)
        self.canvas = base.copy()  # desktop + text typed so far
        self.buf = np.empty_like(base)
        self.last_t = -math.inf
        self.bit_shifts = np.arange(TIMECODE_BITS - 1, -1, -1)

    def render(self, t: float) -> np.ndarray:
        """The screen at session time ``t`` (a reused buffer)."""
        if t < self.last_t:  # time went backwards: replay from the start
            np.copyto(self.canvas, self.base)
            for win in self.windows:
                win.reset()
        self.last_t = t
        for win in self.windows:
            win.update(self.canvas, t)
        out = self.buf
        np.copyto(out, self.canvas)
        for win in self.windows:
            win.draw_caret(out, t)
        self.cursor.draw(out, t)
        value = round(t / TIMECODE_UNIT) % (1 << TIMECODE_BITS)
        bits = ((value >> self.bit_shifts) & 1).astype(np.uint8) * 255
        strip = np.repeat(bits, TIMECODE_BLOCK)
        out[:TIMECODE_BLOCK, : TIMECODE_BITS * TIMECODE_BLOCK] = strip[None, :, None]
        return out


def _write_video(path: Path, spec: SyntheticSpec, scene: _Scene, a: float, b: float) -> None:
    """Encode the frames of session span [a, b) to a fragmented H.264 MP4."""
    n0, n1 = _frame_range(a, b, spec.fps)
    with av.open(str(path), "w", format="mp4", options={"movflags": _MOVFLAGS}) as out:
        stream = out.add_stream(
            "libx264",
            rate=spec.fps,
            options={"preset": "ultrafast", "tune": "stillimage", "crf": "23"},
        )
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
        stream.time_base = _VIDEO_TIME_BASE
        stream.codec_context.time_base = _VIDEO_TIME_BASE
        stream.codec_context.gop_size = 2 * spec.fps  # a fragment every 2 s
        reformatter = VideoReformatter()  # reused: much cheaper than frame.reformat()
        for n in range(n0, n1):
            t = n / spec.fps
            frame = av.VideoFrame.from_ndarray(scene.render(t), format="rgb24")
            frame = reformatter.reformat(frame, format="yuv420p")
            frame.pts = round((t - a) / _VIDEO_TIME_BASE)
            frame.time_base = _VIDEO_TIME_BASE
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


# --------------------------------------------------------------------------
# Audio: speech-like microphone signal
# --------------------------------------------------------------------------


class _Voice:
    """Deterministic speech-like signal as a function of session time."""

    def __init__(self, spec: SyntheticSpec, seed: int) -> None:
        rng = np.random.default_rng(seed ^ 0x5EED)
        self.seed = seed
        self.sr = spec.sample_rate
        starts, lens, gains, f1s, f2s = [], [], [], [], []
        t = float(rng.uniform(0.05, 0.3))
        while t < spec.duration + 1.0:
            for _ in range(int(rng.integers(1, 5))):  # syllables in a word
                ln = float(rng.uniform(0.18, 0.30))  # ~4 syllables/s
                starts.append(t)
                lens.append(ln)
                gains.append(float(rng.uniform(0.55, 1.0)))
                f1s.append(float(rng.uniform(350, 850)))
                f2s.append(float(rng.uniform(1000, 2300)))
                t += ln
            # Short pause between words, sometimes a longer one between phrases.
            t += float(rng.uniform(0.5, 1.2) if rng.random() < 0.15 else rng.uniform(0.06, 0.22))
        self.starts, self.lens = np.array(starts), np.array(lens)
        self.gains, self.f1, self.f2 = np.array(gains), np.array(f1s), np.array(f2s)

    def render(self, a: float, n: int, index: int) -> np.ndarray:
        """Return ``n`` float32 samples of session time starting at ``a``."""
        t = a + np.arange(n, dtype=np.float64) / self.sr
        # Pitch 155 +/- 53 Hz (102-208 Hz), with its exact phase integral so
        # the voice is continuous across segment boundaries.
        w1, w2 = 2 * np.pi * 0.23, 2 * np.pi * 0.71
        f0 = 155 + 35 * np.sin(w1 * t + 0.7) + 18 * np.sin(w2 * t + 2.1)
        phase = (
            2 * np.pi * (155 * t - 35 / w1 * np.cos(w1 * t + 0.7) - 18 / w2 * np.cos(w2 * t + 2.1))
        )
        idx = np.searchsorted(self.starts, t, side="right") - 1
        idx_c = np.clip(idx, 0, len(self.starts) - 1)
        u = (t - self.starts[idx_c]) / self.lens[idx_c]
        inside = (idx >= 0) & (u < 1.0)
        env = np.where(inside, np.sin(np.pi * np.clip(u, 0, 1)) ** 1.5 * self.gains[idx_c], 0.0)
        # Harmonic weights (1/k roll-off shaped by two per-syllable formants)
        # change slowly: compute them every 4 ms and interpolate.
        step = max(1, self.sr // 250)
        grid = np.arange(0, n + step, step)
        gi = np.minimum(grid, n - 1)
        f0g, f1g, f2g = f0[gi], self.f1[idx_c[gi]], self.f2[idx_c[gi]]
        nyq = self.sr / 2 - 200
        weights = []
        for k in range(1, 16):
            fk = k * f0g
            amp = np.exp(-(((fk - f1g) / 250) ** 2)) + 0.6 * np.exp(-(((fk - f2g) / 350) ** 2))
            weights.append(np.where(fk < nyq, (amp + 0.15) / k, 0.0))
        norm = np.maximum(np.sum(weights, axis=0), 1e-6)
        # sin(k*phase) by the Chebyshev recurrence: cheaper than 15 sin() calls.
        two_cos = 2 * np.cos(phase)
        prev, cur = np.zeros(n), np.sin(phase)
        voiced = np.zeros(n)
        for k, wk in enumerate(weights, start=1):
            voiced += np.interp(np.arange(n), grid, wk / norm) * cur
            if k < len(weights):
                prev, cur = cur, two_cos * cur - prev
        noise_rng = np.random.default_rng([self.seed & 0xFFFFFFFF, index])
        noise = noise_rng.standard_normal(n) * (0.004 + 0.02 * env)
        signal = 0.55 * env * voiced + noise
        m = min(n, round(MARKER_SECONDS * self.sr))
        signal[:m] = MARKER_AMPLITUDE * np.sin(2 * np.pi * MARKER_HZ * np.arange(m) / self.sr)
        return signal.astype(np.float32)


def _write_audio(path: Path, spec: SyntheticSpec, voice: _Voice, a: float, b: float) -> None:
    """Encode session span [a, b) of the voice to AAC in an .m4a file."""
    sr = spec.sample_rate
    n = round((b - a) * sr)
    mono = voice.render(a, n, index=round(a * 1000))
    layout = "mono" if spec.channels == 1 else "stereo"
    planes = np.repeat(mono[None, :], spec.channels, axis=0)
    with av.open(str(path), "w", format="ipod") as out:
        stream = out.add_stream("aac", rate=sr, layout=layout)
        stream.bit_rate = 64000 * spec.channels
        for off in range(0, n, _AAC_FRAME):
            chunk = np.ascontiguousarray(planes[:, off : off + _AAC_FRAME])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate = sr
            frame.pts = off
            frame.time_base = Fraction(1, sr)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
