"""What a synthetic scene sounds like: one timbre per sound source, and background noise and hum.

Waveforms are float32 mono at 16 kHz; durations are in seconds. Every draw comes from the caller's
generator, so a scene's sounds are a function of its seed.
"""
from __future__ import annotations

import numpy as np

from sync_sdk.geometry import SAMPLE_RATE


def _ramp(x: np.ndarray, n: int = 48) -> np.ndarray:
    """Raised-cosine fade-in and fade-out over n samples (at most half of x), in place; returns x."""
    n = min(n, len(x) // 2)
    if n > 0:
        r = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, n))
        x[:n] *= r
        x[-n:] *= r[::-1]
    return x


def _tone(freq: float, dur: float, amp: float, harmonics: float = 0.0) -> np.ndarray:
    """A sine of freq Hz plus `harmonics` times its octave, dur s long (at least 64 samples), peak amp."""
    t = np.arange(max(int(dur * SAMPLE_RATE), 64)) / SAMPLE_RATE
    x = np.sin(2 * np.pi * freq * t) + harmonics * np.sin(2 * np.pi * 2 * freq * t)
    return _ramp(amp * x / (1 + harmonics))


def _band_noise(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    """n samples of white noise limited to the band [lo, hi] Hz, scaled to peak 1."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    spec[(f < lo) | (f > hi)] = 0
    x = np.fft.irfft(spec, n)
    return x / (np.abs(x).max() + 1e-9)


class Voice:
    """The timbre of one sound source; `sound(rng, dur)` makes one event's waveform."""

    def __init__(self, rng: np.random.Generator, kind: str):
        self.kind = kind
        beep = rng.choice([440.0, 1000.0, rng.uniform(300, 3000)])
        self.f0 = {"bounce": rng.uniform(90, 420), "hit": rng.uniform(700, 3200),
                   "clap": rng.uniform(800, 2500), "beep": beep}[kind]
        self.decay = {"bounce": rng.uniform(0.03, 0.09), "hit": rng.uniform(0.05, 0.2),
                      "clap": rng.uniform(0.015, 0.05), "beep": 0.0}[kind]
        self.partials = rng.uniform(1.3, 3.1, 2)
        self.amp = rng.uniform(0.15, 0.6)
        self.harm = rng.uniform(0, 0.5)

    def sound(self, rng: np.random.Generator, dur: float) -> np.ndarray:
        amp = self.amp * rng.uniform(0.6, 1.0)
        if self.kind == "beep":
            return _tone(self.f0, dur, amp, self.harm).astype(np.float32)
        n = int(min(6 * self.decay, 0.45) * SAMPLE_RATE)
        t = np.arange(n) / SAMPLE_RATE
        env = np.exp(-t / self.decay)
        if self.kind == "bounce":
            click = _band_noise(rng, n, 200, 4000) * np.exp(-t / 0.008)
            x = np.sin(2 * np.pi * self.f0 * t * (1 - 0.3 * t / t[-1])) + 0.4 * click
        elif self.kind == "hit":
            x = sum(np.sin(2 * np.pi * self.f0 * p * t) / (i + 2) for i, p in enumerate(self.partials))
            click = _band_noise(rng, n, 1000, 7000) * np.exp(-t / 0.005)
            x = x + np.sin(2 * np.pi * self.f0 * t) + 0.5 * click
        else:  # clap
            x = _band_noise(rng, n, self.f0 * 0.5, self.f0 * 2.5)
        x = env * x
        x[: min(16, n)] *= np.linspace(0, 1, min(16, n))
        return (amp * x / (np.abs(x).max() + 1e-9)).astype(np.float32)


def background_audio(rng: np.random.Generator, n: int) -> np.ndarray:
    """Noise (white/pink/brown, maybe silent) plus an optional mains hum, n samples."""
    out = np.zeros(n, np.float32)
    level = 0.0 if rng.random() < 0.15 else 10 ** rng.uniform(-4, -1.6)
    if level > 0:
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
        power = rng.choice([0.0, 0.5, 1.0])  # white, pink, brown
        spec[1:] /= f[1:] ** power
        spec[0] = 0
        x = np.fft.irfft(spec, n)
        out += (level * x / (x.std() + 1e-12)).astype(np.float32)
    if rng.random() < 0.3:
        t = np.arange(n) / SAMPLE_RATE
        mains = rng.choice([50.0, 60.0])
        hum = sum(np.sin(2 * np.pi * mains * k * t + rng.uniform(0, 6.3)) / k for k in (1, 2, 3))
        out += (10 ** rng.uniform(-3.3, -2) * hum).astype(np.float32)
    return out
