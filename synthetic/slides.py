"""Slides of a :class:`synthetic.lecture.Lecture` as a screen picture: real words, known times.

Every slide shares one template, as a real deck does (same background, the title large at the
top under an accent rule, bullet lines below), so a slide change is told apart by its words,
not by a new colour. Inside a slide, screen activity that must *not* make a chapter:

* ``typing`` - command lines typed character by character under the bullets, with a caret;
* ``clock`` - a ``HH:MM:SS`` clock in the bottom-right corner, ticking each second;
* ``scroll`` - the body scrolls up smoothly by ``SCROLL_LINES`` lines every ``SCROLL_EVERY_S``
  seconds, new lines coming into view (the title stays put);
* a mouse pointer that rests and glides, on every slide (the one of :mod:`synthetic.screen`).

The timecode strip (:mod:`synthetic.timecode`) sits in the top-left corner as in
:class:`synthetic.screen.Scene`, and :class:`SlideScene` has its interface (``render(t)``),
so it records into segments the same way. Rendering is cheap: each slide's static picture
and scrolling body are drawn once with Pillow and cached; a frame is a copy of that picture
plus the few pixels that move. Deterministic for a lecture, size and seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Final, Protocol

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image, ImageDraw, ImageFont

from synthetic.lecture import Lecture, Line, Slide
from synthetic.screen import _Cursor
from synthetic.timecode import TIMECODE_BLOCK_PX, TIMECODE_STRIP_WIDTH_PX, timecode_strip

__all__ = [
    "Renderer",
    "SlideScene",
    "random_lecture",
    "write_lecture_video",
]

Color = tuple[int, int, int]


class Renderer(Protocol):
    """What draws a screen: :class:`SlideScene`, :class:`synthetic.screen.Scene`."""

    def render(self, t: float) -> np.ndarray: ...


#: The template every slide shares.
BACKGROUND: Final[Color] = (246, 244, 238)
TITLE_COLOR: Final[Color] = (28, 52, 96)
ACCENT_COLOR: Final[Color] = (214, 120, 40)
TEXT_COLOR: Final[Color] = (40, 40, 44)
TYPED_COLOR: Final[Color] = (20, 110, 60)
CLOCK_BG: Final[Color] = (40, 44, 52)
CLOCK_FG: Final[Color] = (235, 235, 235)
#: Layout, as fractions of the frame height (sizes scale with the picture).
TITLE_TOP = 0.09
TITLE_SIZE = 0.085
LINE_SIZE = 0.05
LINE_PITCH = 1.7  # line spacing, in line font sizes
BODY_TOP = 0.32
MARGIN = 0.06  # left/right margin, as a fraction of the width
#: Typing: seconds into the slide before the first key, keys per second (range), pause
#: between typed lines (seconds), caret blink period (seconds).
TYPING_DELAY_S = 2.0
TYPING_RATE_CPS = (5.0, 12.0)
TYPING_LINE_PAUSE_S = 1.5
CARET_BLINK_S = 1.0
#: Scroll: seconds into the slide of the first scroll, lines per scroll, seconds each scroll
#: lasts, seconds from one scroll's start to the next.
SCROLL_DELAY_S = 4.0
SCROLL_LINES = 3
SCROLL_DURATION_S = 3.0
SCROLL_EVERY_S = 10.0
#: What the clock shows at session time 0 (seconds after midnight: 10:42:00).
CLOCK_ORIGIN_S = 10 * 3600 + 42 * 60

#: Commands the ``typing`` activity types, in turn.
TYPED_LINES: Final = (
    "$ alembic upgrade head",
    "$ pytest -q tests/workers",
    "$ git log --oneline -5",
    "$ celery -A workers inspect active",
    "$ psql -c 'select count(*) from jobs'",
)
#: Body lines that a scrolling slide brings into view after its own.
MORE_LINES: Final = (
    "Check the worker logs",
    "Measure before tuning",
    "Keep the queue short",
    "Write the test first",
    "Name the failing file",
    "Retry only what can pass",
    "Document every setting",
    "Read the error message twice",
    "Prefer small commits",
    "Watch the memory peak",
    "Profile the slow path",
    "Cache what is expensive",
)
#: Words of the titles and lines of :func:`random_lecture`.
_TOPICS: Final = (
    "Database Migrations", "Celery Workers", "Search Index", "Screen Capture", "Audio Mixing",
    "Video Encoding", "Storage Layout", "Retry Policy", "Health Checks", "Message Broker",
    "Chapter Detection", "Speech Recognition", "Keyword Extraction", "Release Process",
    "Error Budgets", "Load Testing", "Access Control", "Backup Strategy", "Cost Review",
    "Incident Review", "Cache Design", "Deploy Pipeline", "Query Planning", "Memory Profiling",
)  # fmt: skip
_ACTIVITIES: Final = ((), ("typing",), ("clock",), ("scroll",), ("typing", "clock"))


def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(6, px))


def _smoothstep(u: float) -> float:
    u = min(max(u, 0.0), 1.0)
    return u * u * (3.0 - 2.0 * u)


@dataclass
class _Typed:
    """One typed line: its picture, where it goes, and when each character appears."""

    image: np.ndarray  # h x w x 3, the whole line on the background
    x: int
    y: int
    key_times: np.ndarray  # session seconds of each character, increasing
    widths: np.ndarray  # pixel width of the first k characters, k = 0..len


@dataclass
class _SlideArt:
    """What is drawn once per slide."""

    static: np.ndarray  # H x W x 3: template, title, body at scroll 0 (or the viewport's start)
    body: np.ndarray | None  # tall scrolling body (scroll slides), else None
    body_y: int  # top of the body viewport
    body_h: int  # height of the body viewport
    scroll_px: int  # pixels per scroll step (SCROLL_LINES lines)
    scroll_steps: int  # how many scrolls the body allows
    typed: list[_Typed]
    clock: bool


class SlideScene:
    """The slides of ``lecture`` at ``width`` x ``height`` pixels; ``seed`` varies the pointer
    path and the typing rhythm; ``transition_s`` > 0 cross-fades each slide in from the one
    before over that many seconds (a slide change that is no cut). ``render(t)`` returns the
    screen at session time ``t``."""

    def __init__(
        self, lecture: Lecture, width: int, height: int, seed: int, *, transition_s: float = 0.0
    ) -> None:
        if width < TIMECODE_STRIP_WIDTH_PX or height < 4 * TIMECODE_BLOCK_PX:
            raise ValueError(f"a {width}x{height} picture is too small for slides")
        self.lecture = lecture
        self.w, self.h = width, height
        self.seed = seed
        rng = np.random.default_rng(seed)
        self.cursor = _Cursor(rng, width, height, lecture.duration)
        self._art: dict[int, _SlideArt] = {}
        self._title_font = _font(round(TITLE_SIZE * height))
        self._line_font = _font(round(LINE_SIZE * height))
        self._line_px = round(LINE_SIZE * height)
        self._pitch = round(LINE_PITCH * self._line_px)
        self._margin = round(MARGIN * width)
        self.buf = np.empty((height, width, 3), np.uint8)
        self.transition_s = transition_s
        self._prev: np.ndarray | None = None
        self._clock_cache: tuple[int, np.ndarray] | None = None

    # -- drawing once per slide -------------------------------------------------------------

    def _body_lines(self, slide: Slide, index: int) -> list[str]:
        lines = list(slide.lines)
        if "scroll" in slide.activity:
            span = self._slide_end(index) - slide.start
            scrolls = max(1, math.ceil((span - SCROLL_DELAY_S) / SCROLL_EVERY_S))
            extra = SCROLL_LINES * scrolls + 2
            start = (index * 5) % len(MORE_LINES)
            lines += [MORE_LINES[(start + k) % len(MORE_LINES)] for k in range(extra)]
        return lines

    def _slide_end(self, index: int) -> float:
        slides = self.lecture.slides
        return slides[index + 1].start if index + 1 < len(slides) else self.lecture.duration

    def _draw_body(self, lines: list[str], width: int, height: int) -> np.ndarray:
        img = Image.new("RGB", (width, height), BACKGROUND)
        draw = ImageDraw.Draw(img)
        r = max(2, self._line_px // 6)
        for k, text in enumerate(lines):
            y = k * self._pitch
            cy = y + self._line_px // 2 + 1
            draw.ellipse((self._margin, cy - r, self._margin + 2 * r, cy + r), fill=ACCENT_COLOR)
            draw.text((self._margin + 5 * r, y), text, font=self._line_font, fill=TEXT_COLOR)
        return np.asarray(img, dtype=np.uint8).copy()

    def _make_art(self, index: int) -> _SlideArt:
        slide = self.lecture.slides[index]
        w, h = self.w, self.h
        img = Image.new("RGB", (w, h), BACKGROUND)
        draw = ImageDraw.Draw(img)
        title_y = round(TITLE_TOP * h)
        draw.text((self._margin, title_y), slide.title, font=self._title_font, fill=TITLE_COLOR)
        rule_y = title_y + round(TITLE_SIZE * h * 1.35)
        draw.rectangle(
            (self._margin, rule_y, w - self._margin, rule_y + max(1, h // 180)), fill=ACCENT_COLOR
        )
        static = np.asarray(img, dtype=np.uint8).copy()
        body_y = round(BODY_TOP * h)
        body_h = h - body_y - round(0.04 * h)
        lines = self._body_lines(slide, index)
        tall = self._draw_body(lines, w, max(body_h, len(lines) * self._pitch + self._pitch))
        static[body_y : body_y + body_h] = tall[:body_h]
        body = None
        scroll_px = SCROLL_LINES * self._pitch
        steps = 0
        if "scroll" in slide.activity:
            body = tall
            steps = max(0, (tall.shape[0] - body_h) // scroll_px)
        typed: list[_Typed] = []
        if "typing" in slide.activity:
            typed = self._make_typed(slide, index, body_y + len(slide.lines) * self._pitch)
        return _SlideArt(
            static, body, body_y, body_h, scroll_px, steps, typed, "clock" in slide.activity
        )

    def _make_typed(self, slide: Slide, index: int, y0: int) -> list[_Typed]:
        rng = np.random.default_rng((self.seed, index))
        end = self._slide_end(index)
        t = slide.start + TYPING_DELAY_S
        out: list[_Typed] = []
        y = y0 + self._pitch // 3
        k = index
        while y + self._pitch <= self.h - round(0.12 * self.h) and t < end:
            text = TYPED_LINES[k % len(TYPED_LINES)]
            k += 1
            gaps = 1.0 / rng.uniform(*TYPING_RATE_CPS, size=len(text))
            times = t + np.cumsum(gaps)
            widths = np.array(
                [0] + [round(self._line_font.getlength(text[:n])) for n in range(1, len(text) + 1)]
            )
            img = Image.new("RGB", (int(widths[-1]) + 2, self._pitch), BACKGROUND)
            ImageDraw.Draw(img).text((0, 0), text, font=self._line_font, fill=TYPED_COLOR)
            out.append(_Typed(np.asarray(img, np.uint8).copy(), self._margin, y, times, widths))
            t = float(times[-1]) + TYPING_LINE_PAUSE_S
            y += self._pitch
        return out

    def art(self, index: int) -> _SlideArt:
        if index not in self._art:
            # keep two (a cross-fade shows both): memory stays flat
            self._art = {k: v for k, v in self._art.items() if k == index - 1}
            self._art[index] = self._make_art(index)
        return self._art[index]

    # -- per frame ----------------------------------------------------------------------------

    def _clock_image(self, t: float) -> np.ndarray:
        second = math.floor(t)
        if self._clock_cache is None or self._clock_cache[0] != second:
            s = (CLOCK_ORIGIN_S + second) % 86400
            text = f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"
            font = self._line_font
            pad = max(2, self._line_px // 4)
            width = round(font.getlength("00:00:00")) + 2 * pad
            img = Image.new("RGB", (width, self._line_px + 2 * pad), CLOCK_BG)
            ImageDraw.Draw(img).text((pad, pad // 2), text, font=font, fill=CLOCK_FG)
            self._clock_cache = (second, np.asarray(img, np.uint8).copy())
        return self._clock_cache[1]

    def _slide_index(self, t: float) -> int:
        index = 0
        for k, slide in enumerate(self.lecture.slides):
            if slide.start <= t:
                index = k
        return index

    def _draw(self, index: int, t: float, out: np.ndarray) -> None:
        """Slide ``index`` as it looks at session time ``t`` (no pointer, no timecode)."""
        slide = self.lecture.slides[index]
        art = self.art(index)
        np.copyto(out, art.static)
        local = t - slide.start
        if art.body is not None and art.scroll_steps:
            offset = 0.0
            for step in range(art.scroll_steps):
                u = (local - SCROLL_DELAY_S - step * SCROLL_EVERY_S) / SCROLL_DURATION_S
                if u <= 0:
                    break
                offset += _smoothstep(u)
            top = round(offset * art.scroll_px)
            out[art.body_y : art.body_y + art.body_h] = art.body[top : top + art.body_h]
        for typed in art.typed:
            n = int(np.searchsorted(typed.key_times, t, side="right"))
            if n == 0:
                break
            h, wmax = typed.image.shape[:2]
            wpx = min(int(typed.widths[n]), wmax, self.w - typed.x)
            out[typed.y : typed.y + h, typed.x : typed.x + wpx] = typed.image[:, :wpx]
            typing_now = n < len(typed.key_times)
            if typing_now and int(t / (CARET_BLINK_S / 2)) % 2 == 0:
                cx = typed.x + wpx + 1
                out[typed.y + 2 : typed.y + self._line_px + 2, cx : cx + max(1, h // 12)] = (
                    TYPED_COLOR
                )
            if typing_now:
                break
        if art.clock:
            clock = self._clock_image(t)
            ch, cw = clock.shape[:2]
            y0, x0 = self.h - ch - round(0.03 * self.h), self.w - cw - self._margin // 2
            out[y0 : y0 + ch, x0 : x0 + cw] = clock

    def render(self, t: float) -> np.ndarray:
        """The screen at session time ``t`` seconds (a reused buffer)."""
        index = self._slide_index(t)
        out = self.buf
        self._draw(index, t, out)
        start = self.lecture.slides[index].start
        if self.transition_s > 0 and index > 0 and t - start < self.transition_s:
            # cross-fade from the previous slide as it was when it ended
            if self._prev is None:
                self._prev = np.empty_like(out)
            self._draw(index - 1, start - 1e-3, self._prev)
            u = np.float32(max(0.0, t - start) / self.transition_s)
            mixed = self._prev.astype(np.float32) * (1 - u) + out.astype(np.float32) * u
            np.copyto(out, mixed.astype(np.uint8))
        self.cursor.draw(out, t)
        out[:TIMECODE_BLOCK_PX, :TIMECODE_STRIP_WIDTH_PX] = timecode_strip(t)[None, :, None]
        return out


def random_lecture(duration: float, seed: int, *, mean_slide_s: float = 45.0) -> Lecture:
    """A lecture of ``duration`` seconds: slides of 0.4x to 1.6x ``mean_slide_s`` seconds with
    distinct titles (cycling the topic list, numbered once it repeats) and varied activity."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(_TOPICS))
    slides: list[Slide] = []
    t = 0.0
    k = 0
    while t < duration:
        topic = _TOPICS[int(order[k % len(_TOPICS)])]
        title = topic if k < len(_TOPICS) else f"{topic} {k // len(_TOPICS) + 1}"
        pick = rng.choice(len(MORE_LINES), size=3, replace=False)
        lines = tuple(MORE_LINES[int(i)] for i in pick)
        activity = _ACTIVITIES[k % len(_ACTIVITIES)]
        slides.append(Slide(round(t, 3), title, lines, activity))
        t += float(rng.uniform(0.4, 1.6)) * mean_slide_s
        k += 1
    # a last slide shorter than a few seconds is not a slide anyone would show
    if len(slides) > 1 and duration - slides[-1].start < 0.2 * mean_slide_s:
        slides.pop()
    narration = tuple(Line(s.start + 1.0, f"Now, {s.title.lower()}.") for s in slides)
    return Lecture(duration=duration, slides=tuple(slides), narration=narration)


