"""Evidence attribution: which parts of a window the offset prediction rests on, by random corruption.

For one 5-s window (14 segments), trials corrupt random parts of the input and record how the
offset distribution moves away from the unperturbed one; each part's score is the mean effect of the
trials that corrupted it minus the mean effect of those that did not (method "mean_diff"), or its
least-squares coefficient (method "regression"). Effect ("measure"): "prob_drop" = p0[k0] - p[k0]
(k0 = the unperturbed prediction) or "kl" = KL(p0 || p). Families of parts:

- "audio":    each audio segment (its log-mel replaced by the window's mean spectrum, flat in time);
- "video":    each visual segment (its 16 frames replaced by the window's mean image, motionless);
- "spectral": (mel band, audio segment) cells (the band's bins replaced by the mean spectrum);
- "patch":    cells of a grid over the 224x224 crop, corrupted (mean image) in the few visual segments
              that scored highest in the "video" family (all 14 when it did not run).

Corruptions are deterministic, so features go through a SegmentCache keyed by (window, stream,
segment, corruption): the 14 + 14 clean segments are encoded once, a segment-level corruption once
per segment whatever the number of trials, and a trial re-encodes only the segments it changes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from sync_sdk.analysis.plots_attribution import plot_attribution
from sync_sdk.errors import ClipTooShortError, InputError
from sync_sdk.geometry import (
    CROP_SIZE,
    FIRST_FRAME,
    FPS,
    N_SEGMENTS,
    SEG_FRAMES,
    SEG_SAMPLES,
    STEP_FRAMES,
    WINDOW_FRAMES,
    WINDOW_SAMPLES,
    crop_offsets,
    segment_frame,
    segment_sample,
)
from sync_sdk.inputs.cpu import log_mel, video_input
from sync_sdk.media.source import content_id, read_span, source_name
from sync_sdk.results import SyncResult, softmax
from sync_sdk.runtime.cache import SegmentCache
from sync_sdk.runtime.encoder import SegmentEncoder

FAMILIES = ("audio", "video", "spectral", "patch")
MEASURES = ("prob_drop", "kl")
METHODS = ("mean_diff", "regression")
SPEC_FRAMES = 65  # real log-mel frames; the 66th is padding and is never corrupted


@dataclass
class Attribution:
    """Scores (higher = the prediction leans more on that part) of one window.

    audio, video: (14,) per segment; spectral: (n_bands, 14) per (mel band low->high, audio segment);
    spatial: (rows, cols) per cell of the 224x224 crop (corrupted in `spatial_segments`);
    segment_times: (14,) media time (s) of each segment's centre; base: the unperturbed prediction;
    frames: uint8 (k, 224, 224, 3) centre frames of `spatial_segments`; band_edges: mel-bin edges;
    encoded: segments encoded during the call per stream. A family that did not run is None.
    """

    audio: np.ndarray | None
    video: np.ndarray | None
    spectral: np.ndarray | None
    spatial: np.ndarray | None
    segment_times: np.ndarray
    base: SyncResult
    measure: str
    method: str
    trials: dict
    corrupt_prob: float
    spatial_segments: list[int] = field(default_factory=list)
    frames: np.ndarray | None = None
    band_edges: list[int] = field(default_factory=list)
    encoded: dict = field(default_factory=dict)
    png: Path | None = None

    def top_segments(self, stream: str, k: int = 3) -> list[int]:
        """Indices of the k highest-scoring segments of "audio" or "video", best first."""
        scores = {"audio": self.audio, "video": self.video}[stream]
        if scores is None:
            raise InputError(f"the {stream!r} family was not run")
        return [int(i) for i in np.argsort(-scores, kind="stable")[:k]]

    def plot(self, path: str | Path, events_sec=None, title: str | None = None) -> Path:
        """PNG: both streams' scores over time, the spectral map, the spatial map over a few frames."""
        return plot_attribution(self, path, events_sec=events_sec, title=title)

    def to_dict(self) -> dict:
        def arr(x):
            return None if x is None else np.asarray(x).tolist()
        return {"audio": arr(self.audio), "video": arr(self.video), "spectral": arr(self.spectral),
                "spatial": arr(self.spatial), "segment_times": arr(self.segment_times),
                "base": self.base.to_dict(), "measure": self.measure, "method": self.method,
                "trials": dict(self.trials), "corrupt_prob": self.corrupt_prob,
                "spatial_segments": list(self.spatial_segments), "band_edges": list(self.band_edges),
                "encoded": dict(self.encoded), "png": None if self.png is None else str(self.png)}


