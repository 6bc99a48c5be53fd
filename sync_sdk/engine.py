"""SyncEngine: the SDK's front door. Orchestration only: media -> features -> backend -> results.

    engine = SyncEngine.from_pretrained("synthetic-tiny")
    engine.predict("clip.mp4").offset_sec        # seconds, positive = audio leads video
    engine.scan("film.mp4", hop_sec=0.96)         # Timeline, one window every 3 grid steps
    stream = engine.stream(); stream.push_video(frames, pts); stream.push_audio(samples, pts)

Windows are the official 5-s crops (14 segments of 16 frames / 10240 samples, step 8 / 5120).
`scan` and `stream` encode each grid segment once (SegmentCache; its audio once per shift view);
`predict` encodes its clip, its audio once per shift view when the model asks for several (views.py:
synthetic-tiny does; the official models do not).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from sync_sdk.runtime.cache import SegmentCache, array_module
from sync_sdk.config import ModelConfig
from sync_sdk.geometry import AUDIO_TOKENS_PER_SEGMENT, VIDEO_TOKENS_PER_SEGMENT
from sync_sdk.errors import BackendError, InputError
from sync_sdk.results import SyncResult, Timeline, softmax
from sync_sdk.runtime.views import check_views, combine_views, view_inputs
from sync_sdk.geometry import SAMPLE_RATE, SEG_FRAMES, SEG_SAMPLES, segment_frame, segment_sample

DEFAULT_CACHE_CAPACITY = 256
GPU_BACKEND_PREFIXES = ("tensorrt", "torch-cuda")


def to_numpy(x) -> np.ndarray:
    """A backend output (NumPy or a device array) as a NumPy array."""
    return x.get() if type(x).__module__.split(".")[0] == "cupy" else np.asarray(x)


class CpuFeatures:
    """Segment model inputs with NumPy (features.py); GpuFeatures (gpu.py) has the same two methods."""

    def video_segments(self, frames: np.ndarray, starts) -> np.ndarray:
        """frames (T,H,W,3) uint8, segments frames[s:s+16] -> (n, 16, 3, 224, 224) float32."""
        from sync_sdk.inputs.cpu import video_input
        return video_input(np.stack([frames[s:s + SEG_FRAMES] for s in starts]))

    def log_mel_segments(self, pcm: np.ndarray, starts) -> np.ndarray:
        """pcm (L,) float32 16 kHz, segments pcm[s:s+10240] -> (n, 1, 128, 66) float32."""
        from sync_sdk.inputs.cpu import log_mel
        return log_mel(np.stack([pcm[s:s + SEG_SAMPLES] for s in starts]))


def default_features(backend):
    """GpuFeatures for a GPU backend when CuPy sees a device (features and cache stay on the GPU),
    else CpuFeatures."""
    if backend.name.startswith(GPU_BACKEND_PREFIXES):
        from sync_sdk.inputs.gpu import GpuFeatures, cuda_available
        if cuda_available():
            return GpuFeatures(device=_device_index(getattr(backend, "device", 0)))
    return CpuFeatures()


def _device_index(device) -> int:
    index = getattr(device, "index", device)  # torch.device or int
    return int(index or 0)


class SyncEngine:
    """Predicts audio-visual offsets with one backend (see `from_pretrained`).

    backend: any object with the `backends.base.Backend` protocol. cache_capacity: segment features
    kept per kind for scan (0 = no cache). max_batch: segments per encoder call. features: how scan
    and stream make segment inputs (CpuFeatures, GpuFeatures; None = default_features(backend)).
    shift_views: audio shifts (s) whose views `predict`, `synchronizability`, `scan`, `stream` and
    `search_offset` combine (views.py);
    None = what the model folder's inference.json asks for (details["shift_views_sec"]), else (0.0,).
    """

    def __init__(self, backend, *, model_id: str = "", details: dict | None = None,
                 cache_capacity: int = DEFAULT_CACHE_CAPACITY, max_batch: int = 14, features=None,
                 shift_views: Sequence[float] | None = None) -> None:
        self.backend = backend
        self.config: ModelConfig = backend.config
        self.model_id = model_id or getattr(backend, "model_id", "") or "unnamed"
        self.max_batch = int(max_batch)
        self.cache = SegmentCache(cache_capacity)
        self.features = features if features is not None else default_features(backend)
        self._details = dict(details or {})
        self.shift_views = check_views(self._details.get("shift_views_sec", (0.0,)) if shift_views is None
                                       else shift_views)

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
        "fp16" | "int8" (what the export holds). kwargs: threads, allow_unsafe, cache_capacity, max_batch,
        shift_views.
        `engine.info()` says what was picked and why.
        """
        from sync_sdk.runtime.loading import load_backend
        engine_kwargs = {k: kwargs.pop(k) for k in ("cache_capacity", "max_batch", "shift_views") if k in kwargs}
        be, details = load_backend(name_or_path, backend=backend, device=device, precision=precision, **kwargs)
        return cls(be, model_id=details.get("model_id", ""), details=details, **engine_kwargs)

    def info(self) -> dict:
        """What runs: backend, device, precision, model id and config, why it was picked, versions."""
        from sync_sdk.runtime.loading import versions
        return {
            "backend": self.backend.name,
            "device": str(getattr(self.backend, "device", "cpu")),
            "precision": getattr(self.backend, "precision", "fp32"),
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
    def predict(self, source, start_sec: float = 0.0, offset_sec: float = 0.0) -> SyncResult:
        """Offset of the 5-s window starting at `start_sec` of `source`.

        source: path | (frames (T,H,W,3) uint8, fps, audio (N,) or (N,C) float, sample_rate) | AVClip.
        offset_sec: an extra shift applied to the audio crop first (official evaluation; 0 = as is).
        With several `shift_views` the result's logits are the views' combined log-posterior.
        """
        return self.predict_batch([source], start_sec=start_sec, offset_sec=offset_sec)[0]

    def predict_batch(self, sources: Sequence, start_sec: float | Sequence[float] = 0.0,
                      offset_sec: float | Sequence[float] = 0.0) -> list[SyncResult]:
        """`predict` for many clips: all their segments go through the encoders in batches."""
        self._require_variant("sync", "predict")
        starts, offsets = _per_item(start_sec, len(sources)), _per_item(offset_sec, len(sources))
        logits = self._clip_logits([(s, st, off) for s, st, off in zip(sources, starts, offsets)])
        return [SyncResult.from_logits(lg, start_sec=st, source=_name(s))
                for lg, s, st in zip(logits, sources, starts)]

    def synchronizability(self, source, start_sec: float = 0.0) -> float:
        """Probability (0..1) that the clip can be synchronised at all: the 2-class model on the
        first 13 segments of the window (official evaluation), the mean log-odds of its `shift_views`.
        Needs a synchronizability checkpoint."""
        self._require_variant("synchronizability", "synchronizability")
        logits = self._clip_logits([(source, start_sec, 0.0)])
        return float(softmax(logits)[0, 1])

    def _clip_logits(self, items: list[tuple]) -> np.ndarray:
        """(len(items), classes) answers for (source, start_sec, offset_sec) items, each combined from
        its shift views (`combine_views`); a view sharing another's video crop reuses its features."""
        n = self.config.n_segments
        vids, auds, vrows, owner, shifts = [], [], [], [], []
        for i, (source, start, offset) in enumerate(items):
            rows: dict[float, int] = {}
            for view in view_inputs(source, start, offset, self.shift_views):
                if view.start_sec not in rows:
                    rows[view.start_sec] = len(vids)
                    vids.append(view.vid[:n])
                vrows.append(rows[view.start_sec])
                auds.append(view.aud[:n])
                owner.append(i)
                shifts.append(view.shift_sec)
        vfeat = self._encode("video", vids[0] if len(vids) == 1 else np.concatenate(vids))
        afeat = self._encode("audio", auds[0] if len(auds) == 1 else np.concatenate(auds))
        vfeat = vfeat.reshape(len(vids), n, *vfeat.shape[1:])
        if len(vrows) > len(vids):
            vfeat = vfeat[array_module(vfeat).asarray(vrows)]
        logits = self._head(vfeat, afeat.reshape(len(auds), n, *afeat.shape[1:]))
        owner, shifts = np.asarray(owner), np.asarray(shifts)
        return np.stack([combine_views(self.config.variant, shifts[owner == i], logits[owner == i])
                         for i in range(len(items))])

    # ---------------------------------------------------------------- stages
    def _encode(self, kind: str, inputs):
        """Encoder outputs (N, tokens, dim) for N segment inputs, `max_batch` at a time."""
        fn = self.backend.encode_video if kind == "video" else self.backend.encode_audio
        outs = [fn(inputs[i:i + self.max_batch]) for i in range(0, len(inputs), self.max_batch)]
        return outs[0] if len(outs) == 1 else array_module(outs[0]).concatenate(outs)

    def _head(self, vfeat, afeat) -> np.ndarray:
        """vfeat (B, S, 8, Dv), afeat (B, S, 6, Da) -> logits (B, num_classes) NumPy."""
        b, s = vfeat.shape[:2]
        v = vfeat.reshape(b, s * VIDEO_TOKENS_PER_SEGMENT, vfeat.shape[-1])
        a = afeat.reshape(b, s * AUDIO_TOKENS_PER_SEGMENT, afeat.shape[-1])
        return to_numpy(self.backend.head(v, a))

    def encode_segments(self, cache: SegmentCache, source_id, frames: np.ndarray, frame0: int,
                        audio: np.ndarray, sample0: int, segs: Iterable[int]) -> None:
        """Put the features of grid segments `segs` into `cache`: video once, audio once per shift view
        whose audio starts within the media (samples >= 0).

        frames (T,H,W,3) uint8 hold media frames frame0.., audio (N,) float32 samples sample0..;
        grid segment g = frames [2+8g, 18+8g), samples [1280+5120g, 11520+5120g) of the media, shifted
        by each view's shift (`view_shift_samples`).
        """
        segs = list(segs)
        self._video_features(cache, source_id, frames, frame0, segs)
        for shift in self.view_shift_samples():
            fit = [g for g in segs if segment_sample(g) + shift >= 0]
            if fit:
                self._audio_features(cache, source_id, audio, sample0, fit, shift)

    def _video_features(self, cache: SegmentCache, source_id, frames: np.ndarray, frame0: int, segs: list[int]):
        def encode(positions):
            starts = np.array([segment_frame(segs[p]) - frame0 for p in positions], np.int64)
            return self._encode("video", self.features.video_segments(frames, starts))
        return cache.fetch("video", [(source_id, "video", segment_frame(g)) for g in segs], encode)

    def _audio_features(self, cache: SegmentCache, source_id, audio: np.ndarray, sample0: int, segs: list[int],
                        shift: int):
        def encode(positions):
            starts = np.array([segment_sample(segs[p]) + shift - sample0 for p in positions], np.int64)
            return self._encode("audio", self.features.log_mel_segments(audio, starts))
        return cache.fetch("audio", [(source_id, "audio", segment_sample(g) + shift) for g in segs], encode)

    def view_shift_samples(self) -> tuple[int, ...]:
        """The shift views as audio shifts in samples (0 among them)."""
        return tuple(int(round(d * SAMPLE_RATE)) for d in self.shift_views)

    def window_logits(self, cache: SegmentCache, source_id, frames: np.ndarray, frame0: int,
                      audio: np.ndarray, sample0: int, windows: Sequence[int],
                      audio_bounds: tuple[int, int] | None = None) -> np.ndarray:
        """Offset logits (len(windows), 21) of grid windows j (segments j..j+S-1), features via `cache`,
        each combined from the `shift_views` whose audio lies in media samples audio_bounds = [lo, hi)
        (default: those `audio` holds; the unshifted view must) (`combine_views`)."""
        n = self.config.n_segments
        lo, hi = (sample0, sample0 + len(audio)) if audio_bounds is None else audio_bounds
        vsegs = sorted({g for j in windows for g in range(j, j + n)})
        vfeat = self._video_features(cache, source_id, frames, frame0, vsegs)
        vrow = {g: i for i, g in enumerate(vsegs)}
        xp = array_module(vfeat)
        heads, owner, shifts = [], [], []
        for d, shift in zip(self.shift_views, self.view_shift_samples()):
            fit = [i for i, j in enumerate(windows)
                   if segment_sample(j) + shift >= lo and segment_sample(j + n - 1) + SEG_SAMPLES + shift <= hi]
            if d == 0.0 and len(fit) < len(windows):
                raise InputError(f"windows {[j for i, j in enumerate(windows) if i not in fit]} run past the audio given")
            if not fit:
                continue
            asegs = sorted({g for i in fit for g in range(windows[i], windows[i] + n)})
            afeat = self._audio_features(cache, source_id, audio, sample0, asegs, shift)
            arow = {g: k for k, g in enumerate(asegs)}
            vtake = xp.asarray([vrow[g] for i in fit for g in range(windows[i], windows[i] + n)])
            atake = xp.asarray([arow[g] for i in fit for g in range(windows[i], windows[i] + n)])
            heads.append(self._head(vfeat[vtake].reshape(len(fit), n, *vfeat.shape[1:]),
                                    afeat[atake].reshape(len(fit), n, *afeat.shape[1:])))
            owner += fit
            shifts += [d] * len(fit)
        logits, owner, shifts = np.concatenate(heads), np.asarray(owner), np.asarray(shifts)
        return np.stack([combine_views(self.config.variant, shifts[owner == i], logits[owner == i])
                         for i in range(len(windows))])

    # ---------------------------------------------------------------- whole files
    def scan(self, source, hop_sec: float = 0.32, *, batch_windows: int = 8, cache: bool = True,
             progress: Callable[[int, int | None], None] | None = None) -> Timeline:
        """Predictions over the whole media: window j starts at j*0.32 s (frame 8j, sample 5120j),
        one window every `hop_sec` (a multiple of 0.32 s), every window whose 5-s crop fits.

        The decode is streamed (memory ~ a few windows); each grid segment is encoded once
        (cache=False re-encodes the 14 segments of every window, for comparison).
        progress(windows_done, total_or_None) is called after each batch of windows.
        """
        from sync_sdk.runtime.scan import scan
        self._require_variant("sync", "scan")
        return scan(self, source, hop_sec, batch_windows=batch_windows, cache=cache, progress=progress)

    def stream(self, hop_sec: float = 0.32):
        """A SyncStream: push frames/samples as they arrive, get a prediction per new window."""
        from sync_sdk.runtime.stream import SyncStream
        self._require_variant("sync", "stream")
        return SyncStream(self, hop_sec=hop_sec)

    # ---------------------------------------------------------------- analyses
    def desync(self, video, audio, duration_sec: float | None = None, protocol: str = "first_last",
               preset: str = "av-benchmark"):
        """DeSync (s) of a video and its generated audio, as av-benchmark computes it (desync.py)."""
        from sync_sdk.analysis.desync import desync
        return desync(self, video, audio, duration_sec=duration_sec, protocol=protocol, preset=preset)

    def visual_features(self, source, preset: str = "av-benchmark", duration_sec: float | None = None,
                        output: str = "numpy"):
        """(S*8, v_dim) float32 visual-encoder features at 25 fps, for conditioning: NumPy, or a CuPy
        array left on the GPU with output="cupy" (DLPack-ready; visual_features.py)."""
        from sync_sdk.analysis.visual_features import visual_features
        return visual_features(self, source, preset=preset, duration_sec=duration_sec, output=output)

    def attribute(self, source, trials: int | dict = 64, **kwargs):
        """Evidence attribution of the window at start_sec by random corruption (attribution.py)."""
        from sync_sdk.analysis.attribution import attribute
        return attribute(self, source, trials=trials, **kwargs)

    def search_offset(self, source, max_offset_sec: float = 6.0, **kwargs):
        """Offset beyond +-2 s: audio shifted in steps, predictions combined (offset_search.py)."""
        from sync_sdk.analysis.offset_search import search_offset
        return search_offset(self, source, max_offset_sec=max_offset_sec, **kwargs)

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


def _per_item(value, n: int) -> list:
    if isinstance(value, (int, float)):
        return [float(value)] * n
    value = list(value)
    if len(value) != n:
        raise InputError(f"expected {n} values (one per source), got {len(value)}")
    return value


def _name(source) -> str | None:
    return str(source) if isinstance(source, (str, Path)) else None
