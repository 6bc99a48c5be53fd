"""scan(): windows on the 0.32-s grid over a whole media, decoded in chunks, each segment encoded once.

Window j is the 5-s crop at frame 8j / sample 5120j (see windows.py); a window is predicted as soon as
its crop is decoded (with the audio its shift views read, views.py), in batches of `batch_windows`, and
the decoded data no later window needs is dropped, so memory stays at a few windows whatever the media
length. A window's shift views whose audio lies outside the media are left out (at its two ends).
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Callable

import numpy as np

from sync_sdk.errors import ClipTooShortError
from sync_sdk.results import SyncResult, Timeline
from sync_sdk.geometry import (WINDOW_FRAMES, WINDOW_SAMPLES, FPS, SAMPLE_RATE, STEP_FRAMES, STEP_SEC, hop_segments,
                      n_windows, segment_frame, segment_sample, window_start_sec)

CHUNK_SEC = 5.12  # decode this much media at a time (16 grid steps)
_scan_ids = itertools.count()


class ArrayReader:
    """An in-memory source (arrays or AVClip) as a single chunk."""

    def __init__(self, source) -> None:
        from sync_sdk.media import AVClip, clip_from_arrays
        clip = source if isinstance(source, AVClip) else clip_from_arrays(*source)
        self.name = "arrays"
        self.first_frame = int(round(clip.start_sec * FPS))  # media frame of frames[0]
        self._chunk: tuple | None = (clip.frames, clip.audio)
        self.expected_windows = n_windows(len(clip.frames), len(clip.audio))

    def next_chunk(self) -> tuple[np.ndarray, np.ndarray] | None:
        chunk, self._chunk = self._chunk, None
        return chunk


class FileReader:
    """A media file decoded `chunk_sec` at a time (frames at 25 fps, mono 16 kHz)."""

    def __init__(self, path: str | Path, chunk_sec: float | None = None) -> None:
        from sync_sdk.media import probe
        self.name = str(path)
        self.first_frame = 0
        self.path = Path(path)
        self.info = probe(self.path)
        self._chunks = self._iter(chunk_sec or CHUNK_SEC)
        d = self.info.duration_sec
        self.expected_windows = n_windows(int(d * FPS), int(d * SAMPLE_RATE)) if d else None

    def _iter(self, chunk_sec: float):
        from sync_sdk.media import iter_chunks
        yield from iter_chunks(self.path, chunk_sec)

    def next_chunk(self) -> tuple[np.ndarray, np.ndarray] | None:
        return next(self._chunks, None)


def open_reader(source):
    return FileReader(source) if isinstance(source, (str, Path)) else ArrayReader(source)


def scan(engine, source, hop_sec: float = STEP_SEC, *, batch_windows: int = 8, cache: bool = True,
         progress: Callable[[int, int | None], None] | None = None) -> Timeline:
    """Timeline of `engine`'s predictions over `source` (path, arrays or AVClip); see SyncEngine.scan."""
    k = hop_segments(hop_sec)
    store = engine.cache if cache else engine.cache.uncached()
    name = str(source) if isinstance(source, (str, Path)) else None
    source_id = ("scan", next(_scan_ids), name)
    reader = open_reader(source)
    total = None if reader.expected_windows is None else -(-reader.expected_windows // k)
    shifts = engine.view_shift_samples()
    ahead, back = max(0, max(shifts)), max(0, -min(shifts))  # audio the shift views read past a crop
    frames = audio = None
    frame0 = sample0 = seen_f = seen_a = 0
    results: list[SyncResult] = []
    j = 0  # next window to predict
    ended = False
    while not ended:
        chunk = reader.next_chunk()
        ended = chunk is None
        if not ended:
            frames = chunk[0] if frames is None else np.concatenate([frames, chunk[0]])
            audio = chunk[1] if audio is None else np.concatenate([audio, chunk[1]])
            seen_f, seen_a = seen_f + len(chunk[0]), seen_a + len(chunk[1])
        # windows whose crop is decoded, with the audio of their later views unless the media has ended
        ready = list(range(j, n_windows(seen_f, seen_a if ended else seen_a - ahead), k))
        for b in range(0, len(ready), batch_windows):
            batch = ready[b:b + batch_windows]
            if cache:
                logits = engine.window_logits(store, source_id, frames, frame0, audio, sample0, batch)
            else:  # every window encodes its own segments, as separate predict() calls would
                logits = np.concatenate([engine.window_logits(store, source_id, frames, frame0, audio,
                                                              sample0, [w]) for w in batch])
            results += [SyncResult.from_logits(lg, start_sec=window_start_sec(w, reader.first_frame),
                                               source=name)
                        for lg, w in zip(logits, batch)]
            j = batch[-1] + k
            # keep only what later windows need: from the first segment of window j on, and the audio
            # of its earlier views (with a hop longer than a window that may lie beyond what is decoded)
            cut_f = min(segment_frame(j) - frame0, len(frames))
            cut_a = max(0, min(segment_sample(j) - back - sample0, len(audio)))
            frames, frame0 = frames[cut_f:], frame0 + cut_f
            audio, sample0 = audio[cut_a:], sample0 + cut_a
            if progress:
                progress(len(results), total)
    if not results:
        raise ClipTooShortError(f"{name or 'input'}: {seen_f} frames / {seen_a} samples; a window needs "
                                f"{WINDOW_FRAMES} frames (5 s at {FPS} fps) and {WINDOW_SAMPLES} samples "
                                f"({SAMPLE_RATE} Hz)")
    return Timeline(tuple(results), hop_sec=k * STEP_FRAMES / FPS, source=name)