class _Window:
    """One window's clean inputs, its corruptions, and their features through a cache."""

    def __init__(self, encoder: SegmentEncoder, clip, cache: SegmentCache, grid: tuple[int, int],
                 n_bands: int) -> None:
        if len(clip.frames) < WINDOW_FRAMES or len(clip.audio) < WINDOW_SAMPLES:
            raise ClipTooShortError(f"attribution needs a 5-s window; got {len(clip.frames)} frames and "
                                    f"{len(clip.audio)} samples")
        top, left = crop_offsets(*clip.frames.shape[1:3])
        self.crops = np.ascontiguousarray(clip.frames[:WINDOW_FRAMES, top:top + CROP_SIZE, left:left + CROP_SIZE])
        audio = clip.audio[:WINDOW_SAMPLES]
        self.mel = log_mel(np.stack([audio[segment_sample(s):][:SEG_SAMPLES] for s in range(N_SEGMENTS)]))
        self.mean_img = np.rint(self.crops.mean(axis=0)).astype(np.uint8)
        self.mean_spec = self.mel[:, 0, :, :SPEC_FRAMES].mean(axis=(0, 2))  # (128,)
        self.encoder, self.cache = encoder, cache
        self.rows = np.linspace(0, CROP_SIZE, grid[0] + 1).round().astype(int)
        self.cols = np.linspace(0, CROP_SIZE, grid[1] + 1).round().astype(int)
        self.bands = np.linspace(0, self.mel.shape[2], n_bands + 1).round().astype(int)
        self.sid = ("attribution", content_id(self.crops, audio))

    def frames(self, s: int) -> np.ndarray:
        return self.crops[segment_frame(s):][:SEG_FRAMES]

    def video_input(self, s: int, tag) -> np.ndarray:
        """(16, 3, 224, 224) float32 of visual segment s under corruption `tag`."""
        if tag is None:
            frames = self.frames(s)
        elif tag == "seg":
            frames = np.broadcast_to(self.mean_img, (SEG_FRAMES,) + self.mean_img.shape)
        else:  # ("patch", mask bytes)
            mask = np.frombuffer(tag[1], bool).reshape(len(self.rows) - 1, len(self.cols) - 1)
            frames = self.frames(s).copy()
            for r, c in zip(*np.nonzero(mask)):
                sl = (slice(self.rows[r], self.rows[r + 1]), slice(self.cols[c], self.cols[c + 1]))
                frames[:, sl[0], sl[1]] = self.mean_img[sl]
        return video_input(np.ascontiguousarray(frames))

    def audio_input(self, s: int, tag) -> np.ndarray:
        """(1, 128, 66) float32 log-mel of audio segment s under corruption `tag`."""
        mel = self.mel[s].copy()
        if tag == "seg":
            mel[0, :, :SPEC_FRAMES] = self.mean_spec[:, None]
        elif tag is not None:  # ("tf", band mask bytes)
            for b in np.nonzero(np.frombuffer(tag[1], bool))[0]:
                lo, hi = self.bands[b], self.bands[b + 1]
                mel[0, lo:hi, :SPEC_FRAMES] = self.mean_spec[lo:hi, None]
        return mel

    def _fetch(self, kind: str, specs: list[tuple[int, object]]):
        make = self.video_input if kind == "video" else self.audio_input
        return self.encoder.fetch(self.cache, kind, [self.sid + (kind, s, tag) for s, tag in specs],
                                  lambda positions: np.stack([make(*specs[p]) for p in positions]))

    def logits(self, vtags: list[list], atags: list[list]) -> np.ndarray:
        """(B, 21) offset logits for B trials, each given by per-segment video and audio tags."""
        b = len(vtags)
        v = self._fetch("video", [(s, t) for tags in vtags for s, t in enumerate(tags)])
        a = self._fetch("audio", [(s, t) for tags in atags for s, t in enumerate(tags)])
        return self.encoder.head(v.reshape(b, N_SEGMENTS, *v.shape[1:]), a.reshape(b, N_SEGMENTS, *a.shape[1:]))


