"""Speech to text: a session's audio track to a :class:`Transcript` with word timestamps.

One faster-whisper call on the whole file, with its voice-activity filter on (without it
Whisper invents text on silence and on repetitive sound, and a screen session is mostly
silence), word timestamps on, and each 30 s window decoded without the previous window's
text as prompt (``condition_on_previous_text=False``: a misheard window cannot start a
repetition loop in the next).
Times are those faster-whisper gives on the file's own clock: the caller passes the
session's finished audio track, which is already on the output timeline.

Languages: ``language=None`` lets a multilingual model detect it (an English-only model
always answers "en"). An English-only model (``*.en``, like the default tiny.en) asked for
another language raises :class:`EnrichError` naming the model and the language instead of
transcribing: Whisper ``.en`` models write English-sounding nonsense for other speech, and
a wrong transcript is worse than a failed stage whose reason says to configure a
multilingual model.

Defaults decided by measurement on the DEMO_LECTURE narration (espeak-ng and the committed
fixture, AAC at 48 kHz like the pipeline's audio track, 4 noise seeds; 2 CPUs; the numbers
are in bench/RESULTS.md, ``bench/bench_transcribe.py --settings``): beam size 5 recognises a
few more words than greedy decoding for 1.35x the time; conditioning on the previous text
changed recall by -0.02 to +0.01, so the robust choice stays.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final

import numpy as np

from workers.enrich.documents import EnrichError, Transcript, TranscriptSegment, Word
from workers.enrich.whispermodel import SpeechModel, load_model

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_BEAM_SIZE",
    "DEFAULT_LANGUAGE",
    "WHISPER_SAMPLE_RATE",
    "transcribe",
    "transcribe_samples",
]

#: Language of the speech (ISO 639-1) unless the session says otherwise; None = detect.
DEFAULT_LANGUAGE: Final = "en"
#: Beams of the decoder. On the lecture narration (8 runs: espeak-ng and the Opus fixture, 4
#: noise seeds each) beam 5 recognised 0.908 of the words on average, greedy decoding (1)
#: 0.892 (equal on clean speech, 0.908 vs 0.871 on the lossy fixture), for about 1.35x the
#: time: still over 30x realtime on 2 CPUs. Beam 5 is also faster-whisper's own default.
DEFAULT_BEAM_SIZE: Final = 5
#: Condition each 30 s window on the text of the previous one (see the module docstring).
DEFAULT_CONDITION_ON_PREVIOUS_TEXT: Final = False
#: Whisper's input rate, Hz: the file is decoded and resampled to it.
WHISPER_SAMPLE_RATE: Final = 16_000
#: Times are kept to the millisecond (Whisper's own resolution is 20 ms).
TIME_DECIMALS: Final = 3


def _seconds(value: float) -> float:
    return round(float(value), TIME_DECIMALS)


def _decode(audio: Path) -> Any:
    """The file's first audio stream as 16 kHz mono float32 (faster-whisper's decoder)."""
    import av
    from faster_whisper import decode_audio

    try:
        return decode_audio(str(audio), sampling_rate=WHISPER_SAMPLE_RATE)
    except IndexError as exc:  # PyAV's answer to decode(audio=0) without an audio stream
        raise EnrichError(f"cannot decode audio {audio}: it has no audio stream") from exc
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise EnrichError(f"cannot decode audio {audio}: {exc}") from exc


def _check_language(model: SpeechModel, language: str | None) -> None:
    if language is not None and not model.multilingual and language != "en":
        raise EnrichError(
            f"speech model {model.name} is English-only and cannot transcribe language "
            f"{language!r}: configure a multilingual CTranslate2 Whisper model for it"
        )


def segments_to_transcript(
    segments: Iterable[Any],
    *,
    language: str,
    duration: float,
    model_name: str,
    progress: Callable[[float], None] | None = None,
) -> Transcript:
    """Collect faster-whisper segments (a lazy generator: the work happens here).

    Words and texts are stripped; empty words and segments are dropped. ``progress`` gets
    the end of each segment as a fraction of ``duration`` (never less than before).
    """
    out: list[TranscriptSegment] = []
    done = 0.0  # fraction reported so far: never goes back
    for seg in segments:
        if progress is not None and duration > 0:
            done = max(done, min(1.0, float(seg.end) / duration))
            progress(done)
        words = tuple(
            Word(_seconds(w.start), _seconds(w.end), w.word.strip(), float(w.probability))
            for w in (seg.words or ())
            if w.word.strip()
        )
        text = seg.text.strip()
        if not text:
            continue
        out.append(TranscriptSegment(_seconds(seg.start), _seconds(seg.end), text, words))
    return Transcript(
        language=language, segments=tuple(out), duration=_seconds(duration), model=model_name
    )


def transcribe(
    audio: Path,
    *,
    model: SpeechModel | None = None,
    language: str | None = DEFAULT_LANGUAGE,
    beam_size: int = DEFAULT_BEAM_SIZE,
    vad: bool = True,
    condition_on_previous_text: bool = DEFAULT_CONDITION_ON_PREVIOUS_TEXT,
    progress: Callable[[float], None] | None = None,
) -> Transcript:
    """The transcript of the speech in ``audio`` (any format FFmpeg decodes), file seconds.

    ``model``: a loaded model (:func:`workers.enrich.whispermodel.load_model`); None loads
    the default tiny.en. ``language``: ISO 639-1 code, or None to detect it. ``vad=False``
    transcribes silence too (and Whisper then tends to invent text there): for tests and
    measurements. ``progress(fraction)`` is called as segments complete, then with 1.0.

    Raises :class:`EnrichError` for an undecodable file or a language the model cannot do,
    and what :func:`load_model` raises when ``model`` is None.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be at least 1, got {beam_size}")
    speech_model = load_model() if model is None else model
    _check_language(speech_model, language)
    return transcribe_samples(
        _decode(Path(audio)),
        model=speech_model,
        language=language,
        beam_size=beam_size,
        vad=vad,
        condition_on_previous_text=condition_on_previous_text,
        progress=progress,
        name=str(audio),
    )


