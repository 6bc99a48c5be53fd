"""GPU feature extraction with CuPy: log-mel and frame preparation on the device (kernels/*.cu).

    feats = GpuFeatures()                                   # one CUDA stream, buffers planned once
    aud = feats.log_mel_segments(pcm, starts)               # (n, 1, 128, 66) float32 cupy
    vid = feats.video_segments(frames, frame_starts)        # (n, 16, 3, 224, 224) float16 cupy

Inputs may be NumPy (copied through pinned host buffers and uploaded asynchronously on the stream) or
device arrays (read in place). Results are views of the object's device buffers, valid until the next
call of the same method (copy them to keep them). Every launch is queued on `feats.stream`, after the
work already queued on the caller's current CuPy stream, and that stream is made to wait for it (two
events when the streams differ): results can be used on the caller's stream at once. Work on the same
stream (`with feats.stream:`, and `TorchCudaBackend(stream=feats.stream)`) needs no event at all.
The buffers are one slab planned by `gpu_plan.feature_buffers`; a request larger than the plan grows
it once, after which calls of that size allocate nothing. CuPy is imported lazily: `import sync_sdk`
works without it, and using this module without CuPy or a GPU raises BackendError.
"""
from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np

from sync_sdk.errors import BackendError, InputError
from sync_sdk.geometry import CROP_SIZE, N_MELS, SEG_FRAMES, SEG_SAMPLES, SPEC_FRAMES
from sync_sdk.inputs import cpu as features
from sync_sdk.inputs import gpu_plan as plan

KERNEL_FILES = ("logmel.cu", "frames.cu")
COMPILE_OPTIONS = ("--std=c++14",)
VIDEO_DTYPES = ("float16", "float32")
DLPACK_CUDA = 2  # kDLCUDA device type


def cuda_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError, CUDARuntimeError (no driver), ...
        return False


def import_cupy():
    """The cupy module, or BackendError saying what is missing."""
    try:
        import cupy
    except ImportError as e:
        raise BackendError("GPU features need CuPy and an NVIDIA GPU: pip install 'sync-sdk[gpu]' "
                           "(cupy-cuda12x); on CPU use sync_sdk.inputs.cpu") from e
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        raise BackendError(f"CuPy is installed but no CUDA device is usable ({e})") from e
    if n == 0:
        raise BackendError("CuPy is installed but sees no CUDA device")
    return cupy


def kernel_dir() -> Path:
    """Folder of the .cu sources: sync_sdk/kernels (installed package) or kernels/ at the repo root."""
    here = Path(__file__).resolve().parents[1]  # the sync_sdk package
    for d in (here / "kernels", here.parent / "kernels"):
        if all((d / f).is_file() for f in KERNEL_FILES):
            return d
    raise BackendError(f"CUDA kernel sources {KERNEL_FILES} not found in {here / 'kernels'} "
                       f"or {here.parent / 'kernels'}; reinstall sync-sdk")


@lru_cache(maxsize=None)
def _module(name: str, device_id: int):
    """RawModule of kernels/<name>, compiled once per device (CuPy also caches the binary on disk)."""
    cp = import_cupy()
    with cp.cuda.Device(device_id):
        return cp.RawModule(code=(kernel_dir() / name).read_text(), options=COMPILE_OPTIONS)


def reference_constants() -> dict[str, np.ndarray]:
    """The NumPy path's tables: STFT window (400,), mel filterbank (513, 128), video LUT (256,) float32."""
    return {"window": np.asarray(features.STFT_WINDOW, np.float32),
            "fbanks": np.asarray(features.MEL_FBANKS, np.float32),
            "lut": np.asarray(features.VIDEO_LUT, np.float32)}


