"""Pixel resizing for the layouts (inputs/layouts.py): centre crops and torchvision's uint8 bicubic resize, bit for bit.

Frames are uint8 RGB (T, H, W, 3); everything NumPy. `resize_short_crop` gives what av-benchmark and
MMAudio get from torchvision's v2 Resize(224, BICUBIC) + CenterCrop(224) on uint8 CPU tensors, where
torchvision runs torch's native uint8 kernel (interpolate(mode="bicubic", antialias=True); its AVX2 and
generic paths compute the same integers):
- size: shortest side -> 224, the other int(224 * long / short);
- per axis, fixed-point taps (`bicubic_aa_taps`): PIL's antialiased Keys cubic (a = -0.5) in float64,
  normalised, scaled by 2^p and rounded to integers;
- a width pass, then a height pass (an axis whose length does not change is skipped), each in integers:
  clamp((2^(p-1) + sum pixel * weight) >> p, 0, 255), so the intermediate is uint8 too;
- the centre crop: top/left = round((H' - 224) / 2), half-to-even.
Only the cropped output pixels, and the intermediate rows and input columns they use, are computed: each
output pixel depends on its own taps only, so the crop is exact.
"""
from __future__ import annotations

import math

import numpy as np

from sync_sdk.errors import InputError, InvalidArrayError
from sync_sdk.geometry import CROP_SIZE, crop_offsets

_BUDGET = 1 << 22  # int32 accumulator elements per pass (16 MB; bounds memory on large frames)
_MAX_PRECISION = 22  # torch's bound on the weights' fixed-point precision


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


def bicubic_aa_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """torch's uint8 antialiased bicubic taps along one axis: (index (out, K) int64, weight (out, K) int32,
    precision p); output i = clamp((2^(p-1) + sum_k pixel[index[i, k]] * weight[i, k]) >> p, 0, 255).

    scale = in/out; output i is centred at c = scale * (i + 0.5); support s = 2 * max(scale, 1) input
    pixels, K = 2 * ceil(s) + 1; taps j in [max(int(c - s + 0.5), 0), min(int(c + s + 0.5), in)) weigh
    cubic((j - c + 0.5) / max(scale, 1)), normalised to sum 1 (float64); p is the largest p <= 22 with
    round(max weight * 2^p) < 2^15; weights are w * 2^p rounded half away from zero. Unused taps weigh 0
    and repeat the first index."""
    if in_size < 1 or out_size < 1:
        raise InputError(f"sizes must be >= 1 pixel, got {in_size} -> {out_size}")
    scale = in_size / out_size
    support = 2.0 * scale if scale >= 1.0 else 2.0
    inv = 1.0 / scale if scale >= 1.0 else 1.0
    k = 2 * math.ceil(support) + 1
    centre = scale * (np.arange(out_size) + 0.5)
    first = np.maximum(np.trunc(centre - support + 0.5), 0).astype(np.int64)
    count = np.clip(np.minimum(np.trunc(centre + support + 0.5).astype(np.int64), in_size) - first, 0, k)
    j = np.arange(k)
    used = j < count[:, None]
    w = np.where(used, _keys_cubic((((first[:, None] + j) - centre[:, None]) + 0.5) * inv), 0.0)
    total = np.zeros((out_size, 1))
    for t in range(k):  # summed in tap order, as torch does (NumPy's pairwise sum may round otherwise)
        total[:, 0] += w[:, t]
    w = np.divide(w, total, out=w, where=total != 0)
    w_max = max(float(w.max()), 0.0)
    p = 0
    while p < _MAX_PRECISION and int(0.5 + w_max * (1 << (p + 1))) < 1 << 15:
        p += 1
    v = w * (1 << p)
    weight = np.where(v < 0, np.trunc(v - 0.5), np.trunc(v + 0.5)).astype(np.int32)
    return np.where(used, first[:, None] + j, first[:, None]), weight, p


def resize_short_crop(frames: np.ndarray, short: int = CROP_SIZE, crop: int = CROP_SIZE) -> np.ndarray:
    """uint8 (T, H, W, 3) -> uint8 (T, crop, crop, 3): torchvision's uint8 bicubic resize of the shortest
    side to `short` (see the module docstring), then the centre crop; bounded memory (a few frames per
    pass on large frames). Raises InputError for other arrays, InvalidArrayError if short < crop."""
    frames = _check_frames(frames)
    h, w = frames.shape[1:3]
    if min(h, w) < 1:
        raise InvalidArrayError(f"frames of {h}x{w} pixels cannot be resized; need height, width >= 1")
    nh, nw = resized_size(h, w, short)
    top, left = crop_offsets(nh, nw, crop)
    out = np.empty((len(frames), crop, crop, 3), np.uint8)
    rows, (r0, r1) = _crop_taps(h, nh, top, crop)
    cols, (c0, c1) = _crop_taps(w, nw, left, crop)
    step = max(1, _BUDGET // (crop * (r1 - r0) * 3))
    for i in range(0, len(frames), step):
        x = frames[i:i + step, r0:r1, c0:c1].transpose(2, 0, 1, 3)  # (columns, n, rows, 3)
        x = _resample(x, cols).transpose(2, 1, 0, 3)  # (rows, n, crop columns, 3)
        out[i:i + step] = _resample(x, rows).transpose(1, 0, 2, 3)
    return out


def _keys_cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Keys' cubic convolution kernel, evaluated as torch does (same float64 operations, same order)."""
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def _crop_taps(in_size: int, out_size: int, start: int, crop: int):
    """(taps of the cropped outputs with indices relative to the input span, or None when the axis keeps
    its length; (first, stop) of the input span they read)."""
    if in_size == out_size:
        return None, (start, start + crop)
    index, weight, p = bicubic_aa_taps(in_size, out_size)
    index, weight = index[start:start + crop], weight[start:start + crop]
    first = int(index.min())
    return (index - first, weight, p), (first, int(index.max()) + 1)


def _resample(x: np.ndarray, taps) -> np.ndarray:
    """One fixed-point pass along axis 0 of uint8 x -> uint8 (len(index), ...); x itself when taps is None."""
    if taps is None:
        return x
    index, weight, p = taps
    x = np.ascontiguousarray(x)
    shape = (len(index),) + x.shape[1:]
    acc = np.full(shape, 1 << (p - 1), np.int32)
    term = np.empty(shape, np.int32)
    for k in range(index.shape[1]):
        acc += np.multiply(x[index[:, k]], weight[:, k].reshape((-1,) + (1,) * (x.ndim - 1)), out=term)
    acc >>= p
    return np.clip(acc, 0, 255, out=acc).astype(np.uint8)


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise InputError(f"frames must be uint8 (T, H, W, 3) RGB, got {frames.dtype} {frames.shape}")
    return frames