def transcribe_samples(
    samples: Any,
    *,
    model: SpeechModel,
    language: str | None = DEFAULT_LANGUAGE,
    beam_size: int = DEFAULT_BEAM_SIZE,
    vad: bool = True,
    condition_on_previous_text: bool = DEFAULT_CONDITION_ON_PREVIOUS_TEXT,
    progress: Callable[[float], None] | None = None,
    name: str = "audio",
) -> Transcript:
    """:func:`transcribe` of audio already decoded: ``samples`` are mono float32 at
    ``WHISPER_SAMPLE_RATE`` (a transcript piece's window); times from its first sample.
    ``name`` names the audio in the log."""
    if beam_size < 1:
        raise ValueError(f"beam_size must be at least 1, got {beam_size}")
    speech_model = model
    _check_language(speech_model, language)
    duration = samples.shape[0] / WHISPER_SAMPLE_RATE
    if samples.shape[0] == 0 or not math.isfinite(duration):
        if progress is not None:
            progress(1.0)
        return Transcript(
            language=language or "", segments=(), duration=0.0, model=speech_model.name
        )
    segments, info = speech_model.whisper.transcribe(
        samples,
        language=language,
        beam_size=beam_size,
        vad_filter=vad,
        word_timestamps=True,
        condition_on_previous_text=condition_on_previous_text,
    )
    transcript = segments_to_transcript(
        segments,
        language=str(info.language),
        duration=duration,
        model_name=speech_model.name,
        progress=progress,
    )
    if progress is not None:
        progress(1.0)
    if not transcript.segments and duration > 0:
        # Evidence for a transcript that is empty although the file was not silent (seen
        # twice in long test runs on a loaded machine, never reproduced alone).
        level = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
        log.warning(
            "no speech transcribed in %s: %.1f s of audio at RMS %.4f, %.1f s kept by the "
            "voice-activity filter, language %s",
            name, duration, level, float(getattr(info, "duration_after_vad", duration)),
            info.language,
        )  # fmt: skip
    return transcript
