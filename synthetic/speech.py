"""Real speech for test media and the demo: a lecture's narration lines, spoken by espeak-ng.

:func:`speak` runs ``espeak-ng --stdout`` (the Debian package ``espeak-ng``; speech synthesis
is not pip-installable) and resamples its 22.05 kHz WAV to the rate asked for.
:class:`Narration` places every line of a :class:`synthetic.lecture.Lecture` at its start
time (leading and trailing silence trimmed, so the voice *starts* the sentence at
``Line.start``), and renders it like :class:`synthetic.voice.Voice`: ``render(start, n,
index)`` gives float32 mono samples of session time over a low noise floor (never digital
silence), ``segment(start, n, index)`` adds the onset marker. Speech peaks at
:data:`SPEECH_PEAK`, so with the noise it stays under
:data:`synthetic.markers.BACKGROUND_MAX_AMPLITUDE` and the marker detector still finds every
segment. :attr:`Narration.spans` (and :func:`line_spans`) are the spoken extent of each line,
measured from the samples: what the transcript tests check recognised words against.
:func:`session_track` lays a narration out as a session's microphone track (a marker per
segment, silence in the holes) and :func:`write_track` writes it as the pipeline's audio
track is written (48 kHz stereo AAC), for tests and benchmarks.

The demo needs no espeak-ng: the narration of :data:`synthetic.lecture.DEMO_LECTURE` is
committed as a small Opus-in-Ogg file, :data:`DEMO_FIXTURE` (16 kHz mono, speech only: the
noise floor is added when rendering). FFmpeg's native Opus decoder is in every PyAV wheel, so
:func:`demo_narration` works wherever ``pip install`` does. After changing the lecture's
lines or the voice settings, regenerate it with::

    python -m synthetic.speech --write-fixture
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import shutil
import subprocess
import sys
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Final

import av
import numpy as np

from synthetic.aac import write_aac
from synthetic.lecture import DEMO_LECTURE, Lecture
from synthetic.markers import BACKGROUND_MAX_AMPLITUDE, with_marker
from synthetic.plan import SyntheticSpec, plan_segments

__all__ = [
    "DEMO_FIXTURE",
    "DEFAULT_VOICE",
    "DEFAULT_WORDS_PER_MINUTE",
    "DEFAULT_WORD_GAP_MS",
    "LineSpan",
    "Narration",
    "SpeechUnavailable",
    "demo_narration",
    "line_spans",
    "session_track",
    "speak",
    "write_track",
    "write_fixture",
]

#: The Debian package that provides the synthesiser.
ESPEAK_PACKAGE: Final = "espeak-ng"
#: How the narration is spoken, chosen for what tiny.en understands of espeak-ng's formant
#: speech (word recall on DEMO_LECTURE, 4 noise seeds, beams 1 and 5): voices en-us,
#: en-us+klatt2, +f2, +m3, +Alex and en-gb-x-rp at 130 to 190 words a minute with 0 to 150 ms
#: between words; en-us at 165 wpm with 100 ms gaps scored best (0.91), espeak-ng's defaults
#: (175 wpm, no gap) 0.84. Every DEMO_LECTURE line then ends at least 0.6 s before the next.
DEFAULT_VOICE: Final = "en-us"
DEFAULT_WORDS_PER_MINUTE: Final = 165
#: Extra pause between words, milliseconds (espeak-ng's -g, in units of ESPEAK_GAP_UNIT_MS).
DEFAULT_WORD_GAP_MS: Final = 100
ESPEAK_GAP_UNIT_MS: Final = 10
#: Seconds espeak-ng may take for one line before it is considered hung.
ESPEAK_TIMEOUT_SECONDS: Final = 30.0
#: Peak of the narration (full scale 1.0): with the noise floor it stays under
#: BACKGROUND_MAX_AMPLITUDE (0.25).
SPEECH_PEAK: Final = 0.2
#: Standard deviation of the Gaussian noise under the speech (full scale 1.0): never digital
#: silence, like synthetic.voice's floor, but 20 dB quieter (-70 dBFS, a quiet microphone):
#: tiny.en loses formant speech in white noise fast (recall 0.91 at 0.0003, 0.88 at 0.001,
#: 0.65 to 0.73 at synthetic.voice's 0.003).
NOISE_FLOOR: Final = 0.0003
#: A sample belongs to the spoken extent of a line when louder than this fraction of
#: SPEECH_PEAK (-40 dB): quieter than any phoneme, louder than codec noise in a pause.
SPAN_THRESHOLD: Final = 0.01
#: Silence a line must leave before the next one starts, seconds. Spans are looked for from
#: this long before a line's start to this long before the next one's, so the few samples a
#: lossy codec smears ahead of an onset (pre-echo, under 1 ms in the fixture) are not taken
#: for the end of the line before.
MIN_LINE_GAP_SECONDS: Final = 0.1
#: Where the demo narration lives, and its format: Opus in Ogg, 16 kHz mono (Opus codes
#: speech at this rate as wideband, everything a recogniser uses), speech-optimised.
DEMO_FIXTURE: Final = Path(__file__).resolve().parent / "data" / "demo_narration.opus"
FIXTURE_RATE_HZ: Final = 16_000
#: Opus bit rate while speaking (VBR: pauses cost almost nothing) and mode. Measured on the
#: transcript of the decoded fixture (tiny.en, beam 5, 4 noise seeds): 16 kbit/s "voip"
#: 0.87 word recall (63 KB), 24 kbit/s "audio" 0.91 (83 KB), 32 kbit/s "audio" 0.92 (101 KB);
#: the espeak-ng samples themselves 0.92.
FIXTURE_BITRATE: Final = 24_000
FIXTURE_APPLICATION: Final = "audio"
#: The fixture's stream tag that records what it says (JSON), so a stale fixture is caught.
FIXTURE_TAG: Final = "sessionpipe_narration"
#: The pipeline's finished audio track (shared/settings.py): 2 channels, 64 kbit/s each.
TRACK_CHANNELS: Final = 2
TRACK_BITRATE_PER_CHANNEL: Final = 64_000
#: Samples per Opus frame at FIXTURE_RATE_HZ (20 ms).
_OPUS_FRAME_SAMPLES: Final = 320

#: (start, end, text): the spoken extent of a line in session seconds.
LineSpan = tuple[float, float, str]


class SpeechUnavailable(RuntimeError):
    """The speech synthesiser is not installed here."""


def espeak_exe() -> str:
    """The espeak-ng executable, or :class:`SpeechUnavailable` naming the package."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SpeechUnavailable(
            f"espeak-ng is not installed: apt-get install {ESPEAK_PACKAGE} (Debian/Ubuntu), "
            "brew install espeak-ng (macOS)"
        )
    return exe


