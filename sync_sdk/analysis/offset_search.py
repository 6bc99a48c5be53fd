"""Offsets beyond the model's +-2 s: shift the audio in steps and combine the per-shift predictions.

A shift d (s) pairs the video window starting at frame v with the audio crop starting d seconds later
(sample 640 v + 16000 d). If the media's true offset is O (positive = audio leads), that pair looks
offset by O + d, so a shift predicting residual r (class k: r = -2 + 0.2 k) votes for O = r - d; it
covers the candidates O in [-d - 2, -d + 2]. Shifts are multiples of `step_sec` (a multiple of
0.2 s, so every shift's classes land on one 0.2-s grid of candidates) spanning +-max_offset_sec.

Combination (a likelihood over candidates): each shift that covers candidate O adds its evidence
for O against a uniform guess, log(21 q_k(O + d_k)), where q_k = 0.95 p_k + 0.05 / 21 (a shift that
is confidently wrong, e.g. a window without cues, costs a candidate at most log(1 / 0.05) = 3 nats);
shifts that cannot see O add nothing. Candidates supported by several consistent shifts win. The
posterior is the softmax of the summed evidence; estimate = its argmax, confidence = its probability.

Every shift uses the video window nearest the preferred one (start_sec, default the middle of the
media) on the 8-frame grid where both crops fit; features go through a SegmentCache keyed by frame
and sample, so visual segments are encoded once and, with the default 1.6-s step (= 5 audio
segment steps), audio segments are shared between shifts too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from sync_sdk.errors import ClipTooShortError, InputError
from sync_sdk.geometry import (
    FPS,
    MODEL_RANGE_SEC,
    N_SEGMENTS,
    OFFSET_STEP_SEC,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    STEP_FRAMES,
    WINDOW_FRAMES,
    WINDOW_SAMPLES,
    offset_samples,
    segment_frame,
    segment_sample,
)
from sync_sdk.media.source import content_id, read_span, source_name
from sync_sdk.results import SyncResult, softmax
from sync_sdk.runtime.cache import SegmentCache
from sync_sdk.runtime.encoder import SegmentEncoder
from sync_sdk.runtime.views import combine


@dataclass
class ShiftPrediction:
    """One shift: audio crop `shift_sec` after the video crop at `video_start_sec`; the model's
    prediction of the residual offset; the absolute offsets it covers: [lo_sec, hi_sec]."""

    shift_sec: float
    video_start_sec: float
    result: SyncResult

    @property
    def lo_sec(self) -> float:
        return -self.shift_sec - MODEL_RANGE_SEC

    @property
    def hi_sec(self) -> float:
        return -self.shift_sec + MODEL_RANGE_SEC

    @property
    def offset_sec(self) -> float:
        """This shift's own estimate of the absolute offset: residual - shift."""
        return round(self.result.offset_sec - self.shift_sec, 1)


@dataclass
class OffsetSearchResult:
    """offset_sec: estimate (s, positive = audio leads video); confidence: its posterior probability;
    offsets (M,) candidate offsets on the 0.2-s grid and probs (M,) their posterior; support: shifts
    covering the estimate; shifts: every ShiftPrediction; encoded: segments encoded per stream."""

    offset_sec: float
    confidence: float
    offsets: np.ndarray
    probs: np.ndarray
    support: int
    shifts: list[ShiftPrediction]
    source: str | None = None
    encoded: dict = field(default_factory=dict)

    @property
    def within_model_range(self) -> bool:
        return abs(self.offset_sec) <= MODEL_RANGE_SEC + 1e-9

    def topk(self, k: int = 5) -> list[tuple[float, float]]:
        order = np.argsort(-self.probs, kind="stable")[:k]
        return [(round(float(self.offsets[i]), 1), float(self.probs[i])) for i in order]

    def to_dict(self) -> dict:
        return {"source": self.source, "offset_sec": self.offset_sec, "confidence": self.confidence,
                "support": self.support, "topk": [{"offset_sec": o, "prob": p} for o, p in self.topk()],
                "encoded": dict(self.encoded),
                "shifts": [{"shift_sec": s.shift_sec, "video_start_sec": s.video_start_sec,
                            "residual_sec": s.result.offset_sec, "confidence": s.result.confidence,
                            "offset_sec": s.offset_sec} for s in self.shifts]}

    def __repr__(self) -> str:
        return (f"OffsetSearchResult(offset_sec={self.offset_sec:+.1f}, confidence={self.confidence:.3f}, "
                f"support={self.support}, shifts={len(self.shifts)})")


def shift_grid(max_offset_sec: float, step_sec: float) -> list[float]:
    """Shifts (s), multiples of step_sec, whose +-2-s ranges together cover [-max, +max]."""
    k = math.ceil(max(0.0, max_offset_sec - MODEL_RANGE_SEC) / step_sec - 1e-9)
    return [round(i * step_sec, 6) for i in range(-k, k + 1)]


