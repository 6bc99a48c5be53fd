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

from sync_sdk.runtime.cache import SegmentCache
from sync_sdk.media.source import as_clip, content_id, source_name
from sync_sdk.geometry import AUDIO_TOKENS_PER_SEGMENT, VIDEO_TOKENS_PER_SEGMENT
from sync_sdk.errors import ClipTooShortError, InputError
from sync_sdk.geometry import OFFSET_GRID_SEC, OFFSET_STEP_SEC
from sync_sdk.results import SyncResult, softmax
from sync_sdk.geometry import (FIRST_FRAME, FIRST_SAMPLE, FPS, N_SEGMENTS, SAMPLE_RATE, SAMPLES_PER_FRAME, SEG_FRAMES,
                       SEG_SAMPLES, STEP_FRAMES, STEP_SAMPLES, WINDOW_FRAMES, WINDOW_SAMPLES)

MODEL_RANGE_SEC = 2.0
ROBUST = 0.05  # weight of the uniform distribution mixed into each shift's probabilities
_HALF = (len(OFFSET_GRID_SEC) - 1) // 2  # class of residual 0


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


def combine(shifts: np.ndarray, probs: np.ndarray, max_offset_sec: float | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offsets (M,), posterior (M,), coverage (M,)) from per-shift (K,) shifts and (K, 21) probabilities.

    Candidate O's evidence = sum over the shifts k covering it of log(21 q_k(class of O + d_k)),
    q = (1 - ROBUST) p + ROBUST / 21; posterior = softmax of the evidence over the covered candidates
    (|O| <= max_offset_sec when given); coverage = number of shifts covering each candidate."""
    steps = np.rint(np.asarray(shifts, np.float64) / OFFSET_STEP_SEC).astype(int)
    if not np.allclose(steps * OFFSET_STEP_SEC, shifts, atol=1e-6):
        raise InputError(f"shifts must be multiples of {OFFSET_STEP_SEC} s, got {list(shifts)}")
    n_cls = len(OFFSET_GRID_SEC)
    q = (1 - ROBUST) * np.asarray(probs, np.float64) + ROBUST / n_cls
    evidence = np.log(n_cls * q)
    lo, hi = int((-steps).min()) - _HALF, int((-steps).max()) + _HALF
    total = np.zeros(hi - lo + 1)
    count = np.zeros(hi - lo + 1, int)
    for d, ev in zip(steps, evidence):
        first = -d - _HALF - lo  # candidate index of this shift's class 0
        total[first:first + n_cls] += ev
        count[first:first + n_cls] += 1
    offsets = (np.arange(lo, hi + 1) * OFFSET_STEP_SEC).round(6)
    keep = count > 0
    if max_offset_sec is not None:
        keep &= np.abs(offsets) <= max_offset_sec + 1e-9
    post = np.exp(total[keep] - total[keep].max())
    return offsets[keep], post / post.sum(), count[keep]


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


def search_offset(engine, source, max_offset_sec: float = 6.0, step_sec: float = 1.6, *,
                  start_sec: float | None = None, cache: SegmentCache | None = None,
                  head_batch: int = 16) -> OffsetSearchResult:
    """Estimate an offset up to +-max_offset_sec (s) between the audio and the video of `source`.

    source: path | AVClip | (frames, fps, audio, sample_rate). step_sec: shift step, a multiple of
    0.2 s and at most 4 s (1.6 s: each candidate seen by 2-3 shifts, audio features shared).
    start_sec: preferred video window start (default: the middle of the media). cache: features
    cache (default: a private one for this call)."""
    steps = step_sec / OFFSET_STEP_SEC
    if not (0 < step_sec <= 2 * MODEL_RANGE_SEC and abs(steps - round(steps)) < 1e-6):
        raise InputError(f"step_sec must be a multiple of {OFFSET_STEP_SEC} s in (0, 4], got {step_sec}")
    if max_offset_sec <= 0:
        raise InputError(f"max_offset_sec must be positive, got {max_offset_sec}")
    cfg = engine.config
    if cfg.variant != "sync" or cfg.n_segments != N_SEGMENTS:
        raise InputError(f"offset search needs a 14-segment offset (sync) model, got {cfg.variant!r} "
                         f"with {cfg.n_segments} segments")
    clip = as_clip(source)
    frames, audio = clip.frames, clip.audio
    if len(frames) < WINDOW_FRAMES or len(audio) < WINDOW_SAMPLES:
        raise ClipTooShortError(f"offset search needs 5 s of video and audio; got {len(frames) / FPS:.2f} s "
                                f"of video and {len(audio) / SAMPLE_RATE:.2f} s of audio")
    preferred = (len(frames) - WINDOW_FRAMES) // 2 if start_sec is None else int(round(start_sec * FPS))
    plan = []
    views = getattr(engine, "shift_views", (0.0,))  # each shift with the model's shift views (views.py)
    for d in sorted({round(g + v, 6) for g in shift_grid(max_offset_sec, step_sec) for v in views}):
        d_samples = int(round(d * SAMPLE_RATE))
        v = _video_start(preferred, d_samples, len(frames), len(audio))
        if v is not None:
            plan.append((d, v, SAMPLES_PER_FRAME * v + d_samples))
    if not plan:
        raise ClipTooShortError(f"no shift within +-{max_offset_sec} s fits a 5-s window in this media")

    cache = cache if cache is not None else SegmentCache(8 * N_SEGMENTS * len(plan))
    before = cache.stats()
    sid = ("offset_search", content_id(frames, audio))
    vstarts = [v + FIRST_FRAME + STEP_FRAMES * s for _, v, _ in plan for s in range(N_SEGMENTS)]
    astarts = [a + FIRST_SAMPLE + STEP_SAMPLES * s for _, _, a in plan for s in range(N_SEGMENTS)]
    vfeat = _fetch(engine, cache, sid, "video", vstarts, frames, audio)
    afeat = _fetch(engine, cache, sid, "audio", astarts, frames, audio)
    logits = []
    for i in range(0, len(plan), head_batch):
        n = len(plan[i:i + head_batch])
        v = vfeat[i * N_SEGMENTS:(i + n) * N_SEGMENTS]
        a = afeat[i * N_SEGMENTS:(i + n) * N_SEGMENTS]
        logits.append(_numpy(engine.backend.head(
            v.reshape(n, N_SEGMENTS * VIDEO_TOKENS_PER_SEGMENT, v.shape[-1]),
            a.reshape(n, N_SEGMENTS * AUDIO_TOKENS_PER_SEGMENT, a.shape[-1]))))
    logits = np.concatenate(logits)
    name = source_name(source)
    preds = [ShiftPrediction(d, clip.start_sec + v / FPS, SyncResult.from_logits(lg, clip.start_sec + v / FPS, name))
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


def _numpy(x) -> np.ndarray:
    return x.get() if type(x).__module__.split(".")[0] == "cupy" else np.asarray(x)


def _fetch(engine, cache: SegmentCache, sid, kind: str, starts: list[int], frames, audio) -> np.ndarray:
    """(len(starts), tokens, dim) features of the segments starting at these frames / samples."""
    from sync_sdk.inputs.cpu import log_mel, video_input
    be = engine.backend
    batch = int(getattr(engine, "max_batch", N_SEGMENTS))
    if kind == "video":
        fn, make = be.encode_video, lambda ids: video_input(np.stack([frames[starts[i]:starts[i] + SEG_FRAMES] for i in ids]))
    else:
        fn, make = be.encode_audio, lambda ids: log_mel(np.stack([audio[starts[i]:starts[i] + SEG_SAMPLES] for i in ids]))

    def encode(positions):
        return np.concatenate([_numpy(fn(make(positions[i:i + batch]))) for i in range(0, len(positions), batch)])
    return _numpy(cache.fetch(kind, [sid + (kind, s) for s in starts], encode))