def parse_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Mono float32 samples and rate of a 16-bit PCM WAV as espeak-ng streams it.

    A streamed WAV has placeholder sizes in its headers (espeak-ng writes 0x7ffff000), so the
    ``data`` chunk is taken to run to the end of the bytes instead of trusting its size.
    """
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a WAV file")
    pos, rate, channels, bits = 12, 0, 0, 0
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        body = pos + 8
        if chunk == b"fmt ":
            fmt = int.from_bytes(data[body : body + 2], "little")
            channels = int.from_bytes(data[body + 2 : body + 4], "little")
            rate = int.from_bytes(data[body + 4 : body + 8], "little")
            bits = int.from_bytes(data[body + 14 : body + 16], "little")
            if fmt != 1 or bits != 16:
                raise ValueError(f"expected 16-bit PCM WAV, got format {fmt} with {bits} bits")
        elif chunk == b"data":
            if not rate or not channels:
                raise ValueError("WAV data before its fmt chunk")
            raw = data[body:]
            raw = raw[: len(raw) - len(raw) % (2 * channels)]
            pcm = np.frombuffer(raw, dtype="<i2").reshape(-1, channels)
            return (pcm.mean(axis=1) / 32768.0).astype(np.float32), rate
        pos = body + size + (size & 1)
    raise ValueError("WAV without a data chunk")


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Mono float32 ``samples`` at ``rate_in`` Hz resampled to ``rate_out`` Hz (swresample)."""
    mono = np.ascontiguousarray(samples, dtype=np.float32)
    if rate_in == rate_out or mono.size == 0:
        return mono.copy()
    frame = av.AudioFrame.from_ndarray(mono[None, :], format="flt", layout="mono")
    frame.sample_rate = rate_in
    frame.pts = 0
    frame.time_base = Fraction(1, rate_in)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate_out)
    chunks = [f.to_ndarray()[0] for f in resampler.resample(frame)]
    chunks += [f.to_ndarray()[0] for f in resampler.resample(None)]
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


