"""Speech-like microphone audio: voiced harmonic sound in syllables over a noise floor.

Two renderings of the same idea, both staying at or under
:data:`synthetic.markers.BACKGROUND_MAX_AMPLITUDE` so onset markers stand out:

* :class:`Voice` (numpy): pitch 100-220 Hz, about 4 syllables a second with formants, short
  pauses between words, longer ones between phrases, a noise floor (never digital silence);
  continuous across segment boundaries and deterministic for a seed.
* :func:`speech_aevalsrc_expr`: an ffmpeg ``aevalsrc`` expression (marker, then a voiced tone
  gated into syllables plus noise) for generators that run ffmpeg (benchmark, recorder).
"""

from __future__ import annotations

import math

import numpy as np

from synthetic.markers import (
    BACKGROUND_MAX_AMPLITUDE,
    MARKER_AMPLITUDE,
    MARKER_HZ,
    MARKER_SECONDS,
    with_marker,
)

__all__ = ["Voice", "speech_aevalsrc_expr", "voice_aevalsrc_expr"]

#: Peak level of the voiced sound before the noise floor (full scale 1.0).
VOICE_LEVEL = 0.2
#: Noise floor: standard deviation in silence, and how much louder it gets while speaking.
NOISE_FLOOR = 0.003
NOISE_SPEAKING = 0.012
#: Mean pitch and its two slow modulations (Hz, Hz at rad/s below).
PITCH_HZ, PITCH_DEV1_HZ, PITCH_DEV2_HZ = 155.0, 35.0, 18.0
_PITCH_W1, _PITCH_W2 = 2 * math.pi * 0.23, 2 * math.pi * 0.71
#: Harmonics of the pitch that are synthesised.
HARMONICS = 15
#: Harmonic weights are computed on a grid of this many points a second and interpolated.
WEIGHT_GRID_HZ = 250
#: Seconds of session past its end for which syllables are planned.
_PLAN_MARGIN_SECONDS = 1.0


class Voice:
    """Deterministic speech-like signal as a function of session time."""

    def __init__(self, sample_rate: int, duration: float, seed: int) -> None:
        rng = np.random.default_rng(seed ^ 0x5EED)
        self.seed = seed
        self.sr = sample_rate
        starts, lens, gains, f1s, f2s = [], [], [], [], []
        t = float(rng.uniform(0.05, 0.3))
        while t < duration + _PLAN_MARGIN_SECONDS:
            for _ in range(int(rng.integers(1, 5))):  # syllables in a word
                ln = float(rng.uniform(0.18, 0.30))  # ~4 syllables/s
                starts.append(t)
                lens.append(ln)
                gains.append(float(rng.uniform(0.55, 1.0)))
                f1s.append(float(rng.uniform(350, 850)))  # first formant, Hz
                f2s.append(float(rng.uniform(1000, 2300)))  # second formant, Hz
                t += ln
            # Short pause between words, sometimes a longer one between phrases.
            t += float(rng.uniform(0.5, 1.2) if rng.random() < 0.15 else rng.uniform(0.06, 0.22))
        self.starts, self.lens = np.array(starts), np.array(lens)
        self.gains, self.f1, self.f2 = np.array(gains), np.array(f1s), np.array(f2s)

    def render(self, start: float, n: int, index: int) -> np.ndarray:
        """``n`` float32 samples of session time from ``start`` seconds (no marker).

        ``index`` seeds the noise of this piece (one per segment).
        """
        t = start + np.arange(n, dtype=np.float64) / self.sr
        # Pitch with its exact phase integral, so the voice is continuous across segments.
        w1, w2 = _PITCH_W1, _PITCH_W2
        f0 = PITCH_HZ + PITCH_DEV1_HZ * np.sin(w1 * t + 0.7) + PITCH_DEV2_HZ * np.sin(w2 * t + 2.1)
        phase = (
            2
            * np.pi
            * (
                PITCH_HZ * t
                - PITCH_DEV1_HZ / w1 * np.cos(w1 * t + 0.7)
                - PITCH_DEV2_HZ / w2 * np.cos(w2 * t + 2.1)
            )
        )
        idx = np.searchsorted(self.starts, t, side="right") - 1
        idx_c = np.clip(idx, 0, len(self.starts) - 1)
        u = (t - self.starts[idx_c]) / self.lens[idx_c]
        inside = (idx >= 0) & (u < 1.0)
        env = np.where(inside, np.sin(np.pi * np.clip(u, 0, 1)) ** 1.5 * self.gains[idx_c], 0.0)
        # Harmonic weights (1/k roll-off shaped by two per-syllable formants) change slowly:
        # compute them on a coarse grid and interpolate.
        step = max(1, self.sr // WEIGHT_GRID_HZ)
        grid = np.arange(0, n + step, step)
        gi = np.minimum(grid, max(n - 1, 0))
        f0g, f1g, f2g = f0[gi], self.f1[idx_c[gi]], self.f2[idx_c[gi]]
        nyquist_margin = self.sr / 2 - 200
        weights = []
        for k in range(1, HARMONICS + 1):
            fk = k * f0g
            amp = np.exp(-(((fk - f1g) / 250) ** 2)) + 0.6 * np.exp(-(((fk - f2g) / 350) ** 2))
            weights.append(np.where(fk < nyquist_margin, (amp + 0.15) / k, 0.0))
        norm = np.maximum(np.sum(weights, axis=0), 1e-6)
        # sin(k*phase) by the Chebyshev recurrence: cheaper than one sin() per harmonic.
        two_cos = 2 * np.cos(phase)
        prev, cur = np.zeros(n), np.sin(phase)
        voiced = np.zeros(n)
        for k, wk in enumerate(weights, start=1):
            voiced += np.interp(np.arange(n), grid, wk / norm) * cur
            if k < len(weights):
                prev, cur = cur, two_cos * cur - prev
        noise_rng = np.random.default_rng([self.seed & 0xFFFFFFFF, index])
        noise = noise_rng.standard_normal(n) * (NOISE_FLOOR + NOISE_SPEAKING * env)
        signal = VOICE_LEVEL * env * voiced + noise
        return np.clip(signal, -BACKGROUND_MAX_AMPLITUDE, BACKGROUND_MAX_AMPLITUDE).astype(
            np.float32
        )

    def segment(self, start: float, n: int, index: int) -> np.ndarray:
        """A microphone segment: :meth:`render` with the onset marker over its start."""
        return with_marker(self.render(start, n, index), self.sr)


def speech_aevalsrc_expr() -> str:
    """``aevalsrc`` expression: the marker, then voiced sound in syllables over a noise floor.

    Peaks at 0.21 after the marker (0.15 + 0.05 + 0.01), under ``BACKGROUND_MAX_AMPLITUDE``.
    The text is part of the benchmark's cache key: changing it regenerates benchmark media.
    """
    marker = f"{MARKER_AMPLITUDE}*sin(2*PI*{MARKER_HZ:g}*t)"
    return f"if(lt(t,{MARKER_SECONDS:g}),{marker},{voice_aevalsrc_expr()})"


def voice_aevalsrc_expr() -> str:
    """``aevalsrc`` expression of the voiced sound and noise alone (no marker)."""
    pitch = "(140+40*sin(2*PI*0.3*t))"
    voice = f"(0.15*sin(2*PI*{pitch}*t)+0.05*sin(4*PI*{pitch}*t))"
    syllables = "gt(sin(2*PI*4*t)+0.3*sin(2*PI*0.21*t),0)"
    noise = "0.01*(random(0)*2-1)"
    return f"{voice}*{syllables}+{noise}"
