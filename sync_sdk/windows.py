"""The scan/stream window grid, in integers: window j = the 5-s crop starting at frame 8j / sample 5120j.

Window j holds grid segments j..j+13; grid segment g covers frames [2+8g, 18+8g) and samples
[1280+5120g, 11520+5120g) of the source. The official crop arithmetic (`int(start_sec * 25)`,
`int(start_sec * 16000)` in float64) truncates some products of j*0.32 one index low (j = 29: frame 231),
so `window_start_sec(j)` returns the float, at most one ulp above 8j/25, that this arithmetic maps exactly
onto frame 8j and sample 5120j: predict(start_sec=window_start_sec(j)) sees window j of a scan. For a
clip whose frames[0] is media frame b (AVClip.start_sec = b/25), window j is media frame b + 8j.
"""
from __future__ import annotations

import math

from .errors import InputError
from .segments import (FIRST_FRAME, FIRST_SAMPLE, FPS, SAMPLE_RATE, SEG_FRAMES, SEG_SAMPLES, STEP_FRAMES,
                       STEP_SAMPLES)
from .segments import WINDOW_FRAMES as CROP_FRAMES
from .segments import WINDOW_SAMPLES as CROP_SAMPLES

__all__ = ["FPS", "SAMPLE_RATE", "SEG_FRAMES", "SEG_SAMPLES", "STEP_FRAMES", "STEP_SAMPLES", "CROP_FRAMES",
           "CROP_SAMPLES", "STEP_SEC", "frame_start_sec", "window_start_sec", "hop_segments", "n_windows", "segment_frame",
           "segment_sample"]

STEP_SEC = STEP_FRAMES / FPS  # 0.32


def frame_start_sec(frame: int) -> float:
    """Start (s) that official int() arithmetic maps to `frame` and sample 640*frame (<= 1 ulp above frame/25)."""
    s = frame / FPS
    while int(s * FPS) < frame or int(s * SAMPLE_RATE) < SAMPLE_RATE // FPS * frame:
        s = math.nextafter(s, math.inf)
    return s


def window_start_sec(j: int, first_frame: int = 0) -> float:
    """Start (s) of window j (frame first_frame + 8j) as official int() arithmetic sees it."""
    return frame_start_sec(first_frame + STEP_FRAMES * j)


def hop_segments(hop_sec: float) -> int:
    """A hop in seconds as a whole number of 0.32-s grid steps (>= 1); other hops are an error."""
    k = round(hop_sec / STEP_SEC)
    if k < 1 or abs(k * STEP_SEC - hop_sec) > 1e-6:
        raise InputError(f"hop_sec must be a positive multiple of {STEP_SEC} s (0.32 k), got {hop_sec}")
    return k


def n_windows(n_frames: int, n_samples: int) -> int:
    """Number of windows whose whole 5-s crop (125 frames, 80000 samples) fits the source."""
    j_v = (n_frames - CROP_FRAMES) // STEP_FRAMES
    j_a = (n_samples - CROP_SAMPLES) // STEP_SAMPLES
    return max(0, min(j_v, j_a) + 1)


def segment_frame(g: int) -> int:
    """First frame of grid segment g."""
    return FIRST_FRAME + STEP_FRAMES * g


def segment_sample(g: int) -> int:
    """First sample of grid segment g."""
    return FIRST_SAMPLE + STEP_SAMPLES * g