def effect(p0: np.ndarray, p: np.ndarray, measure: str) -> np.ndarray:
    """(B,) change of each trial's (B, 21) distribution from the unperturbed p0 (21,)."""
    if measure == "prob_drop":
        k0 = int(np.argmax(p0))
        return (p0[k0] - p[:, k0]).astype(np.float64)
    if measure == "kl":
        q0 = np.clip(p0.astype(np.float64), 1e-12, None)
        q = np.clip(p.astype(np.float64), 1e-12, None)
        return (q0 * (np.log(q0) - np.log(q))).sum(axis=-1)
    raise InputError(f"measure must be one of {MEASURES}, got {measure!r}")


def unit_scores(masks: np.ndarray, effects: np.ndarray, method: str = "mean_diff") -> np.ndarray:
    """(U,) score per unit from boolean masks (n_trials, U) (True = corrupted) and effects (n_trials,).

    mean_diff: mean effect with the unit corrupted - mean effect without (0 when either set is empty);
    regression: ridge least squares effect ~ intercept + masks (lambda = 1e-3 * n_trials)."""
    m = np.asarray(masks, bool)
    y = np.asarray(effects, np.float64)
    if method == "mean_diff":
        on = m.sum(axis=0)
        off = len(m) - on
        s_on = (m * y[:, None]).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            diff = s_on / on - (y.sum() - s_on) / off
        return np.where((on > 0) & (off > 0), diff, 0.0)
    if method == "regression":
        x = m.astype(np.float64)
        xc, yc = x - x.mean(axis=0), y - y.mean()
        lam = 1e-3 * len(y)
        return np.linalg.solve(xc.T @ xc + lam * np.eye(x.shape[1]), xc.T @ yc)
    raise InputError(f"method must be one of {METHODS}, got {method!r}")


def _masks(rng: np.random.Generator, n: int, units: int, p: float) -> np.ndarray:
    """(n, units) Bernoulli(p) masks, each trial corrupting at least one unit."""
    m = rng.random((n, units)) < p
    empty = ~m.any(axis=1)
    m[np.nonzero(empty)[0], rng.integers(units, size=int(empty.sum()))] = True
    return m