def talk(duration: float, seed: int, *, line_every_s: float = 4.5) -> Lecture:
    """A talk: ``random_lecture``'s slides and a narration line every ``line_every_s``
    seconds (espeak-ng speaks one of MORE_LINES in about 3 s), so speech fills the session
    as a person's would."""
    slides = random_lecture(duration, seed)
    lines: list[Line] = []
    t = 1.0
    while t < duration - line_every_s:
        lines.append(Line(round(t, 3), MORE_LINES[len(lines) % len(MORE_LINES)]))
        t += line_every_s
    return Lecture(duration=duration, slides=slides.slides, narration=tuple(lines))


def write_lecture_video(
    path: Path,
    lecture: Lecture,
    *,
    width: int = 640,
    height: int = 360,
    fps: int = 15,
    seed: int = 0,
    keyframe_interval_s: float = 2.0,
    crf: int = 23,
    fragmented: bool = False,
    scene: Renderer | None = None,
    transition_s: float = 0.0,
) -> Path:
    """Encode the whole of ``lecture`` to one H.264 MP4 at ``path`` and return ``path``.

    A keyframe every ``keyframe_interval_s`` seconds (our recorder's 2 s by default; a larger
    value is a sparser recorder's). ``fragmented`` writes fragmented MP4 like a recorder's
    segment; otherwise a plain MP4 like the playable output. ``scene`` replaces the slides
    with any object that has ``render(t) -> HxWx3 uint8`` of the same size; ``transition_s``
    cross-fades the slides (:class:`SlideScene`).
    """
    renderer: Renderer = (
        scene
        if scene is not None
        else SlideScene(lecture, width, height, seed, transition_s=transition_s)
    )
    options = {"movflags": "+frag_keyframe+empty_moov+default_base_moof"} if fragmented else {}
    time_base = Fraction(1, 90000)
    with av.open(str(path), "w", format="mp4", options=options) as out:
        stream = out.add_stream(
            "libx264",
            rate=fps,
            # no extra keyframes at scene cuts: a fixed GOP, as a hardware encoder writes
            options={
                "preset": "ultrafast",
                "tune": "stillimage",
                "crf": str(crf),
                "x264-params": "scenecut=0",
            },
        )
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        stream.codec_context.gop_size = max(1, round(keyframe_interval_s * fps))
        reformatter = VideoReformatter()
        for n in range(math.ceil(lecture.duration * fps - 1e-9)):
            t = n / fps
            frame = av.VideoFrame.from_ndarray(renderer.render(t), format="rgb24")
            frame = reformatter.reformat(frame, format="yuv420p")
            frame.pts = round(t / time_base)
            frame.time_base = time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path
