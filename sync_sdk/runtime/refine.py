"""Offsets finer than the 0.2-s classes: a window re-scored with its audio shifted in steps of frames.

A view whose audio is shifted by d seconds sees a clip whose audio leads by O as offset O + d
(runtime/views.py). Fine views shift the audio by every multiple of FINE_STEP_SEC (two frames, 1280
samples) within +-FINE_SPAN_SEC: modulo a class (0.2 s) these fall on every phase 40 ms apart, so together
they sample the model's answer between two classes. A candidate continuous offset x gets, from each view covering
x + d (|x + d| <= 2 s), the evidence log(21 q(x + d)): q the view's probabilities mixed with ROBUST
uniform (as `combine`), its log interpolated linearly between class centres; x's evidence is the mean
over those views. The refined offset is the best candidate on a GRID_SEC grid within SEARCH_SEC of the
class answer, moved to the vertex of the parabola through it and its neighbours VERTEX_SEC away (the
evidence is piecewise linear with kinks 40 ms apart); the interval spans the candidates whose evidence
is within LEVEL of the best. The parameters were chosen on selection seeds, the figures measured on
others (benchmarks/fine_offset.py). A shift 0.32 s from another reads the same audio one grid segment
later, so a scan shares those segments' features.

Fine views keep the video crop and move only the audio; a shift whose 14 audio segments do not lie in
the media is left out (predict and scan alike), the shift views are reused as they are. The class answer
is unchanged: it still combines the shift views alone.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from sync_sdk.geometry import (
    MODEL_RANGE_SEC,
    N_SEGMENTS,
    NUM_OFFSET_CLASSES,
    OFFSET_GRID_SEC,
    SEG_SAMPLES,
    STEP_SAMPLES,
    class_to_offset,
    official_window,
    offset_samples,
    segment_sample,
)
from sync_sdk.inputs.cpu import log_mel
from sync_sdk.inputs.views import View, view_inputs, view_placements
from sync_sdk.inputs.window import decode_span
from sync_sdk.media.source import is_path, normalise_source
from sync_sdk.media.span import MediaSpan
from sync_sdk.results import softmax
from sync_sdk.runtime.arrays import array_module
from sync_sdk.runtime.cache import SegmentCache
from sync_sdk.runtime.encoder import SegmentEncoder
from sync_sdk.runtime.views import ROBUST, combine_views

FINE_STEP_SEC = 0.08  # two frames: 1280 samples
FINE_SPAN_SEC = 0.32  # fine views at -0.32, -0.24, ..., +0.32 s: one grid step either way
SEARCH_SEC = 0.1  # candidates within half a class of the class answer
GRID_SEC = 0.005  # candidate spacing
LEVEL = 0.6  # interval: candidates whose mean evidence is within LEVEL of the best (about 90 %)
VERTEX = True  # move the best candidate to the vertex of the parabola through it and its neighbours
VERTEX_SEC = 0.04  # ... VERTEX_SEC away: one frame, the spacing of the evidence's kinks
FINE_SHIFTS = tuple(round(k * FINE_STEP_SEC, 6) for k in range(-round(FINE_SPAN_SEC / FINE_STEP_SEC),
                                                                round(FINE_SPAN_SEC / FINE_STEP_SEC) + 1))
_CLASSES = OFFSET_GRID_SEC.astype(np.float64)
_WINDOW_AUDIO = (N_SEGMENTS - 1) * STEP_SAMPLES + SEG_SAMPLES  # samples the 14 segments span


# ---------------------------------------------------------------- the fit
def evidence(shifts: Sequence[float], probs: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(M,) mean evidence of candidate offsets (M,) s from K views: shifts (K,) s, probs (K, 21);
    -inf where no view covers a candidate."""
    q = (1 - ROBUST) * np.asarray(probs, np.float64) + ROBUST / NUM_OFFSET_CLASSES
    ev = np.log(NUM_OFFSET_CLASSES * q)
    y = np.asarray(offsets, np.float64)[None, :] + np.asarray(shifts, np.float64)[:, None]  # (K, M)
    cover = np.abs(y) <= MODEL_RANGE_SEC + 1e-9
    total = sum(np.where(c, np.interp(yk, _CLASSES, e), 0.0) for yk, c, e in zip(y, cover, ev))
    count = cover.sum(axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), -np.inf)


def fit(shifts: Sequence[float], probs: np.ndarray, center_sec: float, *, search_sec: float = SEARCH_SEC,
        level: float = LEVEL, vertex: bool = VERTEX) -> tuple[float, float, float]:
    """(offset_sec, low_sec, high_sec): the candidate with the most `evidence` within search_sec of
    center_sec (the class answer, s), moved to the vertex of the parabola through its evidence and that
    of the candidates VERTEX_SEC on either side when `vertex`; the interval spans the candidates within
    `level` of the best (and the offset)."""
    n = int(round(search_sec / GRID_SEC))
    x = np.round(center_sec + GRID_SEC * np.arange(-n, n + 1), 6)
    x = x[np.abs(x) <= MODEL_RANGE_SEC + 1e-9]
    ev = evidence(shifts, probs, x)
    best = int(np.argmax(ev))
    est = float(x[best])
    if vertex:
        y0, y2 = evidence(shifts, probs, np.array([est - VERTEX_SEC, est + VERTEX_SEC]))
        y1 = ev[best]
        if np.isfinite(y0 + y2) and y0 - 2 * y1 + y2 < 0:
            est = float(np.clip(est + 0.5 * VERTEX_SEC * (y0 - y2) / (y0 - 2 * y1 + y2),
                                -MODEL_RANGE_SEC, MODEL_RANGE_SEC))
    est, near = round(est, 6), x[ev >= ev[best] - level]
    return est, min(float(near.min()), est), max(float(near.max()), est)