def attribute(encoder: SegmentEncoder, source, trials: int | dict = 64, *, start_sec: float = 0.0,
              families=FAMILIES, corrupt_prob: float = 0.3, measure: str = "prob_drop",
              method: str = "mean_diff", grid: tuple[int, int] = (7, 7), n_bands: int = 8,
              spatial_frames: int = 3, seed: int = 0, batch_trials: int = 8,
              cache: SegmentCache | None = None, png: str | Path | None = None,
              events_sec=None, progress: Callable[[int, int], None] | None = None) -> Attribution:
    """Attribute the offset prediction of the 5-s window at `start_sec` of `source` to its parts.

    source: path | AVClip | MediaSpan | (frames, fps, audio, sample_rate). trials: per family (int) or
    {family: n}. families: any of FAMILIES. corrupt_prob: chance each unit is corrupted in a trial.
    grid: (rows, cols) of the spatial cells; n_bands: mel bands of the spectral cells;
    spatial_frames: visual segments the patch family corrupts (the top "video" segments).
    cache: features cache (default: a private one for this call). png: also write the plot there
    (events_sec: times to mark on it). Same seed, same trials. progress(trials_done, trials_total) is
    called after each batch of trials.

    Each moment lies in two overlapping segments. When the prediction is near-certain (p close to 1),
    corrupting one of them moves nothing and the scores fade into noise; corrupt_prob=0.7 with
    measure="kl" makes trials remove both (tests/test_attribution.py measures both settings)."""
    families = tuple(families)
    bad = [f for f in families if f not in FAMILIES]
    if bad or not families:
        raise InputError(f"families must be a non-empty subset of {FAMILIES}, got {families}")
    if not 0 < corrupt_prob < 1:
        raise InputError(f"corrupt_prob must be in (0, 1), got {corrupt_prob}")
    effect(np.full(21, 1 / 21, np.float32), np.full((1, 21), 1 / 21, np.float32), measure)  # validates
    unit_scores(np.zeros((1, 1), bool), np.zeros(1), method)
    n_trials = {f: int(trials[f] if isinstance(trials, dict) else trials) for f in families}
    if any(n < 2 for n in n_trials.values()):
        raise InputError(f"need at least 2 trials per family, got {n_trials}")
    encoder.require("sync", "attribution", N_SEGMENTS)

    clip = read_span(source, start_sec, WINDOW_FRAMES / FPS)
    cache = cache if cache is not None else SegmentCache(1024)
    before = cache.stats()
    win = _Window(encoder, clip, cache, grid, n_bands)
    clean = [None] * N_SEGMENTS
    base = SyncResult.from_logits(win.logits([clean], [clean])[0], start_sec=clip.first_frame / FPS,
                                  source=source_name(source))
    p0 = base.probs
    rng = np.random.default_rng(seed)
    done, total = 0, sum(n_trials.values())

    def run(n_units: int, n: int, tags) -> np.ndarray:
        nonlocal done
        masks = _masks(rng, n, n_units, corrupt_prob)
        effects = []
        for i in range(0, n, batch_trials):
            vt, at = zip(*(tags(m) for m in masks[i:i + batch_trials]))
            effects.append(effect(p0, softmax(win.logits(list(vt), list(at))), measure))
            done += len(vt)
            if progress:
                progress(done, total)
        return unit_scores(masks, np.concatenate(effects), method)

    scores: dict[str, np.ndarray] = {}
    if "audio" in families:
        scores["audio"] = run(N_SEGMENTS, n_trials["audio"],
                              lambda m: (clean, ["seg" if x else None for x in m]))
    if "video" in families:
        scores["video"] = run(N_SEGMENTS, n_trials["video"],
                              lambda m: (["seg" if x else None for x in m], clean))
    if "spectral" in families:
        def tf(m):
            cells = m.reshape(n_bands, N_SEGMENTS)
            return clean, [("tf", cells[:, s].tobytes()) if cells[:, s].any() else None for s in range(N_SEGMENTS)]
        scores["spectral"] = run(n_bands * N_SEGMENTS, n_trials["spectral"], tf).reshape(n_bands, N_SEGMENTS)
    spatial_segs: list[int] = []
    if "patch" in families:
        spatial_segs = (sorted(int(i) for i in np.argsort(-scores["video"], kind="stable")[:spatial_frames])
                        if "video" in scores else list(range(N_SEGMENTS)))

        def patch(m):
            tag = ("patch", m.tobytes())
            return [tag if s in spatial_segs else None for s in range(N_SEGMENTS)], clean
        scores["spatial"] = run(grid[0] * grid[1], n_trials["patch"], patch).reshape(grid)

    after = cache.stats()
    centre = FIRST_FRAME + STEP_FRAMES * np.arange(N_SEGMENTS) + SEG_FRAMES // 2
    frame_ids = [FIRST_FRAME + STEP_FRAMES * s + SEG_FRAMES // 2 for s in spatial_segs]
    result = Attribution(
        audio=scores.get("audio"), video=scores.get("video"), spectral=scores.get("spectral"),
        spatial=scores.get("spatial"), segment_times=clip.first_frame / FPS + centre / FPS, base=base,
        measure=measure, method=method, trials=n_trials, corrupt_prob=corrupt_prob,
        spatial_segments=spatial_segs, frames=win.crops[frame_ids] if frame_ids else None,
        band_edges=[int(b) for b in win.bands],
        encoded={"audio": after["audio_segments_encoded"] - before["audio_segments_encoded"],
                 "video": after["visual_segments_encoded"] - before["visual_segments_encoded"]})
    if png is not None:
        result.png = result.plot(png, events_sec=events_sec)
    return result


def segment_of_time(t_sec: float, window_start_sec: float) -> list[int]:
    """Segments (0..13) of the window starting at `window_start_sec` whose frames contain media time t."""
    f = math.floor((t_sec - window_start_sec) * FPS + 1e-6)  # frame showing t (times on the frame grid)
    return [s for s in range(N_SEGMENTS) if segment_frame(s) <= f < segment_frame(s) + SEG_FRAMES]

