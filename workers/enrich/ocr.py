"""The text on a screen frame, and its title: OCR through Debian's tesseract (pytesseract).

Tesseract reads words with their boxes and confidences (``image_to_data``); words are grouped
into its lines, junk is dropped (words under ``MIN_WORD_CONFIDENCE``, and short tokens that
are not plainly words: a pointer, a window button or a timecode block read as ``|`` or
``=-``), and the *title* is the line of the largest text, the top-most among lines nearly
that large (``TITLE_HEIGHT_RATIO``): the heading of a slide, the name of a window. Small
screen text is read better at twice its size, so frames under ``UPSCALE_BELOW_PX`` high are
enlarged first; a dark screen is inverted so the text is dark on light, as tesseract's
models were trained.

No network: the engine and its English model are the Debian packages ``tesseract-ocr`` and
``tesseract-ocr-eng``; without them :class:`EnrichUnavailable` says so.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from statistics import median
from typing import Any

import numpy as np

from workers.enrich.documents import EnrichError, EnrichUnavailable

__all__ = [
    "MIN_WORD_CONFIDENCE",
    "OcrLine",
    "ScreenText",
    "check_ocr",
    "read_screen",
]

#: Tesseract confidence (0-100) under which a word is dropped as a misreading.
MIN_WORD_CONFIDENCE = 50.0
#: A word of at most this many characters is kept only if it is letters or digits and read
#: with at least ``SHORT_WORD_CONFIDENCE`` ("Go", "CI", "42"; not "|", "=-" or "ij").
SHORT_WORD_CHARS = 2
SHORT_WORD_CONFIDENCE = 80.0
#: A line needs this many letters or digits to be text (not a stray mark).
MIN_LINE_ALNUM = 3
#: Lines whose text is at least this fraction of the largest line's height are title
#: candidates; the top-most of them is the title.
TITLE_HEIGHT_RATIO = 0.8
#: Frames less high than this (pixels) are enlarged twice before OCR: tesseract wants text
#: at least about 20 px high, and the small print of a low-resolution recording is less.
#: Not above: enlarged 720p slides lost title capitals ("screen Capture", 21 of 23 titles
#: exact against 23 of 23 unenlarged); 360p slides read the same either way (23/23 titles,
#: 98.6 % of body lines), at 0.17 s against 0.13 s a frame.
UPSCALE_BELOW_PX = 600
#: Longest title kept, in characters (a whole paragraph in a large font is not a title).
MAX_TITLE_CHARS = 80
#: Tesseract's page segmentation: 3 = automatic, a page of blocks and lines (measured
#: better titles than 11, sparse text, on slides and desktops).
PAGE_SEGMENTATION = 3
#: Tesseract threads per call: 1, because it runs beside decoding on a 2-core machine and
#: OpenMP threads on tiny jobs cost more than they give (the measured time per 1080p frame
#: did not improve with more).
TESSERACT_THREADS = "1"
#: A frame that takes tesseract longer than this (seconds) is a failure, not a wait.
TESSERACT_TIMEOUT_S = 60

_PACKAGES = "tesseract-ocr tesseract-ocr-eng"
_EDGE_JUNK = re.compile(r"^[^\w(\"'$#@]+|[^\w)\"'%!?.]+$")


@dataclass(frozen=True)
class OcrLine:
    text: str
    height: float  # pixels of the frame: the median height of the line's words
    top: int  # pixels from the top of the frame
    left: int
    confidence: float  # mean word confidence, 0-100


@dataclass(frozen=True)
class ScreenText:
    text: str  # every line kept, in reading order, one per line
    title: str  # "" when the screen has no usable text
    lines: tuple[OcrLine, ...]


def _tesseract() -> Any:
    try:
        import pytesseract
    except ImportError as exc:  # the enrich extra is missing
        raise EnrichUnavailable(
            "OCR needs pytesseract (pip install sessionpipe[enrich]) and the Debian "
            f"packages {_PACKAGES}"
        ) from exc
    return pytesseract


def check_ocr() -> None:
    """Raise :class:`EnrichUnavailable` (naming the packages) unless OCR can run here."""
    pytesseract = _tesseract()
    command = pytesseract.pytesseract.tesseract_cmd
    if shutil.which(command) is None:
        raise EnrichUnavailable(
            f"the tesseract OCR engine is not installed (no {command!r} on PATH): "
            f"apt-get install {_PACKAGES}"
        )
    try:
        languages = pytesseract.get_languages(config="")
    except Exception as exc:  # any failure to run it means: not usable here
        raise EnrichUnavailable(
            f"tesseract does not run ({exc}): apt-get install {_PACKAGES}"
        ) from exc
    if "eng" not in languages:
        raise EnrichUnavailable(
            f"tesseract has no English model (it has {languages}): apt-get install {_PACKAGES}"
        )


def _prepare(rgb: np.ndarray) -> tuple[Any, float]:
    """The grayscale image handed to tesseract and its scale relative to the frame."""
    from PIL import Image

    arr = np.asarray(rgb)
    if arr.ndim == 3:
        gray = arr[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        gray8 = np.clip(gray, 0, 255).astype(np.uint8)
    elif arr.ndim == 2:
        gray8 = arr.astype(np.uint8)
    else:
        raise ValueError(f"expected an HxW or HxWx3 frame, got shape {arr.shape}")
    if float(np.median(gray8)) < 128:  # light text on a dark screen
        gray8 = 255 - gray8
    image = Image.fromarray(gray8)
    scale = 1.0
    if gray8.shape[0] < UPSCALE_BELOW_PX:
        scale = 2.0
        image = image.resize((gray8.shape[1] * 2, gray8.shape[0] * 2), Image.Resampling.LANCZOS)
    return image, scale


def _clean_word(text: str, confidence: float) -> str:
    word = _EDGE_JUNK.sub("", text.strip())
    if not word or confidence < MIN_WORD_CONFIDENCE:
        return ""
    if not any(c.isalnum() for c in word):
        return ""
    if len(word) <= SHORT_WORD_CHARS and (not word.isalnum() or confidence < SHORT_WORD_CONFIDENCE):
        return ""
    return word


def lines_from_data(data: dict[str, list[Any]], scale: float = 1.0) -> list[OcrLine]:
    """Tesseract's ``image_to_data`` (as a dict) grouped into clean lines, in reading order;
    boxes divided by ``scale`` (back to frame pixels)."""
    groups: dict[tuple[int, int, int, int], list[tuple[str, float, int, int, int]]] = {}
    for k, raw in enumerate(data.get("text", [])):
        if int(data["level"][k]) != 5:  # words only
            continue
        confidence = float(data["conf"][k])
        word = _clean_word(str(raw), confidence)
        if not word:
            continue
        key = (
            int(data["page_num"][k]),
            int(data["block_num"][k]),
            int(data["par_num"][k]),
            int(data["line_num"][k]),
        )
        box = (int(data["left"][k]), int(data["top"][k]), int(data["height"][k]))
        groups.setdefault(key, []).append((word, confidence, *box))
    lines: list[OcrLine] = []
    for words in groups.values():
        text = " ".join(w[0] for w in words)
        if sum(c.isalnum() for c in text) < MIN_LINE_ALNUM:
            continue
        lines.append(
            OcrLine(
                text=text,
                height=median(w[4] for w in words) / scale,
                top=round(min(w[3] for w in words) / scale),
                left=round(min(w[2] for w in words) / scale),
                confidence=sum(w[1] for w in words) / len(words),
            )
        )
    lines.sort(key=lambda line: (line.top, line.left))
    return lines


def pick_title(lines: list[OcrLine]) -> str:
    """The top-most line among those of nearly the largest text height; "" if none."""
    usable = [line for line in lines if len(line.text) <= MAX_TITLE_CHARS]
    if not usable:
        return ""
    tallest = max(line.height for line in usable)
    candidates = [line for line in usable if line.height >= TITLE_HEIGHT_RATIO * tallest]
    return min(candidates, key=lambda line: (line.top, line.left)).text


def _image_to_data(command: str, image: Any) -> dict[str, list[str]]:
    """Tesseract's TSV of ``image`` as columns (what ``pytesseract.image_to_data`` gives
    with ``Output.DICT``), run here so that only tesseract gets ``OMP_THREAD_LIMIT``.

    Never through ``os.environ``: the variable would stay in the worker process, where
    CTranslate2 (the transcript's Whisper) then transcribes nothing at all, and in every
    process it starts afterwards.
    """
    import io

    png = io.BytesIO()
    image.save(png, format="PNG")
    argv = [command, "stdin", "stdout", "-l", "eng", "--psm", str(PAGE_SEGMENTATION), "tsv"]
    env = {**os.environ, "OMP_THREAD_LIMIT": TESSERACT_THREADS}
    try:
        done = subprocess.run(
            argv, input=png.getvalue(), capture_output=True, env=env, timeout=TESSERACT_TIMEOUT_S
        )
    except FileNotFoundError as exc:
        raise EnrichUnavailable(
            f"the tesseract OCR engine is not installed: apt-get install {_PACKAGES}"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise EnrichError(f"tesseract took over {TESSERACT_TIMEOUT_S} s on a frame") from exc
    stderr = done.stderr.decode(errors="replace").strip()
    if done.returncode != 0:
        if "Failed loading language" in stderr:
            raise EnrichUnavailable(f"tesseract has no English model: apt-get install {_PACKAGES}")
        raise EnrichError(f"tesseract failed on a frame (exit {done.returncode}): {stderr}")
    return tsv_columns(done.stdout.decode(errors="replace"))


def tsv_columns(tsv: str) -> dict[str, list[str]]:
    """Tesseract's TSV output as {column: values}; rows with fewer fields get empty text."""
    rows = [line.split("\t") for line in tsv.splitlines() if line]
    if not rows:
        return {}
    header, body = rows[0], rows[1:]
    columns: dict[str, list[str]] = {name: [] for name in header}
    for row in body:
        row = row + [""] * (len(header) - len(row))
        for name, value in zip(header, row, strict=False):
            columns[name].append(value)
    return columns


def read_screen(rgb: np.ndarray) -> ScreenText:
    """The text of a screen frame (HxWx3 RGB or HxW gray, uint8) and its title.

    :class:`EnrichUnavailable` without tesseract; :class:`EnrichError` if it fails on the
    frame."""
    pytesseract = _tesseract()
    image, scale = _prepare(rgb)
    data = _image_to_data(pytesseract.pytesseract.tesseract_cmd, image)
    lines = lines_from_data(data, scale)
    return ScreenText(
        text="\n".join(line.text for line in lines),
        title=pick_title(lines),
        lines=tuple(lines),
    )
