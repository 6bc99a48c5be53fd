"""SyncEngine: the SDK's front door. Orchestration only: a source goes to the segment-encoding seam
(runtime/encoder.py), whose answers become results; the analyses and scans receive that seam.

    engine = SyncEngine.from_pretrained("synthetic-tiny")
    engine.predict("clip.mp4").offset_sec        # seconds, positive = audio leads video
    engine.scan("film.mp4", hop_sec=0.96)         # Timeline, one window every 3 grid steps
    stream = engine.stream(); stream.push_video(frames, pts); stream.push_audio(samples, pts)

Windows are the official 5-s crops (14 segments of 16 frames / 10240 samples, step 8 / 5120).
`scan` and `stream` encode each grid segment once (SegmentCache; its audio once per shift view);
`predict` encodes its clip, its audio once per shift view when the model asks for several (views.py).
"""
from __future__ import annotations

import inspect
import numbers
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from sync_sdk.analysis.attribution import Attribution, attribute
from sync_sdk.analysis.desync import DesyncClip, desync
from sync_sdk.analysis.offset_search import OffsetSearchResult, search_offset
from sync_sdk.analysis.visual_features import visual_features
from sync_sdk.config import ModelConfig
from sync_sdk.errors import BackendError, InputError
from sync_sdk.geometry import check_seconds
from sync_sdk.inputs.layouts import visual_inputs
from sync_sdk.inputs.views import View, view_inputs
from sync_sdk.media.source import normalise_source, source_name
from sync_sdk.results import SyncResult, Timeline, softmax
from sync_sdk.runtime.cache import SegmentCache
from sync_sdk.runtime.encoder import SegmentEncoder
from sync_sdk.runtime.loading import load_backend, versions
from sync_sdk.runtime.refine import clip_views, refined_logits
from sync_sdk.runtime.scan import scan
from sync_sdk.runtime.stream import SyncStream

DEFAULT_CACHE_CAPACITY = 256
ENGINE_OPTIONS = ("cache_capacity", "max_batch", "shift_views")  # from_pretrained's keywords for the engine
LOADING_OPTIONS = tuple(p for p in inspect.signature(load_backend).parameters  # ... and for load_backend
                        if p not in ("name_or_path", "backend", "device", "precision"))


