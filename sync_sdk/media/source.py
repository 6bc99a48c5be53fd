"""The front door for media: every accepted source (a path, arrays, an AVClip, a MediaSpan) normalised once.

A path stays a path (callers decode only the part they need); anything in memory becomes a MediaSpan.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np

from sync_sdk.errors import InputError
from sync_sdk.geometry import FPS, SAMPLES_PER_FRAME
from sync_sdk.media.decode import AVClip, clip_from_arrays, read_clip
from sync_sdk.media.span import MediaSpan

SOURCE_KINDS = "a path, an AVClip, a MediaSpan or (frames, fps, audio, sample_rate)"


def is_path(source) -> bool:
    """True for a file path (str or os.PathLike)."""
    return isinstance(source, (str, os.PathLike))


def normalise_source(source) -> "str | os.PathLike | MediaSpan":
    """A path as it is; anything in memory as a MediaSpan (`as_span`)."""
    return source if is_path(source) else as_span(source)


def as_span(source) -> MediaSpan:
    """The span of an in-memory source: a MediaSpan as it is; an AVClip; or arrays (frames (T,H,W,3)
    uint8, fps, audio (N,) or (N,C), sample_rate), resampled to 25 fps / 16 kHz (`clip_from_arrays`)."""
    if isinstance(source, MediaSpan):
        return source
    if isinstance(source, AVClip):
        return MediaSpan.from_clip(source)
    if isinstance(source, (tuple, list)) and len(source) == 4:
        return MediaSpan.from_clip(clip_from_arrays(*source))
    raise InputError(f"source must be {SOURCE_KINDS}, got {type(source).__name__}")


def read_span(source, start_sec: float = 0.0, duration_sec: float | None = None) -> MediaSpan:
    """The span of [start_sec, start_sec + duration_sec) of `source` (to the end when None), its video
    and audio starting together. A file decodes only that part, from media time start_sec; for sources
    in memory start_sec counts from their first frame and is rounded to the nearest frame."""
    if is_path(source):
        clip = read_clip(source, start_sec=start_sec, duration_sec=duration_sec)
        return MediaSpan.from_clip(clip, str(source))
    span = as_span(source)
    v = int(round(start_sec * FPS))
    if v < 0 or v >= len(span.frames):
        raise InputError(f"start_sec={start_sec} is outside the clip ({len(span.frames) / FPS:.2f} s)")
    first = span.first_frame + v
    a = max(0, first * SAMPLES_PER_FRAME - span.first_sample)
    stop = None if duration_sec is None else v + int(round(duration_sec * FPS))
    n_samples = None if stop is None else (stop - v) * SAMPLES_PER_FRAME
    return MediaSpan(span.frames[v:stop], first, np.ascontiguousarray(
        span.audio[a:None if n_samples is None else a + n_samples]), first * SAMPLES_PER_FRAME,
        span.name, span.duration_sec)


def source_name(source) -> str | None:
    """The path of a file source (or of the file a span came from), else None."""
    return str(source) if is_path(source) else getattr(source, "name", None)


def content_id(*arrays: np.ndarray) -> str:
    """A short digest of the arrays' bytes: cache keys that cannot collide between different media."""
    h = hashlib.blake2b(digest_size=12)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype, a.shape)).encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()
