"""Visual features for conditioning (MMAudio, ThinkSound, HunyuanVideo-Foley): the visual encoder only.

A clip of T frames at 25 fps gives S = (T - 16) // 8 + 1 segments (frames [8i, 8i + 16)); each goes
through the backend's encode_video (many segments per call) -> (8, v_dim); the clip's features are
the S segments' tokens in order: (S * 8, v_dim) float32. Preset "av-benchmark" (default: shortest
side 224 bicubic + centre crop, what those projects feed Synchformer) or "synchformer" (the sync
model's 256 + crop path); see inputs/presets.py.

output="cupy" keeps the features on the GPU: each batch of normalised segments is uploaded once and
the GPU backends (TensorRT, torch-cuda; `device_arrays`) return CuPy arrays, which stay on the device
and are joined there. A CuPy array speaks DLPack, so `torch.from_dlpack(feats)` (or JAX's) takes it without a copy.
"""
from __future__ import annotations

import numpy as np

from sync_sdk.errors import ClipTooShortError, InputError
from sync_sdk.geometry import FPS, SEG_FRAMES, STEP_FRAMES, VIDEO_TOKENS_PER_SEGMENT, count_segments
from sync_sdk.inputs.gpu import import_cupy
from sync_sdk.inputs.presets import get_preset
from sync_sdk.media import read_video_crops
from sync_sdk.media.source import is_path
from sync_sdk.runtime.arrays import to_numpy
from sync_sdk.runtime.encoder import SegmentEncoder

OUTPUTS = ("numpy", "cupy")


def visual_features(encoder: SegmentEncoder, source, preset: str = "av-benchmark", duration_sec: float | None = None,
                    batch: int | None = None, output: str = "numpy"):
    """(S * 8, v_dim) float32 visual features of `source` at 25 fps: a NumPy array, or with
    output="cupy" a CuPy array on the engine's GPU (needs the `gpu` extra).

    source: path (decoded at 25 fps from its native size) | uint8 frames (T, H, W, 3) at 25 fps |
    AVClip (its frames; note they are already scaled to shortest side 256, the "synchformer" input).
    duration_sec: only the first int(25 * duration_sec) frames. batch: segments per encoder call
    (default engine.max_batch)."""
    if output not in OUTPUTS:
        raise InputError(f"output must be one of {OUTPUTS}, got {output!r}")
    p = get_preset(preset)
    n = None if duration_sec is None else int(FPS * duration_sec)
    if is_path(source):
        crops = read_video_crops(source, p, max_frames=n)
    else:
        frames = getattr(source, "frames", source)
        if not isinstance(frames, np.ndarray):
            raise InputError(f"source must be a path, frames (T, H, W, 3) uint8 or an AVClip, got {type(source).__name__}")
        crops = p.crop_frames(frames[:n])
    s = count_segments(len(crops), SEG_FRAMES, STEP_FRAMES)
    if s == 0:
        raise ClipTooShortError(f"visual features need at least {SEG_FRAMES} frames, got {len(crops)}")
    if batch is not None:
        encoder = SegmentEncoder(encoder.backend, features=encoder.features, max_batch=batch)

    def segments(ids: range) -> np.ndarray:
        return p.normalise(np.stack([crops[STEP_FRAMES * i:STEP_FRAMES * i + SEG_FRAMES] for i in ids]))

    if output == "cupy":
        feats = _encode_on_device(encoder, s, segments)
    else:
        feats = to_numpy(encoder.encode("video", s, segments))
    return feats.reshape(s * VIDEO_TOKENS_PER_SEGMENT, feats.shape[-1]).astype(np.float32, copy=False)


def _encode_on_device(encoder: SegmentEncoder, n: int, segments):
    """CuPy (n, 8, v_dim) of segments 0..n-1. A GPU backend (`device_arrays`) gets device batches and
    its CuPy outputs stay on the device; a host backend's NumPy outputs are uploaded at the end."""
    cp = import_cupy()
    on_device = encoder.backend.device_arrays
    return cp.asarray(encoder.encode("video", n, lambda ids: cp.asarray(segments(ids)) if on_device else segments(ids)))
