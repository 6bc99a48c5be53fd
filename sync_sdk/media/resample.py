"""Audio at any rate -> 16 kHz with a windowed-sinc filter equal to torchaudio's default `Resample`
(Hann window, 6 zero crossings, rolloff 0.99), as av-benchmark reads audio; NumPy, float32 (N,) waves."""
from __future__ import annotations

import math
import os

import numpy as np

from sync_sdk.errors import InputError
from sync_sdk.geometry import SAMPLE_RATE
from sync_sdk.media.audio import read_audio


def sinc_kernel(orig: int, new: int, zeros: int = 6, rolloff: float = 0.99) -> tuple[np.ndarray, int]:
    """Polyphase windowed-sinc kernel (new', 2*width + orig') for orig'/new' = reduced rates; width."""
    g = math.gcd(orig, new)
    orig, new = orig // g, new // g
    base = min(orig, new) * rolloff
    width = math.ceil(zeros * orig / base)
    idx = np.arange(-width, width + orig, dtype=np.float64) / orig
    t = (-np.arange(new, dtype=np.float64) / new)[:, None] + idx[None, :]
    t = np.clip(t * base, -zeros, zeros)
    window = np.cos(t * math.pi / zeros / 2) ** 2
    t = t * math.pi
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.where(t == 0, 1.0, np.sin(t) / t)
    return (k * window * (base / orig)).astype(np.float32), width


def resample(wave: np.ndarray, orig: int, new: int = SAMPLE_RATE) -> np.ndarray:
    """float32 (N,) at `orig` Hz -> float32 (ceil(N * new / orig),) at `new` Hz (torchaudio's default
    sinc_interp_hann resampler)."""
    wave = np.asarray(wave, dtype=np.float32)
    if orig == new:
        return wave
    g = math.gcd(orig, new)
    o, n = orig // g, new // g
    kernel, width = sinc_kernel(orig, new)
    padded = np.pad(wave, (width, width + o))
    n_out = (len(padded) - kernel.shape[1]) // o + 1
    frames = np.lib.stride_tricks.as_strided(padded, (n_out, kernel.shape[1]),
                                             (padded.strides[0] * o, padded.strides[0]))
    out = (frames @ kernel.T).reshape(-1)
    return out[:math.ceil(n * len(wave) / o)].astype(np.float32)


def load_audio_16k(source: str | os.PathLike | tuple[np.ndarray, int]) -> tuple[np.ndarray, float]:
    """Audio as av-benchmark reads it: (float32 (N,) mono at 16 kHz, duration in seconds of the
    original track). source: path (read_audio: the whole track at its own rate) | (wave (N,) or (N, C)
    float, sample_rate)."""
    if isinstance(source, (str, os.PathLike)):
        wave, rate = read_audio(source)
    else:
        wave, rate = source
        wave = np.asarray(wave, dtype=np.float32)
        if wave.ndim == 2:
            wave = wave.mean(axis=1)
        if wave.ndim != 1:
            raise InputError(f"audio must be (N,) or (N, C), got shape {wave.shape}")
        rate = int(rate)
    if rate <= 0:
        raise InputError(f"sample rate must be positive, got {rate}")
    return resample(wave, rate, SAMPLE_RATE), len(wave) / rate
