"""SyncStream: live synchronisation from frames and samples pushed as they arrive.

Times: the first pushed pts (video or audio) is the stream origin t0; frame i sits at t0 + i/25 s,
sample n at t0 + n/16000 s. Grid segment g = frames [2+8g, 18+8g) and samples [1280+5120g, ...) from
t0 (geometry.py). When segment g is complete in both streams its audio and visual features are
encoded once (a private SegmentCache ring); every window j = g-13 on the hop then re-runs only the
head over the cached features of segments j..j+13. Pushed media lives in one rolling MediaSpan. With shift views (views.py) each segment's audio is
also encoded shifted by each view (a segment waits for the audio of its latest view: 0.2 s for
synthetic-tiny), and each window combines its views; a view whose audio would start before t0 is left
out. With refine, each segment's audio is also encoded at the fine shifts (runtime/refine.py: a segment
then waits 0.32 s more audio) and each window's offset is the continuous one, as scan(refine=True)
gives it. Memory: the raw data of one partial segment per stream plus 2*14 segment features per shift.
"""
from __future__ import annotations

import itertools
import warnings

import numpy as np

from sync_sdk.errors import InputError, SyncSDKWarning
from sync_sdk.geometry import (
    FPS,
    SAMPLE_RATE,
    SEG_FRAMES,
    SEG_SAMPLES,
    STEP_SEC,
    hop_segments,
    offset_samples,
    segment_frame,
    segment_sample,
    window_start_sec,
)
from sync_sdk.inputs.window import SegmentFlags
from sync_sdk.media import SHORT_SIDE, clip_from_arrays
from sync_sdk.media.span import MediaSpan
from sync_sdk.results import SyncResult
from sync_sdk.runtime.cache import SegmentCache
from sync_sdk.runtime.encoder import SegmentEncoder
from sync_sdk.runtime.refine import scan_shifts, window_fits

_stream_ids = itertools.count()


