"""A screen-like picture as a function of session time, drawn with numpy.

A desktop with an editor and a terminal whose text is typed in bursts (keystroke timing with
thinking pauses, pages cleared now and then), a blinking caret, a mouse pointer that rests then
glides, and the timecode strip (:mod:`synthetic.timecode`) in the top-left corner. Everything
is deterministic for a given seed; :meth:`Scene.render` is cheap because text is painted
incrementally.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from synthetic.timecode import TIMECODE_BLOCK_PX, TIMECODE_STRIP_WIDTH_PX, timecode_strip

__all__ = ["Scene"]

Color = tuple[int, int, int]


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
    glyphs: list[tuple[int, int, int, int, Color]]  # y0, y1, x0, x1, color
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
        bg: Color,
        palette: list[Color],
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
        glyphs: list[tuple[int, int, int, int, Color]] = []
        keys: list[float] = []
        carets: list[tuple[int, int]] = []
        glyph_w = max(1, self.cw - 1)
        short_top = self.ch // 3

        def put(row: int, col: int, when: float, color: Color) -> None:
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


class Scene:
    """A desktop with an editor and a terminal, a pointer and the timecode strip.

    ``width``/``height`` in pixels, ``duration`` in seconds (how long the pointer's path must
    last), ``seed`` makes it deterministic.
    """

    def __init__(self, width: int, height: int, duration: float, seed: int) -> None:
        w, h = width, height
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
        menu_h = max(TIMECODE_BLOCK_PX + 2, round(h / 28))
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
        self.cursor = _Cursor(rng, w, h, duration)
        self.canvas = base.copy()  # desktop + text typed so far
        self.buf = np.empty_like(base)
        self.last_t = -math.inf

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
        out[:TIMECODE_BLOCK_PX, :TIMECODE_STRIP_WIDTH_PX] = timecode_strip(t)[None, :, None]
        return out
