"""scan(): windows on the 0.32-s grid over a whole media, decoded in chunks, each segment encoded once.

Window j is the 5-s crop at frame 8j / sample 5120j of the source (geometry.py); a window is predicted
as soon as its crop is decoded (with the audio its shift views read, views.py), in batches of
`batch_windows`. Decoded media lives in one rolling MediaSpan: each chunk extends it and what no later
window needs is dropped, so memory stays at about one window's frames plus two chunks whatever the
media length (benchmarks/faults/memory.py). A window's shift views whose audio lies outside the media
are left out (at its two ends). With refine, each window is also scored at the fine shifts
(runtime/refine.py), each shifted segment encoded once for the windows that read it.
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
    offset_samples,
    segment_frame,
    segment_sample,
    window_start_sec,
)
from sync_sdk.inputs.window import SegmentFlags
from sync_sdk.media import iter_chunks, probe
from sync_sdk.media.source import as_span, is_path, source_name
from sync_sdk.media.span import MediaSpan
from sync_sdk.results import SyncResult, Timeline
from sync_sdk.runtime.cache import SegmentCache
from sync_sdk.runtime.encoder import SegmentEncoder
from sync_sdk.runtime.refine import scan_shifts, window_fits

# decode this much media at a time (4 grid steps): 32 frames (6 MB at 256 x 256) in the rolling span and
# in the chunk decoded ahead; longer chunks only add memory (5.12 s: +150 MB peak)
CHUNK_SEC = 1.28
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


class FrameBuffer:
    """A scan's frames in one array reused chunk after chunk: the frames its span still holds move to
    the front and the chunk is written after them, where MediaSpan.extend would copy the span into a
    new array per chunk (and fragment the heap: 35 MB more peak RSS over a 20-min scan). Only for a
    span nothing else holds views of."""

    def __init__(self) -> None:
        self.array: np.ndarray | None = None  # once set, the span's frames are a view of it
        self.first = 0  # the slot of array[0]

    def extend(self, span: MediaSpan, frames: np.ndarray, audio: np.ndarray) -> None:
        """span.extend(frames, audio), the frames through the buffer (the first chunk of an empty span
        is taken as is: an in-memory source comes as one chunk)."""
        n, m = len(span.frames), len(frames)
        if self.array is None and n == 0:
            span.extend(frames, audio)
            return
        if self.array is None or n + m > len(self.array) or self.array.shape[1:] != frames.shape[1:]:
            array = np.empty((n + 2 * m,) + frames.shape[1:], np.uint8)  # room for one more chunk
            array[:n] = span.frames
            self.array = array
        else:
            cut = span.first_frame - self.first
            for i in range(n if cut else 0):  # forward, a frame at a time: the two ranges overlap
                self.array[i] = self.array[cut + i]
        self.array[n:n + m] = frames
        self.first = span.first_frame
        span.frames = self.array[:n + m]
        span.extend(audio=audio)


def scan(encoder: SegmentEncoder, cache: SegmentCache, source, hop_sec: float = STEP_SEC, *,
         batch_windows: int = 8, per_window: bool = False,
         progress: Callable[[int, int | None], None] | None = None, refine: bool = False) -> Timeline:
    """Timeline of predictions over `source` (path, arrays, AVClip or MediaSpan); see SyncEngine.scan.

    per_window: every window encodes its own segments, as separate predict() calls would (for
    comparison; pass an uncached cache). refine: continuous offsets (`window_fits`)."""
    k = hop_segments(hop_sec)
    name = source_name(source)
    source_id = ("scan", next(_scan_ids), name)
    chunks, first_frame, expected = read_chunks(source)
    total = None if expected is None else -(-expected // k)
    shifts = [offset_samples(d) for d in scan_shifts(encoder)] if refine else encoder.view_shift_samples()
    ahead, back = max(0, max(shifts)), max(0, -min(shifts))  # audio the shift views read past a crop
    span = MediaSpan.empty(name=name)  # grid coordinates: frame 0 and sample 0 are the source's first
    buffer = FrameBuffer()
    flags = SegmentFlags()  # each segment's evidence flags computed once
    n_segments = encoder.config.n_segments
    results: list[SyncResult] = []
    j = 0  # next window to predict
    ended = False
    while not ended:
        chunk = next(chunks, None)
        ended = chunk is None
        if not ended:
            buffer.extend(span, *chunk)
            span.drop_before(segment_frame(j), segment_sample(j) - back)  # media a hop skips is never kept
        # windows whose crop is decoded, with the audio of their later views unless the media has ended
        ready = list(range(j, n_windows(span.end_frame, span.end_sample if ended else span.end_sample - ahead), k))
        for b in range(0, len(ready), batch_windows):
            batch = ready[b:b + batch_windows]
            if per_window:
                logits = np.concatenate([encoder.window_logits(cache, source_id, span, [w]) for w in batch])
            else:
                logits = encoder.window_logits(cache, source_id, span, batch)
            views = encoder.window_views(batch, span.first_sample, span.end_sample)
            for w in batch:
                flags.add(span, range(w, w + n_segments))
            new = [SyncResult.from_logits(lg, start_sec=window_start_sec(w, first_frame), source=name,
                                          views=[(d, window_start_sec(w, first_frame)) for d in vs],
                                          flags=flags.window(w, n_segments))
                   for lg, w, vs in zip(logits, batch, views)]
            if refine:  # per_window: each window's own shifted segments, as predict(refine=True) would
                for part in ([[i] for i in range(len(batch))] if per_window else [range(len(batch))]):
                    fits = window_fits(encoder, cache, source_id, span, [batch[i] for i in part],
                                       [new[i].class_offset_sec for i in part])
                    for i, fine in zip(part, fits):
                        new[i] = new[i].with_fine(fine)
            results += new
            j = batch[-1] + k
            # keep only what later windows need: from the first segment of window j on, and the audio
            # of its earlier views (with a hop longer than a window that may lie beyond what is decoded)
            span.drop_before(segment_frame(j), segment_sample(j) - back)
            flags.drop_before(j)
            if progress:
                progress(len(results), total)
    if not results:
        raise ClipTooShortError(f"{name or 'input'}: {span.end_frame} frames / {span.end_sample} samples; a "
                                f"window needs {WINDOW_FRAMES} frames (5 s at {FPS} fps) and {WINDOW_SAMPLES} "
                                f"samples ({SAMPLE_RATE} Hz)")
    return Timeline(tuple(results), hop_sec=k * STEP_FRAMES / FPS, source=name)
