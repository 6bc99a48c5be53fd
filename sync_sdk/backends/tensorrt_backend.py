"""TensorRT backend: runs the engines of an export directory on one CUDA device (no torch, no pycuda).

Engines are checked (sha256, TensorRT version, GPU compute capability) before deserialisation.
Inputs may be NumPy or CuPy arrays; outputs are CuPy arrays when the input was on the device,
NumPy otherwise. Each engine has one execution context per optimisation profile (e.g. one
tuned for 1 segment, one for 14 segments per clip); a call uses the profile whose range holds
the batch and whose optimum is closest to it. Work is queued on the backend's CUDA stream with
`execute_async_v3`; device arrays are bound by pointer with `set_tensor_address`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from sync_sdk.errors import BackendError, InputError
from sync_sdk.weights.manifest import STAGES, check_engine, gpu_compute_capability, read_manifest


def _import_gpu():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise BackendError("the TensorRT backend needs the tensorrt package and an NVIDIA GPU "
                           "(pip install 'sync-sdk[gpu]'); use the ONNX Runtime backend otherwise") from e
    try:
        import cupy
    except ImportError as e:
        raise BackendError("the TensorRT backend needs CuPy (pip install 'sync-sdk[gpu]')") from e
    return trt, cupy


class _Engine:
    """One deserialised engine with an execution context per optimisation profile."""

    def __init__(self, trt, cupy, engine, stream, device: int, name: str) -> None:
        self.cupy, self.engine, self.stream, self.device, self.name = cupy, engine, stream, device, name
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self.contexts, self.ranges = [], []
        for p in range(engine.num_optimization_profiles):
            ctx = engine.create_execution_context()
            ctx.set_optimization_profile_async(p, stream.ptr)
            lo, opt, hi = (tuple(s) for s in engine.get_tensor_profile_shape(self.inputs[0], p))
            self.contexts.append(ctx)
            self.ranges.append((lo[0], opt[0], hi[0]))

    def _context(self, n: int):
        fits = [(abs(opt - n), i) for i, (lo, opt, hi) in enumerate(self.ranges) if lo <= n <= hi]
        if not fits:
            hi = max(r[2] for r in self.ranges)
            raise InputError(f"{self.name}: batch of {n} is outside the engine's profiles "
                             f"(1..{hi}); split the batch or rebuild with a larger --max-clips")
        return self.contexts[min(fits)[1]]

    def __call__(self, *arrays):
        cp = self.cupy
        on_device = any(isinstance(a, cp.ndarray) for a in arrays)
        with cp.cuda.Device(self.device):
            caller = cp.cuda.get_current_stream()
            self.stream.wait_event(caller.record())  # inputs made on the caller's stream are ready
            with self.stream:
                dev = [cp.ascontiguousarray(cp.asarray(a, dtype=self.dtypes[n]))
                       for a, n in zip(arrays, self.inputs)]
                ctx = self._context(dev[0].shape[0])
                for arr, n in zip(dev, self.inputs):
                    if not ctx.set_input_shape(n, arr.shape):
                        raise InputError(f"{self.name}: input {n!r} of shape {arr.shape} does not fit "
                                         f"the engine (expected {tuple(self.engine.get_tensor_shape(n))})")
                    ctx.set_tensor_address(n, arr.data.ptr)
                outs = [cp.empty(tuple(ctx.get_tensor_shape(n)), dtype=self.dtypes[n])
                        for n in self.outputs]
                for arr, n in zip(outs, self.outputs):
                    ctx.set_tensor_address(n, arr.data.ptr)
                if not ctx.execute_async_v3(self.stream.ptr):
                    raise BackendError(f"{self.name}: TensorRT execution failed")
                out = outs[0].astype(cp.float32, copy=False)
            if on_device:
                caller.wait_event(self.stream.record())  # the caller's later work sees the result
                return out
            return cp.asnumpy(out, stream=self.stream)  # blocking copy: waits for the stream


class TensorRTBackend:
    """Backend protocol over TensorRT engines (stage I/O float32; FP16 inside where built so)."""

    device_arrays = True  # CuPy in -> CuPy out

    def __init__(self, engines: dict[str, _Engine], config, precision: str, device: int,
                 runtime=None, model_id: str = "") -> None:
        self.engines = engines
        self._runtime = runtime  # must outlive the engines it deserialised
        self.config = config
        self.precision = precision
        self.device = device
        self.model_id = model_id
        self.name = f"tensorrt-{precision}-cuda:{device}"

    @classmethod
    def from_dir(cls, export_dir: str | Path, precision: str | None = None,
                 device: int = 0) -> "TensorRTBackend":
        """Load the engines of `export_dir` (built by export/build_engine.py on this kind of GPU)."""
        trt, cupy = _import_gpu()
        manifest = read_manifest(export_dir)
        have = manifest.precisions("tensorrt")
        if precision is None and have:  # the export's own precision, else its engines (fp16 first)
            precision = next(p for p in (manifest.precision, "fp16", *have) if p in have)
        if precision is None:
            raise BackendError(f"{export_dir}: no TensorRT engines; build them with "
                               "`python export/build_engine.py --backend tensorrt` on a GPU machine")
        cc, _ = gpu_compute_capability(device)
        logger = trt.Logger(trt.Logger.WARNING)
        engines = {}
        with cupy.cuda.Device(device):
            stream = cupy.cuda.Stream(non_blocking=True)
            runtime = trt.Runtime(logger)
            for stage in STAGES:
                path, entry = manifest.stage_file(stage, precision, "tensorrt")
                check_engine(entry, trt.__version__, cc, name=str(path))
                path, entry = manifest.verified_file(stage, precision, "tensorrt")
                engine = runtime.deserialize_cuda_engine(path.read_bytes())
                if engine is None:
                    raise BackendError(f"{path}: TensorRT could not deserialise the engine")
                engines[stage] = _Engine(trt, cupy, engine, stream, device, f"{stage} engine")
        return cls(engines, manifest.config, precision, device, runtime, manifest.model_id)

    def encode_audio(self, aud):
        """aud (N, 1, 128, 66) float32 -> (N, 6, a_dim) float32."""
        return self.engines["audio_encoder"](aud)

    def encode_video(self, vid):
        """vid (N, 16, 3, 224, 224) float32 (or float16) -> (N, 8, v_dim) float32."""
        return self.engines["visual_encoder"](vid)

    def head(self, vfeat, afeat):
        """vfeat (B, S*8, v_dim), afeat (B, S*6, a_dim) -> logits (B, num_classes) float32."""
        return self.engines["head"](vfeat, afeat)
