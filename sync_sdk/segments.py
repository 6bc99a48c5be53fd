"""Where segments start and end, in frames (25 fps) and samples (16 kHz): pure integer arithmetic.

Two views of the same layout:

- the official 5-s window (`official_window`, `window_segment_starts`): the index arithmetic of the
  official test transform, quirks included, so `preprocess.prepare_inputs` reproduces it exactly;
- the general grid (`segment_frames`, `segment_samples`, `grid_segments`): global segment g of a clip
  (origin = the clip's first frame, on the 0.32-s grid) covers frames [2+8g, 18+8g) and samples
  [1280+5120g+off, 11520+5120g+off) with off = round(offset_sec * 16000). Window j of a scan holds
  grid segments j..j+13 and is the official window of start 0.32 j (up to the int() quirk below).
"""
from __future__ import annotations

from .errors import InvalidArrayError, WindowOutOfRangeError

FPS = 25
SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
SEG_FRAMES = 16  # 0.64 s
SEG_SAMPLES = 10240  # int(16 / 25 * 16000)
STEP_FRAMES = 8  # 50 % overlap, 0.32 s
STEP_SAMPLES = 5120
N_SEGMENTS = 14
WINDOW_SEC = 5
WINDOW_FRAMES = WINDOW_SEC * FPS  # 125
WINDOW_SAMPLES = WINDOW_SEC * SAMPLE_RATE  # 80000
FIRST_FRAME = 2  # (125 - 120) // 2: the 14 segments span 120 frames, centred in the crop
FIRST_SAMPLE = 1280  # int(2 / 25 * 16000)
CROP_SIZE = 224


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
    """First frame and first sample of each of the 14 segments of the window at (v_start, a_start).

    GenerateMultipleSegments at test time: 14 segments of 16 frames / 10240 samples with a step of
    8 frames / 5120 samples, centred in the 125-frame crop: segment s = frames v_start+2+8s.., samples
    a_start+1280+5120s.. (frames 0-1 and 122-124 of the crop are never used).
    """
    return ([v_start + FIRST_FRAME + STEP_FRAMES * s for s in range(N_SEGMENTS)],
            [a_start + FIRST_SAMPLE + STEP_SAMPLES * s for s in range(N_SEGMENTS)])


def crop_offsets(height: int, width: int, size: int = CROP_SIZE) -> tuple[int, int]:
    """(top, left) of the official centre crop: Python round((H - 224) / 2), half-to-even."""
    if height < size or width < size:
        raise InvalidArrayError(f"frames of {height}x{width} are smaller than the {size}x{size} crop; "
                                f"resize them to shortest side 256 first (media.clip_from_arrays)")
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


def offset_samples(offset_sec: float) -> int:
    """Grid audio shift in samples: round(offset_sec * 16000) (positive = audio taken later)."""
    return int(round(float(offset_sec) * SAMPLE_RATE))


def segment_frames(g: int) -> tuple[int, int]:
    """[start, stop) frames of grid segment g, relative to the clip origin."""
    start = FIRST_FRAME + STEP_FRAMES * int(g)
    return start, start + SEG_FRAMES


def segment_samples(g: int, offset_sec: float = 0.0) -> tuple[int, int]:
    """[start, stop) samples of grid segment g shifted by offset_sec, relative to the clip origin."""
    start = FIRST_SAMPLE + STEP_SAMPLES * int(g) + offset_samples(offset_sec)
    return start, start + SEG_SAMPLES


def grid_segments(n_frames: int, n_samples: int, offset_sec: float = 0.0) -> range:
    """Grid segments g >= 0 whose frames and (shifted) samples both lie inside a clip of this size."""
    off = offset_samples(offset_sec)
    g_min = max(0, -((FIRST_SAMPLE + off) // STEP_SAMPLES))  # smallest g with a non-negative first sample
    g_v = (n_frames - FIRST_FRAME - SEG_FRAMES) // STEP_FRAMES
    g_a = (n_samples - FIRST_SAMPLE - SEG_SAMPLES - off) // STEP_SAMPLES
    return range(g_min, max(g_min, min(g_v, g_a) + 1))
