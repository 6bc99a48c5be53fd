"""Any accepted source -> AVClip (25 fps, 16 kHz mono) for the analyses that work on decoded media."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from sync_sdk.errors import InputError
from sync_sdk.geometry import FPS, SAMPLES_PER_FRAME


def as_clip(source, start_sec: float = 0.0, duration_sec: float | None = None):
    """AVClip of [start_sec, start_sec + duration_sec) of `source` (to the end when None).

    source: path | AVClip | (frames (T,H,W,3) uint8, fps, audio (N,) or (N,C), sample_rate).
    For arrays and AVClips start_sec is rounded to the nearest frame."""
    from sync_sdk.media import AVClip, clip_from_arrays, read_clip
    if isinstance(source, (str, Path)):
        return read_clip(source, start_sec=start_sec, duration_sec=duration_sec)
    if isinstance(source, AVClip):
        clip = source
    elif isinstance(source, (tuple, list)) and len(source) == 4:
        clip = clip_from_arrays(*source)
    else:
        raise InputError("source must be a path, an AVClip or (frames, fps, audio, sample_rate), "
                         f"got {type(source).__name__}")
    first = int(round(start_sec * FPS))
    if first < 0 or first >= len(clip.frames):
        raise InputError(f"start_sec={start_sec} is outside the clip ({len(clip.frames) / FPS:.2f} s)")
    stop = None if duration_sec is None else first + int(round(duration_sec * FPS))
    return AVClip(clip.frames[first:stop], np.ascontiguousarray(
        clip.audio[first * SAMPLES_PER_FRAME:None if stop is None else stop * SAMPLES_PER_FRAME]),
        start_sec=clip.start_sec + first / FPS)


def source_name(source) -> str | None:
    return str(source) if isinstance(source, (str, Path)) else None


def content_id(*arrays: np.ndarray) -> str:
    """A short digest of the arrays' bytes: cache keys that cannot collide between different media."""
    h = hashlib.blake2b(digest_size=12)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype, a.shape)).encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()