@functools.lru_cache(maxsize=256)
def _speak_cached(
    text: str, sample_rate: int, voice: str, words_per_minute: int, word_gap_ms: int
) -> np.ndarray:
    gap = str(round(word_gap_ms / ESPEAK_GAP_UNIT_MS))
    argv = [espeak_exe(), "--stdout", "-v", voice, "-s", str(words_per_minute), "-g", gap]
    argv += ["--", text]
    proc = subprocess.run(argv, capture_output=True, timeout=ESPEAK_TIMEOUT_SECONDS)
    if proc.returncode != 0 or not proc.stdout:
        err = proc.stderr.decode(errors="replace").strip()
        raise RuntimeError(f"espeak-ng failed on {text!r} (exit {proc.returncode}): {err}")
    samples, rate = parse_wav(proc.stdout)
    out = resample(samples, rate, sample_rate)
    out.flags.writeable = False  # shared by every caller through the cache
    return out


def speak(
    text: str,
    sample_rate: int,
    *,
    voice: str = DEFAULT_VOICE,
    words_per_minute: int = DEFAULT_WORDS_PER_MINUTE,
    word_gap_ms: int = DEFAULT_WORD_GAP_MS,
) -> np.ndarray:
    """``text`` spoken by espeak-ng: float32 mono samples at ``sample_rate`` Hz.

    As espeak-ng writes it (its own level and leading/trailing silence). Cached per process.
    """
    if not text.strip():
        raise ValueError("nothing to say")
    return _speak_cached(text, sample_rate, voice, words_per_minute, word_gap_ms).copy()


def _loud_extent(samples: np.ndarray, threshold: float) -> tuple[int, int] | None:
    """First and one-past-last index of a sample louder than ``threshold``, or None."""
    loud = np.flatnonzero(np.abs(samples) > threshold)
    if loud.size == 0:
        return None
    return int(loud[0]), int(loud[-1]) + 1


def _window_ends(lecture: Lecture) -> list[float]:
    """Where each line's window ends: the next line's start, the last one's at the end."""
    starts = [line.start for line in lecture.narration]
    return [*starts[1:], lecture.duration] if starts else []