class GpuFeatures:
    """Log-mel and video inputs on one CUDA device and one stream (see the module doc).

    device: CUDA device index (None = current). stream: a cupy Stream to queue on (None = a new one).
    video_dtype: "float16" (the official model input) or "float32". max_segments / max_frame_bytes:
    the initial buffer plan (14 segments; 120 frames of 256x456).
    """

    def __init__(self, device: int | None = None, stream=None, video_dtype: str = "float16",
                 max_segments: int = 14, max_frame_bytes: int = 120 * 256 * 456 * 3) -> None:
        if video_dtype not in VIDEO_DTYPES:
            raise ValueError(f"video_dtype must be one of {VIDEO_DTYPES}, got {video_dtype!r}")
        cp = self._cp = import_cupy()
        self.device_id = cp.cuda.runtime.getDevice() if device is None else int(device)
        self.video_dtype = np.dtype(video_dtype)
        with cp.cuda.Device(self.device_id):
            self.stream = stream if stream is not None else cp.cuda.Stream(non_blocking=True)
            self._logmel = _module("logmel.cu", self.device_id)
            frames = _module("frames.cu", self.device_id)
            sfx = "f16" if self.video_dtype == np.float16 else "f32"
            self._k_frame = self._logmel.get_function("frame_segments")
            self._k_mel = self._logmel.get_function("mel_log_norm")
            self._k_crop = frames.get_function(f"crop_lut_{sfx}")
            self._k_resize = frames.get_function(f"resize_crop_lut_{sfx}")
            self._upload_constants(reference_constants())
            self._handoff = (cp.cuda.Event(disable_timing=True), cp.cuda.Event(disable_timing=True))
        self._fft_plans: dict[int, object] = {}
        self._geometry: dict[tuple[int, int, bool], tuple] = {}
        self._capacity = (0, 0)
        self._reserve(max_segments, max_frame_bytes)

    # ------------------------------------------------------------------ set-up
    def _upload_constants(self, const: dict[str, np.ndarray]) -> None:
        cp = self._cp
        window, self._win_lo, self._win_hi = plan.padded_window(const["window"])
        bands = plan.mel_band_table(const["fbanks"])
        lut = const["lut"].astype(self.video_dtype)
        if not np.array_equal(lut.astype(np.float32), const["lut"]):
            raise BackendError("the video LUT is not exact in float16")
        self._window = cp.asarray(window)
        self._bands = tuple(cp.asarray(a) for a in (bands.lo, bands.length, bands.offset, bands.weights))
        self._lut = cp.asarray(lut.view(np.uint16) if self.video_dtype == np.float16 else lut)

    def _reserve(self, segments: int, frame_bytes: int) -> None:
        """Make the slabs hold `segments` segments and `frame_bytes` uploaded frame bytes (grow only)."""
        have_seg, have_bytes = self._capacity
        if segments <= have_seg and frame_bytes <= have_bytes:
            return
        cp = self._cp
        import cupyx
        segments, frame_bytes = max(segments, have_seg), max(frame_bytes, have_bytes)
        shapes = plan.feature_buffers(segments, frame_bytes, self.video_dtype)
        self._specs, total = plan.plan_buffers(shapes)
        self._pinned_specs, pinned_total = plan.plan_buffers({k: shapes[k] for k in plan.UPLOADED})
        with cp.cuda.Device(self.device_id):
            self.stream.synchronize()  # old buffers may still be read by queued work
            self._slab = cp.empty((total,), dtype=cp.uint8)
            self._pinned = cupyx.empty_pinned((pinned_total,), dtype=np.uint8)
            self._events = {k: cp.cuda.Event(disable_timing=True) for k in plan.UPLOADED}
        self._capacity = (segments, frame_bytes)

    @contextmanager
    def _queued(self):
        """Queue on self.stream after the caller's current stream's work (device inputs are ready), and
        make the caller's stream wait for what was queued (results are safe to use on it)."""
        cp = self._cp
        with cp.cuda.Device(self.device_id):
            caller = cp.cuda.get_current_stream()
            other = caller.ptr != self.stream.ptr
            if other:
                self.stream.wait_event(caller.record(self._handoff[0]))
            with self.stream:
                yield
            if other:
                caller.wait_event(self.stream.record(self._handoff[1]))

    def _view(self, name: str, shape: tuple[int, ...]):
        spec = self._specs[name]
        n = int(np.prod(shape, dtype=np.int64)) * spec.dtype.itemsize
        return self._slab[spec.offset:spec.offset + n].view(spec.dtype).reshape(shape)

    def _upload(self, name: str, host: np.ndarray):
        """Copy `host` into the pinned twin of buffer `name`, queue its upload; returns the device view."""
        spec = self._pinned_specs[name]
        n = host.size * spec.dtype.itemsize
        event = self._events[name]
        event.synchronize()  # the previous upload from this pinned buffer has finished
        staged = self._pinned[spec.offset:spec.offset + n].view(spec.dtype).reshape(host.shape)
        np.copyto(staged, host, casting="same_kind")
        dev = self._view(name, host.shape)
        dev.set(staged, stream=self.stream)
        event.record(self.stream)
        return dev

    def _fft_plan(self, rows: int):
        """cuFFT R2C plan of `rows` transforms of N_FFT points, made once per row count."""
        if rows not in self._fft_plans:
            from cupy.cuda import cufft
            self._fft_plans[rows] = cufft.Plan1d(plan.N_FFT, cufft.CUFFT_R2C, rows)
        return self._fft_plans[rows]

    def _frame_geometry(self, h: int, w: int, resize: bool) -> tuple:
        """(FrameGeometry, device resize tables or None), made once per frame size."""
        key = (h, w, resize)
        if key not in self._geometry:
            geom = plan.frame_geometry(h, w, resize)
            tables = None
            if geom.resized:
                cp = self._cp
                with cp.cuda.Device(self.device_id):
                    tables = tuple(cp.asarray(a) for a in (geom.rows.first, geom.rows.count, geom.rows.weight,
                                                           geom.cols.first, geom.cols.count, geom.cols.weight))
            self._geometry[key] = (geom, tables)
        return self._geometry[key]

    def _is_host(self, x) -> bool:
        """False for device arrays (cupy, CUDA array interface, CUDA DLPack such as torch CUDA tensors)."""
        if isinstance(x, self._cp.ndarray) or hasattr(x, "__cuda_array_interface__"):
            return False
        return not (hasattr(x, "__dlpack_device__") and int(x.__dlpack_device__()[0]) == DLPACK_CUDA)

    def _as_device(self, x, dtype):
        """A device array (cupy, or e.g. torch via DLPack) as a C-contiguous cupy array of `dtype`."""
        cp = self._cp
        arr = x if isinstance(x, cp.ndarray) or hasattr(x, "__cuda_array_interface__") else cp.from_dlpack(x)
        return cp.ascontiguousarray(cp.asarray(arr), dtype=dtype)

    # ------------------------------------------------------------------ audio
    def log_mel(self, waves):
        """waves (N, 10240) float -> (N, 1, 128, 66) float32 normalised log-mel (as features.log_mel)."""
        shape = tuple(waves.shape)
        if len(shape) != 2 or shape[1] != SEG_SAMPLES:
            raise InputError(f"log_mel expects waves (N, {SEG_SAMPLES}), got shape {shape}")
        flat = waves.reshape(-1)
        return self.log_mel_segments(flat, np.arange(shape[0], dtype=np.int64) * SEG_SAMPLES)

    def log_mel_segments(self, pcm, starts):
        """Segments pcm[s : s + 10240] for s in starts -> (n, 1, 128, 66) float32 normalised log-mel.

        pcm (L,) float at 16 kHz, NumPy or on the device; starts (n,) sample indices.
        """
        if len(pcm.shape) != 1:
            raise InputError(f"pcm must be one channel (L,), got shape {tuple(pcm.shape)}")
        starts = _checked_starts(starts, SEG_SAMPLES, pcm.shape[0], "audio segments")
        n = starts.size
        self._reserve(n, self._capacity[1])
        cp = self._cp
        with self._queued():
            if self._is_host(pcm):
                lo, hi = plan.upload_span(starts, SEG_SAMPLES)
                if hi - lo <= n * SEG_SAMPLES:
                    src, rel = np.asarray(pcm[lo:hi]), starts - lo
                else:  # sparse segments: gather them instead of uploading the gaps
                    src = np.stack([np.asarray(pcm[a:a + SEG_SAMPLES]) for a in starts]).reshape(-1)
                    rel = np.arange(n, dtype=np.int64) * SEG_SAMPLES
                pcm_dev = self._upload("pcm", src)
            else:
                pcm_dev, rel = self._as_device(pcm, cp.float32), starts
            return self._log_mel(pcm_dev, self._upload("starts", rel), n)

    def _log_mel(self, pcm_dev, starts_dev, n: int):
        out = self._view("mel", (n, 1, N_MELS, SPEC_FRAMES))
        if n == 0:
            return out
        rows = n * plan.N_FRAMES
        stft = self._view("stft", (rows, plan.N_FFT))
        spec = self._view("spec", (rows, plan.N_BINS))
        grid, block = plan.grid_1d(rows * plan.N_FFT)
        i32 = np.int32
        self._k_frame(grid, block, (pcm_dev, starts_dev, self._window, stft, i32(n), i32(SEG_SAMPLES),
                                    i32(plan.N_FRAMES), i32(plan.N_FFT), i32(plan.HOP_LENGTH),
                                    i32(self._win_lo), i32(self._win_hi)))
        from cupy.cuda import cufft
        self._fft_plan(rows).fft(stft, spec, cufft.CUFFT_FORWARD)
        self._k_mel((SPEC_FRAMES, n), (N_MELS,),
                    (spec, *self._bands, out, i32(plan.N_FRAMES), i32(plan.N_BINS), i32(N_MELS),
                     i32(SPEC_FRAMES), np.float32(plan.LOG_EPS), np.float32(plan.AST_MEAN),
                     np.float32(2.0 * np.float32(plan.AST_STD))),
                    shared_mem=plan.N_BINS * 4)
        return out

    # ------------------------------------------------------------------ video
    def video_input(self, frames, resize: bool = False):
        """frames (..., H, W, 3) uint8 -> (..., 3, 224, 224) video_dtype (as features.video_input).

        resize=True first sizes frames as media.py does (shortest side 256, bicubic: gpu_plan.resize_taps).
        """
        shape = tuple(frames.shape)
        if len(shape) < 3:
            raise InputError(f"video_input expects frames (..., H, W, 3), got shape {shape}")
        flat = frames.reshape(-1, *shape[-3:])
        out = self._video(flat, np.arange(flat.shape[0], dtype=np.int32), resize)
        return out.reshape(*shape[:-3], 3, CROP_SIZE, CROP_SIZE)

    def video_segments(self, frames, starts, resize: bool = False):
        """Segments frames[s : s + 16] for s in starts -> (n, 16, 3, 224, 224) video_dtype.

        frames (T, H, W, 3) uint8 RGB, NumPy or on the device; starts (n,) frame indices.
        """
        if len(frames.shape) != 4:
            raise InputError(f"video_segments expects frames (T, H, W, 3), got shape {tuple(frames.shape)}")
        starts = _checked_starts(starts, SEG_FRAMES, frames.shape[0], "video segments")
        out = self._video(frames, plan.segment_frame_index(starts), resize)
        return out.reshape(starts.size, SEG_FRAMES, 3, CROP_SIZE, CROP_SIZE)

    def _video(self, frames, frame_index: np.ndarray, resize: bool):
        """frames (T, H, W, 3) uint8, output frame f = frames[frame_index[f]] -> (F, 3, 224, 224)."""
        t, h, w, c = frames.shape
        if c != 3 or frames.dtype != np.uint8:
            raise InputError(f"frames must be uint8 RGB (..., H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
        try:
            geom, tables = self._frame_geometry(h, w, resize)
        except ValueError as e:
            raise InputError(str(e)) from e
        n_out = frame_index.size
        cp = self._cp
        with self._queued():
            if self._is_host(frames):
                frames_dev, index, geom = self._upload_frames(frames, frame_index, geom)
            else:
                frames_dev, index = self._as_device(frames, cp.uint8), frame_index
                self._reserve(-(-n_out // SEG_FRAMES), self._capacity[1])
            index_dev = self._upload("frame_index", index.astype(np.int32))
            out = self._view("video", (n_out, 3, CROP_SIZE, CROP_SIZE))
            if n_out == 0:
                return out
            i32 = np.int32
            if not geom.resized:
                grid, block = plan.grid_1d(n_out * CROP_SIZE * (CROP_SIZE // plan.PIXELS_PER_THREAD))
                self._k_crop(grid, block, (frames_dev, index_dev, self._lut, out, i32(n_out), i32(geom.h),
                                           i32(geom.w), i32(geom.top), i32(geom.left), i32(CROP_SIZE)))
            else:
                rf, rc, rw, cf, cc, cw = tables
                grid, block = plan.grid_1d(n_out * CROP_SIZE * CROP_SIZE)
                self._k_resize(grid, block, (frames_dev, index_dev, self._lut, rf, rc, rw, i32(rw.shape[1]),
                                             cf, cc, cw, i32(cw.shape[1]), out, i32(n_out), i32(geom.h),
                                             i32(geom.w), i32(CROP_SIZE)))
            return out

    def _upload_frames(self, frames: np.ndarray, frame_index: np.ndarray, geom: plan.FrameGeometry):
        """Upload only the frames (and, without resize, only the crop window) that the output reads.

        Returns (device frames, frame index into them, geometry of the uploaded frames).
        """
        lo, hi = int(frame_index.min(initial=0)), int(frame_index.max(initial=-1)) + 1
        if hi - lo <= frame_index.size:
            sel, index = frames[lo:hi], frame_index - lo
        else:  # sparse: gather the frames that are read
            sel, index = frames[frame_index], np.arange(frame_index.size, dtype=np.int32)
        if not geom.resized:
            sel = sel[:, geom.top:geom.top + CROP_SIZE, geom.left:geom.left + CROP_SIZE]
            geom = plan.FrameGeometry(CROP_SIZE, CROP_SIZE, 0, 0)
        self._reserve(-(-frame_index.size // SEG_FRAMES), sel.size)
        return self._upload("frames", sel), index, geom


def _checked_starts(starts, size: int, length: int, what: str) -> np.ndarray:
    """`plan.segment_starts` (segments of `size` items inside `length`), its ValueError as InputError."""
    try:
        return plan.segment_starts(starts, size, length)
    except ValueError as e:
        raise InputError(f"{what}: {e}") from e