class SyncStream:
    """Push decoded media, receive a SyncResult for every new window (every `hop_sec`).

    push_video(frames (n,H,W,3) uint8 RGB at 25 fps, pts seconds of frames[0] or None = contiguous);
    frames are resized like media.py (shortest side 256, even sizes) when they are not so already.
    push_audio(samples (n,) or (n,C) at 16 kHz, float in [-1, 1] or int16/int32 PCM;
    pts as above).
    Both return the new predictions (possibly none). Gaps in pts are filled (last frame repeated,
    silence) and overlaps dropped, with a SyncSDKWarning.
    """

    def __init__(self, encoder: SegmentEncoder, hop_sec: float = STEP_SEC, refine: bool = False) -> None:
        self.encoder = encoder
        self.hop = hop_segments(hop_sec)
        self.n_segments = encoder.config.n_segments
        self.refine = refine
        self.shifts = tuple(offset_samples(d) for d in scan_shifts(encoder)) if refine else encoder.view_shift_samples()
        self.cache = SegmentCache(capacity=2 * self.n_segments * len(self.shifts))
        self._id = ("stream", next(_stream_ids))
        self.t0: float | None = None
        self._span = MediaSpan.empty()  # frames and samples from the stream origin t0 on
        self._frame_shape: tuple[int, ...] | None = None
        self._next_seg = 0                       # first grid segment not yet encoded
        self._next_window = 0
        self._flags = SegmentFlags()
        self.latest: SyncResult | None = None

    # ------------------------------------------------------------------ input
    def push_video(self, frames: np.ndarray, pts: float | None = None) -> list[SyncResult]:
        """Append frames (n,H,W,3) or one frame (H,W,3), uint8 RGB, 25 fps; returns new predictions."""
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise InputError(f"push_video expects uint8 RGB frames (n, H, W, 3), got {frames.dtype} "
                             f"{frames.shape}")
        h, w = frames.shape[1:3]
        if min(h, w) != SHORT_SIDE or h % 2 or w % 2:  # the size rule of media.py
            frames = clip_from_arrays(frames, FPS, np.zeros(len(frames) * SAMPLE_RATE // FPS, np.float32),
                                      SAMPLE_RATE).frames
        if self._frame_shape is not None and frames.shape[1:] != self._frame_shape:
            raise InputError(f"frame size changed from {self._frame_shape[:2]} to {frames.shape[1:3]}")
        self._frame_shape = frames.shape[1:]
        end = self._span.end_frame
        start = self._place(pts, FPS, end, "video")
        if start > end:  # gap: repeat the last frame (or the first new one)
            fill = self._span.frames[-1:] if len(self._span.frames) else frames[:1]
            frames = np.concatenate([np.repeat(fill, start - end, axis=0), frames])
        elif start < end:
            frames = frames[end - start:]
        self._span.extend(frames=frames)
        return self._advance()

    def push_audio(self, samples: np.ndarray, pts: float | None = None) -> list[SyncResult]:
        """Append samples (n,) or (n, C) (channels averaged), float in [-1, 1], 16 kHz."""
        samples = np.asarray(samples)
        if samples.dtype.kind == "i":  # integer PCM -> [-1, 1]
            samples = samples / np.float32(np.iinfo(samples.dtype).max + 1)
        samples = samples.astype(np.float32, copy=False)
        if samples.ndim == 2:
            samples = samples.mean(axis=1)
        if samples.ndim != 1:
            raise InputError(f"push_audio expects samples (n,) or (n, channels), got shape {samples.shape}")
        end = self._span.end_sample
        start = self._place(pts, SAMPLE_RATE, end, "audio")
        if start > end:
            samples = np.concatenate([np.zeros(start - end, np.float32), samples])
        elif start < end:
            samples = samples[end - start:]
        self._span.extend(audio=samples)
        return self._advance()

    def _place(self, pts: float | None, rate: int, end: int, what: str) -> int:
        """Index (in units of 1/rate from t0) of the first pushed item; warns on gaps and overlaps."""
        if pts is None:
            if self.t0 is None:
                self.t0 = 0.0
            return end
        if self.t0 is None:
            self.t0 = float(pts)
        start = int(round((float(pts) - self.t0) * rate))
        if start != end and end > 0:
            kind = "gap" if start > end else "overlap"
            warnings.warn(f"{what} pts {pts:.4f} s: {kind} of {abs(start - end)} "
                          f"{'frames' if rate == FPS else 'samples'}; "
                          f"{'filled' if start > end else 'dropped'}", SyncSDKWarning, stacklevel=3)
        if start < 0:
            raise InputError(f"{what} pts {pts} s is before the stream origin {self.t0} s")
        return start

    # ------------------------------------------------------------------ work
    def _advance(self) -> list[SyncResult]:
        """Encode the segments completed in both streams (at most one window's worth at a time, so the
        ring holds every segment a window needs), then run the head for each new window on the hop."""
        results: list[SyncResult] = []
        while True:
            g_end = self._next_seg
            while (g_end - self._next_seg < self.n_segments
                   and segment_frame(g_end) + SEG_FRAMES <= self._span.end_frame
                   and segment_sample(g_end) + SEG_SAMPLES + max(self.shifts) <= self._span.end_sample):
                g_end += 1
            if g_end == self._next_seg:
                break
            self.encoder.encode_segments(self.cache, self._id, self._span, range(self._next_seg, g_end), self.shifts)
            self._flags.add(self._span, range(self._next_seg, g_end))
            windows = list(range(self._next_window, g_end - self.n_segments + 1, self.hop))
            if windows:  # every segment of these windows is in the ring: only the head runs
                bounds = (0, self._span.end_sample)
                logits = self.encoder.window_logits(self.cache, self._id, self._span, windows, bounds)
                views = self.encoder.window_views(windows, *bounds)
                new = [SyncResult.from_logits(lg, start_sec=self.t0 + window_start_sec(j),
                                              views=[(d, self.t0 + window_start_sec(j)) for d in vs],
                                              flags=self._flags.window(j, self.n_segments))
                       for lg, j, vs in zip(logits, windows, views)]
                if self.refine:
                    fits = window_fits(self.encoder, self.cache, self._id, self._span, windows,
                                       [r.class_offset_sec for r in new], bounds)
                    new = [r.with_fine(f) for r, f in zip(new, fits)]
                results += new
                self._next_window = windows[-1] + self.hop
                self._flags.drop_before(self._next_window)
            self._next_seg = g_end
            self._span.drop_before(segment_frame(g_end), segment_sample(g_end) + min(self.shifts))
        if results:
            self.latest = results[-1]
        return results

    def cache_stats(self) -> dict:
        """This stream's segment counters (audio/visual segments encoded, hits, misses, ...)."""
        return self.cache.stats()

    def __repr__(self) -> str:
        return (f"SyncStream(segments_encoded={self._next_seg}, windows={self._next_window}, "
                f"t0={self.t0})")
