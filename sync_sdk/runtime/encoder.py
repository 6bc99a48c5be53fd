"""SegmentEncoder: the one seam from model inputs to segment features and from features to logits.

It owns the backend, the model-input features (NumPy on the CPU, CuPy kernels on a GPU), batching
(`max_batch` segments per encoder call), device arrays (features stay where the backend puts them),
the shift views and the head. Every caller in the SDK goes through it: predict, scan, stream, DeSync,
offset search, attribution, visual features and the Ray batch. (The Triton model runs the same three
exported stages inside Triton, without sync_sdk: serving/triton_bls.py.)

    enc = SegmentEncoder(backend, shift_views=(-0.2, 0.0, 0.2))
    feats = enc.encode("video", n, make)               # make(ids) -> (len(ids), 16, 3, 224, 224)
    feats = enc.fetch(cache, "audio", keys, make)      # the same through a SegmentCache
    logits = enc.head(vfeat, afeat)                    # (B, S, 8, Dv), (B, S, 6, Da) -> (B, classes)
    logits = enc.window_logits(cache, sid, span, [j])  # grid windows of a decoded span, views combined
"""
from __future__ import annotations

from typing import Callable, Hashable, Sequence

import numpy as np

from sync_sdk.backends.base import Backend, check_backend
from sync_sdk.config import ModelConfig
from sync_sdk.errors import InputError
from sync_sdk.geometry import (
    AUDIO_TOKENS_PER_SEGMENT,
    SEG_SAMPLES,
    VIDEO_TOKENS_PER_SEGMENT,
    offset_samples,
    segment_frame,
    segment_sample,
)
from sync_sdk.inputs.cpu import CpuFeatures
from sync_sdk.inputs.gpu import GpuFeatures, cuda_available
from sync_sdk.inputs.views import View
from sync_sdk.media.span import MediaSpan
from sync_sdk.runtime.arrays import array_module, to_numpy
from sync_sdk.runtime.cache import SegmentCache
from sync_sdk.runtime.views import check_views, combine_views

KINDS = ("audio", "video")
# video segments per encoder call on a CPU backend: a segment's float32 input is 9.6 MB and its
# activations more (~25 MB on ONNX Runtime for the bundled model), and larger batches are no faster
CPU_VIDEO_BATCH = 1


def default_features(backend: Backend):
    """GpuFeatures on the backend's GPU when it takes device arrays and CuPy sees a device (features
    and cache then stay on the GPU), else CpuFeatures."""
    if backend.device_arrays and cuda_available():
        return GpuFeatures(device=_device_index(backend.device))
    return CpuFeatures()


def _device_index(device) -> int:
    index = getattr(device, "index", device)  # a torch.device or a CUDA device index
    return int(index or 0)


