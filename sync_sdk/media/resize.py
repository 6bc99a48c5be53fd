"""Pixel resizing for the presets: centre crops and the antialiased bicubic resize of torchvision / PIL.

Frames are uint8 RGB (T, H, W, 3); everything NumPy. The bicubic resize (`resize_short_crop`) brings the
shortest side to 224 with torchvision/PIL weights (a = -0.5, support scaled by the downscale factor),
width pass then height pass in float32, clamp + round half-to-even to uint8, then the centre crop.
"""
from __future__ import annotations

import numpy as np

from sync_sdk.errors import InputError
from sync_sdk.geometry import CROP_SIZE, crop_offsets

_CHUNK = 16  # frames resized per pass (bounds the float32 intermediates on large frames)


def centre_crop(frames: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """uint8 (T, H, W, 3) -> (T, size, size, 3) view; top/left = round((H - size)/2) (half-to-even).
    Raises InputError for other arrays and InvalidArrayError for frames smaller than the crop."""
    frames = _check_frames(frames)
    top, left = crop_offsets(*frames.shape[1:3], size)
    return frames[:, top:top + size, left:left + size, :]


def resized_size(h: int, w: int, short: int = CROP_SIZE) -> tuple[int, int]:
    """(new_h, new_w) with the shortest side = `short`, the other int(short * long / short_side)."""
    if w <= h:
        return int(short * h / w), short
    return short, int(short * w / h)


def bicubic_aa_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Antialiased bicubic resampling taps: (index (out, K) int64, weight (out, K) float64), rows sum to 1.

    Output pixel i is centred at scale*(i + 0.5) input pixels (scale = in/out); when downscaling the
    kernel is stretched by `scale` (support 2*scale); taps outside the image are dropped and the rest
    renormalised (PIL / torch antialias=True)."""
    scale = in_size / out_size
    support = 2.0 * scale if scale >= 1.0 else 2.0
    inv = 1.0 / scale if scale >= 1.0 else 1.0
    centre = scale * (np.arange(out_size) + 0.5)
    lo = np.maximum(np.trunc(centre - support + 0.5).astype(np.int64), 0)
    hi = np.minimum(np.trunc(centre + support + 0.5).astype(np.int64), in_size)
    taps = int((hi - lo).max())
    j = np.arange(taps)
    idx = lo[:, None] + j[None, :]
    w = _cubic((idx - centre[:, None] + 0.5) * inv)
    w[idx >= hi[:, None]] = 0.0
    w /= w.sum(axis=1, keepdims=True)
    return np.minimum(idx, in_size - 1), w


def resize_short_crop(frames: np.ndarray, short: int = CROP_SIZE, crop: int = CROP_SIZE) -> np.ndarray:
    """uint8 (T, H, W, 3) -> uint8 (T, crop, crop, 3): bicubic-antialias resize of the shortest side to
    `short` (width pass, then height pass, float32), clamp to [0, 255], round half-to-even, centre crop.
    Only the cropped output pixels are computed, 16 frames at a time. Raises InputError for other arrays."""
    frames = _check_frames(frames)
    if not len(frames):
        return np.zeros((0, crop, crop, 3), np.uint8)
    h, w = frames.shape[1:3]
    nh, nw = resized_size(h, w, short)
    top, left = crop_offsets(nh, nw, crop)
    cols = bicubic_aa_weights(w, nw) if nw != w else None
    rows = bicubic_aa_weights(h, nh) if nh != h else None
    out = np.empty((len(frames), crop, crop, 3), np.uint8)
    for i in range(0, len(frames), _CHUNK):
        x = frames[i:i + _CHUNK].astype(np.float32)
        if cols is not None:
            x = _resample_axis(x, 2, cols[0][left:left + crop], cols[1][left:left + crop])
        else:
            x = x[:, :, left:left + crop]
        if rows is not None:
            x = _resample_axis(x, 1, rows[0][top:top + crop], rows[1][top:top + crop])
        else:
            x = x[:, top:top + crop]
        out[i:i + _CHUNK] = np.rint(np.clip(x, 0, 255))
    return out


def _cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def _resample_axis(x: np.ndarray, axis: int, idx: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Apply taps along `axis` of float32 x; output length = len(idx)."""
    x = np.moveaxis(x, axis, -1)
    out = np.zeros(x.shape[:-1] + (len(idx),), np.float32)
    wk = w.astype(np.float32)
    for k in range(idx.shape[1]):
        out += x[..., idx[:, k]] * wk[:, k]
    return np.moveaxis(out, -1, axis)


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise InputError(f"frames must be uint8 (T, H, W, 3) RGB, got {frames.dtype} {frames.shape}")
    return frames