# ---------------------------------------------------------------- predict
def clip_views(source, start_sec: float, offset_sec: float, shift_views: Sequence[float],
               fine: Sequence[float] = FINE_SHIFTS) -> tuple[list[View], list[View]]:
    """(the shift views as `view_inputs` makes them, the fine views) of the window at start_sec (s) with
    the audio shifted by offset_sec (s). Fine views (shifts in `fine` not among the shift views) share
    the unshifted view's video crop; those whose audio segments lie outside the media are left out."""
    source = normalise_source(source)
    if is_path(source):  # one decode for every view: the placements view_inputs tries, and the fine ones
        _, tries = view_placements(start_sec, offset_sec, shift_views)
        source = decode_span(source, [(off, start) for placements in tries for start, off in placements]
                             + [(round(offset_sec + d, 6), start_sec) for d in fine])
    views = view_inputs(source, start_sec, offset_sec, shift_views)
    span: MediaSpan = source
    _, a0 = official_window(offset_sec, start_sec)
    have = {v.shift_sec for v in views}
    out = []
    for d in fine:
        first = a0 + segment_sample(0, offset_samples(d)) - span.first_sample
        if d in have or first < 0 or first + _WINDOW_AUDIO > len(span.audio):
            continue
        starts = first + STEP_SAMPLES * np.arange(N_SEGMENTS)
        aud = log_mel(span.audio[starts[:, None] + np.arange(SEG_SAMPLES)])
        out.append(View(d, views[0].start_sec, views[0].vid, aud))
    return views, out


def refined_logits(encoder: SegmentEncoder, items: Sequence[tuple[list[View], list[View]]]
                   ) -> list[tuple[np.ndarray, tuple[float, float, float]]]:
    """Per (shift views, fine views) item: the class answer's logits (21,), combined from the shift
    views as `views_logits` does, and the fit (offset_sec, low_sec, high_sec) over all its views."""
    logits = encoder.view_logits([views + fine for views, fine in items])
    out = []
    for (views, fine), lg in zip(items, logits):
        answer = combine_views(encoder.config.variant, [v.shift_sec for v in views], lg[:len(views)])
        center = class_to_offset(int(np.argmax(softmax(answer))))  # the class SyncResult answers
        out.append((answer, fit([v.shift_sec for v in views + fine], softmax(lg), center)))
    return out


# ---------------------------------------------------------------- scan
def scan_shifts(encoder: SegmentEncoder) -> tuple[float, ...]:
    """The shifts (s) a refined scan window is scored at: the fine shifts and the shift views."""
    return tuple(sorted(set(FINE_SHIFTS) | set(encoder.shift_views)))


def window_fits(encoder: SegmentEncoder, cache: SegmentCache, source_id, span: MediaSpan, windows: Sequence[int],
                centers: Sequence[float], audio_bounds: tuple[int, int] | None = None
                ) -> list[tuple[float, float, float]]:
    """The fit (offset_sec, low_sec, high_sec) of each grid window j of `span` around its class answer
    centers[i] (s), from its views at every `scan_shifts` shift whose audio lies in media samples
    audio_bounds = [lo, hi) (default: the samples `span` holds; features through `cache`: a shifted
    segment is encoded once for all the windows that read it, and one no longer in `span` must be there)."""
    seen: list[list[tuple[float, np.ndarray]]] = [[] for _ in windows]
    for d, fit_, logits in encoder.window_shift_logits(cache, source_id, span, windows, scan_shifts(encoder),
                                                       audio_bounds):
        for i, lg in zip(fit_, logits):
            seen[i].append((d, lg))
    return [fit([d for d, _ in s], softmax(np.stack([lg for _, lg in s])), c) for s, c in zip(seen, centers)]


# ---------------------------------------------------------------- DeSync windows
def pair_fits(encoder: SegmentEncoder, vfeat, wave: np.ndarray, starts: Sequence[int], centers: Sequence[float],
              head_batch: int | None = None) -> list[tuple[float, float, float]]:
    """The fit of each of W windows around its class answer centers[w] (s): vfeat (W, S, 8, Dv) their
    video features, their audio segments at samples starts[w] + 5120 s of wave (N,) 16 kHz; views at
    every fine shift (0 among them) whose segments lie in wave (analysis/desync.py)."""
    n = encoder.config.n_segments
    firsts, shifts, owner = [], [], []
    for w, a in enumerate(starts):
        for d in FINE_SHIFTS:
            first = a + offset_samples(d)
            if 0 <= first and first + (n - 1) * STEP_SAMPLES + SEG_SAMPLES <= len(wave):
                firsts.append(first + STEP_SAMPLES * np.arange(n))
                shifts.append(d)
                owner.append(w)
    idx = np.concatenate(firsts)
    afeat = encoder.encode("audio", len(idx), lambda ids: log_mel(wave[idx[ids.start:ids.stop, None]
                                                                       + np.arange(SEG_SAMPLES)]))
    logits = encoder.head(vfeat[array_module(vfeat).asarray(owner)], afeat.reshape(len(owner), n, *afeat.shape[1:]),
                          batch=head_batch)
    shifts, owner = np.asarray(shifts), np.asarray(owner)
    return [fit(shifts[owner == w], softmax(logits[owner == w]), c) for w, c in enumerate(centers)]
