"""Visual features for conditioning (MMAudio, ThinkSound, HunyuanVideo-Foley): the visual encoder only.

A clip of T frames at 25 fps gives S = (T - 16) // 8 + 1 segments (frames [8i, 8i + 16)); each goes
through the backend's encode_video (many segments per call) -> (8, v_dim); the clip's features are
the S segments' tokens in order: (S * 8, v_dim) float32. Preset "av-benchmark" (default: shortest
side 224 bicubic + centre crop, what those projects feed Synchformer) or "synchformer" (the sync
model's 256 + crop path); see presets.py.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .config import VIDEO_TOKENS_PER_SEGMENT
from .errors import ClipTooShortError, InputError
from .presets import FPS, get_preset, read_video_crops

SEG_FRAMES, STEP_FRAMES = 16, 8


def visual_features(engine, source, preset: str = "av-benchmark", duration_sec: float | None = None,
                    batch: int | None = None) -> np.ndarray:
    """(S * 8, v_dim) float32 visual features of `source` at 25 fps.

    source: path (decoded at 25 fps from its native size) | uint8 frames (T, H, W, 3) at 25 fps |
    AVClip (its frames; note they are already scaled to shortest side 256, the "synchformer" input).
    duration_sec: only the first int(25 * duration_sec) frames. batch: segments per encoder call
    (default engine.max_batch)."""
    p = get_preset(preset)
    n = None if duration_sec is None else int(FPS * duration_sec)
    if isinstance(source, (str, Path)):
        crops = read_video_crops(source, p, max_frames=n)
    else:
        frames = getattr(source, "frames", source)
        if not isinstance(frames, np.ndarray):
            raise InputError(f"source must be a path, frames (T, H, W, 3) uint8 or an AVClip, got {type(source).__name__}")
        crops = p.crop_frames(frames[:n])
    s = max(0, (len(crops) - SEG_FRAMES) // STEP_FRAMES + 1)
    if s == 0:
        raise ClipTooShortError(f"visual features need at least {SEG_FRAMES} frames, got {len(crops)}")
    from .desync import encode_batched
    batch = int(batch or getattr(engine, "max_batch", 14))
    feats = encode_batched(engine.backend.encode_video, s,
                           lambda ids: p.normalise(np.stack([crops[STEP_FRAMES * i:STEP_FRAMES * i + SEG_FRAMES] for i in ids])),
                           batch)
    return feats.reshape(s * VIDEO_TOKENS_PER_SEGMENT, feats.shape[-1]).astype(np.float32, copy=False)