def _video_start(preferred: int, d_samples: int, n_frames: int, n_samples: int) -> int | None:
    """Frame of the video window nearest `preferred` (on its 8-frame grid if possible) where the
    video crop and the audio crop shifted by d_samples both fit; None if none does."""
    lo = max(0, -(d_samples // SAMPLES_PER_FRAME))  # ceil(-d / 640): the audio crop starts at >= 0
    hi = min(n_frames - WINDOW_FRAMES, (n_samples - WINDOW_SAMPLES - d_samples) // SAMPLES_PER_FRAME)
    if lo > hi:
        return None
    on_grid = [v for v in (preferred + STEP_FRAMES * math.floor((lo - preferred) / STEP_FRAMES) + STEP_FRAMES * i
                           for i in range(3 + (hi - lo) // STEP_FRAMES)) if lo <= v <= hi]
    candidates = on_grid or [min(max(preferred, lo), hi)]
    return min(candidates, key=lambda v: (abs(v - preferred), v))


def search_offset(encoder: SegmentEncoder, source, max_offset_sec: float = 6.0, step_sec: float = 1.6, *,
                  start_sec: float | None = None, cache: SegmentCache | None = None,
                  head_batch: int = 16) -> OffsetSearchResult:
    """Estimate an offset up to +-max_offset_sec (s) between the audio and the video of `source`.

    source: path | AVClip | MediaSpan | (frames, fps, audio, sample_rate). step_sec: shift step, a
    multiple of 0.2 s and at most 4 s (1.6 s: each candidate seen by 2-3 shifts, audio features
    shared). start_sec: preferred video window start (default: the middle of the media). cache:
    features cache (default: a private one for this call). Each shift also gets the encoder's shift
    views (views.py)."""
    steps = step_sec / OFFSET_STEP_SEC
    if not (0 < step_sec <= 2 * MODEL_RANGE_SEC and abs(steps - round(steps)) < 1e-6):
        raise InputError(f"step_sec must be a multiple of {OFFSET_STEP_SEC} s in (0, 4], got {step_sec}")
    if max_offset_sec <= 0:
        raise InputError(f"max_offset_sec must be positive, got {max_offset_sec}")
    encoder.require("sync", "offset search", N_SEGMENTS)
    span = read_span(source)
    frames, audio = span.frames, span.audio
    if len(frames) < WINDOW_FRAMES or len(audio) < WINDOW_SAMPLES:
        raise ClipTooShortError(f"offset search needs 5 s of video and audio; got {len(frames) / FPS:.2f} s "
                                f"of video and {len(audio) / SAMPLE_RATE:.2f} s of audio")
    preferred = (len(frames) - WINDOW_FRAMES) // 2 if start_sec is None else int(round(start_sec * FPS))
    plan = []
    for d in sorted({round(g + v, 6) for g in shift_grid(max_offset_sec, step_sec) for v in encoder.shift_views}):
        d_samples = offset_samples(d)
        v = _video_start(preferred, d_samples, len(frames), len(audio))
        if v is not None:
            plan.append((d, v, SAMPLES_PER_FRAME * v + d_samples))
    if not plan:
        raise ClipTooShortError(f"no shift within +-{max_offset_sec} s fits a 5-s window in this media")

    cache = cache if cache is not None else SegmentCache(8 * N_SEGMENTS * len(plan))
    before = cache.stats()
    sid = ("offset_search", content_id(frames, audio))
    vstarts = [v + segment_frame(s) for _, v, _ in plan for s in range(N_SEGMENTS)]
    astarts = [a + segment_sample(s) for _, _, a in plan for s in range(N_SEGMENTS)]
    vfeat = encoder.fetch(cache, "video", [sid + ("video", s) for s in vstarts],
                          lambda ps: encoder.features.video_segments(frames, [vstarts[p] for p in ps]))
    afeat = encoder.fetch(cache, "audio", [sid + ("audio", s) for s in astarts],
                          lambda ps: encoder.features.log_mel_segments(audio, [astarts[p] for p in ps]))
    n = len(plan)
    logits = encoder.head(vfeat.reshape(n, N_SEGMENTS, *vfeat.shape[1:]),
                          afeat.reshape(n, N_SEGMENTS, *afeat.shape[1:]), batch=head_batch)
    name = source_name(source)
    start = span.first_frame / FPS
    preds = [ShiftPrediction(d, start + v / FPS, SyncResult.from_logits(lg, start + v / FPS, name))
             for (d, v, _), lg in zip(plan, logits)]
    shifts = np.array([d for d, _, _ in plan])
    offsets, post, count = combine(shifts, softmax(logits), max_offset_sec)
    best = int(np.argmax(post))
    after = cache.stats()
    return OffsetSearchResult(
        offset_sec=round(float(offsets[best]), 1), confidence=float(post[best]), offsets=offsets, probs=post,
        support=int(count[best]), shifts=preds, source=name,
        encoded={"audio": after["audio_segments_encoded"] - before["audio_segments_encoded"],
                 "video": after["visual_segments_encoded"] - before["visual_segments_encoded"]})