class SyncEngine:
    """Predicts audio-visual offsets with one backend (see `from_pretrained`).

    backend: any object with the `backends.base.Backend` protocol. cache_capacity: segment features
    kept per kind for scan (0 = no cache). max_batch: segments per encoder call (video segments go to a
    CPU backend one at a time: SegmentEncoder.video_batch). features: how scan
    and stream make segment inputs (CpuFeatures, GpuFeatures; None = default_features(backend)).
    shift_views: audio shifts (s) whose views `predict`, `synchronizability`, `scan`, `stream` and
    `search_offset` combine (views.py);
    None = what the model folder's inference.json asks for (details["shift_views_sec"]), else (0.0,).
    """

    def __init__(self, backend, *, model_id: str = "", details: dict | None = None,
                 cache_capacity: int = DEFAULT_CACHE_CAPACITY, max_batch: int = 14, features=None,
                 shift_views: Sequence[float] | None = None) -> None:
        self._details = dict(details or {})
        views = self._details.get("shift_views_sec", (0.0,)) if shift_views is None else shift_views
        self.encoder = SegmentEncoder(backend, features=features, max_batch=max_batch, shift_views=views)
        self.backend = backend
        self.config: ModelConfig = backend.config
        self.model_id = model_id or backend.model_id or "unnamed"
        self.cache = SegmentCache(cache_capacity)

    @property
    def max_batch(self) -> int:
        """Segments per encoder call."""
        return self.encoder.max_batch

    @property
    def features(self):
        """How model inputs are made: CpuFeatures or GpuFeatures."""
        return self.encoder.features

    @property
    def shift_views(self) -> tuple[float, ...]:
        """The audio shifts (s) whose views a window's answer combines."""
        return self.encoder.shift_views

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_pretrained(cls, name_or_path: str | Path | None = None, backend: str = "auto",
                        device: str = "auto", precision: str = "auto", **kwargs) -> "SyncEngine":
        """Engine for a bundled model name ("synthetic-tiny"), an official checkpoint id (downloaded
        once; None = the AudioSet model 24-01-04T16-39-21), a checkpoint file (.pt/.pth/.safetensors)
        or an export directory (manifest.json from export/build_engine.py).

        backend: "auto" | "tensorrt" | "onnxruntime" | "torch". auto = TensorRT on a GPU with engines,
        else ONNX Runtime from an export directory (CUDA provider when present, else CPU), else torch
        for a checkpoint. device: "auto" | "cpu" | "cuda" | "cuda:N". precision: "auto" | "fp32" |
        "fp16" | "int8" (what the export holds). kwargs: threads, allow_unsafe, max_checkpoint_bytes (the
        largest tensor data a checkpoint may declare; default 4 GiB or $SYNC_SDK_MAX_CHECKPOINT_BYTES),
        cache_capacity, max_batch, shift_views; others are an InputError.
        `engine.info()` says what was picked and why.
        """
        unknown = sorted(set(kwargs) - set(ENGINE_OPTIONS) - set(LOADING_OPTIONS))
        if unknown:
            raise InputError(f"from_pretrained: unknown option(s) {', '.join(unknown)}; expected any of "
                             f"{', '.join(sorted(ENGINE_OPTIONS + LOADING_OPTIONS))}")
        engine_kwargs = {k: kwargs.pop(k) for k in ENGINE_OPTIONS if k in kwargs}
        be, details = load_backend(name_or_path, backend=backend, device=device, precision=precision, **kwargs)
        return cls(be, model_id=details.get("model_id", ""), details=details, **engine_kwargs)

    def info(self) -> dict:
        """What runs: backend, device, precision, model id and config, why it was picked, versions."""
        return {
            "backend": self.backend.name,
            "device": str(self.backend.device),
            "precision": self.backend.precision,
            "model_id": self.model_id,
            "variant": self.config.variant,
            "config": self.config.to_dict(),
            "features": type(self.features).__name__,
            **{k: v for k, v in self._details.items() if k != "model_id"},
            "shift_views_sec": list(self.shift_views),  # what runs, whatever the folder asked for
            "cache": self.cache_stats(),
            "versions": versions(),
        }

    # ---------------------------------------------------------------- one clip
    def predict(self, source, start_sec: float = 0.0, offset_sec: float = 0.0, *, refine: bool = False
                ) -> SyncResult:
        """Offset of the 5-s window starting at `start_sec` of `source`.

        source: path | (frames (T,H,W,3) uint8, fps, audio (N,) or (N,C) float, sample_rate) | AVClip.
        offset_sec: an extra shift applied to the audio crop first (official evaluation; 0 = as is).
        With several `shift_views` the result's logits are the views' combined log-posterior.
        refine: also score the window with the audio shifted in 80-ms steps within +-0.32 s and answer a
        continuous offset_sec with an interval, offset_interval_sec (runtime/refine.py); the class is
        unchanged (class_offset_sec).
        """
        return self.predict_batch([source], start_sec=start_sec, offset_sec=offset_sec, refine=refine)[0]

    def predict_batch(self, sources: Sequence, start_sec: float | Sequence[float] = 0.0,
                      offset_sec: float | Sequence[float] = 0.0, *, refine: bool = False) -> list[SyncResult]:
        """`predict` for many clips: all their segments go through the encoders in batches."""
        self._require_variant("sync", "predict")
        if isinstance(sources, (str, bytes)) or not isinstance(sources, Sequence):
            raise InputError(f"predict_batch takes a list of sources, got {type(sources).__name__}; use "
                             "predict() for one")
        starts = _per_item(start_sec, len(sources), "start_sec")
        offsets = _per_item(offset_sec, len(sources), "offset_sec")
        if refine:  # the shift views and the fine ones, the class answer from the shift views alone
            items = [clip_views(s, st, off, self.shift_views) for s, st, off in zip(sources, starts, offsets)]
            views = [vs for vs, _ in items]
            logits, fines = zip(*refined_logits(self.encoder, items))
        else:
            views = self._clip_views([(s, st, off) for s, st, off in zip(sources, starts, offsets)])
            logits, fines = self.encoder.views_logits(views), [None] * len(views)
        results = [SyncResult.from_logits(lg, start_sec=st, source=source_name(s), flags=vs[0].flags,
                                          views=[(v.shift_sec, v.start_sec) for v in vs])
                   for lg, s, st, vs in zip(logits, sources, starts, views)]
        return [r if fine is None else r.with_fine(fine) for r, fine in zip(results, fines)]

    def synchronizability(self, source, start_sec: float = 0.0) -> float:
        """Probability (0..1) that the clip can be synchronised at all: the 2-class model on the
        first 13 segments of the window (official evaluation), the mean log-odds of its `shift_views`.
        Needs a synchronizability checkpoint."""
        self._require_variant("synchronizability", "synchronizability")
        logits = self.encoder.views_logits(self._clip_views([(source, check_seconds(start_sec, "start_sec"), 0.0)]))
        return float(softmax(logits)[0, 1])

    def _clip_views(self, items: list[tuple]) -> list[list[View]]:
        """The shift views' model inputs of (source, start_sec, offset_sec) items (inputs/views.py)."""
        return [view_inputs(normalise_source(source), start, offset, self.shift_views)
                for source, start, offset in items]

    # ---------------------------------------------------------------- whole files
    def scan(self, source, hop_sec: float = 0.32, *, batch_windows: int = 8, cache: bool = True,
             progress: Callable[[int, int | None], None] | None = None, refine: bool = False) -> Timeline:
        """Predictions over the whole media: window j starts at j*0.32 s (frame 8j, sample 5120j),
        one window every `hop_sec` (a multiple of 0.32 s), every window whose 5-s crop fits.

        The decode is streamed (memory ~ a few windows); each grid segment is encoded once
        (cache=False re-encodes the 14 segments of every window, for comparison).
        progress(windows_done, total_or_None) is called after each batch of windows.
        refine: each window's continuous offset, as predict(refine=True) gives it; every shifted audio
        segment is encoded once too (if the cache holds a batch's: about 6 x (batch_windows + 13)).
        """
        self._require_variant("sync", "scan")
        store = self.cache if cache else self.cache.uncached()
        return scan(self.encoder, store, source, hop_sec, batch_windows=batch_windows, per_window=not cache,
                    progress=progress, refine=refine)

    def stream(self, hop_sec: float = 0.32, *, refine: bool = False) -> SyncStream:
        """A SyncStream: push frames/samples as they arrive, get a prediction per new window.
        refine: continuous offsets, as scan(refine=True) (each segment waits 0.32 s more audio)."""
        self._require_variant("sync", "stream")
        return SyncStream(self.encoder, hop_sec=hop_sec, refine=refine)

    # ---------------------------------------------------------------- analyses
    def desync(self, video, audio, duration_sec: float | None = None, protocol: str = "first_last",
               layout: str = "av-benchmark", fill_frames: int = 0, refine: bool = False) -> DesyncClip:
        """DeSync (s) of a video and its generated audio, as av-benchmark computes it (analysis/desync.py).
        A video with fewer than int(25 * duration) frames raises ClipTooShortError (av-benchmark drops
        it) unless at most `fill_frames` are missing: those repeat the last frame. refine: the mean
        |refined offset| (continuous, as predict(refine=True)); the grid offsets stay in class_offsets."""
        return desync(self.encoder, video, audio, duration_sec=duration_sec, protocol=protocol, layout=layout,
                      fill_frames=fill_frames, refine=refine)

    def visual_features(self, source, layout: str = "av-benchmark", duration_sec: float | None = None,
                        output: str = "numpy", fps: float | None = None):
        """(S*8, v_dim) float32 visual-encoder features at 25 fps of the frames a project's `layout` feeds
        Synchformer ("av-benchmark", "mmaudio", "hunyuan-foley", "thinksound", "synchformer"), for
        conditioning: NumPy, or a CuPy array left on the GPU with output="cupy" (DLPack-ready).
        `feats[None]` is the projects' (1, S*8, 768). See analysis/visual_features.py."""
        return visual_features(self.encoder, source, layout=layout, duration_sec=duration_sec, output=output,
                               fps=fps)

    def visual_inputs(self, source, layout: str = "av-benchmark", normalize: bool = False,
                      duration_sec: float | None = None, fps: float | None = None) -> np.ndarray:
        """The frames `layout` feeds the visual encoder at 25 fps: uint8 (T, 224, 224, 3), or float32
        (T, 3, 224, 224) with normalize=True (sync_sdk.visual_inputs; inputs/layouts.py)."""
        return visual_inputs(source, layout=layout, normalize=normalize, duration_sec=duration_sec, fps=fps)

    def attribute(self, source, trials: int | dict = 64, **kwargs) -> Attribution:
        """Evidence attribution of the window at start_sec by random corruption (analysis/attribution.py)."""
        return attribute(self.encoder, source, trials=trials, **kwargs)

    def search_offset(self, source, max_offset_sec: float = 6.0, **kwargs) -> OffsetSearchResult:
        """Offset beyond +-2 s: audio shifted in steps, predictions combined (analysis/offset_search.py)."""
        return search_offset(self.encoder, source, max_offset_sec=max_offset_sec, **kwargs)

    # ---------------------------------------------------------------- cache
    def cache_stats(self) -> dict:
        """Segment cache counters: audio/visual segments encoded, hits, misses, evictions, size."""
        return self.cache.stats()

    def clear_cache(self) -> None:
        self.cache.clear()

    def _require_variant(self, variant: str, what: str) -> None:
        if self.config.variant == variant:
            return
        if variant == "synchronizability":
            raise BackendError(f"{what}() needs a synchronizability model, but this engine holds the "
                               f"{self.config.variant!r} model {self.model_id}; load one with "
                               "SyncEngine.from_pretrained('24-01-22T20-34-52')")
        raise BackendError(f"{what}() needs an offset (sync) model, but this engine holds the "
                           f"{self.config.variant!r} model {self.model_id}; use synchronizability() "
                           "or load a sync checkpoint")

    def __repr__(self) -> str:
        return f"SyncEngine(model={self.model_id!r}, backend={self.backend.name!r})"


def _per_item(value, n: int, name: str) -> list[float]:
    """`value` (s) for each of n sources: one number for all, or a sequence of n numbers."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (numbers.Real, Sequence, np.ndarray)):
        raise InputError(f"{name} must be a number of seconds or one per source, got {type(value).__name__} "
                         f"{value!r}")
    if isinstance(value, numbers.Real):
        return [check_seconds(value, name)] * n
    if len(value) != n:
        raise InputError(f"{name}: expected {n} values (one per source), got {len(value)}")
    return [check_seconds(v, name) for v in value]