class SegmentEncoder:
    """backend: any `Backend`; features: CpuFeatures | GpuFeatures (None = `default_features`);
    max_batch: segments per encoder call (video on a CPU backend: at most CPU_VIDEO_BATCH, which
    bounds memory); shift_views: audio shifts (s) whose views a window's answer combines
    (runtime/views.py)."""

    def __init__(self, backend: Backend, *, features=None, max_batch: int = 14,
                 shift_views: Sequence[float] = (0.0,)) -> None:
        if int(max_batch) < 1:
            raise InputError(f"max_batch must be >= 1, got {max_batch}")
        self.backend = check_backend(backend)
        self.config: ModelConfig = backend.config
        self.max_batch = int(max_batch)
        self.video_batch = min(self.max_batch, CPU_VIDEO_BATCH) if str(backend.device) == "cpu" else self.max_batch
        self.features = features if features is not None else default_features(backend)
        self.shift_views = check_views(shift_views)

    def require(self, variant: str, what: str, n_segments: int | None = None) -> None:
        """InputError unless the model is of `variant` (and sees `n_segments` segments when given)."""
        cfg = self.config
        if cfg.variant != variant or (n_segments is not None and cfg.n_segments != n_segments):
            kind = "offset (sync)" if variant == "sync" else variant
            size = f"{n_segments}-segment " if n_segments else ""
            raise InputError(f"{what} needs a {size}{kind} model, got a {cfg.variant!r} model with "
                             f"{cfg.n_segments} segments")

    # ---------------------------------------------------------------- encoders
    def encode(self, kind: str, n: int, make: Callable[[range], object]):
        """Features (n, tokens, dim) of segments 0..n-1, `max_batch` (video: `video_batch`) per encoder
        call; make(ids) gives the model inputs of segments `ids` (NumPy or device arrays). Features stay
        where the backend puts them (NumPy, or CuPy on a GPU backend)."""
        fn = self._encoder(kind)
        step = self.video_batch if kind == "video" else self.max_batch
        outs = [fn(make(range(i, min(i + step, n)))) for i in range(0, n, step)]
        if not outs:
            raise InputError(f"no {kind} segments to encode")
        return outs[0] if len(outs) == 1 else array_module(outs[0]).concatenate(outs)

    def fetch(self, cache: SegmentCache, kind: str, keys: Sequence[Hashable], make: Callable[[list], object]):
        """Features (len(keys), tokens, dim) of the segments named by `keys`, encoding only those the
        cache lacks; make(positions) gives the model inputs of keys[p] for p in positions."""
        def encode(missing: list[int]):
            return self.encode(kind, len(missing), lambda ids: make([missing[i] for i in ids]))
        return cache.fetch(kind, keys, encode)

    def _encoder(self, kind: str):
        if kind == "video":
            return self.backend.encode_video
        if kind == "audio":
            return self.backend.encode_audio
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")

    # ---------------------------------------------------------------- head
    def head(self, vfeat, afeat, batch: int | None = None) -> np.ndarray:
        """Logits (B, num_classes) NumPy of B windows: vfeat (B, S, 8, Dv), afeat (B, S, 6, Da) features
        (NumPy or device arrays); `batch` windows per head call (None = all at once)."""
        b, s = vfeat.shape[:2]
        v = vfeat.reshape(b, s * VIDEO_TOKENS_PER_SEGMENT, vfeat.shape[-1])
        a = afeat.reshape(b, s * AUDIO_TOKENS_PER_SEGMENT, afeat.shape[-1])
        step = b if batch is None else int(batch)
        outs = [to_numpy(self.backend.head(v[i:i + step], a[i:i + step])) for i in range(0, b, step)]
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    # ---------------------------------------------------------------- whole windows
    def views_logits(self, items: Sequence[Sequence[View]]) -> np.ndarray:
        """(len(items), classes) answers of windows given as their views' model inputs (`view_inputs`),
        each combined from its views (`combine_views`)."""
        return np.stack([combine_views(self.config.variant, np.asarray([v.shift_sec for v in views]), logits)
                         for views, logits in zip(items, self.view_logits(items))])

    def view_logits(self, items: Sequence[Sequence[View]]) -> list[np.ndarray]:
        """Per item (a window's views' model inputs), its views' own logits (V, classes), not combined;
        views sharing a `vid` share its features. Video inputs are sliced (or made, from a
        `WindowVideo`) one encoder batch at a time."""
        n = self.config.n_segments
        vids, auds, vrows = [], [], []
        rows: dict[int, int] = {}
        for views in items:
            for view in views:
                if id(view.vid) not in rows:
                    rows[id(view.vid)] = len(vids)
                    vids.append(view.vid)
                vrows.append(rows[id(view.vid)])
                auds.append(view.aud[:n])
        ain = auds[0] if len(auds) == 1 else np.concatenate(auds)
        vfeat = self.encode("video", len(vids) * n, lambda ids: _stacked_rows(vids, n, ids))
        afeat = self.encode("audio", len(ain), lambda ids: ain[ids.start:ids.stop])
        vfeat = vfeat.reshape(len(vids), n, *vfeat.shape[1:])
        if len(vrows) > len(vids):
            vfeat = vfeat[array_module(vfeat).asarray(vrows)]
        logits = self.head(vfeat, afeat.reshape(len(auds), n, *afeat.shape[1:]))
        bounds = np.cumsum([0] + [len(views) for views in items])
        return [logits[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def view_shift_samples(self) -> tuple[int, ...]:
        """The shift views as audio shifts in samples (0 among them)."""
        return tuple(offset_samples(d) for d in self.shift_views)

    def segment_features(self, cache: SegmentCache, source_id, span: MediaSpan, segs: Sequence[int],
                         kind: str, shift: int = 0):
        """Features (len(segs), tokens, dim) of grid segments `segs` of `span` (video, or audio shifted
        by `shift` samples), through `cache` keyed by the first frame / sample actually read."""
        segs = list(segs)
        if kind == "video":
            starts = [segment_frame(g) for g in segs]
            keys = [(source_id, "video", s) for s in starts]

            def make(positions):
                idx = np.array([starts[p] - span.first_frame for p in positions], np.int64)
                return self.features.video_segments(span.frames, idx)
        else:
            starts = [segment_sample(g, shift) for g in segs]
            keys = [(source_id, "audio", s) for s in starts]

            def make(positions):
                idx = np.array([starts[p] - span.first_sample for p in positions], np.int64)
                return self.features.log_mel_segments(span.audio, idx)
        return self.fetch(cache, kind, keys, make)

    def encode_segments(self, cache: SegmentCache, source_id, span: MediaSpan, segs: Sequence[int],
                        shifts: Sequence[int] | None = None) -> None:
        """Put the features of grid segments `segs` of `span` into `cache`: video once, audio once per
        shift (samples; default the shift views') whose audio starts within the media (sample >= 0)."""
        segs = list(segs)
        self.segment_features(cache, source_id, span, segs, "video")
        for shift in self.view_shift_samples() if shifts is None else shifts:
            fit = [g for g in segs if segment_sample(g, shift) >= 0]
            if fit:
                self.segment_features(cache, source_id, span, fit, "audio", shift)

    def window_views(self, windows: Sequence[int], lo: int, hi: int) -> list[tuple[float, ...]]:
        """Per grid window j, the shift views (s) whose audio lies in media samples [lo, hi)."""
        n = self.config.n_segments
        return [tuple(d for d, shift in zip(self.shift_views, self.view_shift_samples())
                      if segment_sample(j, shift) >= lo and segment_sample(j + n - 1, shift) + SEG_SAMPLES <= hi)
                for j in windows]

    def window_logits(self, cache: SegmentCache, source_id, span: MediaSpan, windows: Sequence[int],
                      audio_bounds: tuple[int, int] | None = None) -> np.ndarray:
        """Logits (len(windows), classes) of grid windows j (segments j..j+S-1) of `span`, features via
        `cache`, each combined from the shift views whose audio lies in media samples audio_bounds =
        [lo, hi) (default: the samples `span` holds; the unshifted view must fit)."""
        per_shift = self.window_shift_logits(cache, source_id, span, windows, self.shift_views, audio_bounds)
        unshifted = next((fit for d, fit, _ in per_shift if d == 0.0), [])
        if len(unshifted) < len(windows):
            raise InputError(f"windows {[j for i, j in enumerate(windows) if i not in unshifted]} run past the "
                             "audio given")
        owner = np.concatenate([fit for _, fit, _ in per_shift])
        shifts = np.concatenate([[d] * len(fit) for d, fit, _ in per_shift])
        logits = np.concatenate([lg for _, _, lg in per_shift])
        return np.stack([combine_views(self.config.variant, shifts[owner == i], logits[owner == i])
                         for i in range(len(windows))])

    def window_shift_logits(self, cache: SegmentCache, source_id, span: MediaSpan, windows: Sequence[int],
                            shifts: Sequence[float], audio_bounds: tuple[int, int] | None = None
                            ) -> list[tuple[float, list[int], np.ndarray]]:
        """Each grid window's own logits at each audio shift d (s) of `shifts`, not combined: per shift
        with any window whose shifted audio lies in media samples audio_bounds = [lo, hi) (default: the
        samples `span` holds), (d, the indices of those windows, their logits (len, classes)). Features
        via `cache`: each segment's video once, its audio once per shift."""
        n = self.config.n_segments
        lo, hi = (span.first_sample, span.end_sample) if audio_bounds is None else audio_bounds
        vsegs = sorted({g for j in windows for g in range(j, j + n)})
        vfeat = self.segment_features(cache, source_id, span, vsegs, "video")
        vrow = {g: i for i, g in enumerate(vsegs)}
        xp = array_module(vfeat)
        out = []
        for d in shifts:
            shift = offset_samples(d)
            fit = [i for i, j in enumerate(windows)
                   if segment_sample(j, shift) >= lo and segment_sample(j + n - 1, shift) + SEG_SAMPLES <= hi]
            if not fit:
                continue
            asegs = sorted({g for i in fit for g in range(windows[i], windows[i] + n)})
            afeat = self.segment_features(cache, source_id, span, asegs, "audio", shift)
            arow = {g: k for k, g in enumerate(asegs)}
            vtake = xp.asarray([vrow[g] for i in fit for g in range(windows[i], windows[i] + n)])
            atake = xp.asarray([arow[g] for i in fit for g in range(windows[i], windows[i] + n)])
            out.append((d, fit, self.head(vfeat[vtake].reshape(len(fit), n, *vfeat.shape[1:]),
                                          afeat[atake].reshape(len(fit), n, *afeat.shape[1:]))))
        return out

def _stacked_rows(arrays: Sequence, n: int, ids: range) -> np.ndarray:
    """Rows `ids` of the first n rows of each of `arrays` stacked, without stacking them all: arrays
    are NumPy arrays or `WindowVideo`s (sliced, so only these rows are made)."""
    parts = [arrays[k][max(ids.start - k * n, 0):min(ids.stop - k * n, n)]
             for k in range(ids.start // n, (ids.stop - 1) // n + 1)]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)
