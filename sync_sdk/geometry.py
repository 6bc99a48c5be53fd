"""Where segments and windows lie, in frames (25 fps) and samples (16 kHz), and the 21 offset classes.

Every constant of the model's time and input layout is defined here once.

- Segment: 16 frames (0.64 s) and 10240 samples; a log-mel of 128 bins x 66 frames; a 224 x 224 crop.
  The visual encoder gives 8 tokens per segment, the audio encoder 6.
- Grid: segment g of a media covers frames [2+8g, 18+8g) and samples [1280+5120g, 11520+5120g)
  (`segment_frame`, `segment_sample`); segments step by 8 frames / 5120 samples (0.32 s).
- Window j: the 5-s crop starting at frame 8j / sample 5120j (125 frames, 80000 samples), holding grid
  segments j..j+13 centred in it (frames 0-1 and 122-124 of the crop are never used).
- The official window (`official_window`) places a crop from (offset_sec, start_sec) with the index
  quirks of the official test transform; `window_start_sec(j)` is the start that maps exactly onto
  window j, so predict(start_sec=window_start_sec(j)) sees window j of a scan.
- Offset classes: class k <-> offset -2.0 + 0.2 k seconds (positive: the audio leads the video).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from sync_sdk.errors import InputError, InvalidArrayError, WindowOutOfRangeError

FPS = 25
SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
SEG_FRAMES = 16  # 0.64 s
SEG_SAMPLES = 10240  # int(16 / 25 * 16000)
STEP_FRAMES = 8  # 50 % overlap, 0.32 s
STEP_SAMPLES = 5120
STEP_SEC = STEP_FRAMES / FPS  # 0.32
N_SEGMENTS = 14
WINDOW_SEC = 5
WINDOW_FRAMES = WINDOW_SEC * FPS  # 125
WINDOW_SAMPLES = WINDOW_SEC * SAMPLE_RATE  # 80000
FIRST_FRAME = 2  # (125 - 120) // 2: the 14 segments span 120 frames, centred in the crop
FIRST_SAMPLE = 1280  # int(2 / 25 * 16000)
CROP_SIZE = 224
N_MELS = 128
SPEC_FRAMES = 66  # log-mel frames per segment: 65 STFT frames padded to 66
VIDEO_TOKENS_PER_SEGMENT = 8
AUDIO_TOKENS_PER_SEGMENT = 6

NUM_OFFSET_CLASSES = 21
OFFSET_GRID_SEC = np.linspace(-2.0, 2.0, NUM_OFFSET_CLASSES).astype(np.float32)
OFFSET_STEP_SEC = 0.2
IN_SYNC_CLASS = 10
MODEL_RANGE_SEC = 2.0  # the largest |offset| a class stands for


# ---------------------------------------------------------------- the official window
def official_window(offset_sec: float, start_sec: float) -> tuple[int, int]:
    """(v_start_frame, a_start_sample) of the official 5-s crop, in media frames / samples.

    Reproduces TemporalCropAndOffset at test time literally (SPEC 1.4):
    - the offset is first rounded to 0.01 s: `round(offset_sec, 2)` (half-to-even on the float);
    - `v_start = int(start_sec * 25)`: truncation toward zero, so a start between frames drops to the
      earlier frame;
    - `a_start = int((start_sec + offset) * 16000)` uses the *unrounded* start_sec, so a start that is
      not a multiple of 0.04 s displaces the audio by the fractional frame; int() truncation can also
      land one sample low (e.g. 0.29 * 16000 = 4639.999...);
    - a small negative a_start (-640 <= a_start < 0, float rounding at the start) is clamped to 0.
    Positive offset = audio leads: the audio crop is taken offset_sec later than the video crop.
    Raises WindowOutOfRangeError when the video or audio crop would start before the media.
    """
    offset = round(float(offset_sec), 2)
    start = float(start_sec)
    v_start = int(start * FPS)
    a_start = int((start + offset) * SAMPLE_RATE)
    if v_start < 0 or start < 0:
        raise WindowOutOfRangeError(f"start_sec must be >= 0, got {start_sec}")
    if a_start < 0:
        if -a_start > SAMPLES_PER_FRAME:
            raise WindowOutOfRangeError(
                f"offset_sec={offset} with start_sec={start} puts the audio crop at "
                f"{(start + offset):.3f} s, before the media start; use start_sec >= {-offset:.2f}")
        a_start = 0
    return v_start, a_start


def window_segment_starts(v_start: int, a_start: int) -> tuple[list[int], list[int]]:
    """First frame and first sample of each of the 14 segments of the window at (v_start, a_start):
    frames v_start+2+8s.., samples a_start+1280+5120s.. (GenerateMultipleSegments at test time)."""
    return ([v_start + segment_frame(s) for s in range(N_SEGMENTS)],
            [a_start + segment_sample(s) for s in range(N_SEGMENTS)])


def crop_offsets(height: int, width: int, size: int = CROP_SIZE) -> tuple[int, int]:
    """(top, left) of the official centre crop: Python round((H - 224) / 2), half-to-even."""
    if height < size or width < size:
        raise InvalidArrayError(f"frames of {height}x{width} are smaller than the {size}x{size} crop; "
                                f"resize them to shortest side 256 first (media.clip_from_arrays)")
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


# ---------------------------------------------------------------- the grid
def offset_samples(offset_sec: float) -> int:
    """An audio shift in samples: round(offset_sec * 16000) (positive = audio taken later)."""
    return int(round(float(offset_sec) * SAMPLE_RATE))


def segment_frame(g: int) -> int:
    """First frame of grid segment g (its frames are [segment_frame(g), + SEG_FRAMES))."""
    return FIRST_FRAME + STEP_FRAMES * int(g)


def segment_sample(g: int, shift: int = 0) -> int:
    """First sample of grid segment g with its audio shifted by `shift` samples."""
    return FIRST_SAMPLE + STEP_SAMPLES * int(g) + int(shift)


def grid_segments(n_frames: int, n_samples: int, offset_sec: float = 0.0) -> range:
    """Grid segments g >= 0 whose frames and (shifted) samples both lie inside a clip of this size."""
    off = offset_samples(offset_sec)
    g_min = max(0, -((FIRST_SAMPLE + off) // STEP_SAMPLES))  # smallest g with a non-negative first sample
    g_v = (n_frames - FIRST_FRAME - SEG_FRAMES) // STEP_FRAMES
    g_a = (n_samples - FIRST_SAMPLE - SEG_SAMPLES - off) // STEP_SAMPLES
    return range(g_min, max(g_min, min(g_v, g_a) + 1))


def count_segments(length: int, seg: int, step: int) -> int:
    """Number of whole segments of `seg` items stepping by `step` from item 0 of `length` items."""
    return max(0, (length - seg) // step + 1)


def n_windows(n_frames: int, n_samples: int) -> int:
    """Number of grid windows whose whole 5-s crop (125 frames, 80000 samples) fits the media."""
    j_v = (n_frames - WINDOW_FRAMES) // STEP_FRAMES
    j_a = (n_samples - WINDOW_SAMPLES) // STEP_SAMPLES
    return max(0, min(j_v, j_a) + 1)


def check_seconds(value, name: str) -> float:
    """`value` (s) as a finite float, else InputError naming the argument `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{name} must be a number of seconds, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise InputError(f"{name} must be a finite number of seconds, got {value}")
    return float(value)


def hop_segments(hop_sec: float) -> int:
    """A hop in seconds as a whole number of 0.32-s grid steps (>= 1); other hops are an error."""
    hop_sec = check_seconds(hop_sec, "hop_sec")
    k = round(hop_sec / STEP_SEC)
    if k < 1 or abs(k * STEP_SEC - hop_sec) > 1e-6:
        raise InputError(f"hop_sec must be a positive multiple of {STEP_SEC} s (0.32 k), got {hop_sec}")
    return k


def frame_start_sec(frame: int) -> float:
    """Start (s) that official int() arithmetic maps to `frame` and sample 640*frame (<= 1 ulp above frame/25).

    int(j * 0.32 * 25) truncates some products one index low (j = 29: frame 231); this returns the
    float, at most one ulp above frame/25, that lands exactly on the frame and its first sample."""
    s = frame / FPS
    while int(s * FPS) < frame or int(s * SAMPLE_RATE) < SAMPLES_PER_FRAME * frame:
        s = math.nextafter(s, math.inf)
    return s


def window_start_sec(j: int, first_frame: int = 0) -> float:
    """Start (s) of grid window j (media frame first_frame + 8j) as official int() arithmetic sees it."""
    return frame_start_sec(first_frame + STEP_FRAMES * j)


# ---------------------------------------------------------------- offset classes
def class_to_offset(k: int) -> float:
    """Offset in seconds of class index k (0..20)."""
    if not 0 <= int(k) < NUM_OFFSET_CLASSES:
        raise ValueError(f"offset class must be in 0..{NUM_OFFSET_CLASSES - 1}, got {k}")
    return round(float(OFFSET_GRID_SEC[int(k)]), 1)


def offset_to_class(offset_sec: float) -> int:
    """Nearest class index for an offset in seconds; offsets beyond +-2 s are clamped."""
    return int(np.argmin(np.abs(OFFSET_GRID_SEC - np.float32(offset_sec))))