class Narration:
    """A lecture's narration lines placed at their start times, as a function of session time.

    ``Narration(lecture, rate)`` synthesises the lines with espeak-ng;
    :meth:`from_fixture` decodes a committed recording instead. ``render`` and ``segment``
    behave like :class:`synthetic.voice.Voice`'s (deterministic for a seed).
    """

    def __init__(
        self,
        lecture: Lecture,
        sample_rate: int,
        *,
        seed: int = 0,
        voice: str = DEFAULT_VOICE,
        words_per_minute: int = DEFAULT_WORDS_PER_MINUTE,
        word_gap_ms: int = DEFAULT_WORD_GAP_MS,
    ) -> None:
        clips = []
        for line in lecture.narration:
            clip = speak(
                line.text,
                sample_rate,
                voice=voice,
                words_per_minute=words_per_minute,
                word_gap_ms=word_gap_ms,
            )
            peak = float(np.max(np.abs(clip))) if clip.size else 0.0
            extent = _loud_extent(clip, peak * SPAN_THRESHOLD) if peak > 0 else None
            if extent is None:
                raise RuntimeError(f"espeak-ng produced silence for {line.text!r}")
            clips.append(clip[extent[0] : extent[1]])
        loudest = max(float(np.max(np.abs(c))) for c in clips) if clips else 1.0
        track = np.zeros(math.ceil(lecture.duration * sample_rate), dtype=np.float32)
        for line, end, clip in zip(lecture.narration, _window_ends(lecture), clips, strict=True):
            at = round(line.start * sample_rate)
            if at + clip.size > round((end - MIN_LINE_GAP_SECONDS) * sample_rate):
                raise ValueError(
                    f"line at {line.start:g} s lasts {clip.size / sample_rate:.2f} s and would "
                    f"not end {MIN_LINE_GAP_SECONDS:g} s before {end:g} s (the next line or "
                    f"the end): {line.text!r}"
                )
            track[at : at + clip.size] = clip * (SPEECH_PEAK / loudest)
        self._init(lecture, sample_rate, track, seed)

    def _init(self, lecture: Lecture, sample_rate: int, track: np.ndarray, seed: int) -> None:
        self.lecture = lecture
        self.sr = sample_rate
        self.seed = seed
        self.track = track  # the speech alone, SPEECH_PEAK at its loudest
        self.track.flags.writeable = False

    @classmethod
    def from_track(
        cls, lecture: Lecture, track: np.ndarray, sample_rate: int, *, seed: int = 0
    ) -> Narration:
        """A narration of already spoken ``track`` (speech only, session time from 0)."""
        self = cls.__new__(cls)
        mono = np.zeros(math.ceil(lecture.duration * sample_rate), dtype=np.float32)
        take = min(mono.size, track.size)
        mono[:take] = track[:take]
        peak = float(np.max(np.abs(mono))) if mono.size else 0.0
        if peak > 0:
            mono *= SPEECH_PEAK / peak  # the lossy codec's overshoot undone
        self._init(lecture, sample_rate, mono, seed)
        return self

    @classmethod
    def from_fixture(
        cls,
        path: Path = DEMO_FIXTURE,
        *,
        lecture: Lecture = DEMO_LECTURE,
        sample_rate: int = FIXTURE_RATE_HZ,
        seed: int = 0,
    ) -> Narration:
        """The narration of ``lecture`` recorded in ``path`` (decoded, resampled).

        ``ValueError`` when the file's tag says it speaks other lines (a stale fixture).
        """
        samples, tags = decode_mono(path, sample_rate)
        said = json.loads(tags.get(FIXTURE_TAG, "{}")).get("lines")
        if said != lecture_lines(lecture):
            raise ValueError(
                f"{path} does not speak this lecture's lines; regenerate it with "
                "python -m synthetic.speech --write-fixture"
            )
        return cls.from_track(lecture, samples, sample_rate, seed=seed)

    @property
    def spans(self) -> list[LineSpan]:
        """(start, end, text) of every line: where its samples are audible, session seconds.

        Each line is looked for from MIN_LINE_GAP_SECONDS before its start to as long before
        the next line's start.
        """
        out: list[LineSpan] = []
        threshold = SPEECH_PEAK * SPAN_THRESHOLD
        for line, end in zip(self.lecture.narration, _window_ends(self.lecture), strict=True):
            lo = max(0, round((line.start - MIN_LINE_GAP_SECONDS) * self.sr))
            window = self.track[lo : round((end - MIN_LINE_GAP_SECONDS) * self.sr)]
            extent = _loud_extent(window, threshold)
            if extent is None:
                raise ValueError(f"nothing audible for line at {line.start:g} s: {line.text!r}")
            out.append(((lo + extent[0]) / self.sr, (lo + extent[1]) / self.sr, line.text))
        return out

    def render(self, start: float, n: int, index: int) -> np.ndarray:
        """``n`` float32 samples of session time from ``start`` seconds (no marker).

        ``index`` seeds the noise of this piece (one per segment). Past the lecture's end
        only the noise floor remains.
        """
        first = round(start * self.sr)
        out = np.zeros(n, dtype=np.float64)
        lo, hi = max(first, 0), min(first + n, self.track.size)
        if hi > lo:
            out[lo - first : hi - first] = self.track[lo:hi]
        noise_rng = np.random.default_rng([self.seed & 0xFFFFFFFF, index])
        out += noise_rng.standard_normal(n) * NOISE_FLOOR
        return np.clip(out, -BACKGROUND_MAX_AMPLITUDE, BACKGROUND_MAX_AMPLITUDE).astype(np.float32)

    def segment(self, start: float, n: int, index: int) -> np.ndarray:
        """A microphone segment: :meth:`render` with the onset marker over its start."""
        return with_marker(self.render(start, n, index), self.sr)


def session_track(narration: Narration, spec: SyntheticSpec) -> np.ndarray:
    """The microphone audio of a session speaking ``narration`` on the session clock.

    One :meth:`Narration.segment` per audio segment ``spec`` plans (each with its onset
    marker, noise seeded by its start in milliseconds, as :mod:`synthetic.session` writes
    mic segments), digital silence in the microphone holes: the audio track the pipeline
    makes of such a session, with no pauses cut.
    """
    if spec.sample_rate != narration.sr:
        raise ValueError(f"spec rate {spec.sample_rate} Hz differs from {narration.sr} Hz")
    out = np.zeros(round(spec.duration * narration.sr), dtype=np.float32)
    for item in plan_segments(replace(spec, video=False, audio=True)):
        lo, hi = round(item.start * narration.sr), round(item.end * narration.sr)
        out[lo:hi] = narration.segment(item.start, hi - lo, index=round(item.start * 1000))
    return out


def write_track(path: Path, mono: np.ndarray, sample_rate: int) -> Path:
    """``mono`` as the pipeline writes a session's audio track (AAC, stereo, 64 kbit/s a
    channel): what the transcript stage reads."""
    return write_aac(
        path,
        mono,
        sample_rate,
        channels=TRACK_CHANNELS,
        bitrate_per_channel=TRACK_BITRATE_PER_CHANNEL,
    )


