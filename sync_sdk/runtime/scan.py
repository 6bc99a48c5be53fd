"""scan(): windows on the 0.32-s grid over a whole media, decoded in chunks, each segment encoded once.

Window j is the 5-s crop at frame 8j / sample 5120j of the source (geometry.py); a window is predicted
as soon as its crop is decoded (with the audio its shift views read, views.py), in batches of
`batch_windows`. Decoded media lives in one rolling MediaSpan: each chunk extends it and what no later
window needs is dropped, so memory stays at a few windows whatever the media length. A window's shift
views whose audio lies outside the media are left out (at its two ends).
"""
from __future__ import annotations

import itertools
import math
from typing import Callable, Iterator

import numpy as np

from sync_sdk.errors import ClipTooShortError
from sync_sdk.geometry import (
    FPS,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    STEP_FRAMES,
    STEP_SEC,
    WINDOW_FRAMES,
    WINDOW_SAMPLES,
    hop_segments,
    n_windows,
    segment_frame,
    segment_sample,
    window_start_sec,
)
from sync_sdk.media import iter_chunks, probe
from sync_sdk.media.source import as_span, is_path, source_name
from sync_sdk.media.span import MediaSpan
from sync_sdk.results import SyncResult, Timeline
from sync_sdk.runtime.cache import SegmentCache
from sync_sdk.runtime.encoder import SegmentEncoder

CHUNK_SEC = 5.12  # decode this much media at a time (16 grid steps)
_scan_ids = itertools.count()


def read_chunks(source, chunk_sec: float | None = None) -> tuple[Iterator[tuple[np.ndarray, np.ndarray]], int,
                                                                   int | None]:
    """(chunks, first media frame, windows expected or None) of a source: a file decoded `chunk_sec`
    (None: CHUNK_SEC) at a time, or an in-memory source (`as_span`) as one chunk whose streams start
    together."""
    if is_path(source):
        d = probe(source).duration_sec
        expected = n_windows(int(d * FPS), int(d * SAMPLE_RATE)) if d else None
        return iter_chunks(source, chunk_sec or CHUNK_SEC), 0, expected
    span = as_span(source)
    first = max(span.first_frame, math.ceil(span.first_sample / SAMPLES_PER_FRAME))  # both streams from here
    frames = span.frames[first - span.first_frame:]
    audio = span.audio[first * SAMPLES_PER_FRAME - span.first_sample:]
    return iter([(frames, audio)]), first, n_windows(len(frames), len(audio))


def scan(encoder: SegmentEncoder, cache: SegmentCache, source, hop_sec: float = STEP_SEC, *,
         batch_windows: int = 8, per_window: bool = False,
         progress: Callable[[int, int | None], None] | None = None) -> Timeline:
    """Timeline of predictions over `source` (path, arrays, AVClip or MediaSpan); see SyncEngine.scan.

    per_window: every window encodes its own segments, as separate predict() calls would (for
    comparison; pass an uncached cache)."""
    k = hop_segments(hop_sec)
    name = source_name(source)
    source_id = ("scan", next(_scan_ids), name)
    chunks, first_frame, expected = read_chunks(source)
    total = None if expected is None else -(-expected // k)
    shifts = encoder.view_shift_samples()
    ahead, back = max(0, max(shifts)), max(0, -min(shifts))  # audio the shift views read past a crop
    span = MediaSpan.empty(name=name)  # grid coordinates: frame 0 and sample 0 are the source's first
    results: list[SyncResult] = []
    j = 0  # next window to predict
    ended = False
    while not ended:
        chunk = next(chunks, None)
        ended = chunk is None
        if not ended:
            span.extend(*chunk)
        # windows whose crop is decoded, with the audio of their later views unless the media has ended
        ready = list(range(j, n_windows(span.end_frame, span.end_sample if ended else span.end_sample - ahead), k))
        for b in range(0, len(ready), batch_windows):
            batch = ready[b:b + batch_windows]
            if per_window:
                logits = np.concatenate([encoder.window_logits(cache, source_id, span, [w]) for w in batch])
            else:
                logits = encoder.window_logits(cache, source_id, span, batch)
            results += [SyncResult.from_logits(lg, start_sec=window_start_sec(w, first_frame), source=name)
                        for lg, w in zip(logits, batch)]
            j = batch[-1] + k
            # keep only what later windows need: from the first segment of window j on, and the audio
            # of its earlier views (with a hop longer than a window that may lie beyond what is decoded)
            span.drop_before(segment_frame(j), segment_sample(j) - back)
            if progress:
                progress(len(results), total)
    if not results:
        raise ClipTooShortError(f"{name or 'input'}: {span.end_frame} frames / {span.end_sample} samples; a "
                                f"window needs {WINDOW_FRAMES} frames (5 s at {FPS} fps) and {WINDOW_SAMPLES} "
                                f"samples ({SAMPLE_RATE} Hz)")
    return Timeline(tuple(results), hop_sec=k * STEP_FRAMES / FPS, source=name)