def line_spans(
    lecture: Lecture,
    sample_rate: int,
    *,
    voice: str = DEFAULT_VOICE,
    words_per_minute: int = DEFAULT_WORDS_PER_MINUTE,
    word_gap_ms: int = DEFAULT_WORD_GAP_MS,
) -> list[LineSpan]:
    """(start, end, text) of every line of ``lecture`` as espeak-ng speaks it, session seconds."""
    narration = Narration(
        lecture,
        sample_rate,
        voice=voice,
        words_per_minute=words_per_minute,
        word_gap_ms=word_gap_ms,
    )
    return narration.spans


def decode_mono(path: Path, sample_rate: int) -> tuple[np.ndarray, dict[str, str]]:
    """The first audio stream of ``path`` as float32 mono samples at ``sample_rate`` Hz,
    and that stream's tags."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    chunks: list[np.ndarray] = []
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        tags = {str(k).lower(): str(v) for k, v in stream.metadata.items()}
        for frame in container.decode(stream):
            chunks += [f.to_ndarray()[0] for f in resampler.resample(frame)]
    chunks += [f.to_ndarray()[0] for f in resampler.resample(None)]
    samples = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    return samples, tags


def lecture_lines(lecture: Lecture) -> list[list[float | str]]:
    """What a narration says, as recorded in the fixture's tag: [[start, text], ...]."""
    return [[line.start, line.text] for line in lecture.narration]


def demo_narration(sample_rate: int, *, seed: int = 0) -> Narration:
    """The narration of DEMO_LECTURE from the committed fixture (no espeak-ng needed)."""
    return Narration.from_fixture(DEMO_FIXTURE, sample_rate=sample_rate, seed=seed)


def _espeak_version() -> str:
    proc = subprocess.run([espeak_exe(), "--version"], capture_output=True, text=True)
    return proc.stdout.split("Data at")[0].strip()  # without this machine's paths


def write_fixture(
    path: Path = DEMO_FIXTURE,
    *,
    lecture: Lecture = DEMO_LECTURE,
    bitrate: int = FIXTURE_BITRATE,
) -> Path:
    """Speak ``lecture`` with espeak-ng and encode the speech (no noise) to Opus in Ogg."""
    track = Narration(lecture, FIXTURE_RATE_HZ).track
    tag = {
        "lines": lecture_lines(lecture),
        "voice": DEFAULT_VOICE,
        "words_per_minute": DEFAULT_WORDS_PER_MINUTE,
        "word_gap_ms": DEFAULT_WORD_GAP_MS,
        "espeak": _espeak_version(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    pcm = np.round(np.clip(track, -1.0, 1.0) * 32767).astype(np.int16)
    with av.open(str(tmp), "w", format="ogg") as out:
        stream = out.add_stream(
            "libopus",
            rate=FIXTURE_RATE_HZ,
            layout="mono",
            options={"application": FIXTURE_APPLICATION},
        )
        stream.bit_rate = bitrate
        stream.metadata[FIXTURE_TAG] = json.dumps(tag)
        for off in range(0, pcm.size, _OPUS_FRAME_SAMPLES):
            chunk = pcm[off : off + _OPUS_FRAME_SAMPLES]
            if chunk.size < _OPUS_FRAME_SAMPLES:
                chunk = np.pad(chunk, (0, _OPUS_FRAME_SAMPLES - chunk.size))
            frame = av.AudioFrame.from_ndarray(chunk[None, :], format="s16", layout="mono")
            frame.sample_rate = FIXTURE_RATE_HZ
            frame.pts = off
            frame.time_base = Fraction(1, FIXTURE_RATE_HZ)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m synthetic.speech", description=__doc__)
    parser.add_argument(
        "--write-fixture",
        action="store_true",
        help=f"regenerate {DEMO_FIXTURE.name} from DEMO_LECTURE with espeak-ng",
    )
    parser.add_argument("--path", type=Path, default=DEMO_FIXTURE, help="where to write it")
    args = parser.parse_args(argv)
    if not args.write_fixture:
        parser.print_help()
        return 2
    path = write_fixture(args.path)
    print(f"wrote {path} ({path.stat().st_size} bytes)")
    for start, end, text in demo_narration(FIXTURE_RATE_HZ).spans:
        print(f"  {start:6.2f} - {end:6.2f}  {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
